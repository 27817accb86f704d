"""What ``rnnkit predict`` reads and writes: documents with their origin, one prediction row each.

Every document keeps where it came from, so each output row can be traced back: its line number
in ``--file`` (lines end at ``\\n`` only, as ``wc -l`` counts them; a ``\\r`` before it is dropped),
the position of a text given on the command line, or the file name when ``--file`` is a folder.
A blank document (empty or only whitespace) gets a row with no prediction instead of being
dropped, so row N is always line N. A byte-order mark picks UTF-8, UTF-16 or UTF-32; without one
the text is read as UTF-8. Documents are read, predicted and written in chunks, so a file (or
``--file -``, standard input) of any length runs in constant memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from rnnkit.errors import DataError
from rnnkit.io import atomic_writer

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = (".jsonl", ".csv")
STDIN = "-"
CHUNK_DOCUMENTS = 8192
"""Documents predicted and written together: large enough for full batches, small enough that
memory does not grow with the input."""

_SURROGATE = re.compile("[\ud800-\udfff]")

_BOMS = (  # longest first: the UTF-32-LE mark begins with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

Pairs = Sequence[tuple[str, float]]
"""The top-k ``(label, probability)`` pairs of one document, best first; empty for a blank one."""


@dataclass(frozen=True)
class Document:
    source: int | str
    """Its line number (or a command-line text's position), or its path inside a ``--file`` folder."""
    text: str

    @property
    def blank(self) -> bool:
        return not self.text.strip()


LABEL_SET_SEPARATOR = "|"
"""Between the labels (and their probabilities) of a multi-label prediction in one CSV cell."""


@dataclass
class Documents:
    """Documents to classify, read lazily, and what reading them found."""

    source_name: str
    """``line`` (a line number, or a command-line text's position) or ``file`` (a folder's file)."""
    items: Iterator[Document]
    undecodable: list[int | str] = field(default_factory=list)
    """Sources whose bytes were not valid in their encoding (replaced by U+FFFD), in order."""
    nul_bytes: list[int | str] = field(default_factory=list)
    """Sources holding NUL bytes: UTF-16 or UTF-32 without a byte-order mark, or not text at all."""

    def __iter__(self) -> Iterator[Document]:
        return self.items


def read_documents(texts: Sequence[str], file: str | os.PathLike[str] | None) -> Documents:
    """``texts`` as given, or the lines of ``file`` (``-``: standard input), or a folder's files.

    A missing file or empty folder is a :class:`DataError` now; the lines themselves are read as
    the documents are consumed.
    """
    if file is None:
        documents = Documents("line", iter(()))
        documents.items = _arguments(texts, documents)
        return documents
    if os.fspath(file) == STDIN:
        documents = Documents("line", iter(()))
        documents.items = _lines(sys.stdin.buffer, documents)
        return documents
    path = Path(file)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"--file {path} is a folder without files; put one document per file in it")
        documents = Documents("file", iter(()))
        documents.items = _files(path, files, documents)
        return documents
    if not path.exists():
        raise DataError(
            f"--file {path} does not exist; give a text file (one document per line), a folder, or - "
            "for standard input"
        )
    documents = Documents("line", iter(()))  # a file, or a pipe such as bash's <(command)
    documents.items = _lines_of_file(path, documents)
    return documents


def _arguments(texts: Sequence[str], documents: Documents) -> Iterator[Document]:
    """Texts typed on the command line, numbered from 1, undecodable bytes replaced as in a file.

    Python holds argument bytes that are not UTF-8 as lone surrogates, which no UTF-8 output can
    hold: ``--with-text`` would fail at the first row it writes.
    """
    for number, text in enumerate(texts, start=1):
        clean = without_surrogates(text)
        if clean != text:
            documents.undecodable.append(number)
        yield Document(number, clean)


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (a byte that was not UTF-8, as Python decodes a command
    line or a file name) replaced by U+FFFD, so that it can be printed and written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def _lines_of_file(path: Path, documents: Documents) -> Iterator[Document]:
    with path.open("rb") as handle:
        yield from _lines(handle, documents)


