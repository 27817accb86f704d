"""scripts/study.py: the one-factor-at-a-time study, run in its smoke mode (the shipped sample, one
epoch); it trains every cell and seed, writes a table, a PNG and conclusions per question, and
reruns without retraining."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import study

from rnnkit.compare import RunRecord


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(root / "cache"))
        args = ["--smoke", "--seeds", "2", "--only", "cell", "--threads", "1"]
        args += ["--runs-dir", str(root / "runs"), "--out", str(root / "docs" / "study.md")]
        assert study.main(args) == 0
    return root, args


def test_every_configuration_is_trained_once_per_seed(smoke):
    root, _ = smoke
    runs = sorted(
        path.parent.relative_to(root / "runs").as_posix() for path in root.glob("runs/*/*/metrics.json")
    )
    assert runs == [
        f"{cell}/seed-{seed}" for cell in ("base", "model.name=gru", "model.name=rnn") for seed in (1, 2)
    ]


def test_the_report_has_a_table_a_png_and_conclusions_per_question(smoke):
    root, _ = smoke
    report = (root / "docs" / "study.md").read_text()
    assert "## SimpleRNN, LSTM or GRU?" in report and "SMOKE TEST" in report
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| level | test accuracy % | test macro-F1 % | train time s | x base time |")
    assert [row.split(" | ")[0] for row in table[1:]] == ["| ---", "| LSTM (base)", "| SimpleRNN", "| GRU"]
    assert all(" ± " in row for row in table[2:])
    assert "is the most accurate: it beats" in report and "Most accuracy per second of training" in report
    assert "the score to beat: the built-in TF-IDF baseline" in report
    assert (root / "docs" / "study" / "cell.png").read_bytes().startswith(b"\x89PNG")


def test_a_rerun_reads_the_finished_runs_instead_of_training_them_again(smoke, monkeypatch):
    root, args = smoke
    before = {path: path.stat().st_mtime_ns for path in root.glob("runs/*/*/metrics.json")}
    monkeypatch.setenv("RNNKIT_CACHE", str(root / "cache"))
    monkeypatch.setattr("rnnkit.training.experiment.train", None)  # any training would fail
    assert study.main(args) == 0
    assert {path: path.stat().st_mtime_ns for path in root.glob("runs/*/*/metrics.json")} == before


def test_runs_made_with_another_base_config_are_refused(smoke, monkeypatch):
    root, args = smoke
    monkeypatch.setenv("RNNKIT_CACHE", str(root / "cache"))
    gru = str(Path(study.ROOT) / "configs" / "gru.yaml")
    with pytest.raises(
        SystemExit, match=r"base/seed-1 was trained with another config \(model.name is 'gru'"
    ):
        study.main([*args, "--config", gru])


def test_the_dry_run_lists_the_plan_and_what_is_done(smoke, capsys):
    _, args = smoke
    assert study.main([*args, "--dry-run", "--only", "cell", "layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["base", "2/2", "done"]
    assert lines[-1].split() == ["model.num_layers=2", "0/2", "done"]


def level(value, accuracies, seconds) -> study.Level:
    runs = [
        RunRecord(
            Path("."), {}, {"test": {"accuracy": a, "macro_f1": a}, "train_time_s": s, "epochs_trained": 3}
        )
        for a, s in zip(accuracies, seconds, strict=True)
    ]
    return study.Level(value, runs)


def test_levels_are_named_for_what_they_are():
    names = [study.Level(value, []).label for value in ("gru", "rnn", True, False, 1, 2, 512, "max")]
    assert names == ["GRU", "SimpleRNN", "bidirectional", "unidirectional", "1", "2", "512", "max"]


def test_conclusions_state_the_paired_difference_the_time_ratio_and_whether_seeds_agree():
    question = study.QUESTIONS[0]
    levels = [
        level("lstm", [0.60, 0.61, 0.62], [100, 100, 100]),
        level("rnn", [0.50, 0.52, 0.49], [50, 50, 50]),
        level("gru", [0.62, 0.63, 0.64], [150, 150, 150]),
    ]
    sentences = study.conclusions(question, levels)
    assert sentences[0] == (
        "GRU is the most accurate: it beats LSTM by 2.0 ± 0.0 points at 1.50x the training time "
        "(all 3 seeds agree)."
    )
    assert sentences[1].startswith("SimpleRNN against LSTM (the base): -10.7 ± 2.1 points at 0.50x")
    assert sentences[2] == "Most accuracy per second of training: SimpleRNN (50.3% in 50 s)."


def test_a_size_within_seed_noise_of_the_best_is_named():
    question = study.QUESTIONS[1]  # hidden size
    levels = [
        level(128, [0.60, 0.64, 0.62], [100, 100, 100]),
        level(32, [0.55, 0.56, 0.54], [40, 40, 40]),
        level(256, [0.63, 0.62, 0.64], [200, 200, 200]),
    ]
    sentences = study.conclusions(question, levels)
    assert (
        "The smallest hidden size whose gap to the best is within seed noise is 128, at 0.50x"
        in sentences[-1]
    )
