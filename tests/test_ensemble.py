"""rnnkit ensemble: runs combined by averaging probabilities, used like a run by predict and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import fails_with
from test_trainer import train_tiny_run

import rnnkit
from rnnkit.cli import main
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.inference import predict_dataset
from rnnkit.runs import open_run
from rnnkit.training.ensemble import create_ensemble

TEXTS = ["space rocket orbit", "hockey goal team season", "nothing in particular"]


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    """Two runs on the same data and test split: a GRU and an LSTM."""
    return [
        train_tiny_run(tmp_path_factory.mktemp("gru")),
        train_tiny_run(tmp_path_factory.mktemp("lstm"), **{"model.name": "lstm"}),
    ]


@pytest.fixture(scope="module")
def ensemble_dir(members, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ensembles") / "both"
    assert main(["ensemble", "-q", *map(str, members), "--run-dir", str(folder)]) == 0
    return folder


def test_an_ensemble_predicts_the_mean_of_its_members_probabilities(members, ensemble_dir):
    expected = np.mean([rnnkit.load(member).predict_proba(TEXTS) for member in members], axis=0)
    ensemble = rnnkit.load(ensemble_dir)
    np.testing.assert_allclose(ensemble.predict_proba(TEXTS), expected, rtol=1e-6)
    assert ensemble.predict(TEXTS) == [ensemble.label_names[i] for i in expected.argmax(axis=1)]


def test_its_test_score_is_that_of_the_averaged_probabilities_and_evaluate_reproduces_it(
    members, ensemble_dir, capsys
):
    metrics = json.loads((ensemble_dir / "metrics.json").read_text())
    member_metrics = [json.loads((member / "metrics.json").read_text()) for member in members]
    assert [m["test"] for m in metrics["members"]] == [m["test"] for m in member_metrics]
    assert metrics["baseline"]["test"] == member_metrics[0]["baseline"]["test"]
    assert "validation" in metrics  # the same seed: the members share their validation part
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(ensemble_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(metrics["test"])


def test_the_ensembles_accuracy_is_that_of_the_mean_probabilities(members, ensemble_dir):
    runs = [open_run(member) for member in members]
    scored = [predict_dataset(run.model, run.load_split("test"), 64, run.device) for run in runs]
    mean = np.mean([predictions.probs for predictions in scored], axis=0)
    metrics = json.loads((ensemble_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(float((mean.argmax(1) == scored[0].labels).mean()))


def test_predict_reads_an_ensemble_like_a_run(ensemble_dir, capsys):
    capsys.readouterr()
    assert main(["predict", "--run-dir", str(ensemble_dir), *TEXTS]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(TEXTS)


def test_one_run_tools_refuse_an_ensemble_in_one_line(ensemble_dir, capsys):
    with pytest.raises(CheckpointError, match="is an ensemble of runs"):
        open_run(ensemble_dir)
    assert main(["evaluate", "--run-dir", str(ensemble_dir), "--data", "x.csv"]) == 2
    assert "one of the ensemble's members" in capsys.readouterr().err


def test_members_must_be_two_different_runs_with_the_same_labels_and_test_documents(members, tmp_path):
    with pytest.raises(ConfigError, match="at least two members"):
        create_ensemble(members[:1], tmp_path / "e")
    with pytest.raises(ConfigError, match="named twice"):
        create_ensemble([members[0], members[0]], tmp_path / "e")
    with pytest.raises(ConfigError, match="is one of the members"):
        create_ensemble(members, members[0])
    (tmp_path / "seed").mkdir()
    other_seed = train_tiny_run(tmp_path / "seed", **{"train.seed": 7})  # another held-out test part
    with pytest.raises(ConfigError, match="tested on different documents"):
        create_ensemble([members[0], other_seed], tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_an_existing_folder_is_replaced_only_with_overwrite(members, ensemble_dir, capsys):
    capsys.readouterr()
    assert main(["ensemble", *map(str, members), "--run-dir", str(ensemble_dir)]) == 2
    assert "already exists" in capsys.readouterr().err
    before = (ensemble_dir / "metrics.json").read_text()
    assert main(["ensemble", "-q", *map(str, members), "--run-dir", str(ensemble_dir), "--overwrite"]) == 0
    assert (ensemble_dir / "metrics.json").read_text() == before
    assert sorted(p.name for p in ensemble_dir.parent.iterdir()) == [ensemble_dir.name]


def test_with_baseline_the_first_runs_tfidf_model_is_one_more_member(members, tmp_path):
    metrics = create_ensemble(members[:1], tmp_path / "hybrid", with_baseline=True)
    temperature = metrics["ensemble"]["baseline_temperature"]
    run = open_run(members[0])
    expected = (
        run.predictor().predict_proba(TEXTS) + run.baseline_predictor(temperature).predict_proba(TEXTS)
    ) / 2
    np.testing.assert_allclose(rnnkit.load(tmp_path / "hybrid").predict_proba(TEXTS), expected, rtol=1e-6)
    assert temperature > 0


def test_a_baseline_member_needs_a_run_trained_with_one(tmp_path):
    without = train_tiny_run(tmp_path, **{"train.baseline": False})
    with pytest.raises(ConfigError, match="has no TF-IDF baseline"):
        create_ensemble([without], tmp_path / "hybrid", with_baseline=True)


def test_overwrite_never_empties_a_folder_that_holds_no_run_or_ensemble(members, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    argv = ["ensemble", *map(str, members), "--run-dir", str(tmp_path), "--overwrite"]
    fails_with(capsys, argv, "holds no rnnkit run or ensemble")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("where", ["docs.txt", "docs.txt/ensemble"])
def test_a_file_in_the_place_of_the_ensemble_folder_is_one_line(members, tmp_path, capsys, where):
    (tmp_path / "docs.txt").write_text("mine", encoding="utf-8")
    fails_with(capsys, ["ensemble", *map(str, members), "--run-dir", str(tmp_path / where)], "docs.txt")
    assert (tmp_path / "docs.txt").read_text(encoding="utf-8") == "mine"
