"""Models by name: the built-in rnn/lstm/gru, user models registered with a decorator, and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit.config import ModelConfig, load_config
from rnnkit.errors import ConfigError
from rnnkit.models import (
    GRUClassifier,
    LSTMClassifier,
    RNNClassifier,
    available,
    build_model,
    register_model,
    registry,
)


@pytest.fixture
def clean_registry(monkeypatch):
    """Registrations made by a test disappear after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


class BagOfEmbeddings(nn.Module):
    """A user's own model: mean of the token vectors, times ``scale``, to logits."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int, scale: float) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, dim, padding_idx=0)
        self.out = nn.Linear(dim, num_classes)
        self.scale = scale

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.out(self.embedding(token_ids) * self.scale)


def test_the_three_built_in_models_are_available():
    assert {"rnn", "lstm", "gru"} <= set(available())
    assert available() == sorted(available())


@pytest.mark.parametrize(
    ("name", "cls"), [("rnn", RNNClassifier), ("lstm", LSTMClassifier), ("gru", GRUClassifier)]
)
def test_build_model_makes_each_built_in_model_from_its_config_section(name, cls):
    cfg = ModelConfig(
        name=name, hidden_size=7, num_layers=2, bidirectional=True, pooling="mean", head_hidden=5
    )
    model = build_model(cfg, vocab_size=40, num_classes=3, embedding_dim=8)
    assert type(model) is cls
    assert model.hparams == {
        "vocab_size": 40,
        "num_classes": 3,
        "embedding_dim": 8,
        "hidden_size": 7,
        "num_layers": 2,
        "bidirectional": True,
        "pooling": "mean",
        "embedding_dropout": 0.0,
        "dropout": 0.0,
        "weight_drop": 0.0,
        "unit_forget_bias": False,
        "head_dropout": 0.0,
        "head_hidden": 5,
        "freeze_embeddings": False,
        "kernel": "auto",
    }
    assert model(torch.tensor([[4, 5, 0]]), torch.tensor([2])).shape == (1, 3)


def test_build_model_takes_the_embedding_width_from_pretrained_vectors_and_can_freeze_them():
    vectors = torch.randn(40, 11)
    model = build_model(
        ModelConfig(name="gru"), vocab_size=40, num_classes=3, embeddings=vectors, freeze_embeddings=True
    )
    assert torch.equal(model.embedder.embedding.weight, vectors)
    assert not model.embedder.embedding.weight.requires_grad


def test_an_unknown_model_name_suggests_the_nearest_registered_one():
    with pytest.raises(ConfigError, match=r"'lstn' is not a registered model; did you mean 'lstm'\?"):
        build_model(ModelConfig(name="lstn"), vocab_size=10, num_classes=2)


def test_a_user_model_registered_with_the_decorator_is_built_from_a_yaml_config(clean_registry, tmp_path):
    @register_model("bag_of_embeddings")
    def bag_of_embeddings(
        cfg, *, vocab_size, num_classes, embedding_dim, embeddings, freeze_embeddings, scale=1.0
    ):
        return BagOfEmbeddings(vocab_size, num_classes, embedding_dim, scale)

    config_file = tmp_path / "bag.yaml"
    config_file.write_text(
        "model:\n  name: bag_of_embeddings\n  options:\n    scale: 0.5\n", encoding="utf-8"
    )
    cfg = load_config(config_file)

    model = build_model(cfg.model, vocab_size=50, num_classes=4, embedding_dim=12)
    assert "bag_of_embeddings" in available()
    assert isinstance(model, BagOfEmbeddings)
    assert model.scale == 0.5 and model.embedding.embedding_dim == 12
    assert model(torch.tensor([[1, 2, 0]]), torch.tensor([2])).shape == (1, 4)


def test_register_model_returns_the_factory_unchanged(clean_registry):
    def factory(cfg, **kwargs):
        return nn.Identity()

    assert register_model("identity")(factory) is factory


def test_a_name_cannot_be_registered_twice(clean_registry):
    with pytest.raises(ValueError, match="'lstm' is already registered"):
        register_model("lstm")(lambda cfg, **kwargs: nn.Identity())


def test_an_option_the_model_does_not_take_is_a_config_error():
    with pytest.raises(ConfigError, match="unexpected keyword argument 'width'"):
        build_model(ModelConfig(name="lstm", options={"width": 3}), vocab_size=10, num_classes=2)


def test_options_cannot_override_what_rnnkit_passes_itself():
    with pytest.raises(ConfigError, match=r"model\.options\.vocab_size is set by rnnkit"):
        build_model(ModelConfig(name="lstm", options={"vocab_size": 3}), vocab_size=10, num_classes=2)
