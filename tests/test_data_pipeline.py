"""prepare_data on the user's own data: splits, empty documents, caching, encoding new texts."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from threading import Thread

import numpy as np
import pytest

from rnnkit.config import Config
from rnnkit.data import encode_texts, prepare_data
from rnnkit.data.pipeline import _META, _publish
from rnnkit.data.text import UNK_ID
from rnnkit.errors import DataError
from rnnkit.io import exclusive_lock


@pytest.fixture(autouse=True)
def _no_cache_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNKIT_CACHE", raising=False)


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["text,label", *(f'"{text}",{label}' for text, label in rows)]
    path.write_bytes("\n".join(lines).encode("utf-8") + b"\n")
    return path


def _config(tmp_path: Path, path: Path, dataset: str = "csv") -> Config:
    cfg = Config()
    cfg.data.dataset, cfg.data.path, cfg.data.cache_dir = dataset, str(path), str(tmp_path / "cache")
    cfg.data.min_freq, cfg.data.max_length, cfg.data.val_size = 1, 5, 0.25
    cfg.data.token_pattern = r"[a-z0-9]+"  # punctuation-only documents become empty
    return cfg


@pytest.fixture
def split_csv(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    train = [(f"space rocket launch {i}", "space") for i in range(8)] + [
        (f"hockey goal {i}", "sport") for i in range(8)
    ]
    _csv(folder / "train.csv", [*train, ("", "space"), ("!!! ...", "sport")])
    _csv(folder / "test.csv", [("rocket goal unseenword", "space"), ("", "sport")])
    return folder


def test_train_and_test_files_give_a_stratified_validation_part(tmp_path: Path, split_csv: Path) -> None:
    data = prepare_data(_config(tmp_path, split_csv))
    assert (len(data.train), len(data.validation), len(data.test)) == (12, 4, 2)
    assert np.bincount(data.validation.labels).tolist() == [2, 2]
    assert data.label_names == ["space", "sport"] and data.embeddings is None


def test_train_docs_keeps_a_stratified_subset_of_the_training_part_only(
    tmp_path: Path, split_csv: Path
) -> None:
    full = prepare_data(_config(tmp_path, split_csv))
    cfg = _config(tmp_path, split_csv)
    cfg.data.train_docs = 4
    data = prepare_data(cfg)
    assert len(data.train) == 4 and np.bincount(data.train.labels).tolist() == [2, 2]
    assert data.stats["train_docs_left_out"] == 8
    assert (len(data.validation), len(data.test)) == (len(full.validation), len(full.test))
    assert len(data.vocab) < len(full.vocab)  # built from the kept documents only


def test_empty_training_documents_are_dropped_and_empty_test_documents_become_unk(
    tmp_path: Path, split_csv: Path
) -> None:
    data = prepare_data(_config(tmp_path, split_csv))
    assert data.stats["empty_docs_dropped"] == 1 and data.stats["empty_after_cleaning_dropped"] == 1
    assert data.stats["empty_test_docs_as_unk"] == 1 and data.test.sequences[1].tolist() == [UNK_ID]
    assert data.train.lengths.min() >= 1 and data.train.lengths.max() <= 5


def test_vocabulary_comes_from_the_training_part_only(tmp_path: Path, split_csv: Path) -> None:
    data = prepare_data(_config(tmp_path, split_csv))
    assert "unseenword" not in data.vocab
    validation_only = {t for s in data.validation.sequences for t in s} - {
        t for s in data.train.sequences for t in s
    }
    assert validation_only <= {UNK_ID}


def test_second_run_hits_the_cache_with_identical_data(tmp_path: Path, split_csv: Path) -> None:
    cfg = _config(tmp_path, split_csv)
    first, second = prepare_data(cfg), prepare_data(cfg)
    assert (first.stats["corpus_cache"], second.stats["corpus_cache"]) == ("miss", "hit")
    assert first.vocab == second.vocab
    assert all(
        np.array_equal(a, b) for a, b in zip(first.train.sequences, second.train.sequences, strict=True)
    )
    assert np.array_equal(first.test.labels, second.test.labels)


def test_cache_misses_when_a_file_or_a_setting_changes(tmp_path: Path, split_csv: Path) -> None:
    cfg = _config(tmp_path, split_csv)
    prepare_data(cfg)
    cfg.data.min_freq = 2
    assert prepare_data(cfg).stats["corpus_cache"] == "miss"
    _csv(split_csv / "test.csv", [("rocket", "space")])
    os.utime(split_csv / "test.csv", ns=(1, 1))
    changed = prepare_data(cfg)
    assert changed.stats["corpus_cache"] == "miss" and len(changed.test) == 1


def test_env_var_overrides_the_cache_folder(
    tmp_path: Path, split_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "env-cache"))
    prepare_data(_config(tmp_path, split_csv))
    assert (tmp_path / "env-cache" / "corpus").is_dir() and not (tmp_path / "cache").exists()


def test_one_folder_is_split_by_test_size(tmp_path: Path) -> None:
    for label in ("a", "b"):
        for i in range(10):
            (tmp_path / "docs" / label).mkdir(parents=True, exist_ok=True)
            (tmp_path / "docs" / label / f"{i}.txt").write_bytes(f"{label} word {i} \xff".encode("latin-1"))
    data = prepare_data(_config(tmp_path, tmp_path / "docs", dataset="folder"))
    assert len(data.test) == 4 and np.bincount(data.test.labels).tolist() == [2, 2]
    assert data.stats["undecodable_docs"] == 20


def test_jsonl_file_with_train_word2vec_embeddings(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"text": "word{i % 3} common", "label": {i % 2}}}\n' for i in range(20)))
    cfg = _config(tmp_path, path, dataset="jsonl")
    cfg.embeddings.source, cfg.embeddings.dim = "train", 4
    data = prepare_data(cfg)
    assert data.embeddings is not None and tuple(data.embeddings.shape) == (len(data.vocab), 4)
    assert data.stats["embedding_coverage_vocab_pct"] == 100.0 and not data.embeddings[0].any()


def test_encode_texts_reads_new_text_like_training_did(tmp_path: Path, split_csv: Path) -> None:
    data = prepare_data(_config(tmp_path, split_csv))
    encoded = encode_texts(["Rocket LAUNCH never-seen", ""], data.vocab, max_length=5)
    rocket, launch = data.vocab.stoi["rocket"], data.vocab.stoi["launch"]
    assert encoded.sequences[0].tolist()[:2] == [rocket, launch]
    assert encoded.sequences[1].tolist() == [UNK_ID] and encoded.labels.tolist() == [0, 0]


def test_data_with_one_class_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "one.csv", [(f"word {i}", "spam") for i in range(20)])
    with pytest.raises(DataError, match=r"only one class \('spam'\)"):
        prepare_data(_config(tmp_path, path))


def test_a_class_the_training_part_never_shows_is_named_in_the_log(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _csv(
        folder / "train.csv",
        [(f"space {i}", "space") for i in range(8)] + [(f"goal {i}", "sport") for i in range(8)],
    )
    _csv(folder / "test.csv", [("rocket", "space"), ("cake", "food"), ("pie", "food")])
    data = prepare_data(_config(tmp_path, folder))
    assert data.label_names == ["food", "space", "sport"]
    assert "class 'food' has no training document (2 in the test part)" in caplog.text


@pytest.mark.parametrize("cached", [False, True])
def test_the_log_says_which_part_is_the_test_set_and_where_it_came_from(
    tmp_path: Path, split_csv: Path, caplog, cached
) -> None:
    caplog.set_level(logging.INFO)
    if cached:
        prepare_data(_config(tmp_path, split_csv))
        caplog.clear()
    prepare_data(_config(tmp_path, split_csv))
    assert f"test set: {split_csv / 'test.csv'} (2 documents)" in caplog.text
    caplog.clear()
    prepare_data(_config(tmp_path, split_csv / "train.csv"))
    assert f"test set: 20% of {split_csv / 'train.csv'} held out" in caplog.text
    assert f"{split_csv / 'test.csv'} is not used: set data.path={split_csv}" in caplog.text


def test_undecodable_documents_and_rows_without_a_label_are_counted_in_the_log(
    tmp_path: Path, caplog
) -> None:
    rows = [f"word{i % 3} x,{'ab'[i % 2]}" for i in range(20)] + ["caf\xe9,a", "no label,"]
    path = tmp_path / "d.csv"
    path.write_bytes(("text,label\n" + "\n".join(rows) + "\n").encode("latin-1"))
    prepare_data(_config(tmp_path, path))
    assert "1 documents had bytes that are not UTF-8" in caplog.text
    assert "1 rows without a label were skipped" in caplog.text


def test_worker_processes_prepare_exactly_the_data_of_one_process(
    tmp_path: Path, split_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnnkit.data import encoding

    monkeypatch.setattr(encoding, "CHUNK_DOCUMENTS", 2)
    prepared = []
    for workers in (1, 2):
        cfg = _config(tmp_path, split_csv)
        cfg.data.num_workers, cfg.data.cache_dir = workers, str(tmp_path / f"cache{workers}")
        prepared.append(prepare_data(cfg))
    one, two = prepared
    assert one.vocab == two.vocab and one.stats == two.stats
    for name in ("train", "validation", "test"):
        a, b = getattr(one, name), getattr(two, name)
        assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]
        assert np.array_equal(a.labels, b.labels)


def test_the_cache_holds_one_flat_id_file_and_the_splits_as_positions(
    tmp_path: Path, split_csv: Path
) -> None:
    data = prepare_data(_config(tmp_path, split_csv))
    (folder,) = (tmp_path / "cache" / "corpus").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [
        "ids.npy",
        "labels.npy",
        "meta.json",
        "offsets.npy",
        "test.npy",
        "train.npy",
        "validation.npy",
        "vocab.json",
    ]
    ids, offsets = np.load(folder / "ids.npy"), np.load(folder / "offsets.npy")
    first = int(np.load(folder / "train.npy")[0])
    assert data.train.sequences[0].tolist() == ids[offsets[first] : offsets[first + 1]][:5].tolist()


def test_a_file_in_two_class_folders_reaches_the_cached_corpus_as_one_document_with_both_labels(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    for label, words in (("grain", "wheat harvest"), ("corn", "maize field"), ("ships", "port cargo")):
        (root / label).mkdir(parents=True)
        for i in range(6):
            (root / label / f"{label}{i}.txt").write_text(f"{words} {i}")
    (root / "grain" / "both.txt").write_text("wheat and maize exports")
    (root / "corn" / "both.txt").write_text("wheat and maize exports")
    cfg = _config(tmp_path, root, dataset="folder")
    cfg.data.test_size = 0.2
    for _ in range(2):  # built, then read back from the cache
        data = prepare_data(cfg)
        assert data.task == "multilabel" and data.label_names == ["corn", "grain", "ships"]
        splits = [data.train, data.validation, data.test]
        assert sum(len(split) for split in splits) == 19
        rows = np.concatenate([split.labels for split in splits])
        assert rows.sum(axis=1).tolist().count(2.0) == 1 and rows.sum() == 20
    assert data.stats["corpus_cache"] == "hit"


@pytest.mark.parametrize(
    "damage",
    [
        "truncated ids.npy",
        "truncated offsets.npy",
        "truncated vocab.json",
        "truncated meta.json",
        "truncated labels.npy",
        "labels out of range",
    ],
)
def test_a_damaged_cache_entry_is_built_again_never_used(
    tmp_path: Path, split_csv: Path, caplog, damage: str
) -> None:
    cfg = _config(tmp_path, split_csv)
    first = prepare_data(cfg)
    (entry,) = (tmp_path / "cache" / "corpus").iterdir()
    name = damage.split()[-1]
    if damage == "labels out of range":  # a whole file whose content does not fit
        np.save(entry / "labels.npy", np.load(entry / "labels.npy") + 10)
    else:
        data = (entry / name).read_bytes()
        (entry / name).write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="rnnkit"):
        rebuilt = prepare_data(cfg)
    assert rebuilt.stats["corpus_cache"] == "miss"
    assert "the tokenised corpus in the cache is damaged" in caplog.text
    assert "building it again" in caplog.text
    assert np.array_equal(rebuilt.train.labels, first.train.labels) and rebuilt.vocab == first.vocab
    assert prepare_data(cfg).stats["corpus_cache"] == "hit"  # the entry was written again, whole


def test_a_cache_folder_that_cannot_be_created_is_one_line_naming_rnnkit_cache(
    tmp_path: Path, split_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "a-file"))
    with pytest.raises(DataError, match=r"RNNKIT_CACHE=.*a-file\) cannot be used.*set RNNKIT_CACHE") as error:
        prepare_data(_config(tmp_path, split_csv))
    assert "\n" not in str(error.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_cache_folder_that_cannot_be_written_is_one_line(
    tmp_path: Path, split_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    monkeypatch.setenv("RNNKIT_CACHE", str(locked))
    with pytest.raises(DataError, match="cannot be used"):
        prepare_data(_config(tmp_path, split_csv))


def test_a_corpus_is_published_by_one_process_at_a_time(tmp_path: Path) -> None:
    """Parallel tune trials prepare the same corpus at once; a second publisher checking for the
    folder while the first moves its own into place removed it under the first one's reads. So
    publishing waits for the lock on the folder of corpora (held here by the test, as another
    process would)."""
    folder = tmp_path / "corpus" / "key"
    folder.parent.mkdir()
    building = tmp_path / "building"
    building.mkdir()
    (building / _META).write_text("{}")
    with exclusive_lock(folder.parent):
        publisher = Thread(target=_publish, args=(building, folder))
        publisher.start()
        publisher.join(timeout=0.5)
        assert publisher.is_alive() and not folder.exists()
    publisher.join(timeout=10)
    assert (folder / _META).exists() and not building.exists()