def _lines(binary: BinaryIO, documents: Documents) -> Iterator[Document]:
    """One document per ``\\n``-ended line (the last one may lack it), numbered from 1."""
    encoding = _encoding_of(_peek(binary, 4))
    if encoding == "utf-8-sig":
        binary.read(len(codecs.BOM_UTF8))
    if encoding in ("utf-8", "utf-8-sig"):
        # Split the bytes: 0x0A occurs in UTF-8 only as a newline, and each line is decoded on its
        # own, so an undecodable line is known by number.
        for number, raw in enumerate(binary, start=1):
            yield Document(
                number, _decode_utf8(raw.removesuffix(b"\n").removesuffix(b"\r"), number, documents)
            )
        return
    # UTF-16/32: decode first, then split; newline="\n" ends lines at "\n" only (no \r, \x85, U+2028).
    text = io.TextIOWrapper(binary, encoding=encoding, errors="replace", newline="\n")
    try:
        for number, line in enumerate(text, start=1):
            yield Document(number, line.removesuffix("\n").removesuffix("\r"))
    finally:
        text.detach()  # closing the wrapper would close the caller's handle (stdin)


def _files(folder: Path, files: Iterable[Path], documents: Documents) -> Iterator[Document]:
    for path in files:
        data = path.read_bytes()
        source = str(path.relative_to(folder))
        encoding = _encoding_of(data[:4])
        if encoding in ("utf-8", "utf-8-sig"):
            text = _decode_utf8(data.removeprefix(codecs.BOM_UTF8), source, documents)
        else:
            text = data.decode(encoding, errors="replace")
        yield Document(source, text)


