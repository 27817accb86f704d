"""rnnkit's compiled CPU recurrence: ``csrc/recurrence.cpp``, built once per machine on first use.

The time loop of a recurrent layer is one small matrix product per step plus element-wise gate
maths. Written in Python that maths costs about ten op dispatches per step, more than the product
itself; the C++ loop does one product and one fused, vectorised pass per step. Everything else (the
input projection of all steps, the weight and input gradients) is a few large matrix products here.

Mixed precision: under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the matrix products run in
bfloat16 (float32 accumulation) while states, gates, gradients and weights stay float32. On CPUs
with native bfloat16 (AVX512-BF16, AMX) those products are several times faster than float32.

The extension is compiled with the machine's C++ compiler through
:func:`torch.utils.cpp_extension.load` (ninja) into ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), once per source version and torch version. Without a compiler,
:func:`extension` returns None and rnnkit runs its Python kernels instead.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from rnnkit.models.sequence import batch_major, time_major

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "recurrence.cpp"
NAME = "rnnkit_recurrence"
# -ffast-math lets gcc call glibc's vectorised exp/tanh; it is a compile flag only, so the library
# is not linked with crtfastmath and never changes the process's denormal (FTZ/DAZ) mode.
CFLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp-simd")


def build_directory() -> Path:
    """Where this source, for this torch and Python, is built: one folder per version."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or "~/.cache/torch_extensions").expanduser()
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(f"{torch.__version__}|{sys.version}|{platform.machine()}|{CFLAGS}".encode())
    return root / f"{NAME}_{digest.hexdigest()[:12]}"


@functools.cache
def extension() -> ModuleType | None:
    """The compiled module, building it on first use; None (with one warning) if it cannot be built."""
    try:
        from torch.utils import cpp_extension

        folder = build_directory()
        if not (folder / f"{NAME}.so").exists():
            logger.info("compiling rnnkit's CPU recurrence kernels into %s (once, ~20 s)", folder)
        folder.mkdir(parents=True, exist_ok=True)
        _put_ninja_on_path()
        return cpp_extension.load(
            NAME, [str(SOURCE)], extra_cflags=list(CFLAGS), build_directory=str(folder), verbose=False
        )
    except Exception as error:  # no compiler, no ninja, read-only cache...: fall back, say why once
        reason = " ".join(str(error).split())[:300]
        logger.warning(
            "rnnkit's compiled CPU kernels are unavailable (%s); using the slower Python kernels. "
            "Install a C++ compiler (g++) and ninja to enable them.",
            reason,
        )
        return None


def _put_ninja_on_path() -> None:
    """torch looks for ``ninja`` on PATH; the ``ninja`` wheel's binary may sit only in its package."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def supports(module: nn.RNNBase, inputs: Tensor) -> bool:
    """Whether :func:`compiled_recurrent` computes what ``module(inputs)`` computes."""
    return (
        isinstance(module, (nn.RNN, nn.LSTM, nn.GRU))
        and module.num_layers == 1
        and not module.bidirectional
        and module.batch_first
        and getattr(module, "proj_size", 0) == 0
        and inputs.device.type == "cpu"
        and inputs.dim() == 3
        and inputs.size(1) > 0
        and inputs.dtype in (torch.float32, torch.bfloat16)
        and module.weight_hh_l0.dtype == torch.float32
    )


def compute_dtype() -> torch.dtype:
    """bfloat16 inside ``torch.autocast("cpu", dtype=torch.bfloat16)``, else float32."""
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return torch.bfloat16
    return torch.float32


def compiled_recurrent(module: nn.RNNBase, inputs: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Hidden states ``(batch, time, hidden)`` of ``module`` over ``inputs``, float32.

    ``dtype`` is the matrix-product dtype (default: :func:`compute_dtype`). Raises if the extension
    cannot be built or the module is not supported.
    """
    ext = extension()
    if ext is None or not supports(module, inputs):
        raise ValueError(
            "compiled_recurrent needs the compiled extension and a single-layer, unidirectional, "
            "batch_first nn.RNN/LSTM/GRU on CPU with float32 weights"
        )
    dtype = dtype or compute_dtype()
    weights = (module.weight_ih_l0, module.weight_hh_l0)
    biases = (module.bias_ih_l0, module.bias_hh_l0) if module.bias else (None, None)
    with torch.autocast("cpu", enabled=False):
        if isinstance(module, nn.LSTM):
            return _LSTM.apply(inputs, *weights, *biases, dtype)
        if isinstance(module, nn.GRU):
            return _GRU.apply(inputs, *weights, *biases, dtype)
        return _RNN.apply(inputs, *weights, *biases, dtype, module.nonlinearity == "relu")


def _project(x_tm: Tensor, w_ih: Tensor, bias: Tensor | None) -> Tensor:
    """Float32 ``x W_ih^T (+ bias)`` for all steps at once, the product in ``x_tm``'s dtype."""
    projected = torch.matmul(x_tm, w_ih.to(x_tm.dtype).t()).float()
    if bias is not None:
        projected += bias
    return projected


