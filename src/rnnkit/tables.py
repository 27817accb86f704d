"""Tables for people (aligned text, Markdown) and for programs (CSV), from one list of rows.

``rnnkit compare``, ``rnnkit tune`` and ``scripts/study.py`` print and save their results this way,
so every table of the project formats numbers alike.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

from rnnkit.io import atomic_write_text


def cell(value: Any) -> str:
    """One value as shown: 4 significant digits for floats, ``-`` for missing, YAML-like lists."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(cell(item) for item in value) + "]"
    return str(value)


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    """Rows under headers, columns aligned (numbers to the right); a Markdown table if asked."""
    texts = [[cell(value) for value in row] for row in rows]
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(headers))
    ]
    if markdown:
        rule = ["---:" if is_number else "---" for is_number in numeric]
        lines = [headers, rule, *texts]
        return "\n".join(
            "| " + " | ".join(str(part).replace("|", "\\|") for part in line) + " |" for line in lines
        )
    widths = [max(len(str(text)) for text in column) for column in zip(headers, *texts, strict=True)]

    def line(parts: Sequence[str]) -> str:
        return "  ".join(
            str(part).rjust(width) if is_number else str(part).ljust(width)
            for part, width, is_number in zip(parts, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths]), *map(line, texts)])


def write_csv(path: str | os.PathLike[str], headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Full-precision values (missing ones empty), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([["" if value is None else value for value in row] for row in rows])
    atomic_write_text(path, buffer.getvalue())
