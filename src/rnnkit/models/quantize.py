"""Int8 quantisation of a trained classifier, for faster CPU inference.

Two int8 paths, both dynamic (no calibration data; the run folder is not touched):

* LSTM, GRU and SimpleRNN (tanh) layers run rnnkit's compiled time loop with int8 step products
  (:func:`rnnkit.models.kernels.cpp_loop.supports_int8`: CPUs with AVX512-VNNI): each recurrent
  weight matrix is int8 with one scale per column, and each state, which these cells keep in
  [-1, 1], is rounded to 8 bits for the next step's product. The input projection of all steps is
  one large product in bfloat16 where the CPU has it (there faster than int8), else in float32.
* Everything else that has int8 weights in ``torch.ao.quantization.quantize_dynamic``: recurrent
  layers where the int8 loop is not available (torch's int8 LSTM and GRU; a relu SimpleRNN has no
  int8 version and stays float32), and the linear layers (head, attention scorer). They quantise
  their inputs on the fly, batch by batch.

The embedding stays float32 (a lookup does no arithmetic to save). CPU only, inference only: the
result has no trainable weights of its quantised layers.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from rnnkit.errors import ConfigError
from rnnkit.models.encoders import RecurrentLayer
from rnnkit.models.kernels import INT8, cpp_loop

__all__ = ["QUANTIZED_LAYERS", "quantize_dynamic_int8"]

QUANTIZED_LAYERS: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU, nn.Linear)
"""The layer types torch's dynamic quantisation gives int8 weights where the int8 loop does not run."""


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of ``model`` (on the CPU, in eval mode); ``model`` itself is left as it was."""
    if torch.backends.quantized.engine == "none":
        engines = torch.backends.quantized.supported_engines
        raise ConfigError(f"this PyTorch build has no int8 CPU engine ({engines}); run without --quantize")
    float_model = copy.deepcopy(model).cpu().eval()
    looped = _run_on_int8_loops(float_model)
    torch_int8 = {
        name
        for name, module in float_model.named_modules()
        if isinstance(module, QUANTIZED_LAYERS) and name not in looped
    }
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao, which has no int8 LSTM/GRU yet.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(
            float_model, torch_int8, dtype=torch.qint8, inplace=True
        )
    return quantized.eval()


def _run_on_int8_loops(model: nn.Module) -> set[str]:
    """Switch the layers the int8 loop can run to it; returns the names of their cell modules."""
    looped: set[str] = set()
    for name, layer in model.named_modules():
        runs_auto = isinstance(layer, RecurrentLayer) and layer.kernel == "auto"
        if runs_auto and all(cpp_loop.supports_int8(direction) for direction in layer.directions):
            layer.kernel = INT8
            looped.update(f"{name}.directions.{i}" for i in range(len(layer.directions)))
    return looped
