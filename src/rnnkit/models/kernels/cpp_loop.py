"""rnnkit's compiled C++ time loop: ``csrc/recurrence.cpp``, built once per machine on first use.

The time loop of a recurrent layer is one small matrix product per step plus element-wise gate
maths. Written in Python that maths costs about ten op dispatches per step, more than the product
itself; the C++ loop does one product and one fused, vectorised pass per step. Everything else (the
input projection of all steps, the weight and input gradients) is a few large matrix products here.

Mixed precision: under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the matrix products run in
bfloat16: their operands (inputs, hidden states, gate gradients) are rounded to bfloat16 and summed
in float32, while the gates, the cell state, the weights and every returned gradient stay float32.
On CPUs with native bfloat16 (AVX512-BF16, AMX) those products are 2-7x faster than in float32.

The extension is compiled with the machine's C++ compiler through
:func:`torch.utils.cpp_extension.load` (ninja) into ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), once per source version and torch install. Without a compiler,
:func:`extension` returns None and rnnkit runs its Python loop or the torch module instead.
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

from rnnkit.io import atomic_write_bytes
from rnnkit.models.sequence import batch_major, time_major
from rnnkit.runtime import cpu_flags

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "recurrence.cpp"
NAME = "rnnkit_recurrence"
# -ffast-math lets gcc call glibc's vectorised exp/tanh; it is a compile flag only, so the library
# is not linked with crtfastmath and never changes the process's denormal (FTZ/DAZ) mode.
CFLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-fopenmp-simd")


def build_directory() -> Path:
    """Where this source is built for this torch install, Python and CPU: one folder per combination.

    The CPU's feature flags are part of the key because ``-march=native`` code can crash on an
    older CPU sharing the same home folder. The torch install is too (its path, not only its
    version): ninja's build file names torch's headers by path, so two virtual environments
    sharing one folder would each find the other's build stale and compile again, every time.
    """
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or "~/.cache/torch_extensions").expanduser()
    digest = hashlib.sha256(SOURCE.read_bytes())
    build = (torch.__version__, torch.__file__, sys.version, platform.machine(), CFLAGS, sorted(cpu_flags()))
    digest.update(repr(build).encode())
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
        # Compile a copy kept in the folder: ninja's build file then names the same source path
        # whichever checkout of rnnkit (same source, same torch) asks, so none of them rebuilds it.
        source = folder / SOURCE.name
        if not source.exists():
            atomic_write_bytes(source, SOURCE.read_bytes())
        _put_ninja_on_path()
        return cpp_extension.load(
            NAME, [str(source)], extra_cflags=list(CFLAGS), build_directory=str(folder), verbose=False
        )
    except Exception as error:  # no compiler, no ninja, read-only cache...: fall back, say why once
        reason = " ".join(str(error).split())[:300]
        logger.warning(
            "rnnkit's compiled CPU kernels are unavailable (%s); using the slower Python loop. "
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


def is_plain_layer(module: nn.Module) -> bool:
    """A single-layer, unidirectional, batch-first ``nn.RNN``/``nn.LSTM``/``nn.GRU`` without projection:
    the layer rnnkit's loops reproduce."""
    return (
        isinstance(module, (nn.RNN, nn.LSTM, nn.GRU))
        and module.num_layers == 1
        and not module.bidirectional
        and module.batch_first
        and getattr(module, "proj_size", 0) == 0
    )


