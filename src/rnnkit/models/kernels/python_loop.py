"""The recurrence as a Python time loop: rnnkit's kernel where the C++ loop cannot be built.

Autograd functions for ``nn.LSTM`` and ``nn.RNN`` (same gate order, same parameters) that pull the
work that does not depend on the previous step out of the time loop:

* forward: the input projection ``x @ W_ih^T + b`` for all steps in one matmul; the loop only does
  ``h @ W_hh^T`` and the gate arithmetic, and keeps the activated gates;
* backward: the loop only carries ``dh``/``dc`` back through time (one ``dgates @ W_hh`` per step),
  every factor that does not depend on ``dh`` is precomputed for all steps at once, and the
  weight, bias and input gradients are single large matmuls over all ``time * batch`` rows.

:func:`rnnkit.models.kernels.choose_kernel` runs it only where it beats the torch module and the
compiled loop is unavailable (no C++ compiler): ``nn.RNN``, and ``nn.LSTM`` while denormals are not
flushed. No GRU version is kept: the module beats a Python GRU loop wherever it could run. Float32
and float64 only (the loop does not autocast).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.models.kernels.cpp_loop import is_plain_layer
from rnnkit.models.sequence import batch_major, time_major

DTYPES = (torch.float32, torch.float64)


def run(module: nn.RNNBase, inputs: Tensor) -> Tensor:
    """Hidden states ``(batch, time, hidden)`` of ``module`` over ``inputs`` (zero initial state)."""
    if not supports(module, inputs):
        raise ValueError(
            "the Python loop needs a single-layer, unidirectional, batch_first nn.RNN/LSTM without "
            "projections, float32/float64 inputs of shape (batch, time, features)"
        )
    params = (module.weight_ih_l0, module.weight_hh_l0)
    biases = (module.bias_ih_l0, module.bias_hh_l0) if module.bias else (None, None)
    if isinstance(module, nn.LSTM):
        return _LSTMFunction.apply(inputs, *params, *biases)
    return _RNNFunction.apply(inputs, *params, *biases, module.nonlinearity == "relu")


def supports(module: nn.RNNBase, inputs: Tensor) -> bool:
    """Whether :func:`run` computes exactly what ``module(inputs)`` computes."""
    return (
        isinstance(module, (nn.RNN, nn.LSTM))
        and is_plain_layer(module)
        and inputs.dim() == 3
        and inputs.size(1) > 0
        and inputs.dtype in DTYPES
        and module.weight_hh_l0.dtype == inputs.dtype
    )


def _input_grads(
    ctx: torch.autograd.function.FunctionCtx,
    dpre_x: Tensor,
    x_tm: Tensor,
    w_ih: Tensor,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients w.r.t. the inputs, ``W_ih`` and ``b_ih`` from the pre-activation grads of all steps."""
    steps, batch, gates = dpre_x.shape
    flat = dpre_x.view(steps * batch, gates)
    grad_x = grad_w_ih = grad_b_ih = None
    if ctx.needs_input_grad[0]:
        grad_x = (flat @ w_ih).view(steps, batch, -1).transpose(0, 1)
    if ctx.needs_input_grad[1]:
        grad_w_ih = flat.t() @ x_tm.view(steps * batch, -1)
    if ctx.needs_input_grad[3]:
        grad_b_ih = flat.sum(0)
    return grad_x, grad_w_ih, grad_b_ih


