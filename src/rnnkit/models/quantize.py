"""Dynamic int8 quantisation of a trained classifier, for faster CPU inference.

``torch.ao.quantization.quantize_dynamic`` stores the weights of the recurrent layers (``nn.LSTM``,
``nn.GRU``) and the linear layers (head, attention scorer) as int8 and quantises their inputs on the
fly, batch by batch: no calibration data is needed and the maths of the model is otherwise the same.
It is the int8 path PyTorch has for recurrent layers (torchao's newer one quantises ``nn.Linear``
only, and the recurrences are where the time goes). The embedding stays float32 (a lookup does no
arithmetic to save), so does ``nn.RNN``, which has no dynamic int8 version. CPU only, inference
only: the result has no trainable weights of its layers.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from rnnkit.errors import ConfigError

__all__ = ["QUANTIZED_LAYERS", "quantize_dynamic_int8"]

QUANTIZED_LAYERS: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU, nn.Linear)
"""The layer types given int8 weights."""


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of ``model`` (on the CPU, in eval mode); ``model`` itself is left as it was."""
    if torch.backends.quantized.engine == "none":
        engines = torch.backends.quantized.supported_engines
        raise ConfigError(f"this PyTorch build has no int8 CPU engine ({engines}); run without --quantize")
    float_model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao, which has no int8 LSTM/GRU yet.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(
            float_model, set(QUANTIZED_LAYERS), dtype=torch.qint8, inplace=True
        )
    return quantized.eval()
