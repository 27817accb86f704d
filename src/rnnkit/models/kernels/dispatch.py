"""The dispatch policy: which implementation runs one recurrent layer, decided by measurement.

Encoders call :func:`run_layer` for every layer (:func:`run_recurrent` for each direction), so a
faster time loop is swapped in here without touching the model code. Three implementations compute the same
recurrence (same gate order, same parameters as the torch modules):

* ``native``: the torch module itself (oneDNN on CPU, cuDNN on CUDA): the reference;
* ``cpp_loop``: rnnkit's compiled C++ time loop (:mod:`~rnnkit.models.kernels.cpp_loop`), built
  once per machine: one matrix product and one fused, vectorised pass per step;
* ``python_loop``: the same loop in Python (:mod:`~rnnkit.models.kernels.python_loop`), where no
  C++ compiler is available.

Inputs are right-padded: a state at step ``t`` depends only on steps ``<= t``, so positions
before a sequence's length are exact whatever the padding holds, and padding positions stay finite
because they are computed from finite embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError
from rnnkit.models.kernels import cpp_loop, python_loop
from rnnkit.models.sequence import reverse_padded, reversed_positions
from rnnkit.runtime import denormals_flushed

KERNELS = ("auto", "native")
"""The values of ``model.kernel``: ``auto`` runs what :func:`choose_kernel` picks."""

INT8 = "int8"
"""The kernel of layers that :mod:`rnnkit.models.quantize` moved to the C++ loop's int8 step products."""


def run_recurrent(module: nn.RNNBase, inputs: Tensor, kernel: str = "auto") -> Tensor:
    """Return the hidden state of every time step, shape ``(batch, time, hidden)``.

    ``module`` is a single-layer, unidirectional ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` built with
    ``batch_first=True``; its parameters are the ones used, whatever the kernel. ``kernel="native"``
    always calls the module (the reference); ``"auto"`` runs what :func:`choose_kernel` picks;
    :data:`INT8` (set by quantisation) the loop's int8 products.
    """
    if kernel == INT8:
        return cpp_loop.run(module, inputs, torch.int8)
    if kernel not in KERNELS:
        raise ConfigError(f"model.kernel={kernel!r} is not a kernel; use one of {', '.join(KERNELS)}")
    chosen = choose_kernel(module, inputs) if kernel == "auto" else "native"
    if chosen == "cpp_loop":
        return cpp_loop.run(module, inputs)
    if chosen == "python_loop":
        return python_loop.run(module, inputs)
    outputs, _ = module(inputs)
    return outputs


def run_layer(modules: Sequence[nn.RNNBase], inputs: Tensor, lengths: Tensor, kernel: str = "auto") -> Tensor:
    """One layer's states ``(batch, time, directions * hidden)``: ``run_recurrent`` of its one
    module, or of a bidirectional layer's two, the second over each sequence reversed within its
    length (:func:`~rnnkit.models.sequence.reverse_padded`) and its states put back in reading order.

    Where both directions run on the C++ loop, they run in one call, side by side on the threads,
    and the loop writes the reverse direction's states back in reading order itself.
    """
    if len(modules) == 1:
        return run_recurrent(modules[0], inputs, kernel)
    reversed_inputs = reverse_padded(inputs, lengths)
    on_loop = kernel == INT8 or (
        kernel == "auto" and {choose_kernel(m, inputs) for m in modules} == {"cpp_loop"}
    )
    if on_loop:
        positions = [None, reversed_positions(lengths, inputs.size(1))]
        dtype = torch.int8 if kernel == INT8 else None
        return cpp_loop.run_directions(modules, [inputs, reversed_inputs], dtype, positions)
    forwards, backwards = (
        run_recurrent(m, x, kernel) for m, x in zip(modules, [inputs, reversed_inputs], strict=True)
    )
    return torch.cat([forwards, reverse_padded(backwards, lengths)], dim=2)


def choose_kernel(module: nn.RNNBase, inputs: Tensor) -> str:
    """``"cpp_loop"``, ``"python_loop"`` or ``"native"``: the fastest path for ``module``, as measured on CPU.

    Measured on 20 Newsgroups-sized batches (batch 64, 280 steps, one layer of 128 units over
    100-dim inputs, forward and backward, rnnkit's runtime settings) on a 2-core AMD EPYC (Zen 5):

    * inference of ``nn.LSTM``: the module (oneDNN's forward: 26 ms against the C++ loop's 29 under
      bfloat16, 43 against 96 in float32, at batch 256);
    * inference of ``nn.GRU`` and ``nn.RNN``: the C++ loop, keeping no gates for a backward pass
      (at batch 256: GRU 25 ms against the module's 62 under bfloat16, 73 against 97 in float32;
      SimpleRNN 12 against 23, and 28 against 38); without a compiler, the module;
    * training ``nn.LSTM``: the module (oneDNN's fused LSTM: 42 ms against the C++ loop's 80 ms
      in float32) while denormal floats are flushed (``train.flush_denormal``, the default); when
      they are not, its backward can slow down ~10x on long documents, so a loop is used then.
      Under bfloat16 autocast the loop's own step product wins for one direction (a whole training
      step: 526k-553k tokens/s against 431k-472k in three alternating pairs, 254 steps) and, with
      the two directions side by side on the threads, for two: whole training steps of the
      benchmark's bidirectional model on 20 Newsgroups batches, alternating in one process, 296k-311k
      tokens/s against oneDNN's 234k-236k in three processes and 302k in a fourth (oneDNN's speed
      changes from process to process; the loop's does not). So under bfloat16 an LSTM trains on it;
    * training ``nn.GRU`` and ``nn.RNN``: the C++ loop (GRU 61 ms against the module's 100 in
      float32, 28 against 76 under bfloat16; RNN 22 against 36, and 16 against 30); without a
      compiler, the Python loop for ``nn.RNN`` in full precision, else the module;
    * CUDA, and while tracing (``rnnkit export``): the module.
    """
    training = cpp_loop.needs_backward([inputs], module.parameters())
    mixed_precision = torch.is_autocast_enabled("cpu")
    if inputs.device.type != "cpu" or torch.jit.is_tracing():
        return "native"  # a trace (ONNX, TorchScript export) records the module, never the loop
    bfloat16 = cpp_loop.compute_dtype() == torch.bfloat16
    if isinstance(module, nn.LSTM) and (not training or _trains_on_onednn(module, bfloat16)):
        return "native"
    if cpp_loop.supports(module, inputs) and cpp_loop.extension() is not None:
        return "cpp_loop"
    if not training:
        return "native"
    if not mixed_precision and python_loop.supports(module, inputs):  # float32/float64 only
        return "python_loop"
    return "native"


def prepare(module: nn.RNNBase) -> None:
    """Build the C++ loop now if ``module`` is on the CPU, where training or running it may use it
    (see :func:`choose_kernel`: every cell trains on it under bfloat16 autocast, rnnkit's default).

    The build takes ~20 s once per machine; called before training or when a run is opened for
    prediction, it is a log line of its own instead of a stall inside the first step or request.
    """
    if module.weight_hh_l0.device.type == "cpu":
        cpp_loop.extension()


def _trains_on_onednn(module: nn.RNNBase, bfloat16: bool) -> bool:
    """oneDNN's fused LSTM beats the loops on CPU in float32 while denormals are flushed; with
    bfloat16 products the loop's own step product wins (see choose_kernel)."""
    return isinstance(module, nn.LSTM) and denormals_flushed() and not bfloat16
