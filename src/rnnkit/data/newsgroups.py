"""20 Newsgroups, read from a local ``20news-bydate.tar.gz`` (or its folder) or downloaded.

The result is exactly what ``sklearn.datasets.fetch_20newsgroups`` returns for the same arguments
(texts, labels, label names, order), which the tests check on the shipped sample and
``scripts/check_20newsgroups.py`` checks on the full archive. rnnkit reads the archive itself and
uses only scikit-learn's public API, so no scikit-learn release can change what it loads:

* documents in scikit-learn's order: its ``load_files`` lists the category folders of
  ``20news-bydate-train/`` and ``20news-bydate-test/`` and the files in each by sorted name, reads
  them as latin-1, and shuffles each split with ``RandomState(0)``; ``all`` is train then test;
* ``remove``: the same three heuristics as scikit-learn, applied in its order (headers, footers,
  quotes), re-implemented below;
* ``categories``: the named groups, labelled 0..k-1 in the corpus' (sorted) order;
* ``shuffle``: the indices shuffled by ``check_random_state(random_state)``.

Without an archive, scikit-learn's public ``fetch_20newsgroups`` downloads the corpus (into
``data_home``) and supplies the raw documents in that same order; the steps above then run on them.
"""

from __future__ import annotations

import functools
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.datasets import fetch_20newsgroups
from sklearn.utils import check_random_state

from rnnkit.data.corpus import TextDataset
from rnnkit.errors import DataError

__all__ = ["load_20newsgroups"]

SPLIT_FOLDERS = {"train": "20news-bydate-train", "test": "20news-bydate-test"}
REMOVABLE = ("headers", "footers", "quotes")
ARCHIVE_HINT = (
    "archive=PATH (data.archive in a config) to a local 20news-bydate.tar.gz or its extracted folder"
)
_LOAD_FILES_SEED = 0  # scikit-learn's load_files shuffles every split with RandomState(0)
_QUOTE = re.compile(r"(writes in|writes:|wrote:|says:|said:|^In article|^Quoted from|^\||^>)")


def load_20newsgroups(
    subset: str = "train",
    categories: Sequence[str] | None = None,
    remove: Sequence[str] = (),
    data_home: str | os.PathLike[str] | None = None,
    archive: str | os.PathLike[str] | None = None,
    shuffle: bool = True,
    random_state: int | None = 42,
) -> TextDataset:
    """Same arguments and result as ``sklearn.datasets.fetch_20newsgroups``, as a :class:`TextDataset`.

    With ``archive`` nothing is downloaded; without it scikit-learn downloads the corpus into
    ``data_home`` (or reuses its copy there).
    """
    if subset not in ("train", "test", "all"):
        raise DataError(f"subset must be 'train', 'test' or 'all', got {subset!r}")
    unknown = sorted(set(remove) - set(REMOVABLE))
    if unknown:
        raise DataError(f"remove may only contain 'headers', 'footers', 'quotes'; got {unknown[0]!r}")
    splits = ("train", "test") if subset == "all" else (subset,)
    if archive is not None:
        parts = _read_archive(Path(archive).expanduser(), splits)
    else:
        parts = [_download(split, data_home) for split in splits]
    texts = [text for part in parts for text in part.texts]
    labels = np.concatenate([part.labels for part in parts])
    label_names = parts[-1].label_names
    texts = clean(texts, remove)
    if categories is not None:
        texts, labels, label_names = _select(texts, labels, label_names, categories)
    if shuffle:
        order = np.arange(len(labels))
        check_random_state(random_state).shuffle(order)
        texts, labels = [texts[i] for i in order], labels[order]
    return TextDataset(texts, labels, list(label_names))


def clean(texts: list[str], remove: Sequence[str]) -> list[str]:
    """scikit-learn's ``remove`` cleaning, in its order: headers, then footers, then quotes."""
    if "headers" in remove:
        texts = [strip_header(text) for text in texts]
    if "footers" in remove:
        texts = [strip_footer(text) for text in texts]
    if "quotes" in remove:
        texts = [strip_quoting(text) for text in texts]
    return texts


def strip_header(text: str) -> str:
    """Everything after the first blank line: news headers end there."""
    return text.partition("\n\n")[2]


def strip_footer(text: str) -> str:
    """Cut a signature: from the last line made only of blanks or hyphens, if it is not the first."""
    lines = text.strip().split("\n")
    for line_num in range(len(lines) - 1, -1, -1):
        if lines[line_num].strip().strip("-") == "":
            break
    return "\n".join(lines[:line_num]) if line_num > 0 else text


def strip_quoting(text: str) -> str:
    """Drop quoted lines (``>``, ``|``) and the lines that introduce a quote (``... writes:``)."""
    return "\n".join(line for line in text.split("\n") if not _QUOTE.search(line))


