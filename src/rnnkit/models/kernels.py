"""The recurrence itself: one single-layer, unidirectional, batch-first pass over padded inputs.

Encoders call :func:`run_recurrent` for every layer and direction, so a faster implementation of
the time loop can be swapped in here without touching the model code.
"""

from __future__ import annotations

from torch import Tensor, nn

KERNELS = ("auto", "native")


def run_recurrent(module: nn.RNNBase, inputs: Tensor, kernel: str = "auto") -> Tensor:
    """Return the hidden state of every time step, shape ``(batch, time, hidden)``.

    ``module`` is a single-layer, unidirectional ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` built with
    ``batch_first=True``; its parameters are the ones used, whatever the kernel.
    """
    outputs, _ = module(inputs)
    return outputs