def _weight_and_input_grads(
    ctx: torch.autograd.function.FunctionCtx, dpre: Tensor, x_tm: Tensor, w_ih: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """(``dpre`` in the product dtype, grad of the inputs, of ``W_ih``, of ``b_ih``)."""
    steps, batch, width = dpre.shape
    flat = dpre.view(steps * batch, width).to(x_tm.dtype)
    grad_x = grad_w_ih = grad_b_ih = None
    if ctx.needs_input_grad[0]:
        grad_x = (flat @ w_ih.to(flat.dtype)).view(steps, batch, -1).transpose(0, 1).to(ctx.input_dtype)
    if ctx.needs_input_grad[1]:
        grad_w_ih = (flat.t() @ x_tm.view(steps * batch, -1)).float()
    if ctx.needs_input_grad[3]:
        grad_b_ih = dpre.view(steps * batch, width).sum(0)
    return flat, grad_x, grad_w_ih, grad_b_ih


def _hidden_weight_grad(flat_dpre: Tensor, states: Tensor) -> Tensor:
    """``dW_hh = sum_t dpre_t^T h_{t-1}`` as one product over all steps."""
    return (flat_dpre.t() @ states.reshape(-1, states.size(-1)).to(flat_dpre.dtype)).float()


def _begin(ctx, x: Tensor, w_ih: Tensor, b_ih: Tensor | None, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    ctx.input_dtype = x.dtype
    ctx.has_bias = b_ih is not None
    x_tm = time_major(x).to(dtype)
    return x_tm, w_ih.detach()


class _LSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, dtype):  # type: ignore[override]
        x_tm, w_ih = _begin(ctx, x, w_ih, b_ih, dtype)
        gates = _project(x_tm, w_ih, None if b_ih is None else b_ih + b_hh)
        w_hh_low = w_hh.detach().to(dtype)
        h, c, tanh_c = extension().lstm_forward(gates, w_hh_low.t().contiguous())
        ctx.save_for_backward(w_ih, w_hh_low)
        ctx.buffers = (x_tm, gates, h, c, tanh_c)
        return batch_major(h[1:])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        w_ih, w_hh_low = ctx.saved_tensors
        x_tm, gates, h, c, tanh_c = ctx.buffers
        grad_tm = time_major(grad_out.float())
        dpre = extension().lstm_backward(grad_tm, gates, c, tanh_c, w_hh_low.contiguous())
        flat, grad_x, grad_w_ih, grad_b_ih = _weight_and_input_grads(ctx, dpre, x_tm, w_ih)
        grad_w_hh = _hidden_weight_grad(flat, h[:-1]) if ctx.needs_input_grad[2] else None
        grad_b_hh = None
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_b_hh = grad_b_ih if grad_b_ih is not None else dpre.sum((0, 1))
        return grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None


class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, dtype):  # type: ignore[override]
        x_tm, w_ih = _begin(ctx, x, w_ih, b_ih, dtype)
        hidden = w_hh.size(1)
        if b_ih is None:
            bias, b_hn = None, x_tm.new_zeros(hidden, dtype=torch.float32)
        else:
            bias = b_ih.detach().clone()
            bias[: 2 * hidden] += b_hh.detach()[: 2 * hidden]
            b_hn = b_hh.detach()[2 * hidden :].contiguous()
        gates = _project(x_tm, w_ih, bias)
        w_hh_low = w_hh.detach().to(dtype)
        h, hn = extension().gru_forward(gates, w_hh_low.t().contiguous(), b_hn)
        ctx.save_for_backward(w_ih, w_hh_low)
        ctx.buffers = (x_tm, gates, h, hn)
        return batch_major(h[1:])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        w_ih, w_hh_low = ctx.saved_tensors
        x_tm, gates, h, hn = ctx.buffers
        hidden = w_hh_low.size(1)
        grad_tm = time_major(grad_out.float())
        dh_proj, dpre_n = extension().gru_backward(grad_tm, gates, hn, h, w_hh_low.contiguous())
        steps, batch, width = dh_proj.shape
        flat_hidden = dh_proj.view(steps * batch, width)
        grad_w_hh = None
        if ctx.needs_input_grad[2]:
            grad_w_hh = _hidden_weight_grad(flat_hidden.to(x_tm.dtype), h[:-1])
        grad_b_hh = flat_hidden.sum(0) if ctx.has_bias and ctx.needs_input_grad[4] else None
        dh_proj[..., 2 * hidden :] = dpre_n  # now the grads of x W_ih^T + b_ih
        _, grad_x, grad_w_ih, grad_b_ih = _weight_and_input_grads(ctx, dh_proj, x_tm, w_ih)
        return grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None


class _RNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, dtype, relu):  # type: ignore[override]
        x_tm, w_ih = _begin(ctx, x, w_ih, b_ih, dtype)
        states = _project(x_tm, w_ih, None if b_ih is None else b_ih + b_hh)
        w_hh_low = w_hh.detach().to(dtype)
        extension().rnn_forward(states, w_hh_low.t().contiguous(), relu)
        ctx.save_for_backward(w_ih, w_hh_low)
        ctx.buffers = (x_tm, states)
        ctx.relu = relu
        return batch_major(states)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        w_ih, w_hh_low = ctx.saved_tensors
        x_tm, states = ctx.buffers
        batch = states.size(1)
        grad_tm = time_major(grad_out.float())
        dpre = extension().rnn_backward(grad_tm, states, w_hh_low.contiguous(), ctx.relu)
        flat, grad_x, grad_w_ih, grad_b_ih = _weight_and_input_grads(ctx, dpre, x_tm, w_ih)
        grad_w_hh = None
        if ctx.needs_input_grad[2]:  # step 0 has a zero previous state: it adds nothing
            grad_w_hh = _hidden_weight_grad(flat[batch:], states[:-1])
        grad_b_hh = None
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_b_hh = grad_b_ih if grad_b_ih is not None else dpre.sum((0, 1))
        return grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None, None