def _select(
    texts: list[str], labels: np.ndarray, label_names: list[str], categories: Sequence[str]
) -> tuple[list[str], np.ndarray, list[str]]:
    """Keep ``categories``, relabelled 0..k-1 in the corpus' order of the groups."""
    missing = [name for name in categories if name not in label_names]
    if missing:
        raise DataError(f"unknown 20 Newsgroups categories {missing}; choose from {label_names}")
    chosen = sorted((label_names.index(name), name) for name in categories)
    ids = np.array([index for index, _ in chosen])
    mask = np.isin(labels, ids)
    kept = [text for text, keep in zip(texts, mask, strict=True) if keep]
    return kept, np.searchsorted(ids, labels[mask]), [name for _, name in chosen]


def _read_archive(archive: Path, splits: Sequence[str]) -> list[TextDataset]:
    """The documents of ``splits`` in a bydate archive or folder, in scikit-learn's order."""
    if not archive.exists():
        raise DataError(f"20 Newsgroups archive not found: {archive}; pass {ARCHIVE_HINT}")
    if archive.is_dir():
        corpus = _folder_files(archive)
    else:
        stat = archive.stat()
        corpus = _archive_files(archive.resolve(), stat.st_size, stat.st_mtime_ns)
    return [_split(corpus, split, archive) for split in splits]


def _split(corpus: _Corpus, split: str, archive: Path) -> TextDataset:
    """One split as ``load_files(folder, encoding="latin1")`` reads it: groups and files by sorted
    name, then shuffled with ``RandomState(0)``."""
    folder = SPLIT_FOLDERS[split]
    label_names = sorted(group for top, group in corpus.groups if top == folder)
    if not label_names:
        raise DataError(
            f"{archive} has no {folder}/ folder; expected the 20news-bydate layout ({ARCHIVE_HINT})"
        )
    entries = sorted((group, name) for top, group, name in corpus.files if top == folder)
    ids = {group: index for index, group in enumerate(label_names)}
    labels = np.array([ids[group] for group, _ in entries], dtype=np.int64)
    order = np.arange(len(entries))
    check_random_state(_LOAD_FILES_SEED).shuffle(order)
    texts = [corpus.files[(folder, *entries[i])].decode("latin-1") for i in order]
    return TextDataset(texts, labels[order], label_names)


@dataclass
class _Corpus:
    """The bydate layout's content: every ``(split folder, group)`` folder, and every document as
    ``(split folder, group, file name) -> bytes`` (a group folder without files is still a label)."""

    groups: set[tuple[str, str]] = field(default_factory=set)
    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def _archive_files(archive: Path, size: int, mtime_ns: int) -> _Corpus:
    """The documents of a tar archive, read without extracting it.

    The last archive read is kept (keyed by its size and mtime too, so an edited file is read
    again): data preparation asks for its train and its test split one after the other, and
    reading the full archive takes a few seconds.
    """
    corpus = _Corpus()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = _bydate_parts(member.name)
                if len(parts) == 2 and member.isdir():
                    corpus.groups.add((parts[0], parts[1]))
                elif len(parts) == 3 and member.isfile():
                    corpus.groups.add((parts[0], parts[1]))
                    corpus.files[(parts[0], parts[1], parts[2])] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"cannot read 20 Newsgroups archive {archive}: {error}") from None
    return corpus


def _folder_files(folder: Path) -> _Corpus:
    """The same for an extracted archive."""
    corpus = _Corpus()
    for top in SPLIT_FOLDERS.values():
        for group in (folder / top).glob("*"):
            if group.is_dir():
                corpus.groups.add((top, group.name))
                for path in group.iterdir():
                    if path.is_file():
                        corpus.files[(top, group.name, path.name)] = path.read_bytes()
    return corpus


def _bydate_parts(name: str) -> tuple[str, ...]:
    """``20news-bydate-train/alt.atheism/49960`` -> its parts; () outside the two split folders."""
    parts = Path(name).parts
    if parts[:1] == (".",):
        parts = parts[1:]
    return parts if parts[:1] and parts[0] in SPLIT_FOLDERS.values() else ()


def _download(split: str, data_home: str | os.PathLike[str] | None) -> TextDataset:
    """One split's raw documents from scikit-learn's downloader, in its cache's (load_files) order."""
    try:
        bunch = fetch_20newsgroups(data_home=data_home, subset=split, shuffle=False, download_if_missing=True)
    except OSError as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"cannot download 20 Newsgroups ({reason}); offline, pass {ARCHIVE_HINT}") from None
    return TextDataset(list(bunch.data), np.asarray(bunch.target), list(bunch.target_names))
