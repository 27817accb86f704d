"""Embedding gradients as rows: the exact update on CPU (the default) and the opt-in lazy one (`rows`)."""

from __future__ import annotations

import pytest
import test_trainer as trainer_tests
import torch
from torch import nn

from rnnkit import distributed
from rnnkit.cli import main
from rnnkit.config import TrainConfig, load_config
from rnnkit.errors import ConfigError
from rnnkit.models import GRUClassifier
from rnnkit.models.embedders import TokenEmbedder, _row_gradient
from rnnkit.models.kernels import cpp_loop
from rnnkit.training import experiment
from rnnkit.training.embedding_rows import RowAdam, _coalesced, clip_grad_norm, use_row_gradients
from rnnkit.training.trainer import build_optimizer

IDS = torch.tensor([[3, 1, 3, 0], [5, 3, 0, 0]])  # id 0 is padding; 1, 3 and 5 occur


def embedding_grads(sparse: bool) -> torch.Tensor:
    torch.manual_seed(0)
    embedder = TokenEmbedder(8, 4)
    embedder.embedding.sparse = sparse
    out = embedder(IDS)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return embedder.embedding.weight.grad


def test_a_sparse_embedding_gradient_is_the_dense_one_on_the_batchs_rows():
    sparse, dense = embedding_grads(sparse=True), embedding_grads(sparse=False)
    assert sparse.is_sparse
    assert sparse._indices()[0].tolist() == [0, 1, 3, 5]  # one row per distinct id, padding's zero
    torch.testing.assert_close(sparse.to_dense(), dense, atol=0, rtol=0)


def model_and_optimizer(optimizer: str, rows: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(6, 3), nn.Linear(3, 2))
    cfg = TrainConfig(
        optimizer=optimizer, lr=0.1, weight_decay=0.05, embedding_update="rows" if rows else "dense"
    )
    return model, build_optimizer(cfg, model)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list[torch.Tensor]) -> None:
    for ids in batches:
        optimizer.zero_grad(set_to_none=True)
        model(ids).pow(2).sum().backward()
        optimizer.step()


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_when_every_row_is_in_each_batch_the_row_update_is_torchs_adam(optimizer):
    batches = [torch.tensor([0, 1, 2, 3, 4, 5, 2]), torch.tensor([5, 4, 3, 2, 1, 0])] * 2
    exact_model, exact = model_and_optimizer(optimizer, rows=False)
    rows_model, rows = model_and_optimizer(optimizer, rows=True)
    assert isinstance(rows, RowAdam) and rows_model[0].sparse
    train_steps(exact_model, exact, batches)
    train_steps(rows_model, rows, batches)
    for got, expected in zip(rows_model.parameters(), exact_model.parameters(), strict=True):
        torch.testing.assert_close(got, expected)


def test_rows_outside_the_batch_keep_their_weights_and_moments():
    model, optimizer = model_and_optimizer("adamw", rows=True)
    train_steps(model, optimizer, [torch.tensor([0, 1, 2, 3, 4, 5])])  # every row gets moments
    before = model[0].weight.detach().clone()
    moments = {key: optimizer.state[model[0].weight][key].clone() for key in ("exp_avg", "exp_avg_sq")}
    train_steps(model, optimizer, [torch.tensor([1, 4, 4])])
    after = model[0].weight.detach()
    untouched = [0, 2, 3, 5]
    torch.testing.assert_close(after[untouched], before[untouched], atol=0, rtol=0)
    assert not torch.equal(after[[1, 4]], before[[1, 4]])
    for key, saved in moments.items():
        torch.testing.assert_close(
            optimizer.state[model[0].weight][key][untouched], saved[untouched], atol=0, rtol=0
        )


