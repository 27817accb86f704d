"""``rnnkit predict``'s input and output: one row per input line, numbered; rows go to JSONL or CSV.

Row N is line N of ``--file``: lines end at ``\\n`` only, blank lines keep a row without a
prediction, a byte-order mark picks the encoding, ``-`` is standard input, and the input is read
and predicted a chunk at a time, so an endless stream still yields its first rows.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import os
import threading

import pytest

from rnnkit.errors import DataError
from rnnkit.prediction_io import (
    Document,
    predict_documents,
    print_predictions,
    read_documents,
    write_predictions,
)

TOP = [[("space", 0.9), ("hockey", 0.06)], [("hockey", 0.7), ("space", 0.2)]]


def fake_top_k(texts: list[str]) -> list[list[tuple[str, float]]]:
    """Stands in for the model: every text is 'space', with a probability from its length."""
    return [[("space", len(text) / 100), ("hockey", 0.01)] for text in texts]


def read_file(tmp_path, data: bytes) -> list[Document]:
    file = tmp_path / "docs.txt"
    file.write_bytes(data)
    return list(read_documents([], file))


def test_lines_end_at_newline_only_so_n_lines_give_n_documents(tmp_path):
    # str.splitlines would also split at \f, \x1c-\x1e, \x85 and U+2028: 6 documents from 2 lines.
    text = "a\fb\x1cc\x1dd\x1ee\x85f\u2028g\r\nsecond line\n"
    documents = read_file(tmp_path, text.encode("utf-8"))
    assert [d.source for d in documents] == [1, 2]
    assert documents[0].text == "a\fb\x1cc\x1dd\x1ee\x85f\u2028g"  # the \r of \r\n is dropped
    assert documents[1].text == "second line"


def test_a_last_line_without_newline_is_a_line_and_a_final_newline_adds_none(tmp_path):
    assert [d.text for d in read_file(tmp_path, b"one\ntwo")] == ["one", "two"]
    assert [d.text for d in read_file(tmp_path, b"one\ntwo\n")] == ["one", "two"]


def test_blank_lines_keep_their_row_without_a_prediction(tmp_path):
    documents = read_file(tmp_path, b"first\n\n  \nfourth\n")
    predicted = list(predict_documents(documents, fake_top_k))
    assert [(d.source, d.text) for d, _ in predicted] == [(1, "first"), (2, ""), (3, "  "), (4, "fourth")]
    assert [bool(pairs) for _, pairs in predicted] == [True, False, False, True]
    assert predicted[3][1] == fake_top_k(["fourth"])[0]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_byte_order_mark_picks_the_encoding(tmp_path, encoding):
    text = "café\nnaïve über\n"
    data = text.encode(encoding)
    if encoding in ("utf-16-le", "utf-16-be"):  # these codecs write no mark: add it
        data = (codecs.BOM_UTF16_LE if encoding.endswith("le") else codecs.BOM_UTF16_BE) + data
    assert [(d.source, d.text) for d in read_file(tmp_path, data)] == [(1, "café"), (2, "naïve über")]


def test_a_folder_names_each_document_by_its_path_and_reads_its_byte_order_mark(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes("bée".encode("utf-16"))
    (tmp_path / "a.txt").write_text("ay", encoding="utf-8")
    (tmp_path / ".hidden").write_text("no", encoding="utf-8")
    documents = read_documents([], tmp_path)
    assert documents.source_name == "file"
    assert [(d.source, d.text) for d in documents] == [("a.txt", "ay"), ("sub/b.txt", "bée")]


def test_undecodable_lines_and_nul_bytes_are_counted_by_line(tmp_path):
    file = tmp_path / "docs.txt"
    file.write_bytes(b"fine\nbad \xff byte\n" + "utf-16 without a mark\n".encode("utf-16-le"))
    documents = read_documents([], file)
    texts = [d.text for d in documents]
    assert texts[1] == "bad \ufffd byte"
    assert documents.undecodable == [2]
    assert documents.nul_bytes[0] == 3  # (UTF-16's "\n" is 0A 00: the 00 begins line 4)


def test_a_dash_reads_standard_input(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"one\n\nthree"))))
    documents = read_documents([], "-")
    assert documents.source_name == "line"
    assert [(d.source, d.text) for d in documents] == [(1, "one"), (2, ""), (3, "three")]


class EndlessLines(io.RawIOBase):
    """A stream that never ends (``yes``-like); reading past ``limit`` bytes fails the test."""

    def __init__(self, limit: int) -> None:
        self.given = 0
        self.limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.given > self.limit:
            raise AssertionError(f"read {self.given} bytes: the input is not streamed")
        line = b"a short line\n"
        count = len(buffer) // len(line)
        buffer[: count * len(line)] = line * count
        self.given += count * len(line)
        return count * len(line)


def test_documents_are_read_and_predicted_a_chunk_at_a_time(monkeypatch):
    stream = EndlessLines(limit=10_000_000)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(stream)))
    asked: list[int] = []

    def top_k(texts):
        asked.append(len(texts))
        return fake_top_k(texts)

    predicted = predict_documents(read_documents([], "-"), top_k, chunk=100)
    first = list(itertools.islice(predicted, 250))
    assert [d.source for d, _ in first] == list(range(1, 251))
    assert asked == [100, 100, 100]
    assert stream.given < 100_000  # a few buffers, not the (endless) input


def test_texts_on_the_command_line_are_numbered_by_position():
    documents = read_documents(["a", "b"], None)
    assert documents.source_name == "line"
    assert [(d.source, d.text) for d in documents] == [(1, "a"), (2, "b")]


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_documents([], tmp_path / "nope.txt")


def test_a_named_pipe_is_read_line_by_line_like_a_file(tmp_path):
    """As bash's ``--file <(command)`` gives it: a path that exists but is not a regular file."""
    pipe = tmp_path / "lines"
    os.mkfifo(pipe)
    writer = threading.Thread(target=lambda: pipe.write_bytes(b"first\nsecond\n"))
    writer.start()
    assert [(d.source, d.text) for d in read_documents([], pipe)] == [(1, "first"), (2, "second")]
    writer.join()


