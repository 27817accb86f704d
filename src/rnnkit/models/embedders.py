"""Token embedder: token ids to vectors, the first stage of every classifier."""

from __future__ import annotations

from torch import Tensor, nn

PAD_ID = 0


class TokenEmbedder(nn.Module):
    """An ``nn.Embedding`` (``padding_idx=0``) with dropout, optionally holding pretrained vectors.

    ``pretrained`` (``vocab_size x dim``, rows aligned to the vocabulary) is copied in as is, so the
    caller decides what the padding and unknown rows hold. ``freeze=True`` keeps the vectors fixed:
    useful with good pretrained vectors and little training data.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        *,
        pretrained: Tensor | None = None,
        freeze: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pretrained is not None and tuple(pretrained.shape) != (vocab_size, embedding_dim):
            raise ValueError(
                f"pretrained embeddings have shape {tuple(pretrained.shape)}; "
                f"expected (vocab_size, embedding_dim) = ({vocab_size}, {embedding_dim})"
            )
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        if pretrained is not None:
            self.embedding.weight.data.copy_(pretrained.detach())
        self.embedding.weight.requires_grad_(not freeze)
        self.dropout = nn.Dropout(dropout)

    @property
    def output_size(self) -> int:
        return self.embedding.embedding_dim

    def forward(self, token_ids: Tensor) -> Tensor:
        """``(batch, time)`` ids -> ``(batch, time, embedding_dim)`` vectors."""
        return self.dropout(self.embedding(token_ids))
