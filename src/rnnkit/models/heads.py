"""Classification head: a pooled text vector to class logits."""

from __future__ import annotations

from torch import Tensor, nn


class ClassifierHead(nn.Module):
    """Dropout, an optional ReLU hidden layer (``hidden_size > 0``), then a linear layer to logits.

    It returns logits, not probabilities: ``nn.functional.cross_entropy`` applies the log-softmax
    itself, and a softmax here would be applied twice. Use the classifier's ``predict_proba``.
    """

    def __init__(
        self, input_size: int, num_classes: int, *, hidden_size: int = 0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_size > 0:
            layers += [nn.Linear(input_size, hidden_size), nn.ReLU()]
            input_size = hidden_size
        layers.append(nn.Linear(input_size, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, pooled: Tensor) -> Tensor:
        """``(batch, input_size)`` -> ``(batch, num_classes)`` logits."""
        return self.layers(pooled)