def supports(module: nn.RNNBase, inputs: Tensor) -> bool:
    """Whether :func:`run` computes what ``module(inputs)`` computes."""
    return (
        is_plain_layer(module)
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


def run(module: nn.RNNBase, inputs: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Hidden states ``(batch, time, hidden)`` of ``module`` over ``inputs``, float32.

    ``dtype`` is the matrix-product dtype (default: :func:`compute_dtype`). Raises if the extension
    cannot be built or the module is not supported.
    """
    ext = extension()
    if ext is None or not supports(module, inputs):
        raise ValueError(
            "the C++ loop needs the compiled extension and a single-layer, unidirectional, "
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


def _time_major_as(inputs: Tensor, dtype: torch.dtype) -> Tensor:
    """``(batch, time, features)`` -> contiguous ``(time, batch, features)`` in ``dtype``, one pass."""
    return torch.empty(inputs.shape[1], inputs.shape[0], inputs.shape[2], dtype=dtype).copy_(
        inputs.transpose(0, 1)
    )


class _Recurrence(torch.autograd.Function):
    """What the three cells share: inputs, projection, and the gradients outside the time loop."""

    @staticmethod
    def begin(ctx, x: Tensor, w_ih: Tensor, w_hh: Tensor, dtype: torch.dtype):  # type: ignore[no-untyped-def]
        """(time-major inputs, their projection ``x W_ih^T``, ``W_hh``), all in the product dtype."""
        ctx.input_dtype = x.dtype
        x_tm = _time_major_as(x, dtype)
        w_ih_low = w_ih.detach().to(dtype)
        w_hh_low = w_hh.detach().to(dtype)
        ctx.save_for_backward(w_ih_low, w_hh_low)
        return x_tm, torch.matmul(x_tm, w_ih_low.t()), w_hh_low

    @staticmethod
    def input_side_grads(ctx, d_input: Tensor, x_tm: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[no-untyped-def]
        """Gradients of the inputs and of ``W_ih`` from those of ``x W_ih^T`` (all steps at once)."""
        w_ih_low, _ = ctx.saved_tensors
        steps, batch, width = d_input.shape
        flat = d_input.view(steps * batch, width)
        grad_x = grad_w_ih = None
        if ctx.needs_input_grad[0]:
            grad_x = (flat @ w_ih_low).view(steps, batch, -1).transpose(0, 1).to(ctx.input_dtype)
        if ctx.needs_input_grad[1]:
            grad_w_ih = (flat.t() @ x_tm.view(steps * batch, -1)).float()
        return grad_x, grad_w_ih

    @staticmethod
    def hidden_weight_grad(ctx, d_hidden: Tensor, states_low: Tensor) -> Tensor | None:  # type: ignore[no-untyped-def]
        """``dW_hh = sum_t d_t^T h_{t-1}`` as one product over all steps."""
        if not ctx.needs_input_grad[2]:
            return None
        hidden = states_low.size(-1)
        flat = d_hidden.view(-1, d_hidden.size(-1))
        return (flat.t() @ states_low[:-1].reshape(-1, hidden)).float()

    @staticmethod
    def bias(b_ih: Tensor | None, b_hh: Tensor | None, width: int, like: Tensor) -> Tensor:
        if b_ih is None:
            return torch.zeros(width, dtype=torch.float32, device=like.device)
        return (b_ih.detach() + b_hh.detach()).float().contiguous()

    @staticmethod
    def bias_grads(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[no-untyped-def]
        return (grad if ctx.needs_input_grad[3] else None, grad if ctx.needs_input_grad[4] else None)


class _LSTM(_Recurrence):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, dtype):  # type: ignore[override]
        x_tm, proj, w_hh_low = _Recurrence.begin(ctx, x, w_ih, w_hh, dtype)
        bias = _Recurrence.bias(b_ih, b_hh, proj.size(2), x)
        gates, h, c, h_low = extension().lstm_forward(proj, bias, w_hh_low.t().contiguous())
        ctx.buffers = (x_tm, gates, c, h_low)
        return batch_major(h[1:])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x_tm, gates, c, h_low = ctx.buffers
        _, w_hh_low = ctx.saved_tensors
        dpre, bias_grad = extension().lstm_backward(time_major(grad_out.float()), gates, c, w_hh_low)
        grad_x, grad_w_ih = _Recurrence.input_side_grads(ctx, dpre, x_tm)
        grad_w_hh = _Recurrence.hidden_weight_grad(ctx, dpre, h_low)
        return grad_x, grad_w_ih, grad_w_hh, *_Recurrence.bias_grads(ctx, bias_grad), None


class _GRU(_Recurrence):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, dtype):  # type: ignore[override]
        x_tm, proj, w_hh_low = _Recurrence.begin(ctx, x, w_ih, w_hh, dtype)
        hidden = w_hh.size(1)
        if b_ih is None:
            bias, b_hn = torch.zeros(3 * hidden), torch.zeros(hidden)
        else:  # b_hr and b_hz add to the input projection; b_hn sits inside r * (...)
            bias = b_ih.detach().float().clone()
            bias[: 2 * hidden] += b_hh.detach()[: 2 * hidden]
            b_hn = b_hh.detach()[2 * hidden :].float().contiguous()
        gates, h, hn, h_low = extension().gru_forward(proj, bias, b_hn, w_hh_low.t().contiguous())
        ctx.buffers = (x_tm, gates, h, hn, h_low)
        return batch_major(h[1:])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x_tm, gates, h, hn, h_low = ctx.buffers
        _, w_hh_low = ctx.saved_tensors
        d_hidden, d_input, b_hh_grad, b_ih_grad = extension().gru_backward(
            time_major(grad_out.float()), gates, hn, h, w_hh_low
        )
        grad_x, grad_w_ih = _Recurrence.input_side_grads(ctx, d_input, x_tm)
        grad_w_hh = _Recurrence.hidden_weight_grad(ctx, d_hidden, h_low)
        grad_b_ih = b_ih_grad if ctx.needs_input_grad[3] else None
        grad_b_hh = b_hh_grad if ctx.needs_input_grad[4] else None
        return grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None


class _RNN(_Recurrence):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, dtype, relu):  # type: ignore[override]
        x_tm, proj, w_hh_low = _Recurrence.begin(ctx, x, w_ih, w_hh, dtype)
        bias = _Recurrence.bias(b_ih, b_hh, proj.size(2), x)
        h, h_low = extension().rnn_forward(proj, bias, w_hh_low.t().contiguous(), relu)
        ctx.buffers = (x_tm, h, h_low)
        ctx.relu = relu
        return batch_major(h[1:])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x_tm, h, h_low = ctx.buffers
        _, w_hh_low = ctx.saved_tensors
        dpre, bias_grad = extension().rnn_backward(time_major(grad_out.float()), h, w_hh_low, ctx.relu)
        grad_x, grad_w_ih = _Recurrence.input_side_grads(ctx, dpre, x_tm)
        grad_w_hh = _Recurrence.hidden_weight_grad(ctx, dpre, h_low)
        return grad_x, grad_w_ih, grad_w_hh, *_Recurrence.bias_grads(ctx, bias_grad), None, None
