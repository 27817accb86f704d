"""``train.distill``: the network also learns the TF-IDF baseline's out-of-fold probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_baseline import VOCAB, random_documents
from test_trainer import cli_args, tiny_settings, train_in, train_losses
from test_training_multilabel import multilabel_settings, write_multilabel_corpus

from rnnkit import baseline as baseline_module
from rnnkit.baseline import out_of_fold_probabilities
from rnnkit.cli import main
from rnnkit.training import experiment


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def teach(train, seed: int = 0) -> np.ndarray:
    return out_of_fold_probabilities(
        train, random_documents(30, seed=9), VOCAB, 3, monitor="accuracy", seed=seed
    )


def test_each_training_document_is_scored_by_a_baseline_that_was_not_fitted_on_it(monkeypatch):
    train = random_documents(100, seed=0)
    real_fit, fitted_on = baseline_module.fit_baseline, []

    def recording_fit(part, validation, *args, **kwargs):
        fitted_on.append({id(document) for document in part[0]})
        return real_fit(part, validation, *args, **kwargs)

    real_scores = baseline_module.LinearBaseline.scores
    scored = []

    def recording_scores(self, sequences, vocab_size):
        scored.append(({id(document) for document in sequences}, fitted_on[-1]))
        return real_scores(self, sequences, vocab_size)

    monkeypatch.setattr(baseline_module, "fit_baseline", recording_fit)
    monkeypatch.setattr(baseline_module.LinearBaseline, "scores", recording_scores)
    probabilities = teach(train)

    assert len(fitted_on) == baseline_module.DISTILL_FOLDS
    assert all(not (held & fitted) for held, fitted in scored)
    assert set().union(*(held for held, _ in scored)) == {id(document) for document in train[0]}
    assert probabilities.shape == (100, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_the_teacher_is_the_same_for_a_seed_so_a_resumed_run_learns_the_same_targets():
    train = random_documents(100, seed=0)
    np.testing.assert_array_equal(teach(train, seed=1), teach(train, seed=1))
    assert not np.array_equal(teach(train, seed=1), teach(train, seed=2))  # other folds


def test_the_teacher_reads_the_documents_better_than_chance():
    train = random_documents(300, seed=0)
    probabilities = teach(train)
    assert (probabilities.argmax(axis=1) == train[1]).mean() > 0.6  # 3 classes: chance is 1/3


def test_a_class_with_a_single_document_gets_probability_zero_where_its_fold_never_saw_it():
    documents, labels = random_documents(60, seed=0)
    labels = labels.copy()
    labels[0] = 3  # a fourth class, one document: its fold's baselines never saw it
    probabilities = out_of_fold_probabilities(
        (documents, labels), random_documents(30, seed=9), VOCAB, 4, monitor="accuracy", seed=0
    )
    assert probabilities[0, 3] == 0.0
    assert np.isfinite(probabilities).all()


def test_a_distilled_run_says_what_its_teacher_scored_and_trains_on_a_mixed_loss(tmp_path):
    plain = train_in(tmp_path / "plain")
    distilled = train_in(tmp_path / "distilled", **{"train.distill": 0.5})
    summary = json.loads((distilled / "metrics.json").read_text())["distill"]
    assert summary["weight"] == 0.5
    assert 0.0 <= summary["teacher_train_accuracy"] <= 1.0
    assert "distill" not in json.loads((plain / "metrics.json").read_text())
    assert train_losses(distilled) != train_losses(plain)


def test_a_teacher_that_repeats_the_labels_changes_nothing(tmp_path, monkeypatch):
    """Half of the loss on one-hot teacher rows is half of the same cross-entropy: the same run."""

    def one_hot(train, validation, vocab_size, num_classes, **kwargs):
        return np.eye(num_classes)[train[1]]

    plain = train_in(tmp_path / "plain")
    monkeypatch.setattr(experiment, "out_of_fold_probabilities", one_hot)
    distilled = train_in(tmp_path / "distilled", **{"train.distill": 0.5})
    np.testing.assert_allclose(train_losses(distilled), train_losses(plain), rtol=1e-5)


def test_multilabel_data_is_refused_before_the_run_folder_is_made(tmp_path, capsys):
    corpus = write_multilabel_corpus(tmp_path / "docs.jsonl")
    settings = multilabel_settings(corpus, **{"train.distill": 0.5})
    assert main(["train", "-q", "--run-dir", str(tmp_path / "run"), *cli_args(settings)]) == 2
    assert "train.distill is for single-label data" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_weight_of_one_or_more_is_a_config_error(tmp_path, capsys):
    corpus = tmp_path / "unused.csv"
    argv = [
        "train",
        "--run-dir",
        str(tmp_path / "run"),
        *cli_args(tiny_settings(corpus, **{"train.distill": 1})),
    ]
    assert main(argv) == 2
    assert "train.distill" in capsys.readouterr().err
