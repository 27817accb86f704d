"""Token embedder: token ids to vectors, the first stage of every classifier."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.models.kernels import cpp_loop

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
        self.embedding = _CpuFastEmbedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
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


class _CpuFastEmbedding(nn.Embedding):
    """``nn.Embedding`` whose CPU training pass uses ``_CpuEmbedding``'s faster backward.

    Still the embedding module itself (not a function called beside it), so forward hooks on it
    - Captum's layer attributions in ``rnnkit explain`` - see its output.
    """

    def forward(self, token_ids: Tensor) -> Tensor:
        weight = self.weight
        if weight.device.type == "cpu" and weight.requires_grad and torch.is_grad_enabled():
            return _CpuEmbedding.apply(token_ids, weight, self.sparse)
        return super().forward(token_ids)


class _CpuEmbedding(torch.autograd.Function):
    """``nn.functional.embedding(ids, weight, padding_idx=0)`` with a faster CPU backward.

    The gradient is the same sum of the output gradients per id (the padding row gets none), made
    as one ``index_add_`` into a zeroed matrix. PyTorch's CPU backward instead walks all ids once
    per slice of 1,000 vocabulary rows: 2-4x slower for a 50,000-word vocabulary and a batch of
    64 x 280 tokens, and slower still with two threads on a busy machine (measured: 5.6 ms against
    2.3 ms on one thread).

    With ``sparse`` (``nn.Embedding(sparse=True)``, set where the optimizer takes row gradients:
    :mod:`rnnkit.training.embedding_rows`) the gradient holds only the rows of the batch's ids, as a
    sparse tensor: one row per distinct id, summed the same way.
    """

    @staticmethod
    def forward(ctx, token_ids: Tensor, weight: Tensor, sparse: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(token_ids)
        ctx.num_weights, ctx.sparse = weight.size(0), sparse
        return nn.functional.embedding(token_ids, weight, padding_idx=PAD_ID)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[None, Tensor, None]:  # type: ignore[override]
        (token_ids,) = ctx.saved_tensors
        width = grad_output.size(-1)
        if ctx.sparse:
            return None, _row_gradient(token_ids, grad_output.reshape(-1, width), ctx.num_weights), None
        grad = grad_output.new_zeros(ctx.num_weights, width)
        grad.index_add_(0, token_ids.reshape(-1), grad_output.reshape(-1, width))
        grad[PAD_ID] = 0
        return None, grad, None


def _row_gradient(token_ids: Tensor, grad: Tensor, num_weights: int) -> Tensor:
    """The embedding's gradient as a coalesced sparse tensor: one row per distinct id, in order."""
    kernels = cpp_loop.extension() if grad.device.type == "cpu" and grad.dtype == torch.float32 else None
    if kernels is not None:  # one pass over the ids, no sort
        rows, values = kernels.embedding_rows_grad(token_ids, grad, num_weights, PAD_ID)
    else:
        rows, positions = torch.unique(token_ids.reshape(-1), return_inverse=True)
        values = grad.new_zeros(rows.numel(), grad.size(1))
        values.index_add_(0, positions.reshape(-1), grad)
        values[rows == PAD_ID] = 0
    size = (num_weights, grad.size(1))
    return torch.sparse_coo_tensor(rows[None], values, size, check_invariants=False, is_coalesced=True)