def test_an_empty_device_gives_no_documents():
    assert list(read_documents([], os.devnull)) == []


def test_printed_rows_start_with_the_line_number_and_a_blank_line_has_empty_label_fields():
    predicted = [(Document(1, "x"), TOP[0]), (Document(2, " "), [])]
    out = io.StringIO()
    tally = print_predictions(out, "line", predicted, k=2)
    assert out.getvalue().splitlines() == ["1\tspace\t0.9000\thockey\t0.0600", "2\t\t\t\t"]
    assert (tally.rows, tally.blank) == (2, 1)


def test_jsonl_rows_hold_source_text_label_probability_and_top_k(tmp_path):
    predicted = [(Document(3, "x"), TOP[0]), (Document(5, ""), []), (Document(7, "y"), TOP[1])]
    tally = write_predictions(tmp_path / "out.jsonl", "line", iter(predicted), with_text=True, k=2)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {
        "line": 3,
        "text": "x",
        "label": "space",
        "probability": 0.9,
        "top_k": [{"label": "space", "probability": 0.9}, {"label": "hockey", "probability": 0.06}],
    }
    assert lines[1] == {"line": 5, "text": "", "label": None, "probability": None, "top_k": []}
    assert lines[2]["line"] == 7 and lines[2]["label"] == "hockey"
    assert (tally.rows, tally.blank) == (3, 1)


def test_csv_has_one_column_pair_per_extra_class_and_text_only_when_asked(tmp_path):
    predicted = [(Document("a.txt", "x"), TOP[0]), (Document("b.txt", ""), [])]
    write_predictions(tmp_path / "out.csv", "file", predicted, with_text=False, k=2)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table == [
        ["file", "label", "probability", "label_2", "probability_2"],
        ["a.txt", "space", "0.9", "hockey", "0.06"],
        ["b.txt", "", "", "", ""],
    ]


def test_label_sets_are_lists_in_jsonl_and_joined_cells_in_csv_and_an_empty_set_is_not_blank(tmp_path):
    predicted = [(Document(1, "x"), TOP[0]), (Document(2, "y"), []), (Document(3, " "), [])]
    tally = write_predictions(tmp_path / "out.jsonl", "line", iter(predicted), False, 0, label_sets=True)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {"line": 1, "labels": ["space", "hockey"], "probabilities": [0.9, 0.06]},
        {"line": 2, "labels": [], "probabilities": []},
        {"line": 3, "labels": None, "probabilities": None},
    ]
    assert (tally.rows, tally.blank) == (3, 1)
    write_predictions(tmp_path / "out.csv", "line", iter(predicted), True, 0, label_sets=True)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table == [
        ["line", "text", "labels", "probabilities"],
        ["1", "x", "space|hockey", "0.9|0.06"],
        ["2", "y", "", ""],
        ["3", " ", "", ""],
    ]


def test_an_output_name_without_a_known_format_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"\.jsonl or \.csv"):
        write_predictions(tmp_path / "out.txt", "line", [], with_text=False, k=1)
    assert not (tmp_path / "out.txt").exists()


def test_an_output_file_keeps_its_old_content_when_predicting_fails(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")

    def failing():
        yield Document(1, "x"), TOP[0]
        raise RuntimeError("the model failed")

    with pytest.raises(RuntimeError):
        write_predictions(out, "line", failing(), with_text=False, k=2)
    assert out.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_a_command_line_text_that_is_not_utf8_is_read_with_replacement_characters():
    # Python holds argument bytes that are not UTF-8 as lone surrogates; no UTF-8 output holds them.
    documents = read_documents(["fine", "bad \udc80 byte"], None)
    assert [d.text for d in documents] == ["fine", "bad \ufffd byte"]
    assert documents.undecodable == [2]
