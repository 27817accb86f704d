"""rnnkit's compiled C++ time loop: ``csrc/recurrence.cpp``, built once per machine on first use.

The same module carries ``csrc/adam.cpp``, the exact Adam update of an embedding from its row
gradient (:mod:`rnnkit.training.embedding_rows`).

The time loop of a recurrent layer is one small matrix product per step plus element-wise gate
maths. Written in Python that maths costs about ten op dispatches per step, more than the product
itself; the C++ loop does one product and one fused, vectorised pass per step. Everything else (the
input projection of all steps, the weight and input gradients) is a few large matrix products here.

Mixed precision: under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the matrix products run in
bfloat16: their operands (inputs, hidden states, gate gradients) are rounded to bfloat16 and summed
in float32, while the gates, the cell state, the weights and every returned gradient stay float32.
On CPUs with native bfloat16 (AVX512-BF16, AMX) those products are 2-7x faster than in float32.

Int8 inference (``dtype=torch.int8``, what ``--quantize`` runs for LSTM, GRU and tanh layers, see
:func:`supports_int8`): the step products take int8 weights and 8-bit states on AVX512-VNNI.

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
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.io import atomic_write_bytes
from rnnkit.runtime import cpu_flags, cpu_has_native_bfloat16

logger = logging.getLogger(__name__)

SOURCES = tuple(Path(__file__).with_name("csrc") / name for name in ("recurrence.cpp", "adam.cpp"))
NAME = "rnnkit_recurrence"
# -ffast-math lets gcc call glibc's vectorised exp/tanh; it is a compile flag only, so the library
# is not linked with crtfastmath and never changes the process's denormal (FTZ/DAZ) mode.
CFLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math")


@functools.cache
def openmp_flags() -> tuple[str, ...]:
    """``-fopenmp`` where torch runs on GNU OpenMP (libgomp), else ``-fopenmp-simd`` alone.

    The loop's threads are an OpenMP region (``at::parallel_for`` is a pragma in ATen's headers):
    compiled without ``-fopenmp`` its tasks run one after the other on the calling thread, which
    left the GRU and SimpleRNN loops on one of two cores (measured: 1.5x slower training steps).
    The extension's ``libgomp.so.1`` then resolves to the copy torch already loaded, so both share
    one thread pool. Where torch uses another OpenMP runtime (LLVM's or Intel's) a second one would
    be loaded beside it, so the tasks stay on one thread there.
    """
    uses_libgomp = torch.backends.openmp.is_available() and any(
        "libgomp" in line for line in _mapped_libraries()
    )
    return ("-fopenmp",) if uses_libgomp else ("-fopenmp-simd",)


def _mapped_libraries() -> list[str]:
    """The shared libraries loaded in this process (Linux; elsewhere none are known)."""
    try:
        with open("/proc/self/maps") as maps:
            return [line.rsplit(" ", 1)[-1].strip() for line in maps if ".so" in line]
    except OSError:
        return []


def build_directory() -> Path:
    """Where these sources are built for this torch install, Python and CPU: one folder per combination.

    The CPU's feature flags are part of the key because ``-march=native`` code can crash on an
    older CPU sharing the same home folder. The torch install is too (its path, not only its
    version): ninja's build file names torch's headers by path, so two virtual environments
    sharing one folder would each find the other's build stale and compile again, every time.
    """
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or "~/.cache/torch_extensions").expanduser()
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in SOURCES))
    build = (
        torch.__version__,
        torch.__file__,
        sys.version,
        platform.machine(),
        CFLAGS,
        openmp_flags(),
        sorted(cpu_flags()),
    )
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
        # Compile copies kept in the folder: ninja's build file then names the same source paths
        # whichever checkout of rnnkit (same sources, same torch) asks, so none of them rebuilds it.
        copies = [folder / source.name for source in SOURCES]
        for source, copy in zip(SOURCES, copies, strict=True):
            if not copy.exists():
                atomic_write_bytes(copy, source.read_bytes())
        _put_ninja_on_path()
        openmp = list(openmp_flags())
        return cpp_extension.load(
            NAME,
            [str(copy) for copy in copies],
            extra_cflags=[*CFLAGS, *openmp],
            extra_ldflags=openmp if "-fopenmp" in openmp else [],
            build_directory=str(folder),
            verbose=False,
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

    ``dtype`` is the matrix-product dtype (default: :func:`compute_dtype`; ``torch.int8``: int8 step
    products, inference only). Raises if the extension cannot be built or the module is not supported.
    """
    return run_directions([module], [inputs], dtype)


