"""Seq2vec poolers: per-step encoder outputs to one vector per text, ignoring padding.

Each pooler takes ``outputs`` ``(batch, time, dim)`` and ``lengths`` ``(batch,)`` and returns
``(batch, dim)`` computed from positions ``t < length`` only, so padding never changes a result.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.models.sequence import padding_mask

POOLINGS = ("last", "mean", "max", "attention")


class LastPooling(nn.Module):
    """The final state of each direction: forward at ``length - 1``, reverse at position 0.

    The reverse direction reads the text backwards, so its final state (after the first token) is
    at position 0 once its outputs are back in reading order, never after the padding.
    """

    def __init__(self, hidden_size: int, bidirectional: bool) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional

    def forward(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, self.hidden_size)
        forward_state = outputs[..., : self.hidden_size].gather(1, last).squeeze(1)
        if not self.bidirectional:
            return forward_state
        return torch.cat([forward_state, outputs[:, 0, self.hidden_size :]], dim=1)


class MeanPooling(nn.Module):
    """The average over real tokens."""

    def forward(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        mask = padding_mask(lengths, outputs.size(1)).unsqueeze(2)
        total = outputs.masked_fill(~mask, 0.0).sum(dim=1)
        return total / lengths.unsqueeze(1).to(outputs.dtype)


class MaxPooling(nn.Module):
    """The feature-wise maximum over real tokens."""

    def forward(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        mask = padding_mask(lengths, outputs.size(1)).unsqueeze(2)
        return outputs.masked_fill(~mask, float("-inf")).amax(dim=1)


class AttentionPooling(nn.Module):
    """A learned weighted average: ``score_t = v . tanh(W h_t + b)``, softmax over real tokens.

    Additive attention with a learned context vector (Yang et al., 2016, "Hierarchical Attention
    Networks"): the model learns which steps matter instead of trusting the last or the average.
    Padding gets a score of ``-inf``, hence exactly zero weight.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.projection = nn.Linear(dim, dim)
        self.context = nn.Linear(dim, 1, bias=False)

    def weights(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        """``(batch, time)`` attention weights, summing to 1 over each text's real tokens."""
        scores = self.context(torch.tanh(self.projection(outputs))).squeeze(2)
        mask = padding_mask(lengths, outputs.size(1))
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=1)

    def forward(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        return torch.bmm(self.weights(outputs, lengths).unsqueeze(1), outputs).squeeze(1)


def build_pooling(name: str, hidden_size: int, bidirectional: bool) -> nn.Module:
    """The pooler called ``name`` for an encoder of ``hidden_size`` units per direction."""
    if name == "last":
        return LastPooling(hidden_size, bidirectional)
    if name == "mean":
        return MeanPooling()
    if name == "max":
        return MaxPooling()
    if name == "attention":
        return AttentionPooling(hidden_size * (2 if bidirectional else 1))
    raise ValueError(f"unknown pooling {name!r}; use one of {', '.join(POOLINGS)}")
