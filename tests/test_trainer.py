"""Training end to end on a tiny generated corpus: the run folder, its metrics, and the loop's rules."""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.nn import functional as F

from rnnkit.cli import main
from rnnkit.config import TrainConfig, load_config
from rnnkit.data import EncodedDataset
from rnnkit.models import GRUClassifier
from rnnkit.runs.checkpoint import CheckpointStore, load_checkpoint
from rnnkit.runtime import denormals_flushed
from rnnkit.training import experiment
from rnnkit.training.callbacks import BestCheckpoint, Callback, EarlyStopping, is_improvement
from rnnkit.training.trainer import Trainer, build_scheduler, class_weights

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


def train_in(folder: Path, **extra: object) -> Path:
    """:func:`train_tiny_run` in a new folder ``folder``; returns the run folder."""
    folder.mkdir()
    return train_tiny_run(folder, **extra)


def train_losses(run: Path) -> list[float]:
    """The training loss of each epoch, from the run's history.csv."""
    with (run / "history.csv").open() as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle)]


LEARNS_THE_TOPICS = {"train.epochs": 8}
"""Overrides with which the tiny run learns its corpus (2 epochs are too few: about chance, 0.3)."""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("trainer"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def test_a_tiny_run_given_a_few_more_epochs_learns_the_topic_words(tmp_path):
    metrics = json.loads((train_tiny_run(tmp_path, **LEARNS_THE_TOPICS) / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.8


def test_a_run_folder_holds_config_vocabulary_labels_checkpoints_history_metrics_reports_and_plots(
    trained_run,
):
    names = {p.relative_to(trained_run).as_posix() for p in trained_run.rglob("*") if p.is_file()}
    assert names == {
        "config.yaml",
        "vocab.json",
        "labels.json",
        "run.json",
        ".lock",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
        "checkpoints/previous.safetensors",
        "history.csv",
        "metrics.json",
        "report.txt",
        "report.json",
        "curves.png",
        "confusion_matrix.png",
        "baseline.safetensors",
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


def test_training_from_python_leaves_the_process_settings_as_it_found_them(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.csv")
    torch.set_flush_denormal(False)  # conftest puts the default back
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    cfg = load_config(overrides=tiny_settings(corpus, **{"train.epochs": 1, "train.flush_denormal": True}))
    experiment.train(cfg, tmp_path / "run")  # trains with one thread and flushing on
    assert not denormals_flushed()
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() is deterministic


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
        cfg = TrainConfig(epochs=10)

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
    labels = np.array([0, 0, 0, 1, 2, 2])
    weights = class_weights("balanced", labels, 3, torch.device("cpu"))
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert weights.tolist() == pytest.approx(expected.tolist())
    two_classes = class_weights("balanced", np.array([0, 0, 0, 1]), 2, torch.device("cpu"))
    assert two_classes.tolist() == pytest.approx([4 / 6, 2.0])
    assert class_weights("none", np.array([0, 1]), 2, torch.device("cpu")) is None


def learning_rates(name: str, scores: list[float], monitor: str = "val_accuracy") -> list[float]:
    """The rate of each of 6 epochs under schedule ``name``, stepped as the trainer steps it."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(TrainConfig(scheduler=name, epochs=6, monitor=monitor), optimizer)
    rates = []
    for score in scores:
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # an epoch of training, then the schedule's step
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(score)
        elif scheduler is not None:
            scheduler.step()
    return rates


def test_no_schedule_keeps_the_rate():
    assert learning_rates("none", [0.5] * 6) == [0.1] * 6


def test_cosine_anneals_the_rate_to_zero_over_the_epochs():
    expected = [0.1 * (1 + math.cos(math.pi * epoch / 6)) / 2 for epoch in range(6)]
    assert learning_rates("cosine", [0.5] * 6) == pytest.approx(expected)


def test_step_divides_the_rate_by_ten_after_each_third_of_the_epochs():
    assert learning_rates("step", [0.5] * 6) == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_plateau_halves_the_rate_after_an_epoch_without_improvement_of_the_monitor():
    # Accuracy: 0.5 then no gain for two epochs (patience 1) -> halved; the gain at epoch 5 resets.
    rates = learning_rates("plateau", [0.5, 0.5, 0.5, 0.6, 0.7, 0.7])
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05])
    # val_loss is minimised: a falling loss never lowers the rate.
    assert learning_rates("plateau", [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], monitor="val_loss") == [0.1] * 6


def tiny_trainer(
    store: Path, callbacks: list[Callback], model: nn.Module | None = None, **settings: object
) -> Trainer:
    """A Trainer over 8 two-class documents, for the loop's rules."""
    documents = [np.array([2, 3, 4], dtype=np.int32), np.array([5, 6], dtype=np.int32)] * 4
    data = EncodedDataset(documents, np.array([0, 1] * 4), 10)
    torch.manual_seed(0)
    if model is None:
        model = GRUClassifier(8, 2, embedding_dim=4, hidden_size=4)
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 4, "progress": False, **settings})
    return Trainer(cfg, model, data, data, 2, torch.device("cpu"), CheckpointStore(store), callbacks)


def test_label_smoothing_spreads_part_of_each_training_target_over_all_classes(tmp_path):
    trainer = tiny_trainer(tmp_path, [], batch_size=8, label_smoothing=0.2, amp=False)
    tokens, lengths = torch.tensor([[2, 3, 4], [5, 6, 0]] * 4), torch.tensor([3, 2] * 4)
    labels = torch.tensor([0, 1] * 4)
    with torch.no_grad():
        logits = trainer.model(tokens, lengths)
    smoothed = F.cross_entropy(logits, labels, label_smoothing=0.2).item()
    trainer.fit()
    assert trainer.history[0]["train_loss"] == pytest.approx(smoothed, rel=1e-5)
    assert smoothed != pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-3)


def test_the_trainer_calls_a_models_prepare_for_training_hook_once(tmp_path):
    class OwnModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.EmbeddingBag(8, 2)
            self.prepared = 0

        def prepare_for_training(self) -> None:
            self.prepared += 1

        def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return self.embedding(token_ids)

    model = OwnModel()
    tiny_trainer(tmp_path, [], model).fit()
    assert model.prepared == 1


def test_two_early_stoppings_on_different_monitors_keep_their_own_state(tmp_path):
    trainer = tiny_trainer(tmp_path, [EarlyStopping("val_accuracy", 3), EarlyStopping("val_loss", 3)])
    trainer.fit()
    saved = trainer.state_checkpoint()
    assert set(saved.meta["callbacks"]) == {"EarlyStopping[val_accuracy]", "EarlyStopping[val_loss]"}
    by_accuracy, by_loss = EarlyStopping("val_accuracy", 3), EarlyStopping("val_loss", 3)
    tiny_trainer(tmp_path, [by_accuracy, by_loss]).load_state(saved)
    assert by_accuracy.best == trainer.history[0]["val_accuracy"]
    assert by_loss.best == trainer.history[0]["val_loss"]


def test_a_checkpoint_that_keyed_callbacks_by_class_name_still_resumes(tmp_path):
    trainer = tiny_trainer(tmp_path, [EarlyStopping("val_accuracy", 3)])
    trainer.fit()
    saved = trainer.state_checkpoint()
    saved.meta["callbacks"] = {"EarlyStopping": saved.meta["callbacks"]["EarlyStopping[val_accuracy]"]}
    stopper = EarlyStopping("val_accuracy", 3)
    tiny_trainer(tmp_path, [stopper]).load_state(saved)
    assert stopper.best == trainer.history[0]["val_accuracy"]


class EpochWeights(Callback):
    """Copies of the weights at the end of every epoch."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, trainer: Trainer, record: dict) -> None:
        self.weights.append({name: p.detach().clone() for name, p in trainer.raw_model.named_parameters()})


def test_weight_averaging_keeps_the_mean_of_the_last_swa_epochs_weights(tmp_path):
    seen = EpochWeights()
    trainer = tiny_trainer(tmp_path, [seen], epochs=4, swa_epochs=2, lr=0.1)
    trainer.fit()
    assert int(trainer.averaged.n_averaged) == 2
    for name, averaged in trainer.averaged.module.named_parameters():
        torch.testing.assert_close(averaged, (seen.weights[2][name] + seen.weights[3][name]) / 2)
    assert any(not torch.equal(seen.weights[2][name], seen.weights[3][name]) for name in seen.weights[2])


@pytest.mark.parametrize("averaged_wins", [True, False], ids=["better", "not-better"])
def test_the_averaged_weights_become_the_best_only_if_they_beat_every_epoch_on_validation(
    tmp_path, monkeypatch, averaged_wins
):
    trainer = tiny_trainer(tmp_path, [BestCheckpoint("val_accuracy")], epochs=3, swa_epochs=2, amp=False)
    scores = iter([0.5, 0.75, 0.625])  # epoch 2 is the best epoch

    def validation_scores(model):
        averaged = trainer.averaged is not None and model is trainer.averaged.module
        accuracy = (0.875 if averaged_wins else 0.75) if averaged else next(scores)
        return {"val_loss": 1 - accuracy, "val_accuracy": accuracy, "val_macro_f1": accuracy}

    monkeypatch.setattr(trainer, "validation_scores", validation_scores)
    trainer.fit()
    best = trainer.store.load_best()
    if averaged_wins:
        assert best.meta["record"]["averaged_epochs"] == 2
        averaged = trainer.averaged.module.state_dict()
        for name, tensor in best.section("model").items():
            torch.testing.assert_close(tensor, averaged[name])
    else:  # a tie with the best epoch is not an improvement: epoch 2 stays
        assert best.meta["record"]["epoch"] == 2 and "averaged_epochs" not in best.meta["record"]


def test_a_resumed_run_averages_the_same_weights_as_an_uninterrupted_one(tmp_path):
    settings = {"epochs": 3, "swa_epochs": 2, "lr": 0.1}
    uninterrupted = tiny_trainer(tmp_path / "a", [], **settings)
    uninterrupted.fit()
    first_two = tiny_trainer(tmp_path / "b", [], **settings)
    for _ in range(2):
        first_two.train_epoch()
        first_two.end_epoch()
    resumed = tiny_trainer(tmp_path / "c", [], **settings)
    resumed.load_state(first_two.state_checkpoint())
    resumed.fit()
    assert int(resumed.averaged.n_averaged) == 2
    for (name, expected), got in zip(
        uninterrupted.averaged.module.named_parameters(), resumed.averaged.module.parameters(), strict=True
    ):
        torch.testing.assert_close(got, expected, atol=0, rtol=0, msg=name)


def test_a_run_with_weight_averaging_says_which_weights_it_kept_and_evaluates_them(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rnnkit")  # whatever level an earlier `rnnkit -q` left it at
    corpus = write_corpus(tmp_path / "corpus.csv")
    settings = tiny_settings(corpus, **{"train.epochs": 4, "train.swa_epochs": 2})
    metrics = experiment.train(load_config(overrides=settings), tmp_path / "run")
    assert "weights averaged over the last 2 epochs: val loss" in caplog.text
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.safetensors").meta["record"]
    assert metrics.get("averaged_epochs") == best.get("averaged_epochs")
    assert experiment.evaluate(tmp_path / "run", "test")["metrics"] == metrics["test"]


def test_two_callbacks_with_one_state_key_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"state_key 'EarlyStopping\[val_loss\]'"):
        tiny_trainer(tmp_path, [EarlyStopping("val_loss", 1), EarlyStopping("val_loss", 2)])


def test_patience_running_out_on_the_last_epoch_is_not_an_early_stop(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    corpus = write_corpus(tmp_path / "corpus.csv")
    frozen = {"train.epochs": 2, "train.patience": 1, "train.lr": 1e-12}  # epoch 2 cannot improve
    metrics = experiment.train(load_config(overrides=tiny_settings(corpus, **frozen)), tmp_path / "run")
    assert metrics["epochs_trained"] == 2 and metrics["stopped_early"] is False
    assert "early stopping" not in caplog.text


def test_resuming_a_finished_run_says_so_and_rewrites_nothing(trained_run, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert main(["train", "--resume", str(run)]) == 0
    assert "is finished (2 of 2 epochs); nothing to do" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert " at epoch " not in caplog.text  # no "resuming RUN at epoch 3"


def test_a_finished_run_resumed_with_more_epochs_trains_them(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["train", "-q", "--resume", str(run), "--set", "train.epochs=3"]) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs_trained"] == 3


def test_the_saved_config_holds_what_was_used_not_what_was_ignored(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.csv")
    vectors = tmp_path / "vectors.txt"
    words = {word for text in TOPICS.values() for word in text.split()} | set(FILLER)
    vectors.write_text("".join(f"{word} {' '.join(['0.5'] * 6)}\n" for word in sorted(words)))
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "my-cache"))
    settings = {"data.remove": "[headers]", "embeddings.source": str(vectors), "embeddings.dim": 100}
    main(["train", "-q", "--run-dir", str(tmp_path / "run"), *cli_args(tiny_settings(corpus, **settings))])
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.data.remove == []  # 20 Newsgroups only
    assert saved.embeddings.dim == 6  # the vectors' width, not the unused setting
    assert saved.data.cache_dir == str(tmp_path / "my-cache")  # resolved, not ~/...


def test_a_report_that_cannot_be_drawn_loses_neither_the_model_nor_the_metrics(tmp_path, monkeypatch, caplog):
    def out_of_memory(*args, **kwargs):
        raise MemoryError("cannot allocate 6.2 GB for a 23000 x 23000 figure")

    monkeypatch.setattr(experiment, "plot_confusion", out_of_memory)
    corpus = write_corpus(tmp_path / "corpus.csv")
    metrics = experiment.train(load_config(overrides=tiny_settings(corpus)), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"] == metrics["test"]
    assert (tmp_path / "run" / "curves.png").exists() and (tmp_path / "run" / "report.txt").exists()
    assert "could not draw" in caplog.text and "confusion_matrix.png" in caplog.text