def run_directions(
    modules: Sequence[nn.RNNBase],
    inputs: Sequence[Tensor],
    dtype: torch.dtype | None = None,
    positions: Sequence[Tensor | None] | None = None,
) -> Tensor:
    """``torch.cat([run(m, x) for m, x in zip(modules, inputs)], dim=2)`` in one call: the layers run
    side by side, and each writes its states straight into its columns of the one output.

    For the two directions of a bidirectional layer: same cell type, input and hidden sizes, and
    input shapes. Their time loops run in parallel on the available threads (one direction per
    thread with two threads) instead of one after the other. ``positions[d]`` (``(batch, time)``
    int64, or None for in place) moves direction ``d``'s state of step ``t`` of row ``b`` to step
    ``positions[d][b, t]`` of the output, and reads its gradient there: given the within-length
    reversal of :func:`~rnnkit.models.sequence.reverse_padded`, the reverse direction's states come
    back in reading order with no reversal of their own.
    """
    ext = extension()
    if ext is None or not all(supports(m, x) for m, x in zip(modules, inputs, strict=True)):
        raise ValueError(
            "the C++ loop needs the compiled extension and a single-layer, unidirectional, "
            "batch_first nn.RNN/LSTM/GRU on CPU with float32 weights"
        )
    first = modules[0]
    if not _same_layer_shape(modules) or len({x.shape for x in inputs}) > 1:
        raise ValueError("layers run side by side need the same cell, sizes and input shapes")
    kind, dtype = _kind(first), dtype or compute_dtype()
    places = _positions(positions, len(modules))
    parameters: list[Tensor | None] = []
    for module in modules:
        biases = (module.bias_ih_l0, module.bias_hh_l0) if module.bias else (None, None)
        parameters += [module.weight_ih_l0, module.weight_hh_l0, *biases]
    with torch.autocast("cpu", enabled=False):
        if dtype == torch.int8:
            if needs_backward(inputs, parameters) or not supports_int8(first):
                raise ValueError(
                    "int8 step products are for inference of LSTM, GRU and tanh layers on AVX512-VNNI CPUs"
                )
            return _forward_int8(kind, inputs, parameters, places)
        if not needs_backward(inputs, parameters):  # inference: keep no gates for a backward pass
            return _forward(kind, dtype, inputs, parameters, places, keep=False).output
        return _Recurrence.apply(kind, dtype, len(modules), places, *inputs, *parameters)


def _positions(positions: Sequence[Tensor | None] | None, count: int) -> list[Tensor]:
    """One positions tensor per direction for the extension: an empty one for in place."""
    if positions is None:
        positions = [None] * count
    if len(positions) != count:
        raise ValueError(f"positions needs one entry per layer ({count}), got {len(positions)}")
    empty = torch.empty(0, dtype=torch.long)
    return [empty if p is None else p.to(torch.long).contiguous() for p in positions]


def supports_int8(module: nn.RNNBase) -> bool:
    """Whether :func:`run` can run ``module`` with int8 step products (``dtype=torch.int8``): an LSTM,
    GRU or tanh layer (states in [-1, 1], not relu's) whose width the int8 kernel takes, on a CPU
    with AVX512-VNNI."""
    ext = extension()
    return (
        ext is not None
        and ext.has_int8_products()
        and _kind(module) != "rnn_relu"
        and module.hidden_size % 4 == 0
    )


def needs_backward(inputs: Iterable[Tensor], parameters: Iterable[Tensor | None]) -> bool:
    """Whether autograd records a pass over ``inputs`` and ``parameters`` (training), not inference."""
    return torch.is_grad_enabled() and (
        any(x.requires_grad for x in inputs) or any(p is not None and p.requires_grad for p in parameters)
    )


def _kind(module: nn.RNNBase) -> str:
    if isinstance(module, nn.LSTM):
        return "lstm"
    if isinstance(module, nn.GRU):
        return "gru"
    return "rnn_relu" if module.nonlinearity == "relu" else "rnn_tanh"


def _same_layer_shape(modules: Sequence[nn.RNNBase]) -> bool:
    first = modules[0]
    return all(
        _kind(m) == _kind(first)
        and m.input_size == first.input_size
        and m.hidden_size == first.hidden_size
        and m.bias == first.bias
        for m in modules
    )


