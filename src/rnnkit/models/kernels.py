"""The recurrence itself: one single-layer, unidirectional, batch-first pass over padded inputs.

Encoders call :func:`run_recurrent` for every layer and direction, so a faster implementation of
the time loop is swapped in here without touching the model code. Three implementations compute
the same recurrence (same gate order, same parameters as the torch modules):

* ``native``: the torch module itself (oneDNN on CPU, cuDNN on CUDA): the reference;
* compiled: rnnkit's C++ time loop (:mod:`rnnkit.models.compiled`), built once per machine;
* Python fused: the autograd functions below, used where the compiled loop cannot be built.

The last two pull the work that does not depend on the previous step out of the time loop:

* forward: the input projection ``x @ W_ih^T + b`` for all steps in one matmul; the loop only does
  ``h @ W_hh^T`` and the gate arithmetic, and keeps the activated gates;
* backward: the loop only carries ``dh``/``dc`` back through time (one ``dgates @ W_hh`` per step;
  the Python loop precomputes every factor that does not depend on ``dh`` for all steps at once);
  the weight, bias and input gradients are then single large matmuls over all ``time * batch`` rows.

Which one ``kernel="auto"`` runs is decided by measurement (:func:`choose_kernel`). Inputs are
right-padded: a state at step ``t`` depends only on steps ``<= t``, so positions before a sequence's
length are exact whatever the padding holds, and padding positions stay finite because they are
computed from finite embeddings.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError
from rnnkit.models import compiled
from rnnkit.models.compiled import compiled_recurrent
from rnnkit.models.sequence import batch_major, time_major

KERNELS = ("auto", "native")
_FUSED_DTYPES = (torch.float32, torch.float64)
_DENORMAL = 1e-40  # below float32's smallest normal number (1.2e-38)


def run_recurrent(module: nn.RNNBase, inputs: Tensor, kernel: str = "auto") -> Tensor:
    """Return the hidden state of every time step, shape ``(batch, time, hidden)``.

    ``module`` is a single-layer, unidirectional ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` built with
    ``batch_first=True``; its parameters are the ones used, whatever the kernel. ``kernel="native"``
    always calls the module (the reference); ``"auto"`` runs what :func:`choose_kernel` picks.
    """
    if kernel not in KERNELS:
        raise ConfigError(f"model.kernel={kernel!r} is not a kernel; use one of {', '.join(KERNELS)}")
    chosen = choose_kernel(module, inputs) if kernel == "auto" else "native"
    if chosen == "compiled":
        return compiled_recurrent(module, inputs)
    if chosen == "fused":
        return fused_recurrent(module, inputs)
    outputs, _ = module(inputs)
    return outputs


def choose_kernel(module: nn.RNNBase, inputs: Tensor) -> str:
    """``"compiled"``, ``"fused"`` or ``"native"``: the fastest path, as measured on CPU.

    Measured on 20 Newsgroups-sized batches (batch 64, 280 steps, one layer of 128 units over
    100-dim inputs, forward and backward, rnnkit's runtime settings) on a 2-core AMD EPYC (Zen 5):

    * inference: the module. oneDNN's forward passes beat the loops, which keep every step's
      gates for a backward pass that never comes (LSTM at batch 256: 71 ms against 203 ms);
    * training ``nn.LSTM``: the module (oneDNN's fused LSTM: 45 ms against the compiled loop's
      90 ms in float32, 29 against 40 under bfloat16 autocast) while denormal floats are flushed
      (``train.flush_denormal``, the default); when they are not, its backward can slow down ~10x
      on long documents, so a loop is used then;
    * training ``nn.GRU`` and ``nn.RNN``: the compiled loop (GRU 68 ms against the module's 99 in
      float32, 40 against 80 under bfloat16; RNN 25 against 36, and 18 against 33); without a
      compiler, the Python loop for ``nn.RNN`` in full precision, else the module;
    * CUDA: the module (cuDNN).
    """
    training = torch.is_grad_enabled() and (
        inputs.requires_grad or any(p.requires_grad for p in module.parameters())
    )
    if inputs.device.type != "cpu" or not training or _trains_on_onednn(module):
        return "native"
    if compiled.supports(module, inputs) and compiled.extension() is not None:
        return "compiled"
    mixed_precision = torch.is_autocast_enabled("cpu")  # the Python loop is float32/float64 only
    if not isinstance(module, nn.GRU) and not mixed_precision and supports_fused(module, inputs):
        return "fused"
    return "native"


def prepare(module: nn.RNNBase) -> None:
    """Build the compiled loop now if training ``module`` will use it (see :func:`choose_kernel`).

    The build takes ~20 s once per machine; called before training, it is a log line of its own
    instead of a stall inside the first step's progress bar.
    """
    if module.weight_hh_l0.device.type == "cpu" and not _trains_on_onednn(module):
        compiled.extension()


def _trains_on_onednn(module: nn.RNNBase) -> bool:
    """oneDNN's fused LSTM beats every loop on CPU while denormals are flushed (see choose_kernel)."""
    return isinstance(module, nn.LSTM) and denormals_flushed()


def fused_recurrent(module: nn.RNNBase, inputs: Tensor) -> Tensor:
    """Run ``module`` over ``inputs`` with rnnkit's fused autograd functions (zero initial state)."""
    if not supports_fused(module, inputs):
        raise ValueError(
            "fused_recurrent needs a single-layer, unidirectional, batch_first nn.RNN/LSTM/GRU "
            "without projections, float32/float64 inputs of shape (batch, time, features)"
        )
    params = (module.weight_ih_l0, module.weight_hh_l0)
    biases = (module.bias_ih_l0, module.bias_hh_l0) if module.bias else (None, None)
    if isinstance(module, nn.LSTM):
        return _LSTMFunction.apply(inputs, *params, *biases)
    if isinstance(module, nn.GRU):
        return _GRUFunction.apply(inputs, *params, *biases)
    return _RNNFunction.apply(inputs, *params, *biases, module.nonlinearity == "relu")


def supports_fused(module: nn.RNNBase, inputs: Tensor) -> bool:
    """Whether :func:`fused_recurrent` computes exactly what ``module(inputs)`` computes."""
    return (
        compiled.is_plain_layer(module)
        and inputs.dim() == 3
        and inputs.size(1) > 0
        and inputs.dtype in _FUSED_DTYPES
        and module.weight_hh_l0.dtype == inputs.dtype
    )


def denormals_flushed() -> bool:
    """Whether this thread flushes denormal floats to zero (``torch.set_flush_denormal``)."""
    return torch.tensor(_DENORMAL, dtype=torch.float32).mul(1.0).item() == 0.0


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


class _GRUFunction(torch.autograd.Function):
    """``nn.GRU`` (gates r, z, n; ``n = tanh(x_n + r * (h W_hn + b_hn))``) with a batched backward."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):  # type: ignore[override]
        x_tm = time_major(x)
        steps, batch, _ = x_tm.shape
        hidden = w_hh.size(1)
        gates = torch.matmul(x_tm, w_ih.t())  # (T, B, 3H); becomes r, z, n in place
        if b_ih is not None:
            gates += b_ih
            gates[..., : 2 * hidden] += b_hh[: 2 * hidden]
            b_hn = torch.cat([b_hh.new_zeros(2 * hidden), b_hh[2 * hidden :]])
        else:
            b_hn = x.new_zeros(3 * hidden)
        h_proj = x.new_empty(steps, batch, 3 * hidden)  # h W_hh^T (+ b_hn); its n part is kept
        h_all = x.new_zeros(steps + 1, batch, hidden)
        diff = x.new_empty(batch, hidden)
        w_hh_t = w_hh.t()
        for t in range(steps):
            hp = torch.addmm(b_hn, h_all[t], w_hh_t, out=h_proj[t])
            g = gates[t]
            rz = g[:, : 2 * hidden].add_(hp[:, : 2 * hidden]).sigmoid_()
            r, z = rz.chunk(2, 1)
            n = g[:, 2 * hidden :].addcmul_(r, hp[:, 2 * hidden :]).tanh_()
            torch.sub(h_all[t], n, out=diff)
            torch.addcmul(n, z, diff, out=h_all[t + 1])
        ctx.save_for_backward(w_ih, w_hh)
        ctx.buffers = (x_tm, gates, h_proj, h_all)
        ctx.has_bias = b_ih is not None
        return batch_major(h_all[1:])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        w_ih, w_hh = ctx.saved_tensors
        x_tm, gates, h_proj, h_all = ctx.buffers
        steps, batch, three_h = gates.shape
        hidden = three_h // 3
        grad_tm = grad_out.transpose(0, 1)
        r, z, n = gates.chunk(3, 2)
        h_prev = h_all[:-1]
        # d(pre_n) = dh * (1 - z)(1 - n^2); the r/z/hn grads follow from it and dh by these factors.
        to_pre_n = (1 - z) * (1 - n * n)
        factors = torch.empty_like(gates)  # [dpre_r / dpre_n, dpre_z / dh, dhn / dpre_n]
        factors3 = factors.view(steps, batch, 3, hidden)
        torch.mul(h_proj[..., 2 * hidden :], r * (1 - r), out=factors3[:, :, 0])
        torch.mul(h_prev - n, z * (1 - z), out=factors3[:, :, 1])
        factors3[:, :, 2] = r
        del r, n
        dh_proj = torch.empty_like(gates)  # grads w.r.t. h W_hh^T + b_hh
        dh_proj3 = dh_proj.view(steps, batch, 3, hidden)
        dpre_n = torch.empty_like(h_prev)
        dh = grad_tm[steps - 1]
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                dh = torch.addmm(torch.addcmul(grad_tm[t], dh, z[t + 1]), dh_proj[t + 1], w_hh)
            dn = torch.mul(dh, to_pre_n[t], out=dpre_n[t])
            torch.mul(dn.unsqueeze(1), factors3[t, :, ::2], out=dh_proj3[t, :, ::2])
            torch.mul(dh, factors3[t, :, 1], out=dh_proj3[t, :, 1])
        del factors, to_pre_n
        flat = dh_proj.view(steps * batch, three_h)
        grad_w_hh = flat.t() @ h_prev.reshape(steps * batch, hidden) if ctx.needs_input_grad[2] else None
        grad_b_hh = flat.sum(0) if ctx.has_bias and ctx.needs_input_grad[4] else None
        dh_proj[..., 2 * hidden :] = dpre_n  # now the grads w.r.t. x W_ih^T + b_ih
        grad_x, grad_w_ih, grad_b_ih = _input_grads(ctx, dh_proj, x_tm, w_ih)
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