def _decode_utf8(raw: bytes, source: int | str, documents: Documents) -> str:
    if b"\0" in raw:
        documents.nul_bytes.append(source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        documents.undecodable.append(source)
        return raw.decode("utf-8", errors="replace")


def _encoding_of(start: bytes) -> str:
    """The encoding a byte-order mark names, else UTF-8."""
    return next((encoding for bom, encoding in _BOMS if start.startswith(bom)), "utf-8")


def _peek(binary: BinaryIO, size: int) -> bytes:
    """The first ``size`` bytes (fewer at the end of the input), left in the stream."""
    if isinstance(binary, io.BufferedReader):
        return binary.peek(size)[:size]
    start = binary.tell()
    data = binary.read(size)
    binary.seek(start)
    return data


def report_reading(documents: Documents, file: str | os.PathLike[str] | None) -> None:
    """Warn about what reading found, after the rows are out (the input is streamed)."""
    if file is None and documents.undecodable:
        logger.warning(
            "%d texts had bytes that are not UTF-8 (replaced by U+FFFD), first text %s; check your "
            "terminal's encoding",
            len(documents.undecodable),
            documents.undecodable[0],
        )
        return
    file = "standard input" if file is not None and os.fspath(file) == STDIN else file
    if documents.undecodable:
        logger.warning(
            "%s: %d %s had bytes that are not UTF-8 (replaced by U+FFFD), first %s %s; give the file a "
            "byte-order mark if it is UTF-16 or UTF-32, or convert it to UTF-8",
            file,
            len(documents.undecodable),
            _noun(documents),
            documents.source_name,
            documents.undecodable[0],
        )
    if documents.nul_bytes:
        logger.warning(
            "%s: %d %s hold NUL bytes, first %s %s: UTF-16 or UTF-32 without a byte-order mark reads as "
            "garbage; save it with a BOM (or as UTF-8)",
            file,
            len(documents.nul_bytes),
            _noun(documents),
            documents.source_name,
            documents.nul_bytes[0],
        )


def _noun(documents: Documents) -> str:
    return "lines" if documents.source_name == "line" else "files"


def predict_documents(
    documents: Iterable[Document],
    predict_top_k: Callable[[list[str]], list[list[tuple[str, float]]]],
    chunk: int = CHUNK_DOCUMENTS,
) -> Iterator[tuple[Document, Pairs]]:
    """Each document with its top-k pairs (none for a blank one), ``chunk`` documents at a time."""
    iterator = iter(documents)
    while batch := list(itertools.islice(iterator, chunk)):
        top = iter(predict_top_k([document.text for document in batch if not document.blank]))
        for document in batch:
            yield document, [] if document.blank else next(top)


def check_output(path: str | os.PathLike[str]) -> None:
    """Refuse an output name whose format is unknown before any work is done."""
    if Path(path).suffix.lower() not in OUTPUT_FORMATS:
        raise DataError(f"--output {path} must end in .jsonl or .csv (the format is taken from the name)")


def prediction_row(
    source_name: str, document: Document, pairs: Pairs, with_text: bool, *, label_sets: bool = False
) -> dict[str, Any]:
    """One document's row: its source, (its text), label, probability and top-k (None/[] if blank);
    with ``label_sets`` (a multi-label run) its label set instead: ``labels`` and ``probabilities``
    lists, possibly empty (None if blank)."""
    row: dict[str, Any] = {source_name: document.source}
    if with_text:
        row["text"] = document.text
    if label_sets:
        row["labels"] = None if document.blank else [label for label, _ in pairs]
        row["probabilities"] = None if document.blank else [probability for _, probability in pairs]
        return row
    row["label"], row["probability"] = pairs[0] if pairs else (None, None)
    row["top_k"] = [{"label": label, "probability": probability} for label, probability in pairs]
    return row


@dataclass
class Tally:
    """What was written: rows, and how many of them are blank documents without a prediction."""

    rows: int = 0
    blank: int = 0

    def count(self, predicted: Iterable[tuple[Document, Pairs]]) -> Iterator[tuple[Document, Pairs]]:
        for document, pairs in predicted:
            self.rows += 1
            self.blank += document.blank
            yield document, pairs


def write_predictions(
    path: str | os.PathLike[str],
    source_name: str,
    predicted: Iterable[tuple[Document, Pairs]],
    with_text: bool,
    k: int,
    *,
    label_sets: bool = False,
) -> Tally:
    """JSON lines (one object per row) or CSV (``label_2, probability_2, ...`` for the top ``k``;
    with ``label_sets``, ``labels`` and ``probabilities`` cells joined by ``|``), written chunk by
    chunk into a file that appears, whole, once every row is in it."""
    check_output(path)
    tally = Tally()
    rows = (
        prediction_row(source_name, *pair, with_text, label_sets=label_sets)
        for pair in tally.count(predicted)
    )
    csv_format = Path(path).suffix.lower() == ".csv"
    with atomic_writer(path) as handle:
        if csv_format:
            fixed = [source_name, *(["text"] if with_text else [])]
            if label_sets:
                header = [*fixed, "labels", "probabilities"]
            else:
                extra = [f"{name}_{rank}" for rank in range(2, k + 1) for name in ("label", "probability")]
                header = [*fixed, "label", "probability", *extra]
            handle.write(_csv_lines([header]))
        while chunk := list(itertools.islice(rows, CHUNK_DOCUMENTS)):
            if csv_format:
                handle.write(_csv_lines(_csv_row(row, k, label_sets) for row in chunk))
            else:
                handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in chunk).encode())
    return tally


def _csv_row(row: dict[str, Any], k: int, label_sets: bool) -> list[Any]:
    if label_sets:
        return [
            LABEL_SET_SEPARATOR.join(map(str, value)) if isinstance(value, list) else value
            for value in row.values()
        ]
    fixed = [value for name, value in row.items() if name != "top_k"]
    others = [value for pair in row["top_k"][1:] for value in (pair["label"], pair["probability"])]
    return fixed + others + [""] * (2 * (k - 1) - len(others))


def _csv_lines(rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def print_predictions(
    out: TextIO, source_name: str | None, predicted: Iterable[tuple[Document, Pairs]], k: int
) -> Tally:
    """``[SOURCE<TAB>]LABEL<TAB>PROBABILITY...`` per document; a blank one has ``k`` empty label and
    probability pairs (``k`` 0 for label sets: nothing after its source, as for an empty set)."""
    tally = Tally()
    for document, pairs in tally.count(predicted):
        columns = [] if source_name is None else [str(document.source)]
        columns += [field for label, prob in pairs for field in (label, f"{prob:.4f}")] or [""] * (2 * k)
        out.write("\t".join(columns) + "\n")
    return tally