def _time_major_as(inputs: Tensor, dtype: torch.dtype) -> Tensor:
    """``(batch, time, features)`` -> contiguous ``(time, batch, features)`` in ``dtype``, one pass."""
    return torch.empty(inputs.shape[1], inputs.shape[0], inputs.shape[2], dtype=dtype).copy_(
        inputs.transpose(0, 1)
    )


def _summed_bias(b_ih: Tensor | None, b_hh: Tensor | None, width: int) -> Tensor:
    if b_ih is None or b_hh is None:
        return torch.zeros(width, dtype=torch.float32)
    return (b_ih.detach() + b_hh.detach()).float().contiguous()


def _gru_biases(b_ih: Tensor | None, b_hh: Tensor | None, hidden: int) -> tuple[Tensor, Tensor]:
    """``(b_ih + (b_hr, b_hz, 0), b_hn)``: b_hr and b_hz add to the input projection, b_hn sits
    inside ``r * (h W_hn^T + b_hn)``."""
    if b_ih is None or b_hh is None:
        return torch.zeros(3 * hidden), torch.zeros(hidden)
    bias = b_ih.detach().float().clone()
    bias[: 2 * hidden] += b_hh.detach()[: 2 * hidden]
    return bias, b_hh.detach()[2 * hidden :].float().contiguous()


class _Forward(NamedTuple):
    """One C++ forward pass over ``count`` layers, and what its backward pass would need."""

    output: Tensor  # (B, T, count * H) float: every layer's states at their positions
    inputs: list[Tensor]  # the time-major inputs in the product dtype
    kept: list[list[Tensor]]  # what the C++ forward kept per layer
    w_ih: list[Tensor]  # W_ih per layer, in the product dtype
    w_hh: list[Tensor]  # W_hh per layer, in the product dtype


def _forward(
    kind: str,
    dtype: torch.dtype,
    inputs: Sequence[Tensor],
    parameters: Sequence[Tensor | None],
    positions: list[Tensor],
    keep: bool,
) -> _Forward:
    """Run the layers' time loops; ``keep=False`` (inference) keeps no gates for a backward pass."""
    layers = [parameters[4 * i : 4 * i + 4] for i in range(len(inputs))]
    x_tm = [_time_major_as(x, dtype) for x in inputs]
    w_ih_low = [w_ih.detach().to(dtype) for w_ih, _, _, _ in layers]
    w_hh_low = [w_hh.detach().to(dtype) for _, w_hh, _, _ in layers]
    projections = [torch.matmul(x, w.t()) for x, w in zip(x_tm, w_ih_low, strict=True)]
    w_hh_t = [w.t().contiguous() for w in w_hh_low]
    ext = extension()
    biases = _cell_biases(kind, layers)
    if kind == "lstm":
        output, kept = ext.lstm_forward(projections, *biases, w_hh_t, positions, keep)  # gates, c, h_low
    elif kind == "gru":
        output, kept = ext.gru_forward(projections, *biases, w_hh_t, positions, keep)  # gates, h, hn, h_low
    else:
        relu = kind == "rnn_relu"
        output, kept = ext.rnn_forward(projections, *biases, w_hh_t, positions, relu)  # h, h_low
    return _Forward(output, x_tm, kept, w_ih_low, w_hh_low)


def _cell_biases(kind: str, layers: Sequence[Sequence[Tensor | None]]) -> list[list[Tensor]]:
    """The bias arguments of ``kind``'s C++ forward, one entry per layer in each: the summed biases
    (LSTM, RNN), or the GRU's input-side biases and its ``b_hn`` (see :func:`_gru_biases`)."""
    hidden = layers[0][1].size(1)  # W_hh is (gates * H, H)
    if kind == "gru":
        pairs = [_gru_biases(b_ih, b_hh, hidden) for _, _, b_ih, b_hh in layers]
        return [[b for b, _ in pairs], [n for _, n in pairs]]
    width = 4 * hidden if kind == "lstm" else hidden
    return [[_summed_bias(b_ih, b_hh, width) for _, _, b_ih, b_hh in layers]]


