"""``rnnkit predict``'s input and output: documents keep their origin, rows go to JSONL or CSV."""

from __future__ import annotations

import csv
import json

import pytest

from rnnkit.errors import DataError
from rnnkit.prediction_io import Documents, prediction_rows, read_documents, write_predictions

TOP = [[("space", 0.9), ("hockey", 0.06)], [("hockey", 0.7), ("space", 0.2)]]


def test_lines_keep_their_line_numbers_when_empty_lines_are_skipped(tmp_path):
    file = tmp_path / "docs.txt"
    file.write_text("first\n\n  \nfourth\n", encoding="utf-8")
    documents = read_documents([], file)
    assert documents.texts == ["first", "fourth"]
    assert documents.sources == [1, 4] and documents.source_name == "line"


def test_texts_on_the_command_line_are_numbered_by_position():
    documents = read_documents(["a", "b"], None)
    assert documents.sources == [1, 2] and documents.source_name == "line"


def test_a_folder_names_each_document_by_its_path(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("bee", encoding="utf-8")
    (tmp_path / "a.txt").write_text("ay", encoding="utf-8")
    (tmp_path / ".hidden").write_text("no", encoding="utf-8")
    documents = read_documents([], tmp_path)
    assert documents.sources == ["a.txt", "sub/b.txt"] and documents.source_name == "file"


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_documents([], tmp_path / "nope.txt")


def test_jsonl_rows_hold_source_text_label_probability_and_top_k(tmp_path):
    rows = prediction_rows(Documents(["x", "y"], [3, 7], "line"), TOP, with_text=True)
    write_predictions(tmp_path / "out.jsonl", rows)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {
        "line": 3,
        "text": "x",
        "label": "space",
        "probability": 0.9,
        "top_k": [{"label": "space", "probability": 0.9}, {"label": "hockey", "probability": 0.06}],
    }
    assert lines[1]["line"] == 7 and lines[1]["label"] == "hockey"


def test_csv_has_one_column_pair_per_extra_class_and_text_only_when_asked(tmp_path):
    rows = prediction_rows(Documents(["x", "y"], ["a.txt", "b.txt"], "file"), TOP, with_text=False)
    write_predictions(tmp_path / "out.csv", rows)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["file", "label", "probability", "label_2", "probability_2"]
    assert table[1] == ["a.txt", "space", "0.9", "hockey", "0.06"]


def test_an_output_name_without_a_known_format_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"\.jsonl or \.csv"):
        write_predictions(tmp_path / "out.txt", [])
    assert not (tmp_path / "out.txt").exists()
