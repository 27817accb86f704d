"""``rnnkit evaluate --data``: a trained run scored on new labelled data with its own tokenizer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import fails_with
from test_trainer import train_tiny_run, write_corpus

import rnnkit
from rnnkit.cli import main
from rnnkit.training.new_data import evaluate_data


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("new_data"), **{"train.epochs": 3})


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_new_data_is_scored_as_the_model_predicts_it(run_dir, tmp_path):
    data = rows(write_corpus(tmp_path / "new.csv", docs=30, seed=7))
    result = evaluate_data(run_dir, tmp_path / "new.csv")
    probabilities = rnnkit.load(run_dir).predict_proba([row["text"] for row in data])
    labels = rnnkit.load(run_dir).label_names
    expected = np.mean(
        [labels[i] == row["label"] for i, row in zip(probabilities.argmax(1), data, strict=True)]
    )
    assert result["documents"] == result["scored"] == 30 and result["unseen_labels"] == {}
    assert result["metrics"]["accuracy"] == pytest.approx(expected)


def test_labels_the_model_never_saw_are_named_counted_and_left_out(run_dir, tmp_path, caplog):
    path = tmp_path / "new.jsonl"
    records = [{"text": "nasa orbit", "label": "space"}, {"text": "a cat", "label": "pets"}]
    records += [{"text": "dog", "label": "pets"}, {"text": "chip", "label": "hardware"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = evaluate_data(run_dir, path)
    assert result["documents"] == 4 and result["scored"] == 1
    assert result["unseen_labels"] == {"pets": 2, "hardware": 1}
    assert "3 of 4 documents have labels the model never saw" in caplog.text and "pets (2)" in caplog.text


def test_a_folder_per_class_and_other_column_names_work(run_dir, tmp_path):
    for label, text in [("space", "rocket launch"), ("hockey", "puck"), ("hockey", "goal ice")]:
        folder = tmp_path / "docs" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{len(list(folder.iterdir()))}.txt").write_text(text, encoding="utf-8")
    assert evaluate_data(run_dir, tmp_path / "docs")["scored"] == 3
    (tmp_path / "other.csv").write_text("body,topic\npuck goal,hockey\n", encoding="utf-8")
    assert evaluate_data(run_dir, tmp_path / "other.csv", "body", "topic")["scored"] == 1


def test_the_cli_prints_scores_and_the_count_of_unseen_labels(run_dir, tmp_path, capsys):
    path = tmp_path / "new.csv"
    path.write_text("text,label\nnasa orbit,space\na cat,pets\n", encoding="utf-8")
    assert main(["evaluate", "-q", "--run-dir", str(run_dir), "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: accuracy ") and "1 of 2 documents scored; 1 with labels" in out


def test_data_without_a_single_known_label_is_one_line(run_dir, tmp_path, capsys):
    path = tmp_path / "new.csv"
    path.write_text("text,label\na cat,pets\n", encoding="utf-8")
    fails_with(capsys, ["evaluate", "--run-dir", str(run_dir), "--data", str(path)], "no document of")


def test_a_path_that_is_not_labelled_data_is_one_line(run_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    argv = ["evaluate", "--run-dir", str(run_dir), "--data", str(tmp_path / "notes.txt")]
    fails_with(capsys, argv, "neither a folder nor a .csv or .jsonl file")
    fails_with(capsys, [*argv, "--split", "test"], "not both")
