"""run.json: a run's config, vocabulary and labels must be the ones its weights were trained with.

Any mismatch (a hand edit, a truncated file, a file or checkpoint from another run) is one line
naming the file, for ``evaluate``, ``predict``, ``--resume`` and ``rnnkit.load``; a run written
before manifests existed still opens, with a warning.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from test_cli import fails_with
from test_trainer import train_tiny_run

import rnnkit
from rnnkit.errors import CheckpointError
from rnnkit.runs import open_run


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def other_run(tmp_path_factory) -> Path:
    """A run of another model on other data: its files and checkpoints do not fit ``finished_run``."""
    return train_tiny_run(tmp_path_factory.mktemp("other"), **{"data.max_vocab": 12, "model.hidden_size": 6})


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def edit_config(run: Path) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["hidden_size"] = 5
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def reorder_vocabulary(run: Path) -> None:
    vocab = json.loads((run / "vocab.json").read_text())
    vocab["itos"][2], vocab["itos"][3] = vocab["itos"][3], vocab["itos"][2]
    (run / "vocab.json").write_text(json.dumps(vocab))


def string_labels(run: Path) -> None:
    (run / "labels.json").write_text('"wxyz"')


def truncate_vocabulary(run: Path) -> None:
    data = (run / "vocab.json").read_bytes()
    (run / "vocab.json").write_bytes(data[: len(data) // 2])


DAMAGE = {
    "config.yaml": edit_config,
    "vocab.json": reorder_vocabulary,
    "labels.json": string_labels,
    "vocab.json (truncated)": truncate_vocabulary,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_changed_metadata_file_is_one_line_naming_it_for_every_reader(damage, run, capsys):
    DAMAGE[damage](run)
    name = damage.split()[0]
    with pytest.raises(CheckpointError, match=re.escape(name)):
        rnnkit.load(run)
    fails_with(capsys, ["predict", "--run-dir", str(run), "orbit moon"], name)
    fails_with(capsys, ["evaluate", "--run-dir", str(run)], name)
    fails_with(capsys, ["train", "--resume", str(run)], name)


def test_a_checkpoint_copied_from_another_run_is_one_line_naming_it(run, other_run, capsys):
    for name in ("best", "last", "previous"):
        shutil.copy(other_run / "checkpoints" / f"{name}.safetensors", run / "checkpoints")
    with pytest.raises(CheckpointError, match=r"best\.safetensors"):
        open_run(run)
    fails_with(capsys, ["train", "--resume", str(run)], "last.safetensors", "vocab.json")


def test_metadata_files_copied_from_another_run_with_their_manifest_are_refused(run, other_run):
    for name in ("config.yaml", "vocab.json", "labels.json", "run.json"):
        shutil.copy(other_run / name, run / name)
    with pytest.raises(CheckpointError, match=r"best\.safetensors was saved with a different"):
        open_run(run)


def test_a_run_written_before_manifests_opens_with_a_warning(run, caplog):
    (run / "run.json").unlink()
    assert open_run(run).predictor().predict(["orbit moon"])
    assert "no run.json" in caplog.text


def test_an_old_run_with_mismatched_labels_is_still_one_line(run):
    (run / "run.json").unlink()
    string_labels(run)
    with pytest.raises(CheckpointError, match=r"labels\.json"):
        open_run(run)


def test_an_old_run_whose_config_does_not_fit_its_weights_is_one_line(run):
    (run / "run.json").unlink()
    edit_config(run)
    with pytest.raises(CheckpointError, match=r"config\.yaml does not describe the weights"):
        open_run(run)


def test_a_damaged_manifest_is_one_line(run, capsys):
    (run / "run.json").write_text("{")
    fails_with(capsys, ["predict", "--run-dir", str(run), "orbit"], "run.json")