def test_clipping_counts_a_sparse_gradient_as_its_dense_equivalent():
    torch.manual_seed(0)
    sparse_model = nn.Sequential(nn.Embedding(6, 3, sparse=True), nn.Linear(3, 2))
    dense_model = nn.Sequential(nn.Embedding(6, 3), nn.Linear(3, 2))
    dense_model.load_state_dict(sparse_model.state_dict())
    ids = torch.tensor([1, 4, 4, 2])  # repeated id: the uncoalesced gradient has two entries for row 4
    for model in (sparse_model, dense_model):
        model(ids).pow(2).sum().backward()
    sparse_norm = clip_grad_norm(sparse_model.parameters(), 0.5)
    dense_norm = nn.utils.clip_grad_norm_(dense_model.parameters(), 0.5)
    torch.testing.assert_close(sparse_norm, dense_norm)
    assert dense_norm > 0.5  # the clip did scale
    for got, expected in zip(sparse_model.parameters(), dense_model.parameters(), strict=True):
        torch.testing.assert_close(got.grad.to_dense(), expected.grad)


def test_only_trainable_embeddings_switch_to_row_gradients():
    frozen, trainable = TokenEmbedder(5, 2, freeze=True), TokenEmbedder(5, 2)
    assert use_row_gradients(nn.ModuleList([frozen, trainable])) == 1
    assert trainable.embedding.sparse and not frozen.embedding.sparse


def test_row_updates_need_adam():
    cfg = TrainConfig(embedding_update="rows", optimizer="sgd")
    with pytest.raises(ConfigError, match=r"set train\.optimizer to adam or adamw"):
        build_optimizer(cfg, GRUClassifier(8, 2, embedding_dim=4, hidden_size=4))


def test_row_updates_refuse_more_than_one_process(monkeypatch):
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    with pytest.raises(ConfigError, match="is for one process"):
        build_optimizer(
            TrainConfig(embedding_update="rows"), GRUClassifier(8, 2, embedding_dim=4, hidden_size=4)
        )


def test_a_run_with_row_updates_trains_resumes_exactly_and_is_evaluated_like_any_run(tmp_path):
    settings = {
        "epochs": 3,
        "lr": 0.1,
        "optimizer": "adamw",
        "embedding_update": "rows",
        "weight_decay": 0.01,
    }
    uninterrupted = trainer_tests.tiny_trainer(tmp_path / "a", [], **settings)
    uninterrupted.fit()
    first = trainer_tests.tiny_trainer(tmp_path / "b", [], **settings)
    first.train_epoch()
    first.end_epoch()
    resumed = trainer_tests.tiny_trainer(tmp_path / "c", [], **settings)
    resumed.load_state(first.state_checkpoint())
    resumed.fit()
    for (name, expected), got in zip(
        uninterrupted.raw_model.named_parameters(), resumed.raw_model.parameters(), strict=True
    ):
        torch.testing.assert_close(got, expected, atol=0, rtol=0, msg=name)

    corpus = trainer_tests.write_corpus(tmp_path / "corpus.csv")
    overrides = trainer_tests.tiny_settings(
        corpus, **{"train.embedding_update": "rows", "train.optimizer": "adam"}
    )
    metrics = experiment.train(load_config(overrides=overrides), tmp_path / "run")
    assert experiment.evaluate(tmp_path / "run", "test")["metrics"] == metrics["test"]


def test_the_cli_refuses_row_updates_with_sgd_in_one_line(tmp_path, capsys):
    corpus = trainer_tests.write_corpus(tmp_path / "corpus.csv")
    settings = trainer_tests.tiny_settings(
        corpus, **{"train.embedding_update": "rows", "train.optimizer": "sgd"}
    )
    assert main(["train", "--run-dir", str(tmp_path / "run"), *trainer_tests.cli_args(settings)]) == 2
    err = capsys.readouterr().err
    assert "train.embedding_update=rows" in err and "Traceback" not in err


