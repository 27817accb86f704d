"""Raw labelled texts: the user's own folders, CSV and JSONL files, and seeded train/held-out splits.

Loaders never crash on bad input: bytes that are not UTF-8 are replaced (and counted in
``stats["undecodable_docs"]``), rows without a label are skipped (``stats["missing_label"]``).
Empty documents are kept here; the pipeline decides what to do with them after tokenisation.
"""

from __future__ import annotations

import csv
import decimal
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from rnnkit.errors import DataError

logger = logging.getLogger(__name__)

__all__ = [
    "TextDataset",
    "encode_labels",
    "load_csv",
    "load_folder",
    "load_jsonl",
    "load_labelled",
    "load_user_data",
    "normalise_labels",
    "split_dataset",
    "split_indices",
    "split_layout",
]


@dataclass
class TextDataset:
    """Texts with integer labels; ``label_names[label]`` is the class name."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextDataset:
        """The documents at ``indices``, in that order, with the same label space."""
        idx = np.asarray(indices, dtype=np.int64)
        return TextDataset([self.texts[i] for i in idx], self.labels[idx], list(self.label_names))


def encode_labels(raw: Sequence[Any], names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Map labels of any type to ids 0..C-1 following the sorted label names.

    Numbers (or strings that are numbers) sort numerically, so ``2`` comes before ``10``.
    """
    if names is None:
        names = sorted({str(value) for value in raw}, key=_label_sort_key)
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[str(value)] for value in raw], dtype=np.int64), list(names)


def normalise_labels(raw: Sequence[Any]) -> list[str]:
    """Label names as the user means them: surrounding spaces dropped, and one number written
    several ways (``1``, ``1.0``, `` 1``, ``01``) one class, named as the number (said in the log).

    A number written one way only keeps its spelling (``007`` stays ``007``).
    """
    names = [str(value).strip() for value in raw]
    spellings: dict[decimal.Decimal, set[str]] = {}
    for name in set(names):
        number = _as_number(name)
        if number is not None:
            spellings.setdefault(number, set()).add(name)
    canonical = {}
    for number, written in spellings.items():
        if len(written) > 1:
            name = str(int(number)) if number == number.to_integral_value() else str(number.normalize())
            logger.warning(
                "labels %s are the same number; read as class %r",
                ", ".join(repr(spelling) for spelling in sorted(written)),
                name,
            )
            canonical.update(dict.fromkeys(written, name))
    return [canonical.get(name, name) for name in names]


def _as_number(name: str) -> decimal.Decimal | None:
    try:
        number = decimal.Decimal(name)
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() else None


def _label_sort_key(name: str) -> tuple[int, float, str]:
    try:
        number = float(name)
    except ValueError:
        return (1, 0.0, name)
    # NaN compares false with everything, which would make the order (so the ids) depend on set order.
    return (1, 0.0, name) if math.isnan(number) else (0, number, name)


