"""Recurrent encoder: embedded tokens to one output vector per time step, padding-exact.

Bidirectional and multi-layer encoders are built from single-layer, unidirectional torch modules
instead of one ``nn.LSTM(bidirectional=True, num_layers=n)``: the reverse direction then runs over
each sequence reversed *within its length* (see :func:`reverse_padded`), so no real position ever
depends on padding, and every pass is the plain padded forward recurrence that
:func:`rnnkit.models.kernels.run_recurrent` can speed up. ``pack_padded_sequence`` would give the
same numbers several times slower on CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.errors import ConfigError
from rnnkit.models.kernels import prepare, run_layer

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
"""Cell name -> torch module; ``nn.RNN`` is the Elman network with tanh."""


def open_forget_gate(lstm: nn.LSTM) -> None:
    """Set the forget gate's bias to 1 (``bias_ih`` 1, ``bias_hh`` 0; torch orders the gates i, f, g, o).

    torch draws every bias near 0, so a new LSTM forgets half its memory at each step; starting the
    gate open lets gradients reach tokens far back from the first epoch (Gers et al. 2000; Jozefowicz
    et al. 2015; Keras does this by default). The other weights keep torch's initialisation.
    """
    hidden = lstm.hidden_size
    with torch.no_grad():
        lstm.bias_ih_l0[hidden : 2 * hidden].fill_(1.0)
        lstm.bias_hh_l0[hidden : 2 * hidden].zero_()


class RecurrentLayer(nn.Module):
    """One layer: a forward pass and, if bidirectional, a within-length reversed pass, concatenated."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        bidirectional: bool,
        kernel: str,
        weight_drop: float = 0.0,
        unit_forget_bias: bool = False,
    ) -> None:
        super().__init__()
        if unit_forget_bias and cell != "lstm":
            raise ConfigError(
                f"unit_forget_bias (model.unit_forget_bias) opens the LSTM's forget gate, and a {cell} "
                "has none: leave it off, or use the LSTM"
            )
        num_directions = 2 if bidirectional else 1
        self.directions = nn.ModuleList(
            CELLS[cell](input_size, hidden_size, batch_first=True) for _ in range(num_directions)
        )
        if unit_forget_bias:
            for direction in self.directions:
                open_forget_gate(direction)
        self.kernel = kernel
        self.weight_drop = weight_drop

    def prepare_kernels(self) -> None:
        """Build the compiled CPU loop before training if ``kernel="auto"`` will train with it."""
        if self.kernel == "auto":
            for direction in self.directions:
                prepare(direction)

    def forward(self, inputs: Tensor, lengths: Tensor, *, weights_dropped: bool = False) -> Tensor:
        """``(batch, time, input_size)`` -> ``(batch, time, num_directions * hidden_size)``.

        In training with ``weight_drop``, the pass runs with dropped-out hidden-to-hidden weights put
        in the modules' place (``functional_call``), so every kernel reads them as the module's own
        and the gradient flows back to the real weights; ``weights_dropped`` marks that inner call.
        """
        if self.training and self.weight_drop > 0 and not weights_dropped:
            dropped = {
                f"directions.{i}.weight_hh_l0": F.dropout(direction.weight_hh_l0, self.weight_drop)
                for i, direction in enumerate(self.directions)
            }
            return torch.func.functional_call(self, dropped, (inputs, lengths), {"weights_dropped": True})
        return run_layer(self.directions, inputs, lengths, self.kernel)


class RecurrentEncoder(nn.Module):
    """A stack of :class:`RecurrentLayer` with dropout between layers (not after the last one) and,
    with ``weight_drop``, DropConnect on each layer's hidden-to-hidden weights in training.

    Output ``[..., :hidden_size]`` is the forward direction and ``[..., hidden_size:]`` the reverse
    one, already back in reading order: its summary of the whole text sits at position 0.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        unit_forget_bias: bool = False,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; use one of {', '.join(CELLS)}")
        num_directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            RecurrentLayer(
                cell,
                input_size if i == 0 else num_directions * hidden_size,
                hidden_size,
                bidirectional,
                kernel,
                weight_drop,
                unit_forget_bias,
            )
            for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)

    def prepare_kernels(self) -> None:
        """Build the compiled CPU loop before training if a layer will train with it."""
        for layer in self.layers:
            layer.prepare_kernels()

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """``(batch, time, input_size)`` -> ``(batch, time, output_size)``.

        ``lengths`` (``1 <= length <= time``) mark the real tokens; outputs at padding positions are
        finite but meaningless, and the poolers mask them out.
        """
        outputs = inputs
        for index, layer in enumerate(self.layers):
            if index > 0:
                outputs = self.dropout(outputs)
            outputs = layer(outputs, lengths)
        return outputs