def embedder_and_head(cfg: TrainConfig | None) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A padded embedder under a linear head, with rnnkit's optimizer for ``cfg`` or (None) torch's."""
    torch.manual_seed(0)
    model = nn.Sequential(TokenEmbedder(40, 6), nn.Flatten(), nn.Linear(18, 3))
    if cfg is not None:
        return model, build_optimizer(cfg, model)
    return model, torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1, fused=True)


def padded_batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 12, (5, 3), generator=generator) for _ in range(8)]  # ids 0 (padding) .. 11


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_on_cpu_the_exact_update_takes_row_gradients_and_moves_every_row_as_torchs_adam(optimizer):
    cfg = TrainConfig(optimizer=optimizer, lr=0.05, weight_decay=0.1)
    model, rows = embedder_and_head(cfg)
    assert isinstance(rows, RowAdam) and not rows.lazy and model[0].embedding.sparse
    reference, dense = embedder_and_head(None)
    if optimizer == "adam":
        dense = torch.optim.Adam(reference.parameters(), lr=0.05, weight_decay=0.1, fused=True)
    never_seen = model[0].embedding.weight[12:].detach().clone()  # the batches' ids are 0 .. 11
    train_steps(model, rows, padded_batches())
    train_steps(reference, dense, padded_batches())
    assert not torch.equal(model[0].embedding.weight[12:], never_seen)  # weight decay moves them too
    for got, expected in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, expected)


def test_without_the_compiled_kernels_the_exact_update_takes_the_dense_way(monkeypatch):
    monkeypatch.setattr(cpp_loop, "extension", lambda: None)
    model, rows = embedder_and_head(TrainConfig(optimizer="adamw", lr=0.05, weight_decay=0.1))
    reference, dense = embedder_and_head(None)
    train_steps(model, rows, padded_batches())
    train_steps(reference, dense, padded_batches())
    for got, expected in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, expected)


def test_the_compiled_row_gradient_is_torchs_unique_and_index_add_bit_for_bit(monkeypatch):
    if cpp_loop.extension() is None:
        pytest.skip("rnnkit's compiled kernels are unavailable here")
    ids = torch.tensor([[7, 0, 3, 7], [3, 3, 9, 0]])  # repeats, and padding (id 0) twice
    grad = torch.randn(ids.numel(), 5, generator=torch.Generator().manual_seed(0))
    compiled = _row_gradient(ids, grad, 12)
    monkeypatch.setattr(cpp_loop, "extension", lambda: None)
    reference = _row_gradient(ids, grad, 12)
    assert compiled.is_coalesced() and compiled._indices()[0].tolist() == [0, 3, 7, 9]
    torch.testing.assert_close(compiled._values(), reference._values(), atol=0, rtol=0)
    assert not compiled._values()[0].any()  # the padding row gets no gradient


def test_the_compiled_update_refuses_rows_out_of_order():
    kernels = cpp_loop.extension()
    if kernels is None:
        pytest.skip("rnnkit's compiled kernels are unavailable here")
    weight, m, v = torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2)
    with pytest.raises(RuntimeError, match="rows must be increasing"):
        kernels.adam_from_rows(
            weight, m, v, torch.tensor([2, 1]), torch.ones(2, 2), 0.1, 0.9, 0.999, 1e-8, 0.0, False, 1
        )


@pytest.mark.parametrize(
    "cfg, world_size",
    [(TrainConfig(compile=True), 1), (TrainConfig(), 2), (TrainConfig(optimizer="sgd"), 1)],
    ids=["compiled", "torchrun", "sgd"],
)
def test_the_embedding_keeps_its_dense_gradient_where_rows_cannot_go(monkeypatch, cfg, world_size):
    monkeypatch.setattr(distributed, "get_world_size", lambda: world_size)
    model = GRUClassifier(8, 2, embedding_dim=4, hidden_size=4)
    optimizer = build_optimizer(cfg, model)
    assert not isinstance(optimizer, RowAdam)
    assert not model.embedder.embedding.sparse


def test_rows_already_distinct_and_in_order_are_taken_as_coalesced_without_a_copy():
    values = torch.arange(6.0).view(3, 2)
    ordered = torch.sparse_coo_tensor(torch.tensor([[1, 4, 7]]), values, (9, 2), check_invariants=True)
    assert not ordered.is_coalesced()  # what autograd's accumulation hands over
    marked = _coalesced(ordered)
    assert marked.is_coalesced() and marked._values().data_ptr() == values.data_ptr()
    repeated = torch.sparse_coo_tensor(torch.tensor([[4, 1, 4]]), values, (9, 2), check_invariants=True)
    summed = _coalesced(repeated)
    assert summed._indices()[0].tolist() == [1, 4]
    torch.testing.assert_close(summed._values(), torch.tensor([[2.0, 3.0], [4.0, 6.0]]))
