"""The token embedder: ids to vectors, the padding row never learns, the CPU backward is exact."""

from __future__ import annotations

import torch
from torch import nn

from rnnkit.models.embedders import TokenEmbedder


def test_the_cpu_gradient_is_torchs_embedding_gradient_with_repeats_and_padding():
    torch.manual_seed(0)
    embedder = TokenEmbedder(12, 5)
    reference = nn.Embedding(12, 5, padding_idx=0)
    reference.weight.data.copy_(embedder.embedding.weight.data)
    ids = torch.tensor([[3, 3, 7, 0, 0], [1, 11, 3, 0, 0]])  # repeated ids, padding, <unk>
    grad_out = torch.randn(2, 5, 5)

    out = embedder(ids)
    out.backward(grad_out)
    expected = reference(ids)
    expected.backward(grad_out)

    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(embedder.embedding.weight.grad, reference.weight.grad)
    assert not embedder.embedding.weight.grad[0].any()


def test_frozen_vectors_and_inference_use_the_plain_lookup():
    frozen = TokenEmbedder(6, 3, pretrained=torch.randn(6, 3), freeze=True)
    ids = torch.tensor([[1, 2, 0]])
    assert frozen(ids).grad_fn is None
    with torch.no_grad():
        torch.testing.assert_close(TokenEmbedder(6, 3)(ids)[0, 2], torch.zeros(3))
