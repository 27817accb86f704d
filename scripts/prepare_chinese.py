"""Build ``data/thucnews-titles.tar.gz``, 20,000 Chinese news headlines in 10 classes, from THUCNews copies.

The source is the THUCNews headline subset published with Chinese-Text-Classification-Pytorch: a
folder holding ``class.txt`` (one class name per line; line i names label id i), ``dev.txt`` and
``test.txt`` (``headline<TAB>label id`` per line, 1,000 per class each). Its ``train.txt`` (180,000
lines) is left out: public snapshots lack it (it is over 4 MiB). So here the corpus's validation
split becomes the training part, and its test split stays the test part.

Several copies may be given; for each file the bytes most copies agree on are used (a tie is refused).
Each headline becomes one JSON line ``{"id": LINE, "text": HEADLINE, "label": CLASS NAME}`` (LINE: its
1-based line number in the source file, in source order) in ``thucnews-titles/train.jsonl`` (from
``dev.txt``) and ``test.jsonl`` (from ``test.txt``), packed like ``prepare_sample.py`` packs (byte for
byte reproducible). Headlines are unchanged.

    python scripts/prepare_chinese.py --source COPY1 --source COPY2 --out data/thucnews-titles.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from pathlib import Path

from prepare_sample import pack_jsonl

FOLDER = "thucnews-titles"
PARTS = {"train": "dev.txt", "test": "test.txt"}


def majority_file(name: str, sources: list[Path]) -> bytes:
    """The contents of ``name`` that most copies hold; says which copies differ."""
    contents = {}
    for folder in sources:
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"{folder} has no {name}: pass a folder holding class.txt, dev.txt and test.txt")
        contents[folder] = path.read_bytes()
    votes = Counter(contents.values()).most_common()
    if len(votes) > 1 and votes[0][1] == votes[1][1]:
        raise SystemExit(f"{name}: the copies tie; add another copy to break it")
    for folder, data in contents.items():
        if data != votes[0][0]:
            print(f"{folder}/{name}: differs from the majority, outvoted")
    return votes[0][0]


def rows(lines: bytes, classes: list[str], name: str) -> list[dict]:
    """``{"id", "text", "label"}`` per line of a ``headline<TAB>label id`` file."""
    out = []
    for number, line in enumerate(lines.decode("utf-8").split("\n"), start=1):
        if not line:
            continue
        text, sep, label = line.rpartition("\t")
        if not sep or not label.isdigit() or int(label) >= len(classes):
            raise SystemExit(f"{name}:{number} is not 'headline<TAB>label id': {line!r}")
        out.append({"id": number, "text": text, "label": classes[int(label)]})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, action="append", required=True, help="a THUCNews/data folder; repeat"
    )
    parser.add_argument("--out", type=Path, default=Path("data/thucnews-titles.tar.gz"))
    args = parser.parse_args(argv)

    classes = majority_file("class.txt", args.source).decode("utf-8").split()
    parts = {part: rows(majority_file(name, args.source), classes, name) for part, name in PARTS.items()}
    data = pack_jsonl(FOLDER, parts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    for part, part_rows in parts.items():
        per_class = Counter(r["label"] for r in part_rows)
        print(f"{part}: {len(part_rows)} headlines; " + ", ".join(f"{c} {per_class[c]}" for c in classes))
    print(f"{args.out}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
