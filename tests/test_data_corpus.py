"""The user's own data: folders, CSV and JSONL, with bad bytes and missing labels handled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import load_csv, load_folder, load_jsonl, load_user_data, split_dataset
from rnnkit.data.corpus import TextDataset, encode_labels
from rnnkit.errors import DataError


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_folder_per_class_gives_sorted_label_names(tmp_path: Path) -> None:
    _write(tmp_path / "spam" / "1.txt", "buy now")
    _write(tmp_path / "ham" / "1.txt", "hello friend")
    _write(tmp_path / "ham" / ".hidden", "ignored")
    data = load_folder(tmp_path)
    assert data.label_names == ["ham", "spam"]
    assert data.texts == ["hello friend", "buy now"] and data.labels.tolist() == [0, 1]


def test_undecodable_bytes_are_replaced_and_counted(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "1.txt", b"caf\xe9 \xff ok")
    _write(tmp_path / "a" / "2.txt", "fine")
    data = load_folder(tmp_path)
    assert data.texts[0] == "caf\ufffd \ufffd ok"
    assert data.stats["undecodable_docs"] == 1


def test_train_and_test_subfolders_share_one_label_space(tmp_path: Path) -> None:
    _write(tmp_path / "train" / "b" / "1", "x")
    _write(tmp_path / "test" / "a" / "1", "y")
    train, test = load_user_data("folder", tmp_path)
    assert train.label_names == test.label_names == ["a", "b"]
    assert (train.labels.tolist(), test.labels.tolist()) == ([1], [0])


def test_csv_labels_of_any_type_map_to_sorted_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", 'body,y\n"multi\nline",10\nshort,2\nempty label,\n')
    data = load_csv(path, text_column="body", label_column="y")
    assert data.label_names == ["2", "10"]  # numeric order, not string order
    assert data.texts == ["multi\nline", "short"] and data.labels.tolist() == [1, 0]
    assert data.stats["missing_label"] == 1


def test_csv_with_bad_bytes_counts_the_affected_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", b"text,label\nok,a\nbad \xff,b\n")
    assert load_csv(path).stats["undecodable_docs"] == 1


def test_missing_column_is_a_data_error_naming_the_setting(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "content,label\nx,a\n")
    with pytest.raises(DataError, match=r"data\.text_column"):
        load_csv(path)


def test_jsonl_accepts_mixed_label_types_and_empty_texts(tmp_path: Path) -> None:
    lines = [
        {"text": "a", "label": 1},
        {"text": "", "label": "x"},
        {"text": None, "label": True},
        {"text": "b"},
    ]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    data = load_jsonl(path)
    assert data.label_names == ["1", "True", "x"]
    assert data.texts == ["a", "", ""] and data.labels.tolist() == [0, 2, 1]
    assert data.stats["missing_label"] == 1


def test_invalid_json_line_is_a_data_error_with_its_line_number(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"d.jsonl:2"):
        load_jsonl(path)


def test_encode_labels_can_reuse_given_names() -> None:
    ids, names = encode_labels(["b", "a"], names=["a", "b", "c"])
    assert ids.tolist() == [1, 0] and names == ["a", "b", "c"]


def test_split_is_stratified_seeded_and_disjoint() -> None:
    data = TextDataset([str(i) for i in range(40)], np.repeat([0, 1], 20), ["a", "b"])
    rest, held = split_dataset(data, 0.25, seed=3)
    again = split_dataset(data, 0.25, seed=3)[1]
    assert held.texts == again.texts and len(held) == 10
    assert np.bincount(held.labels).tolist() == [5, 5]
    assert not set(rest.texts) & set(held.texts)


def test_tiny_data_falls_back_to_a_plain_split() -> None:
    data = TextDataset(["a", "b", "c"], [0, 1, 2], ["x", "y", "z"])
    rest, held = split_dataset(data, 0.34, seed=0)
    assert len(rest) + len(held) == 3 and len(held) == 2


def test_one_number_spelled_several_ways_is_one_class(tmp_path: Path, caplog) -> None:
    path = _write(tmp_path / "d.csv", "text,label\na,1\nb,1.0\nc, 1\nd,2\ne,01\n")
    data = load_csv(path)
    assert data.label_names == ["1", "2"] and data.labels.tolist() == [0, 0, 0, 1, 0]
    assert "'01', '1', '1.0' are the same number" in caplog.text


def test_labels_lose_their_surrounding_spaces_and_a_lone_spelling_keeps_its_form(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"text": "a", "label": " spam "}\n{"text": "b", "label": "007"}\n')
    assert load_jsonl(path).label_names == ["007", "spam"]


def test_json_numbers_and_number_strings_are_one_class(tmp_path: Path) -> None:
    lines = ['{"text": "a", "label": 1}', '{"text": "b", "label": 1.0}', '{"text": "c", "label": "1"}']
    assert load_jsonl(_write(tmp_path / "d.jsonl", "\n".join(lines))).label_names == ["1"]


def test_a_symlink_to_a_file_outside_the_data_folder_is_skipped_and_counted(tmp_path: Path, caplog) -> None:
    secret = _write(tmp_path / "outside" / "secret.txt", "password hunter2")
    _write(tmp_path / "data" / "a" / "1.txt", "inside")
    _write(tmp_path / "data" / "b" / "1.txt", "inside too")
    (tmp_path / "data" / "a" / "2.txt").symlink_to(secret)
    (tmp_path / "data" / "b" / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    (tmp_path / "data" / "b" / "2.txt").symlink_to(tmp_path / "data" / "a" / "1.txt")  # inside: kept
    data = load_folder(tmp_path / "data")
    assert not any("hunter2" in text for text in data.texts)
    assert sorted(data.texts) == ["inside", "inside", "inside too"]
    assert data.stats["symlinks_outside_skipped"] == 2  # the file and the folder
    assert "outside" in caplog.text and "symlink" in caplog.text


def test_a_symlinked_class_folder_outside_the_data_folder_is_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "outside" / "secret.txt", "password hunter2")
    _write(tmp_path / "data" / "a" / "1.txt", "inside")
    (tmp_path / "data" / "b").symlink_to(tmp_path / "outside", target_is_directory=True)
    data = load_folder(tmp_path / "data")
    assert data.texts == ["inside"] and data.label_names == ["a"]


# ---------------------------------------------------------------- multi-label data


def test_label_lists_in_jsonl_are_multilabel_with_empty_lists_kept(tmp_path: Path) -> None:
    rows = [
        {"text": "a", "labels": ["wheat", "grain"]},
        {"text": "b", "labels": []},
        {"text": "c", "labels": ["ship"]},
    ]
    _write(tmp_path / "d.jsonl", "\n".join(json.dumps(row) for row in rows))
    data = load_jsonl(tmp_path / "d.jsonl", label_column="labels")
    assert data.task == "multilabel" and data.label_names == ["grain", "ship", "wheat"]
    assert data.labels.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


def test_a_csv_label_separator_splits_cells_and_a_blank_cell_means_no_label(tmp_path: Path) -> None:
    _write(tmp_path / "d.csv", 'text,label\nx,"grain|wheat"\ny,\nz,ship\n')
    data = load_csv(tmp_path / "d.csv", label_separator="|")
    assert data.label_names == ["grain", "ship", "wheat"]
    assert data.labels.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


def test_the_same_file_in_several_class_folders_is_one_document_with_those_labels(tmp_path: Path) -> None:
    _write(tmp_path / "grain" / "17.txt", "wheat harvest")
    _write(tmp_path / "wheat" / "17.txt", "wheat harvest")
    _write(tmp_path / "ship" / "17.txt", "a different story under the same name")
    data = load_folder(tmp_path)
    assert data.texts == ["wheat harvest", "a different story under the same name"]
    assert data.labels.tolist() == [[1, 0, 1], [0, 1, 0]]


def test_folders_sharing_only_file_names_stay_single_label(tmp_path: Path) -> None:
    _write(tmp_path / "spam" / "1.txt", "buy now")
    _write(tmp_path / "ham" / "1.txt", "hello friend")
    assert load_folder(tmp_path).task == "single"


def test_lists_mixed_with_single_labels_are_refused_unless_the_task_says_multilabel(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": ["grain", "wheat"]}, {"text": "b", "label": "ship"}]
    _write(tmp_path / "d.jsonl", "\n".join(json.dumps(row) for row in rows))
    with pytest.raises(DataError, match=r"mix single values \('ship'\) and lists"):
        load_jsonl(tmp_path / "d.jsonl")
    data = load_jsonl(tmp_path / "d.jsonl", task="multilabel")
    assert data.labels.tolist() == [[1, 0, 1], [0, 1, 0]]


def test_a_single_label_task_refuses_lists_and_empty_lists(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.task is single but a document has an empty label list \[\]"):
        encode_labels(["a", []], task="single")
    with pytest.raises(DataError, match="a list of labels"):
        encode_labels([["a", "b"]], task="single")
    with pytest.raises(DataError, match="a label must be a name"):
        encode_labels([["a", {"b": 1}]])


def test_train_and_test_files_share_the_labels_of_both(tmp_path: Path) -> None:
    _write(tmp_path / "train.jsonl", json.dumps({"text": "x", "label": ["a"]}))
    _write(tmp_path / "test.jsonl", json.dumps({"text": "y", "label": ["b", "a"]}))
    train, test = load_user_data("jsonl", tmp_path)
    assert train.label_names == test.label_names == ["a", "b"]
    assert (train.labels.tolist(), test.labels.tolist()) == ([[1, 0]], [[1, 1]])


def test_a_multilabel_split_keeps_every_label_on_both_sides(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 6)) < [0.5, 0.3, 0.1, 0.05, 0.05, 0.03]).astype(np.float32)
    dataset = TextDataset([str(i) for i in range(200)], labels, list("abcdef"))
    rest, held = split_dataset(dataset, 0.25, seed=1)
    assert (len(rest), len(held)) == (150, 50)
    assert sorted([*rest.texts, *held.texts], key=int) == dataset.texts
    expected = labels.sum(axis=0) * 0.25
    assert np.abs(held.labels.sum(axis=0) - expected).max() <= 1.0  # iterative stratification
    assert split_dataset(dataset, 0.25, seed=1)[1].texts == held.texts  # seeded


def test_labels_inside_lists_are_normalised_like_single_labels(tmp_path: Path) -> None:
    rows = [
        {"text": "a", "label": [1, " grain "]},
        {"text": "b", "label": ["1.0"]},
        {"text": "c", "label": [2]},
    ]
    _write(tmp_path / "d.jsonl", "\n".join(json.dumps(row) for row in rows))
    data = load_jsonl(tmp_path / "d.jsonl")
    assert data.label_names == ["1", "2", "grain"]
    assert data.labels.tolist() == [[1, 0, 1], [1, 0, 0], [0, 1, 0]]


def test_a_symlink_outside_the_folder_is_no_extra_label_of_a_multilabel_document(tmp_path: Path) -> None:
    _write(tmp_path / "outside" / "17.txt", "wheat harvest")
    _write(tmp_path / "data" / "grain" / "17.txt", "wheat harvest")
    _write(tmp_path / "data" / "wheat" / "17.txt", "wheat harvest")
    _write(tmp_path / "data" / "ship" / "3.txt", "a boat")
    (tmp_path / "data" / "ship" / "17.txt").symlink_to(tmp_path / "outside" / "17.txt")
    data = load_folder(tmp_path / "data")
    assert data.label_names == ["grain", "ship", "wheat"]
    assert data.labels.tolist() == [[1, 0, 1], [0, 1, 0]]
    assert data.stats["symlinks_outside_skipped"] == 1