def int8_columns(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """``matrix`` (K, N) as int8 and one float scale per column: ``matrix ~ int8 * scale``."""
    scale = matrix.abs().amax(dim=0).clamp(min=1e-12) / 127
    quantized = torch.round(matrix / scale).clamp(-127, 127).to(torch.int8)
    return quantized.contiguous(), scale.float().contiguous()


def _forward_int8(
    kind: str, inputs: Sequence[Tensor], parameters: Sequence[Tensor | None], positions: list[Tensor]
) -> Tensor:
    """Int8 inference: the layers' output (B, T, count * H) float. The recurrent weights are int8 per
    column and the states rounded to 8 bits in the step products; the input projection of all steps
    runs in bfloat16 where the CPU has it natively (faster there than int8), else in float32."""
    dtype = torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32
    layers = [parameters[4 * i : 4 * i + 4] for i in range(len(inputs))]
    projections = [
        torch.matmul(_time_major_as(x, dtype), w_ih.detach().to(dtype).t())
        for x, (w_ih, _, _, _) in zip(inputs, layers, strict=True)
    ]
    weights = [int8_columns(w_hh.detach().float().t()) for _, w_hh, _, _ in layers]
    ext = extension()
    forward = {"lstm": ext.lstm_forward_int8, "gru": ext.gru_forward_int8}.get(kind, ext.rnn_forward_int8)
    biases = _cell_biases(kind, layers)
    return forward(projections, *biases, [w for w, _ in weights], [s for _, s in weights], positions)


class _Recurrence(torch.autograd.Function):
    """``count`` layers of one cell over as many inputs, all time loops in one C++ call.

    Arguments after ``(kind, dtype, count, positions)``: the ``count`` inputs, then per layer
    ``W_ih, W_hh, b_ih, b_hh`` (biases may be None). The input projection of all steps, the input
    gradient and both weight gradients are single large products here; the C++ loop does the steps.
    """

    @staticmethod
    def forward(ctx, kind, dtype, count, positions, *args):  # type: ignore[override]
        inputs, parameters = args[:count], args[count:]
        ctx.kind, ctx.count, ctx.input_dtype, ctx.positions = kind, count, inputs[0].dtype, positions
        run = _forward(kind, dtype, inputs, parameters, positions, keep=True)
        ctx.save_for_backward(*run.w_ih, *run.w_hh)
        ctx.buffers = (run.inputs, run.kept)
        return run.output

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        count, kind, positions = ctx.count, ctx.kind, ctx.positions
        x_tm, kept = ctx.buffers
        w_ih_low, w_hh_low = ctx.saved_tensors[:count], ctx.saved_tensors[count:]
        grad = grad_output.float().contiguous()
        ext = extension()
        if kind == "lstm":
            gates, cells = [k[0] for k in kept], [k[1] for k in kept]
            back = ext.lstm_backward(grad, positions, gates, cells, list(w_hh_low))
            per_layer = [(dpre, dpre, bias, bias) for dpre, bias in back]
            h_low = [k[2] for k in kept]
        elif kind == "gru":
            gates, hns, states = [k[0] for k in kept], [k[2] for k in kept], [k[1] for k in kept]
            back = ext.gru_backward(grad, positions, gates, hns, states, list(w_hh_low))
            per_layer = [(d_hidden, d_input, b_ih, b_hh) for d_hidden, d_input, b_hh, b_ih in back]
            h_low = [k[3] for k in kept]
        else:
            back = ext.rnn_backward(grad, positions, [k[0] for k in kept], list(w_hh_low), kind == "rnn_relu")
            per_layer = [(dpre, dpre, bias, bias) for dpre, bias in back]
            h_low = [k[1] for k in kept]
        needs = ctx.needs_input_grad
        grad_inputs: list[Tensor | None] = []
        grad_parameters: list[Tensor | None] = []
        for i, (d_hidden, d_input, b_ih_grad, b_hh_grad) in enumerate(per_layer):
            at = 4 + count + 4 * i  # position of this layer's W_ih among forward's arguments
            steps, batch, width = d_input.shape
            flat = d_input.view(steps * batch, width)
            grad_x = grad_w_ih = grad_w_hh = None
            if needs[4 + i]:
                grad_x = (flat @ w_ih_low[i]).view(steps, batch, -1).transpose(0, 1).to(ctx.input_dtype)
            if needs[at]:
                grad_w_ih = (flat.t() @ x_tm[i].view(steps * batch, -1)).float()
            if needs[at + 1]:  # dW_hh = sum_t d_t^T h_{t-1}, one product over all steps
                hidden = h_low[i].size(-1)
                grad_w_hh = (d_hidden.view(-1, width).t() @ h_low[i][:-1].reshape(-1, hidden)).float()
            grad_inputs.append(grad_x)
            grad_parameters += [
                grad_w_ih,
                grad_w_hh,
                b_ih_grad if needs[at + 2] else None,
                b_hh_grad if needs[at + 3] else None,
            ]
        return None, None, None, None, *grad_inputs, *grad_parameters
