"""A multi-label run end to end: label lists in, label sets out, thresholds and metrics in the run."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import fails_with
from test_trainer import cli_args, tiny_settings

import rnnkit
from rnnkit.cli import main
from rnnkit.config import TrainConfig, load_config
from rnnkit.data import EncodedDataset
from rnnkit.models import GRUClassifier
from rnnkit.runs import open_run
from rnnkit.runs.checkpoint import CheckpointStore
from rnnkit.training import experiment
from rnnkit.training.trainer import Trainer

TOPICS = {
    "hockey": "puck goal ice team",
    "politics": "vote senate law bill",
    "space": "orbit rocket nasa moon",
}
FILLER = ["the", "a", "of", "and", "to", "is"]


def write_multilabel_corpus(path: Path, docs: int = 180, seed: int = 0) -> Path:
    """JSONL documents with 0, 1 or 2 topics each, under a ``labels`` list."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(docs):
            labels = sorted(rng.sample(list(TOPICS), rng.choice([0, 1, 1, 2])))
            words = [word for label in labels for word in TOPICS[label].split()]
            tokens = [
                rng.choice(words) if words and rng.random() < 0.5 else rng.choice(FILLER)
                for _ in range(rng.randint(4, 20))
            ]
            handle.write(json.dumps({"text": " ".join(tokens), "labels": labels}) + "\n")
    return path


def multilabel_settings(corpus: Path, **extra: object) -> list[str]:
    options = {"data.dataset": "jsonl", "data.label_column": "labels", "train.epochs": 3, **extra}
    return tiny_settings(corpus, **options)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multilabel")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(root / "cache"))
        corpus = write_multilabel_corpus(root / "docs.jsonl")
        argv = ["train", "-q", "--run-dir", str(root / "run"), *cli_args(multilabel_settings(corpus))]
        assert main(argv) == 0
    return root / "run"


def test_the_run_saves_a_tuned_threshold_per_label_and_no_confusion_matrix(run_dir: Path) -> None:
    saved = json.loads((run_dir / "thresholds.json").read_text())
    assert saved["tuned_on"] == "validation" and sorted(saved["thresholds"]) == sorted(TOPICS)
    assert all(0.05 <= t <= 0.95 for t in saved["thresholds"].values())
    assert not (run_dir / "confusion_matrix.png").exists()
    assert "samples avg" in (run_dir / "report.txt").read_text()


def test_metrics_are_multilabel_ones_and_early_stopping_followed_micro_f1(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "multilabel" and metrics["monitor"] == "val_micro_f1"
    assert set(metrics["test"]) == {
        "loss",
        "accuracy",
        "macro_f1",
        "weighted_f1",
        "micro_f1",
        "samples_f1",
        "hamming_loss",
    }
    assert load_config(run_dir / "config.yaml").train.monitor == "val_micro_f1"
    with (run_dir / "history.csv").open() as handle:
        assert "val_micro_f1" in next(csv.DictReader(handle))


def test_evaluate_gives_the_numbers_of_metrics_json_with_the_saved_thresholds(run_dir: Path) -> None:
    result = experiment.evaluate(run_dir, "test")
    assert result["task"] == "multilabel"
    assert result["metrics"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["test"])


def test_predict_returns_the_label_set_at_the_thresholds_most_probable_first(run_dir: Path) -> None:
    predictor = rnnkit.load(run_dir)
    texts = ["puck goal ice vote senate", "the a of", "orbit rocket nasa"]
    probs = predictor.predict_proba(texts)
    thresholds = open_run(run_dir).thresholds
    for labels, row in zip(predictor.predict(texts), probs, strict=True):
        expected = {name for name, p, t in zip(predictor.label_names, row, thresholds, strict=True) if p >= t}
        assert set(labels) == expected
        assert [row[predictor.label_names.index(name)] for name in labels] == sorted(
            (row[predictor.label_names.index(name)] for name in labels), reverse=True
        )
    assert not np.allclose(probs.sum(axis=1), 1.0)  # independent sigmoids, not a softmax


def test_the_cli_prints_each_predicted_label_with_its_probability(run_dir: Path, capsys) -> None:
    assert main(["predict", "--run-dir", str(run_dir), "orbit rocket nasa moon puck goal"]) == 0
    fields = capsys.readouterr().out.rstrip("\n").split("\t")
    expected = rnnkit.load(run_dir).predict_scored("orbit rocket nasa moon puck goal")[0]
    assert fields == [field for name, p in expected for field in (name, f"{p:.4f}")]


def test_forcing_multilabel_on_single_label_data_trains_one_label_sets(tmp_path: Path) -> None:
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"text": f"word{i % 3} x", "label": f"c{i % 3}"}) for i in range(30))
    )
    settings = tiny_settings(
        corpus, **{"data.dataset": "jsonl", "data.task": "multilabel", "train.epochs": 1}
    )
    metrics = experiment.train(load_config(overrides=settings), tmp_path / "run")
    assert metrics["task"] == "multilabel" and open_run(tmp_path / "run").task == "multilabel"