def _decode(data: bytes, stats: dict[str, int]) -> str:
    """UTF-8 (BOM tolerated); invalid bytes become U+FFFD and the document is counted."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        stats["undecodable_docs"] = stats.get("undecodable_docs", 0) + 1
        return data.decode("utf-8-sig", errors="replace")


def _new_stats() -> dict[str, int]:
    return {"undecodable_docs": 0, "missing_label": 0}


def _read_folder(root: Path) -> tuple[list[str], list[str], dict[str, int]]:
    """One sub-folder per class; every non-hidden file below it is one document.

    Symbolic links that lead outside ``root`` (a file, or a whole class folder) are not read: a data
    set is what its folder holds. They are counted in ``stats["symlinks_outside_skipped"]`` and
    logged; links inside the folder are read like the files they point to.
    """
    stats = {**_new_stats(), "symlinks_outside_skipped": 0}
    texts: list[str] = []
    labels: list[str] = []
    real_root = root.resolve()
    outside: list[Path] = []

    def inside(path: Path) -> bool:
        if not path.is_symlink() or path.resolve().is_relative_to(real_root):
            return True
        outside.append(path)
        return False

    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and inside(p))
    if not classes:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/<document files>")
    for folder in classes:
        for path in sorted(folder.rglob("*")):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if not hidden and inside(path) and path.is_file():
                texts.append(_decode(path.read_bytes(), stats))
                labels.append(folder.name)
    if outside:
        stats["symlinks_outside_skipped"] = len(outside)
        logger.warning(
            "skipped %d symbolic links that lead outside %s (e.g. %s -> %s); copy those files into the "
            "data folder to use them",
            len(outside),
            root,
            outside[0],
            outside[0].resolve(),
        )
    return texts, labels, stats


def _read_records(
    records: list[dict[str, Any]], where: Path, text_column: str, label_column: str, stats: dict[str, int]
) -> tuple[list[str], list[Any]]:
    if records and not any(text_column in r for r in records):
        raise DataError(
            f"{where} has no column {text_column!r} (set data.text_column); found {list(records[0])}"
        )
    if records and not any(label_column in r for r in records):
        raise DataError(
            f"{where} has no column {label_column!r} (set data.label_column); found {list(records[0])}"
        )
    texts: list[str] = []
    labels: list[Any] = []
    for record in records:
        label = record.get(label_column)
        if label is None or (isinstance(label, str) and not label.strip()):
            stats["missing_label"] += 1
            continue
        text = record.get(text_column)
        texts.append("" if text is None else str(text))
        labels.append(label)
    return texts, labels


_CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default is 128 KiB; this fits a C long everywhere


def _read_csv(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[Any], dict[str, int]]:
    stats = _new_stats()
    text = _decode(path.read_bytes(), stats)
    # newline="": rows end only at \n / \r (str.splitlines also cuts at \f, \x1c, \u2028, ... which
    # csv.writer leaves unquoted). The field limit is lifted for the read: one long document is fine.
    limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        records = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise DataError(f"{path} is not a valid CSV file: {error}") from None
    finally:
        csv.field_size_limit(limit)
    if stats["undecodable_docs"]:
        # The whole file was decoded at once: count the rows that got replacement characters.
        stats["undecodable_docs"] = sum("\ufffd" in "".join(map(str, r.values())) for r in records)
    texts, labels = _read_records(records, path, text_column, label_column, stats)
    return texts, labels, stats


def _read_jsonl(
    path: Path, text_column: str, label_column: str
) -> tuple[list[str], list[Any], dict[str, int]]:
    stats = _new_stats()
    records = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(_decode(line, stats))
        except (ValueError, RecursionError) as error:  # RecursionError: very deeply nested arrays
            raise DataError(f"{path}:{number} is not valid JSON: {error}") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}:{number} must be a JSON object with {text_column!r} and {label_column!r}"
            )
        records.append(record)
    texts, labels = _read_records(records, path, text_column, label_column, stats)
    return texts, labels, stats


def _read(
    kind: str, path: Path, text_column: str, label_column: str
) -> tuple[list[str], list[Any], dict[str, int]]:
    if kind == "folder":
        if not path.is_dir():
            raise DataError(
                f"data.path {path} is not a folder (dataset 'folder' expects <path>/<class>/<files>)"
            )
        return _read_folder(path)
    if not path.is_file():
        raise DataError(f"data.path {path} is not a file (dataset {kind!r} expects a .{kind} file)")
    reader = _read_csv if kind == "csv" else _read_jsonl
    return reader(path, text_column, label_column)


def _dataset(texts: list[str], raw_labels: list[Any], stats: dict[str, int], names: list[str]) -> TextDataset:
    labels, names = encode_labels(raw_labels, names)
    return TextDataset(texts, labels, names, stats)


def _load(kind: str, path: str | Path, text_column: str = "text", label_column: str = "label") -> TextDataset:
    texts, raw, stats = _read(kind, Path(path).expanduser(), text_column, label_column)
    labels = _label_names(kind, raw)
    return _dataset(texts, labels, stats, encode_labels(labels)[1])


def _label_names(kind: str, raw: list[Any]) -> list[str]:
    """Folder names are labels exactly as written on disk; a file's labels are normalised."""
    return [str(label) for label in raw] if kind == "folder" else normalise_labels(raw)


def load_folder(path: str | Path) -> TextDataset:
    """``path/<class>/<file>``: the folder name is the label."""
    return _load("folder", path)


