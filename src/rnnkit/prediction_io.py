"""What ``rnnkit predict`` reads and writes: documents with their origin, prediction rows in a file.

Each document keeps where it came from, so every output row can be traced back: the line number
in ``--file`` (empty lines are skipped but keep the numbering), the position of a text given on
the command line, or the file name when ``--file`` is a folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnkit.errors import DataError
from rnnkit.io import atomic_write_text

OUTPUT_FORMATS = (".jsonl", ".csv")


@dataclass
class Documents:
    """Texts to classify; ``sources[i]`` says where ``texts[i]`` came from (``source_name`` column)."""

    texts: list[str]
    sources: list[int | str]
    source_name: str
    """``line`` (a line number, or a command-line text's position) or ``file`` (a folder's file)."""


def read_documents(texts: Sequence[str], file: str | os.PathLike[str] | None) -> Documents:
    """``texts`` as given, or ``file``'s non-empty lines, or the files of a folder (sorted by path)."""
    if file is None:
        return Documents(list(texts), list(range(1, len(texts) + 1)), "line")
    path = Path(file)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"--file {path} is a folder without files; put one document per file in it")
        documents = [p.read_bytes().decode("utf-8", errors="replace") for p in files]
        return Documents(documents, [str(p.relative_to(path)) for p in files], "file")
    if not path.is_file():
        raise DataError(f"--file {path} does not exist; give a text file (one document per line) or a folder")
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    kept = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    return Documents([line for _, line in kept], [number for number, _ in kept], "line")


def check_output(path: str | os.PathLike[str]) -> None:
    """Refuse an output name whose format is unknown before any work is done."""
    if Path(path).suffix.lower() not in OUTPUT_FORMATS:
        raise DataError(f"--output {path} must end in .jsonl or .csv (the format is taken from the name)")


def prediction_rows(
    documents: Documents, top: Sequence[Sequence[tuple[str, float]]], with_text: bool
) -> list[dict[str, Any]]:
    """One mapping per document: its source, (its text), label, probability and the top-k pairs."""
    rows = []
    for source, text, pairs in zip(documents.sources, documents.texts, top, strict=True):
        row: dict[str, Any] = {documents.source_name: source}
        if with_text:
            row["text"] = text
        row["label"], row["probability"] = pairs[0]
        row["top_k"] = [{"label": label, "probability": probability} for label, probability in pairs]
        rows.append(row)
    return rows


def write_predictions(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    """JSON lines (one object per row) or CSV (``label_2, probability_2, ...`` for the top-k)."""
    check_output(path)
    if Path(path).suffix.lower() == ".jsonl":
        atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    k = max((len(row["top_k"]) for row in rows), default=1)
    fixed = [name for name in (rows[0] if rows else {}) if name != "top_k"]
    writer.writerow(
        fixed + [f"{name}_{rank}" for rank in range(2, k + 1) for name in ("label", "probability")]
    )
    for row in rows:
        others = [value for pair in row["top_k"][1:] for value in (pair["label"], pair["probability"])]
        writer.writerow([row[name] for name in fixed] + others)
    atomic_write_text(path, buffer.getvalue())
