"""Training end to end on a tiny generated corpus: the run folder, its metrics, and the loop's rules."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.config import TrainConfig, load_config
from rnnkit.training import experiment
from rnnkit.training.callbacks import EarlyStopping, is_improvement
from rnnkit.training.checkpoint import load_checkpoint
from rnnkit.training.trainer import build_scheduler, class_weights

TOPICS = {
    "space": "orbit rocket nasa launch moon shuttle",
    "hockey": "puck goal ice team season playoff",
    "mideast": "israel peace arab land war treaty",
}
FILLER = ["the", "a", "of", "and", "to", "is", "in", "that", "it", "for"]


def write_corpus(path: Path, docs: int = 150, seed: int = 0) -> Path:
    """A CSV of short documents whose topic words reveal the label."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(docs):
            label = list(TOPICS)[i % len(TOPICS)]
            words = TOPICS[label].split()
            tokens = [
                rng.choice(words) if rng.random() < 0.4 else rng.choice(FILLER)
                for _ in range(rng.randint(4, 30))
            ]
            writer.writerow([" ".join(tokens), label])
    return path


def tiny_settings(corpus: Path, **extra: object) -> list[str]:
    """``--set`` overrides for a model and run small enough to train in a second."""
    settings = {
        "data.dataset": "csv",
        "data.path": str(corpus),
        "data.min_freq": 1,
        "data.max_length": 30,
        "embeddings.dim": 8,
        "model.name": "gru",
        "model.hidden_size": 8,
        "model.embedding_dropout": 0.1,
        "model.head_dropout": 0.1,
        "train.epochs": 2,
        "train.batch_size": 16,
        "train.lr": 0.01,
        "train.num_threads": 1,
        "train.progress": False,
        **extra,
    }
    return [
        f"{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in settings.items()
    ]


def cli_args(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def train_tiny_run(root: Path, **extra: object) -> Path:
    """Train a tiny model on a generated corpus with the CLI; return its run folder under ``root``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(root / "cache"))
        corpus = write_corpus(root / "corpus.csv")
        run_dir = root / "run"
        settings = tiny_settings(corpus, **extra)
        assert main(["train", "-q", "--run-dir", str(run_dir), *cli_args(settings)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("trainer"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def test_a_run_folder_holds_config_vocabulary_labels_checkpoints_history_metrics_reports_and_plots(
    trained_run,
):
    names = {p.relative_to(trained_run).as_posix() for p in trained_run.rglob("*") if p.is_file()}
    assert names == {
        "config.yaml",
        "vocab.json",
        "labels.json",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
        "checkpoints/previous.safetensors",
        "history.csv",
        "metrics.json",
        "report.txt",
        "report.json",
        "curves.png",
        "confusion_matrix.png",
    }
    assert (trained_run / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((trained_run / "labels.json").read_text()) == ["hockey", "mideast", "space"]


def test_the_saved_config_is_the_resolved_one_with_absolute_data_paths(trained_run):
    cfg = load_config(trained_run / "config.yaml")
    assert Path(cfg.data.path).is_absolute()
    assert cfg.model.name == "gru" and cfg.train.epochs == 2


def test_history_has_one_row_per_epoch_with_losses_accuracies_lr_and_time(trained_run):
    with (trained_run / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert set(rows[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "val_macro_f1",
        "lr",
        "epoch_time_s",
    }


def test_metrics_hold_test_and_validation_scores_train_time_and_data_stats(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "loss"} <= set(metrics["test"])
    assert {"accuracy", "macro_f1", "loss"} <= set(metrics["validation"])
    assert metrics["epochs_trained"] == 2 and metrics["best_epoch"] in (1, 2)
    assert metrics["train_time_s"] >= 0
    assert metrics["data"]["train_docs"] > 0
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0


def test_the_per_class_report_covers_every_class(trained_run):
    report = json.loads((trained_run / "report.json").read_text())
    assert {"hockey", "mideast", "space", "macro avg"} <= set(report)
    assert "precision" in (trained_run / "report.txt").read_text()


def test_evaluate_reproduces_the_saved_test_and_validation_metrics(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for split in ("test", "validation"):
        assert experiment.evaluate(trained_run, split)["metrics"] == metrics[split]


def test_evaluate_prints_a_summary_and_the_report(trained_run, capsys):
    assert main(["evaluate", "-q", "--run-dir", str(trained_run), "--split", "validation"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("validation: accuracy") and "macro avg" in out


def test_the_best_checkpoint_records_its_epoch_and_how_to_rebuild_the_model(trained_run):
    best = load_checkpoint(trained_run / "checkpoints" / "best.safetensors")
    assert best.meta["kind"] == "model"
    assert best.meta["model"]["num_classes"] == 3 and best.meta["model"]["embedding_dim"] == 8
    assert (
        best.meta["record"]["epoch"] == json.loads((trained_run / "metrics.json").read_text())["best_epoch"]
    )


def test_the_same_config_and_seed_give_bit_identical_metrics_on_cpu(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.csv")
    cfg = load_config(overrides=tiny_settings(corpus, **{"train.epochs": 1}))
    first = experiment.train(cfg, tmp_path / "a")
    second = experiment.train(cfg, tmp_path / "b")
    assert first["test"] == second["test"] and first["validation"] == second["validation"]


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys
):
    corpus = write_corpus(tmp_path / "corpus.csv")
    real = torch.nn.functional.cross_entropy
    calls = iter(range(1, 10_000))

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        return losses * float("nan") if next(calls) == 4 else losses

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    run_dir = tmp_path / "run"
    settings = tiny_settings(corpus, **{"train.checkpoint_every": 2})
    assert main(["train", "-q", "--run-dir", str(run_dir), *cli_args(settings)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("rnnkit: error: the training loss became nan at step 4")
    assert load_checkpoint(run_dir / "checkpoints" / "last.safetensors").meta["global_step"] == 2


def test_early_stopping_waits_patience_epochs_without_improvement():
    class Loop:
        should_stop = False

    loop = Loop()
    stopper = EarlyStopping("val_accuracy", patience=2)
    for epoch, accuracy in enumerate([0.5, 0.6, 0.6, 0.55], start=1):
        stopper.on_epoch_end(loop, {"epoch": epoch, "val_accuracy": accuracy})  # type: ignore[arg-type]
    assert loop.should_stop and stopper.best == 0.6 and stopper.wait == 2


def test_lower_is_better_for_losses_and_nan_never_improves():
    assert is_improvement("val_loss", 0.4, 0.5) and not is_improvement("val_loss", 0.6, 0.5)
    assert is_improvement("val_macro_f1", 0.6, 0.5) and is_improvement("val_accuracy", 0.1, None)
    assert not is_improvement("val_accuracy", float("nan"), None)


def test_balanced_class_weights_follow_scikit_learn():
    weights = class_weights("balanced", np.array([0, 0, 0, 1]), 2, torch.device("cpu"))
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    assert class_weights("none", np.array([0, 1]), 2, torch.device("cpu")) is None


@pytest.mark.parametrize("name", ["none", "cosine", "step", "plateau"])
def test_every_schedule_can_be_built(name):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(TrainConfig(scheduler=name, epochs=6), optimizer)
    assert (scheduler is None) == (name == "none")