def load_csv(path: str | Path, text_column: str = "text", label_column: str = "label") -> TextDataset:
    """A CSV file with a header row naming the text and label columns."""
    return _load("csv", path, text_column, label_column)


def load_jsonl(path: str | Path, text_column: str = "text", label_column: str = "label") -> TextDataset:
    """One JSON object per line with the text and label keys."""
    return _load("jsonl", path, text_column, label_column)


def split_layout(kind: str, path: Path) -> tuple[Path, Path] | None:
    """``train/`` + ``test/`` sub-folders (folder) or ``train.EXT`` + ``test.EXT`` files (csv/jsonl)."""
    if not path.is_dir():
        return None
    suffix = "" if kind == "folder" else f".{kind}"
    train, test = path / f"train{suffix}", path / f"test{suffix}"
    return (train, test) if train.exists() and test.exists() else None


def load_user_data(
    kind: str, path: str | Path, text_column: str = "text", label_column: str = "label"
) -> tuple[TextDataset, TextDataset | None]:
    """The user's own data: ``(train, test)`` when it comes split, else ``(everything, None)``.

    A split layout is ``path/train/<class>/…`` + ``path/test/<class>/…`` for folders, or
    ``path/train.csv`` + ``path/test.csv`` (``.jsonl``) for files. Both parts share one label space.
    """
    root = Path(path).expanduser()
    pair = split_layout(kind, root)
    if pair is None:
        return _load(kind, root, text_column, label_column), None
    train_texts, train_raw, train_stats = _read(kind, pair[0], text_column, label_column)
    test_texts, test_raw, test_stats = _read(kind, pair[1], text_column, label_column)
    labels = _label_names(kind, [*train_raw, *test_raw])  # one label space: 1 in train is 1.0 in test
    names = encode_labels(labels)[1]
    train = _dataset(train_texts, labels[: len(train_raw)], train_stats, names)
    return train, _dataset(test_texts, labels[len(train_raw) :], test_stats, names)


def load_labelled(path: str | Path, text_column: str = "text", label_column: str = "label") -> TextDataset:
    """Any labelled data, its kind told by the path: a folder (one sub-folder per class, or
    ``train/`` + ``test/``, read as a whole), a ``.csv`` or a ``.jsonl`` file."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{path} does not exist; give a folder, a .csv or a .jsonl file of labelled texts")
    if root.is_dir():
        kind = "folder"
    elif root.suffix.lower() in (".csv", ".jsonl"):
        kind = root.suffix.lower()[1:]
    else:
        raise DataError(
            f"{path} is neither a folder nor a .csv or .jsonl file; give labelled data in one of those"
        )
    first, second = load_user_data(kind, root, text_column, label_column)
    if second is None:
        return first
    texts = [*first.texts, *second.texts]
    return TextDataset(texts, np.concatenate([first.labels, second.labels]), first.label_names)


def split_indices(
    labels: np.ndarray, fraction: float, seed: int, *, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(len(labels))`` into ``(rest, held_out)`` with ``fraction`` held out.

    Stratified by label when every class has at least two documents and the held-out part can
    hold one of each; otherwise (tiny data) a plain random split, with a warning.
    """
    indices = np.arange(len(labels))
    if fraction <= 0 or len(indices) < 2:
        return indices, indices[:0]
    # The count scikit-learn would take for ``fraction``, but always leaving one document behind.
    size = min(math.ceil(fraction * len(indices)), len(indices) - 1)
    try:
        rest, held = train_test_split(
            indices, test_size=size, random_state=seed, stratify=labels if stratify else None
        )
    except ValueError:
        logger.warning("too few documents per class for a stratified split; using a plain random split")
        rest, held = train_test_split(indices, test_size=size, random_state=seed)
    return rest, held


def split_dataset(
    dataset: TextDataset, fraction: float, seed: int, *, stratify: bool = True
) -> tuple[TextDataset, TextDataset]:
    """:func:`split_indices` applied to a dataset."""
    rest, held = split_indices(dataset.labels, fraction, seed, stratify=stratify)
    return dataset.subset(rest), dataset.subset(held)