def test_balanced_class_weights_become_bce_positive_weights(tmp_path: Path) -> None:
    labels = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=np.float32)
    data = EncodedDataset([np.array([2, 3])] * 4, labels, max_length=5)
    cfg = TrainConfig(class_weights="balanced", progress=False)
    model = GRUClassifier(vocab_size=5, num_classes=2, embedding_dim=4, hidden_size=4)
    trainer = Trainer(cfg, model, data, data, 2, torch.device("cpu"), CheckpointStore(tmp_path))
    assert trainer.class_weights is None and trainer.pos_weight.tolist() == pytest.approx([1 / 3, 3.0])
    assert trainer.cfg.monitor == "val_micro_f1"


def test_bad_label_data_at_the_command_line_is_exit_2_and_one_line(tmp_path: Path, capsys) -> None:
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a b", "labels": ["x", "y"]}\n{"text": "c d", "labels": "x"}\n')
    argv = ["train", "--run-dir", str(tmp_path / "run"), *cli_args(multilabel_settings(mixed))]
    fails_with(capsys, argv, "mix single values ('x') and lists", "data.task=multilabel")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "a b", "labels": []}\n{"text": "c d", "labels": ["x"]}\n')
    argv = ["train", "--run-dir", str(tmp_path / "run"), *cli_args(multilabel_settings(empty))]
    fails_with(
        capsys, [*argv, "--set", "data.task=single"], "empty label list", "set data.task to multilabel"
    )
    unlabelled = tmp_path / "none.jsonl"
    unlabelled.write_text('{"text": "a b", "labels": []}\n{"text": "c d", "labels": []}\n')
    argv = ["train", "--run-dir", str(tmp_path / "run"), *cli_args(multilabel_settings(unlabelled))]
    fails_with(capsys, argv, "no document has a label")


# ------------------------------------------------- the run's readers: evaluate --data, predict, serve


def test_evaluate_data_takes_labels_the_run_never_saw_out_of_the_label_sets(run_dir: Path, caplog) -> None:
    from rnnkit.training.new_data import evaluate_data

    path = run_dir.parent / "new.jsonl"
    records = [
        {"text": "puck goal ice", "labels": ["hockey", "cooking"]},
        {"text": "orbit rocket", "labels": ["space"]},
        {"text": "the a of", "labels": ["cooking"]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = evaluate_data(run_dir, path)
    assert result["task"] == "multilabel" and result["documents"] == result["scored"] == 3
    assert result["unseen_labels"] == {"cooking": 2} and "cooking (2)" in caplog.text
    names = rnnkit.load(run_dir).label_names
    predicted = rnnkit.load(run_dir).predict([r["text"] for r in records])
    truth = [[1.0 if name in ("hockey",) else 0.0 for name in names], [float(n == "space") for n in names]]
    truth.append([0.0] * len(names))
    chosen = [[float(name in labels) for name in names] for labels in predicted]
    hamming = np.mean(np.array(truth) != np.array(chosen))
    assert result["metrics"]["hamming_loss"] == pytest.approx(hamming)


def test_predict_output_writes_each_label_set_in_jsonl_and_csv(run_dir: Path, tmp_path: Path) -> None:
    texts = ["orbit rocket nasa moon puck goal", "the a of"]
    expected = rnnkit.load(run_dir).predict_scored(texts)
    out = tmp_path / "p.jsonl"
    assert main(["predict", "-q", "--run-dir", str(run_dir), *texts, "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["labels"] for row in rows] == [[name for name, _ in pairs] for pairs in expected]
    assert [row["probabilities"] for row in rows] == [[p for _, p in pairs] for pairs in expected]
    assert (
        main(["predict", "-q", "--run-dir", str(run_dir), *texts, "--output", str(tmp_path / "p.csv")]) == 0
    )
    with (tmp_path / "p.csv").open(newline="") as handle:
        cells = list(csv.DictReader(handle))
    assert [cell["labels"] for cell in cells] == ["|".join(name for name, _ in pairs) for pairs in expected]


def test_serve_answers_with_each_texts_label_set(run_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from rnnkit.serve import create_app

    texts = ["orbit rocket nasa moon puck goal", "the a of"]
    with TestClient(create_app(open_run(run_dir))) as client:
        answer = client.post("/predict", json={"texts": texts, "top_k": 2}).json()["predictions"]
    expected = rnnkit.load(run_dir).predict_scored(texts)
    for prediction, pairs in zip(answer, expected, strict=True):
        assert [item["label"] for item in prediction["labels"]] == [name for name, _ in pairs]
        assert [item["probability"] for item in prediction["labels"]] == pytest.approx([p for _, p in pairs])
        assert len(prediction["top_k"]) == 2


def test_export_refuses_a_multilabel_run_in_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["export", "--run-dir", str(run_dir), "--format", "torchscript", "--out", str(tmp_path / "e")]
    fails_with(capsys, argv, "multi-label run", "rnnkit predict")
    assert not (tmp_path / "e").exists()


def test_data_whose_documents_all_have_the_same_labels_is_refused(tmp_path: Path, capsys) -> None:
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps({"text": f"w{i} x", "labels": ["a", "b"]}) + "\n" for i in range(20)))
    argv = ["train", "--run-dir", str(tmp_path / "run"), *cli_args(multilabel_settings(same))]
    fails_with(capsys, argv, "every training document has the same labels ('a', 'b')")
