"""Build ``data/reuters21578-apte.tar.gz``, the Reuters-21578 ApteMod split, from ``reut2-*.sgm`` copies.

Copies of Reuters-21578 in public repositories are often edited (a letter added, a tab replaced, a
control character dropped), so this reads several copies of the 22 ``reut2-NNN.sgm`` files and keeps,
for each of the 21,578 documents, the ``<REUTERS>`` block that most copies hold byte for byte; it
refuses a tie. The ApteMod ("ModApte") selection: ``TOPICS="YES"`` documents, ``LEWISSPLIT="TRAIN"``
for training and ``"TEST"`` for test, labelled with the TOPICS categories that have at least one
training and one test document (90), and only documents with at least one of them. That gives 7,770
training documents; the standard ApteMod (NLTK's ``reuters`` corpus, Ken Williams' copy) has 7,769:
it lacks NEWID 1199, the only candidate whose ``<REUTERS>`` tag carries a ``CSECS`` attribute, so it
is left out here too (3,019 test documents, 90 categories, the same labels as NLTK's ``cats.txt``).

Each document becomes one JSON line ``{"id": NEWID, "text": TITLE + "\\n" + BODY, "labels": [...]}``
in ``reuters21578-apte/train.jsonl`` and ``test.jsonl`` (NEWID order, labels sorted), packed like
``prepare_sample.py`` packs (byte for byte reproducible). Text is the latin-1 source decoded, SGML
entities resolved, control-character references (``&#2;``, ``&#3;``, ...) dropped and the closing
"Reuter" sign-off removed; the dateline and author are left out, as NLTK leaves them out.

    python scripts/prepare_reuters.py --source COPY1 --source COPY2 --source COPY3 \\
        --out data/reuters21578-apte.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from prepare_sample import pack_jsonl

FOLDER = "reuters21578-apte"
FILES = [f"reut2-{number:03d}.sgm" for number in range(22)]
DOCUMENTS = 21578
_BLOCK = re.compile(rb'<REUTERS\b[^>]*\bNEWID="(\d+)"[^>]*>.*?</REUTERS>', re.S)
_CONTROL = re.compile(r"&#(\d+);")
_SIGN_OFF = re.compile(r"(\s*\breuter\b)+\s*$", re.I)
# Absent from the standard ApteMod (NLTK's copy): the one candidate whose tag has a CSECS attribute.
LEFT_OUT = frozenset({1199})


@dataclass(frozen=True)
class Document:
    newid: int
    split: str
    topics_flag: str
    topics: tuple[str, ...]
    text: str


def read_copy(folder: Path) -> dict[int, bytes]:
    """``{NEWID: <REUTERS> block}`` of one copy; every file and every document must be there."""
    blocks: dict[int, bytes] = {}
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"{folder} has no {name}: pass a folder holding reut2-000.sgm ... reut2-021.sgm")
        for match in _BLOCK.finditer(path.read_bytes()):
            blocks[int(match.group(1))] = match.group(0)
    if len(blocks) != DOCUMENTS:
        raise SystemExit(f"{folder} holds {len(blocks)} documents, not {DOCUMENTS}")
    return blocks


def majority(copies: dict[str, dict[int, bytes]]) -> tuple[dict[int, bytes], dict[str, list[int]]]:
    """Per document, the block most copies agree on, and for each copy the documents it lost."""
    chosen: dict[int, bytes] = {}
    outvoted: dict[str, list[int]] = {name: [] for name in copies}
    for newid in range(1, DOCUMENTS + 1):
        votes = Counter(blocks[newid] for blocks in copies.values()).most_common()
        if len(votes) > 1 and votes[0][1] == votes[1][1]:
            raise SystemExit(f"document NEWID={newid}: the copies tie; add another copy to break it")
        chosen[newid] = votes[0][0]
        for name, blocks in copies.items():
            if blocks[newid] != chosen[newid]:
                outvoted[name].append(newid)
    return chosen, outvoted


def _attribute(block: str, name: str) -> str:
    match = re.search(rf'\b{name}="([^"]*)"', block[: block.index(">")])
    return match.group(1) if match else ""


def _element(block: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}\b[^>]*>(.*?)</{tag}>", block, re.S)
    return match.group(1) if match else None


def _clean(sgml: str) -> str:
    """Entities resolved; ``&#N;`` below 32 and ``&#127;`` (wire-service control codes) dropped."""
    sgml = _CONTROL.sub(lambda m: "" if int(m.group(1)) < 32 or int(m.group(1)) == 127 else m.group(0), sgml)
    return html.unescape(sgml).strip()


def parse(newid: int, block: bytes) -> Document:
    sgml = block.decode("latin-1")
    topics = tuple(re.findall(r"<D>(.*?)</D>", _element(sgml, "TOPICS") or ""))
    text_element = _element(sgml, "TEXT") or ""
    title, body = _element(text_element, "TITLE"), _element(text_element, "BODY")
    if title is None and body is None:  # TYPE="UNPROC": the text is not split into parts
        text = _clean(text_element)
    else:
        text = "\n".join(_clean(part) for part in (title, body) if part is not None)
    text = _SIGN_OFF.sub("", text)
    return Document(newid, _attribute(sgml, "LEWISSPLIT"), _attribute(sgml, "TOPICS"), topics, text)


def apte_mod(documents: list[Document]) -> tuple[dict[str, list[dict]], list[str]]:
    """``{"train": rows, "test": rows}`` of the ApteMod split and its categories."""
    parts = {"train": "TRAIN", "test": "TEST"}
    used = {
        part: [d for d in documents if d.topics_flag == "YES" and d.split == flag and d.newid not in LEFT_OUT]
        for part, flag in parts.items()
    }
    seen = {part: {topic for d in docs for topic in d.topics} for part, docs in used.items()}
    categories = sorted(seen["train"] & seen["test"])
    keep = set(categories)
    rows: dict[str, list[dict]] = {}
    for part, docs in used.items():
        rows[part] = [
            {"id": d.newid, "text": d.text, "labels": sorted(set(d.topics) & keep)}
            for d in sorted(docs, key=lambda d: d.newid)
            if set(d.topics) & keep
        ]
    return rows, categories


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, action="append", required=True, help="a folder with reut2-*.sgm; repeat"
    )
    parser.add_argument("--out", type=Path, default=Path("data/reuters21578-apte.tar.gz"))
    args = parser.parse_args(argv)

    copies = {str(folder): read_copy(folder) for folder in args.source}
    if len(copies) < 3:
        print(
            f"warning: {len(copies)} copies cannot outvote an edited one; pass three or more", file=sys.stderr
        )
    chosen, outvoted = majority(copies)
    for name, lost in outvoted.items():
        print(f"{name}: outvoted on {len(lost)} documents{' ' + str(lost[:10]) if lost else ''}")

    rows, categories = apte_mod([parse(newid, block) for newid, block in sorted(chosen.items())])
    data = pack_jsonl(FOLDER, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"{len(categories)} categories")
    for part, part_rows in rows.items():
        assignments = sum(len(row["labels"]) for row in part_rows)
        cardinality = assignments / len(part_rows)
        print(f"{part}: {len(part_rows)} documents, {assignments} labels, {cardinality:.3f} per document")
    print(f"{args.out}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
