"""The optimiser: exact fused Adam/AdamW by default; ``train.embedding_update: rows`` updates an
embedding matrix only in the rows that got a gradient and is otherwise the same Adam."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import LEARNS_THE_TOPICS, train_tiny_run
from torch import nn

from rnnkit.config import TrainConfig, load_config
from rnnkit.errors import ConfigError
from rnnkit.training.optimizers import RowwiseEmbeddingAdam, build_optimizer

VOCAB, DIM = 12, 4


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(VOCAB, DIM, padding_idx=0)
        self.head = nn.Linear(DIM, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(1))


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list[torch.Tensor]) -> None:
    for ids in batches:
        optimizer.zero_grad(set_to_none=True)
        model(ids).square().sum().backward()
        optimizer.step()


EVERY_ROW = [torch.arange(1, VOCAB).reshape(1, -1).repeat(2, 1) for _ in range(4)]  # no padding id
SOME_ROWS = [torch.tensor([[1, 2, 2, 0]]), torch.tensor([[3, 1, 0, 0]]), torch.tensor([[2, 2, 2, 2]])]


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_when_every_row_gets_a_gradient_the_row_wise_update_is_exact_adam(optimizer, weight_decay):
    exact, rowwise = Tiny(), Tiny()
    exact.embedding.padding_idx = rowwise.embedding.padding_idx = None  # row 0 gets a gradient too
    batches = [torch.arange(VOCAB).reshape(1, -1) for _ in range(4)]
    cfg = {"optimizer": optimizer, "lr": 0.05, "weight_decay": weight_decay}
    train_steps(exact, build_optimizer(TrainConfig(**cfg), exact), batches)
    train_steps(rowwise, build_optimizer(TrainConfig(**cfg, embedding_update="rows"), rowwise), batches)
    for (name, a), b in zip(exact.named_parameters(), rowwise.parameters(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


def test_rows_absent_from_every_batch_keep_their_weights_and_moments():
    model = Tiny()
    before = model.embedding.weight.detach().clone()
    optimizer = build_optimizer(TrainConfig(lr=0.05, embedding_update="rows"), model)
    assert isinstance(optimizer, RowwiseEmbeddingAdam)
    train_steps(model, optimizer, SOME_ROWS)
    touched = torch.tensor([1, 2, 3])
    untouched = torch.tensor([0, *range(4, VOCAB)])
    weight = model.embedding.weight.detach()
    assert torch.equal(weight[untouched], before[untouched])
    assert not torch.equal(weight[touched], before[touched])
    moments = optimizer.state[model.embedding.weight]
    assert moments["exp_avg"][untouched].abs().sum() == 0 and moments["exp_avg_sq"][untouched].sum() == 0
    # Dense Adam keeps moving row 3 after its only batch (momentum); the row-wise update does not.
    dense = Tiny()
    train_steps(dense, build_optimizer(TrainConfig(lr=0.05), dense), SOME_ROWS)
    assert not torch.equal(dense.embedding.weight[3], weight[3])


def test_the_row_wise_state_resumes_exactly_from_its_state_dict():
    straight, resumed = Tiny(), Tiny()
    cfg = TrainConfig(lr=0.05, optimizer="adamw", weight_decay=0.01, embedding_update="rows")
    train_steps(straight, build_optimizer(cfg, straight), SOME_ROWS + SOME_ROWS)
    first = build_optimizer(cfg, resumed)
    train_steps(resumed, first, SOME_ROWS)
    second = build_optimizer(cfg, resumed)
    second.load_state_dict(first.state_dict())
    train_steps(resumed, second, SOME_ROWS)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_frozen_embeddings_leave_only_the_exact_update():
    model = Tiny()
    model.embedding.weight.requires_grad_(False)
    optimizer = build_optimizer(TrainConfig(lr=0.05, embedding_update="rows"), model)
    assert [group["rowwise"] for group in optimizer.param_groups] == [False]
    train_steps(model, optimizer, SOME_ROWS)


def test_the_row_wise_update_needs_adam():
    with pytest.raises(ConfigError, match=r"embedding_update=rows .* adam or adamw"):
        load_config(None, ["train.embedding_update=rows", "train.optimizer=sgd"])


def test_a_run_with_row_wise_embedding_updates_learns(tmp_path):
    run = train_tiny_run(tmp_path, **LEARNS_THE_TOPICS, **{"train.embedding_update": "rows"})
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.8
