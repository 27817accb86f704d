"""A trained run as a predictor: ``rnnkit.load(run).predict(texts)`` and ``rnnkit predict``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from test_trainer import train_tiny_run

import rnnkit
from rnnkit.cli import main
from rnnkit.predict import Predictor

LABELS = ["hockey", "mideast", "space"]
TEXTS = ["nasa launch orbit moon", "puck goal playoff", "peace treaty land", ""]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("predict"), **{"train.epochs": 4, "train.lr": 0.03})


def test_load_rebuilds_the_run_as_a_predictor_with_its_label_names(run_dir):
    predictor = rnnkit.load(run_dir)
    assert isinstance(predictor, Predictor)
    assert predictor.label_names == LABELS


def test_predict_returns_one_label_name_per_text_even_for_empty_text(run_dir):
    labels = rnnkit.load(run_dir).predict(TEXTS)
    assert len(labels) == len(TEXTS) and set(labels) <= set(LABELS)


def test_probabilities_have_a_column_per_class_and_rows_summing_to_one(run_dir):
    probs = rnnkit.load(run_dir).predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS), len(LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_predictions_do_not_depend_on_the_other_texts_in_the_call(run_dir):
    predictor = rnnkit.load(run_dir)
    together = predictor.predict_proba(TEXTS)
    alone = np.vstack([predictor.predict_proba([text]) for text in TEXTS])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_top_k_lists_the_most_probable_classes_first(run_dir):
    predictor = rnnkit.load(run_dir)
    (top,) = predictor.predict_top_k(["nasa launch orbit"], k=2)
    assert len(top) == 2 and top[0][1] >= top[1][1]
    assert top[0][0] == predictor.predict("nasa launch orbit")[0]


def test_the_model_learned_the_topics(run_dir):
    assert rnnkit.load(run_dir).predict(TEXTS[:3]) == ["space", "hockey", "mideast"]


def test_no_texts_give_an_empty_result(run_dir):
    assert rnnkit.load(run_dir).predict_proba([]).shape == (0, len(LABELS))


def test_the_cli_prints_label_and_probability_per_text(run_dir, capsys):
    assert main(["predict", "--run-dir", str(run_dir), *TEXTS[:2]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    label, prob = lines[0].split("\t")
    assert label in LABELS and 0.0 <= float(prob) <= 1.0


def test_the_cli_prints_one_numbered_row_per_line_and_shows_top_k(run_dir, tmp_path, capsys):
    file = tmp_path / "docs.txt"
    file.write_text("nasa launch\n\npuck goal\n", encoding="utf-8")
    assert main(["predict", "--run-dir", str(run_dir), "--file", str(file), "--top-k", "3"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in rows] == ["1", "2", "3"] and all(len(row) == 7 for row in rows)
    assert rows[1][1:] == [""] * 6  # the blank line: a row, no prediction
    assert rows[2][1] == rnnkit.load(run_dir).predict("puck goal")[0]


def test_the_cli_reads_standard_input_with_a_dash(run_dir, monkeypatch, capsys):
    stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO("nasa launch\npuck goal".encode("utf-16"))))
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["predict", "--run-dir", str(run_dir), "--file", "-"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    expected = rnnkit.load(run_dir).predict(["nasa launch", "puck goal"])
    assert [row[:2] for row in rows] == [["1", expected[0]], ["2", expected[1]]]


def test_the_cli_names_each_file_of_a_folder(run_dir, tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("nasa launch orbit", encoding="utf-8")
    (tmp_path / "docs" / "b.txt").write_bytes(b"puck goal \xff")
    assert main(["predict", "--run-dir", str(run_dir), "--file", str(tmp_path / "docs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["a.txt", "b.txt"]


def test_the_cli_writes_one_row_per_line_with_its_number_to_jsonl(run_dir, tmp_path):
    file = tmp_path / "docs.txt"
    file.write_text("nasa launch\n\npuck goal\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    argv = ["predict", "--run-dir", str(run_dir), "--file", str(file), "--output", str(out)]
    assert main([*argv, "--top-k", "2", "--with-text"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(row["line"], row["text"]) for row in rows] == [(1, "nasa launch"), (2, ""), (3, "puck goal")]
    assert rows[1]["label"] is None and rows[1]["top_k"] == []
    expected = rnnkit.load(run_dir).predict_top_k(["nasa launch", "puck goal"], 2)
    assert [[(p["label"], p["probability"]) for p in row["top_k"]] for row in rows[::2]] == expected


def test_the_cli_refuses_an_output_format_it_cannot_write_before_loading_the_model(tmp_path, capsys):
    argv = ["predict", "--run-dir", str(tmp_path / "no-run"), "x", "--output", str(tmp_path / "out.xlsx")]
    assert main(argv) == 2
    assert ".jsonl or .csv" in capsys.readouterr().err