class _LSTMFunction(torch.autograd.Function):
    """``nn.LSTM`` (gates i, f, g, o) with a batched backward; see the module docstring."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):  # type: ignore[override]
        x_tm = time_major(x)
        steps, batch, _ = x_tm.shape
        hidden = w_hh.size(1)
        gates = torch.matmul(x_tm, w_ih.t())  # (T, B, 4H); becomes the activated gates in place
        if b_ih is not None:
            gates += b_ih + b_hh
        h_all = x.new_zeros(steps + 1, batch, hidden)
        c_all = x.new_zeros(steps + 1, batch, hidden)
        tanh_c = x.new_empty(steps, batch, hidden)
        w_hh_t = w_hh.t()
        for t in range(steps):
            g = gates[t].addmm_(h_all[t], w_hh_t)
            g[:, : 2 * hidden].sigmoid_()
            g[:, 2 * hidden : 3 * hidden].tanh_()
            g[:, 3 * hidden :].sigmoid_()
            i, f, c_new, o = g.chunk(4, 1)
            c = torch.mul(f, c_all[t], out=c_all[t + 1]).addcmul_(i, c_new)
            torch.mul(o, torch.tanh(c, out=tanh_c[t]), out=h_all[t + 1])
        ctx.save_for_backward(w_ih, w_hh)
        ctx.buffers = (x_tm, gates, c_all, tanh_c, h_all)
        ctx.has_bias = b_ih is not None
        return batch_major(h_all[1:])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        w_ih, w_hh = ctx.saved_tensors
        x_tm, gates, c_all, tanh_c, h_all = ctx.buffers
        steps, batch, four_h = gates.shape
        hidden = four_h // 4
        grad_tm = grad_out.transpose(0, 1)
        i, f, g, o = gates.chunk(4, 2)
        # Factors of dgates that do not depend on dh/dc, for all steps at once.
        factors = torch.empty_like(gates)
        fi, ff, fg, fo = factors.chunk(4, 2)
        torch.mul(g, i * (1 - i), out=fi)
        torch.mul(c_all[:-1], f * (1 - f), out=ff)
        torch.mul(i, 1 - g * g, out=fg)
        torch.mul(tanh_c, o * (1 - o), out=fo)
        dc_from_dh = o * (1 - tanh_c * tanh_c)
        del i, g, o
        factors4 = factors.view(steps, batch, 4, hidden)
        dpre = torch.empty_like(gates)
        dpre4 = dpre.view(steps, batch, 4, hidden)
        dc = grad_out.new_zeros(batch, hidden)
        dh = grad_tm[steps - 1]
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                dh = torch.addmm(grad_tm[t], dpre[t + 1], w_hh)
            dc.addcmul_(dh, dc_from_dh[t])
            torch.mul(dc.unsqueeze(1), factors4[t, :, :3], out=dpre4[t, :, :3])
            torch.mul(dh, factors4[t, :, 3], out=dpre4[t, :, 3])
            dc.mul_(f[t])
        del factors, dc_from_dh
        flat = dpre.view(steps * batch, four_h)
        grad_w_hh = flat.t() @ h_all[:-1].view(steps * batch, hidden) if ctx.needs_input_grad[2] else None
        grad_x, grad_w_ih, grad_b_ih = _input_grads(ctx, dpre, x_tm, w_ih)
        grad_b_hh = None
        if ctx.has_bias:
            bias_grad = grad_b_ih if grad_b_ih is not None else flat.sum(0)
            grad_b_hh = bias_grad if ctx.needs_input_grad[4] else None
        return grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


class _RNNFunction(torch.autograd.Function):
    """``nn.RNN`` (tanh or relu) with a batched backward."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, relu):  # type: ignore[override]
        x_tm = time_major(x)
        steps = x_tm.size(0)
        states = torch.matmul(x_tm, w_ih.t())  # (T, B, H); becomes h_1..h_T in place
        if b_ih is not None:
            states += b_ih + b_hh
        w_hh_t = w_hh.t()
        for t in range(steps):
            step = states[t] if t == 0 else states[t].addmm_(states[t - 1], w_hh_t)
            step.relu_() if relu else step.tanh_()
        ctx.save_for_backward(w_ih, w_hh)
        ctx.buffers = (x_tm, states)
        ctx.has_bias = b_ih is not None
        ctx.relu = relu
        return batch_major(states)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        w_ih, w_hh = ctx.saved_tensors
        x_tm, states = ctx.buffers
        steps, batch, hidden = states.shape
        grad_tm = grad_out.transpose(0, 1)
        dpre = (states > 0).to(states.dtype) if ctx.relu else 1 - states * states
        dh = grad_tm[steps - 1]
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                dh = torch.addmm(grad_tm[t], dpre[t + 1], w_hh)
            dpre[t].mul_(dh)
        flat = dpre.view(steps * batch, hidden)
        grad_w_hh = None
        if ctx.needs_input_grad[2]:
            grad_w_hh = flat[batch:].t() @ states[:-1].reshape(-1, hidden)
        grad_x, grad_w_ih, grad_b_ih = _input_grads(ctx, dpre, x_tm, w_ih)
        grad_b_hh = None
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_b_hh = grad_b_ih if grad_b_ih is not None else flat.sum(0)
        return grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None
