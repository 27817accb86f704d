"""The corpora shipped in data/ parse, have the counts data/PROVENANCE.md gives, and match its checksums."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from rnnkit.data import load_user_data

DATA = Path(__file__).resolve().parent.parent / "data"
PROVENANCE = (DATA / "PROVENANCE.md").read_text(encoding="utf-8")


def _parts(archive: Path, folder: str) -> dict[str, list[dict]]:
    """``{"train": rows, "test": rows}``; the archive holds exactly the two JSONL files."""
    with tarfile.open(archive, "r:gz") as tar:
        files = {m.name: m for m in tar.getmembers() if m.isfile()}
        assert sorted(files) == [f"{folder}/test.jsonl", f"{folder}/train.jsonl"]
        return {
            part: [
                json.loads(line)
                for line in tar.extractfile(files[f"{folder}/{part}.jsonl"]).read().splitlines()
            ]
            for part in ("train", "test")
        }


@pytest.mark.parametrize("name", ["reuters21578-apte.tar.gz", "thucnews-titles.tar.gz"])
def test_archive_matches_the_checksum_and_size_in_provenance(name: str) -> None:
    entry = re.search(rf"# data/{re.escape(name)}\n(.*?)(?=\n# data/|\Z)", PROVENANCE, re.S)
    assert entry, f"data/PROVENANCE.md has no section for {name}"
    data = (DATA / name).read_bytes()
    assert f"`{hashlib.sha256(data).hexdigest()}`" in entry.group(1)
    assert f"{len(data):,} bytes" in entry.group(1)


def test_reuters_is_the_apte_mod_split_with_90_categories() -> None:
    parts = _parts(DATA / "reuters21578-apte.tar.gz", "reuters21578-apte")
    assert {part: len(rows) for part, rows in parts.items()} == {"train": 7769, "test": 3019}
    labels = {part: Counter(label for row in rows for label in row["labels"]) for part, rows in parts.items()}
    assert (
        len(labels["train"]) == len(labels["test"]) == 90
    )  # every category has a training and a test document
    assert {part: sum(counts.values()) for part, counts in labels.items()} == {"train": 9584, "test": 3744}
    assert (labels["train"]["earn"], labels["test"]["earn"]) == (2877, 1087)
    for rows in parts.values():
        assert all(row["text"].strip() and row["labels"] == sorted(set(row["labels"])) for row in rows)
    ids = [row["id"] for rows in parts.values() for row in rows]
    assert len(set(ids)) == len(ids) and max(row["id"] for row in parts["train"]) < min(
        r["id"] for r in parts["test"]
    )


def test_thucnews_titles_load_as_own_jsonl_data_with_1000_per_class(tmp_path: Path) -> None:
    with tarfile.open(DATA / "thucnews-titles.tar.gz", "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    train, test = load_user_data("jsonl", tmp_path / "thucnews-titles")
    classes = ["education", "entertainment", "finance", "game", "politics"]
    classes += ["realty", "science", "society", "sports", "stocks"]
    for part in (train, test):
        assert part.label_names == classes
        assert Counter(part.labels.tolist()) == dict.fromkeys(range(10), 1000)
        assert all(text.strip() for text in part.texts) and part.stats["undecodable_docs"] == 0
    assert train.texts[0] == "体验2D巅峰 倚天屠龙记十大创新概览"
