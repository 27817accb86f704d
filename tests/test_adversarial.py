"""``train.adversarial_epsilon``: each step also learns at embeddings moved up the loss gradient (FGM)."""

from __future__ import annotations

import pytest
import torch
from test_trainer import cli_args, tiny_settings, train_in, train_losses, write_corpus
from torch import nn
from torch.nn import functional as F

from rnnkit.cli import main
from rnnkit.config import load_config
from rnnkit.errors import ConfigError
from rnnkit.models import GRUClassifier
from rnnkit.training import Callback, experiment
from rnnkit.training.adversarial import EmbeddingAdversary

LENGTHS = torch.tensor([6, 3, 5, 2])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 40, (len(LENGTHS), int(LENGTHS.max())), generator=generator)
    ids[torch.arange(ids.shape[1]) >= LENGTHS[:, None]] = 0  # padding
    return ids, torch.tensor([0, 1, 2, 1])


def tiny_model(**options) -> nn.Module:
    torch.manual_seed(0)
    model = GRUClassifier(40, 3, embedding_dim=6, hidden_size=5, bidirectional=True, pooling="max", **options)
    return model.eval()


def losses_at(model: nn.Module, adversary: EmbeddingAdversary, delta: torch.Tensor | None = None):
    ids, labels = padded_batch()
    if delta is None:
        return F.cross_entropy(model(ids, LENGTHS), labels, reduction="none")
    handle = adversary.embedder.register_forward_hook(lambda module, inputs, output: output + delta)
    try:
        return F.cross_entropy(model(ids, LENGTHS), labels, reduction="none")
    finally:
        handle.remove()


def watched_perturbation(model: nn.Module, epsilon: float) -> tuple[EmbeddingAdversary, torch.Tensor]:
    adversary = EmbeddingAdversary(model, epsilon)
    with adversary.watch():
        losses = losses_at(model, adversary)
    losses.sum().backward()
    return adversary, adversary.perturbation()


def test_each_document_is_moved_epsilon_and_only_on_its_real_tokens():
    _, delta = watched_perturbation(tiny_model(), epsilon=0.3)
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((4,), 0.3))
    padding = torch.arange(delta.shape[1]) >= LENGTHS[:, None]
    assert delta[padding].abs().max() == 0  # padding-exact models give padding no gradient


def test_the_move_raises_every_documents_loss_more_than_random_moves_of_the_same_length():
    model = tiny_model()
    adversary, delta = watched_perturbation(model, epsilon=0.3)
    with torch.no_grad():
        clean, attacked = losses_at(model, adversary), losses_at(model, adversary, delta)
        generator = torch.Generator().manual_seed(1)
        random_gains = []
        for _ in range(20):
            noise = torch.randn(delta.shape, generator=generator) * (delta != 0)
            noise = 0.3 * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1)
            random_gains.append(losses_at(model, adversary, noise) - clean)
    assert (attacked > clean).all()
    assert ((attacked - clean) > torch.stack(random_gains).max(dim=0).values).all()


def test_frozen_vectors_are_perturbed_too():
    model = tiny_model(freeze_embeddings=True)
    _, delta = watched_perturbation(model, epsilon=0.3)
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((4,), 0.3))
    assert model.embedder.embedding.weight.grad is None


def test_a_model_without_an_embedder_is_a_config_error():
    with pytest.raises(ConfigError, match=r"has none; set train\.adversarial_epsilon=0"):
        EmbeddingAdversary(nn.Linear(3, 3), 1.0)


def test_an_adversarial_run_trains_on_another_loss_and_repeats_exactly(tmp_path):
    plain = train_in(tmp_path / "plain")
    first = train_in(tmp_path / "first", **{"train.adversarial_epsilon": 1.0})
    again = train_in(tmp_path / "again", **{"train.adversarial_epsilon": 1.0})
    assert train_losses(first) != train_losses(plain)
    assert train_losses(first) == train_losses(again)


def test_no_hook_is_left_on_the_model(tmp_path):
    class HooksAfterTraining(Callback):
        def on_fit_end(self, trainer) -> None:
            self.hooks = dict(trainer.raw_model.embedder._forward_hooks)
            self.steps = trainer.global_step

    corpus = write_corpus(tmp_path / "corpus.csv")
    check = HooksAfterTraining()
    cfg = load_config(None, tiny_settings(corpus, **{"train.adversarial_epsilon": 1.0}))
    experiment.train(cfg, tmp_path / "run", callbacks=[check])
    assert check.steps > 0
    assert check.hooks == {}


def test_with_torch_compile_it_is_refused_before_the_run_folder_is_made(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.csv")
    settings = tiny_settings(corpus, **{"train.adversarial_epsilon": 1.0, "train.compile": True})
    assert main(["train", "-q", "--run-dir", str(tmp_path / "run"), *cli_args(settings)]) == 2
    assert "set train.compile=false or train.adversarial_epsilon=0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_negative_epsilon_is_a_config_error(tmp_path, capsys):
    settings = tiny_settings(tmp_path / "unused.csv", **{"train.adversarial_epsilon": -1})
    assert main(["train", "--run-dir", str(tmp_path / "run"), *cli_args(settings)]) == 2
    assert "train.adversarial_epsilon" in capsys.readouterr().err


@pytest.mark.parametrize(
    "setting", [{"train.embedding_update": "rows"}, {"embeddings.freeze": True}], ids=["rows", "frozen"]
)
def test_it_combines_with_row_updates_and_frozen_vectors(tmp_path, setting):
    plain = train_in(tmp_path / "plain", **setting)
    adversarial = train_in(tmp_path / "adversarial", **setting, **{"train.adversarial_epsilon": 1.0})
    assert train_losses(adversarial) != train_losses(plain)
