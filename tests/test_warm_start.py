"""train.init_from / --init-from: a new run starts from a trained run's weights where they fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_trainer as trainer_tests
import torch

from rnnkit.cli import main
from rnnkit.data import Vocabulary
from rnnkit.errors import ConfigError
from rnnkit.models import GRUClassifier
from rnnkit.runs import open_run
from rnnkit.training.warm_start import warm_start


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A tiny trained GRU (hidden 8, embedding 8) over the generated topic corpus."""
    return trainer_tests.train_tiny_run(tmp_path_factory.mktemp("source"))


def fresh_model(vocab: Vocabulary, num_classes: int, hidden_size: int = 8) -> GRUClassifier:
    torch.manual_seed(123)
    return GRUClassifier(len(vocab), num_classes, embedding_dim=8, hidden_size=hidden_size, pooling="last")


def test_shared_words_keep_their_vectors_and_the_encoder_and_head_are_copied(source):
    trained = open_run(source)
    shared = trained.vocab.itos[2:6]
    vocab = Vocabulary(["<pad>", "<unk>", "brand-new-word", *shared])
    model = fresh_model(vocab, len(trained.label_names))
    fresh_new_word = model.state_dict()["embedder.embedding.weight"][2].clone()
    warm_start(model, source, vocab, trained.label_names)
    ours, theirs = model.state_dict(), trained.model.state_dict()
    for i, token in enumerate(shared, start=3):
        assert torch.equal(
            ours["embedder.embedding.weight"][i],
            theirs["embedder.embedding.weight"][trained.vocab.stoi[token]],
        )
    assert torch.equal(ours["embedder.embedding.weight"][2], fresh_new_word)  # new to the source run
    for name in theirs:
        if not name.startswith("embedder."):
            assert torch.equal(ours[name], theirs[name]), name


def test_another_label_list_gets_a_new_head(source):
    trained = open_run(source)
    model = fresh_model(trained.vocab, 2)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    warm_start(model, source, trained.vocab, ["yes", "no"])
    ours, theirs = model.state_dict(), trained.model.state_dict()
    assert all(torch.equal(ours[name], tensor) for name, tensor in fresh_head.items())
    assert torch.equal(
        ours["encoder.layers.0.directions.0.weight_hh_l0"],
        theirs["encoder.layers.0.directions.0.weight_hh_l0"],
    )


def test_another_hidden_size_is_one_line_naming_the_parameter(source):
    trained = open_run(source)
    with pytest.raises(ConfigError, match=r"encoder\..* has shape .* there and .* here"):
        warm_start(
            fresh_model(trained.vocab, len(trained.label_names), hidden_size=16),
            source,
            trained.vocab,
            trained.label_names,
        )


def test_the_cli_trains_a_new_run_from_a_trained_one(source, tmp_path, capsys):
    corpus = trainer_tests.write_corpus(tmp_path / "more.csv", docs=90, seed=5)
    settings = trainer_tests.cli_args(trainer_tests.tiny_settings(corpus))
    assert main(["train", "--run-dir", str(tmp_path / "new"), "--init-from", str(source), *settings]) == 0
    assert "tensors copied; head kept" in capsys.readouterr().err
    assert open_run(tmp_path / "new").config.train.init_from == str(source.resolve())
    assert (
        main(["train", "--run-dir", str(tmp_path / "x"), "--init-from", str(tmp_path / "nothing"), *settings])
        == 2
    )
    assert "not an rnnkit run folder" in capsys.readouterr().err
    assert main(["train", "--resume", str(source), "--init-from", str(source)]) == 2
