"""Build the quickstart sample ``data/20news-sample.tar.gz`` from the full 20news-bydate archive.

Keeps the original layout (``20news-bydate-train/<group>/<id>``, ``20news-bydate-test/...``) so
every 20 Newsgroups code path, scikit-learn's included, reads it. Selection rule: for each of
the CATEGORIES, the first ``--train`` / ``--test`` documents of each part in numeric id order
(the bydate order). The archive is reproducible byte for byte: sorted entries, fixed mtime,
owner 0/0, modes 0644/0755, and a gzip header without name or time.

    python scripts/prepare_sample.py --source /path/to/20news-bydate.tar.gz --out data/20news-sample.tar.gz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

CATEGORIES = ("comp.graphics", "rec.sport.hockey", "sci.space", "talk.politics.mideast")
PARTS = ("20news-bydate-train", "20news-bydate-test")
MTIME = 946684800  # 2000-01-01T00:00:00Z


def select(source: Path, per_part: dict[str, int]) -> dict[str, bytes]:
    """``{member path: bytes}`` of the chosen documents."""
    found: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    with tarfile.open(source, "r:*") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        for name in members:
            parts = name.split("/")
            if len(parts) == 3 and parts[0] in PARTS and parts[1] in CATEGORIES and parts[2].isdigit():
                found[(parts[0], parts[1])].append((int(parts[2]), name))
        chosen = {}
        for (part, _group), docs in found.items():
            for _, name in sorted(docs)[: per_part[part]]:
                chosen[name] = tar.extractfile(members[name]).read()
    return chosen


def _info(name: str, size: int = 0, folder: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    info.size = size
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack(documents: dict[str, bytes]) -> bytes:
    folders = sorted(
        {str(Path(name).parent) for name in documents} | {name.split("/")[0] for name in documents}
    )
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted([*folders, *documents]):
            if name in documents:
                tar.addfile(_info(name, len(documents[name])), io.BytesIO(documents[name]))
            else:
                tar.addfile(_info(name, folder=True))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def pack_jsonl(folder: str, parts: dict[str, list[dict]]) -> bytes:
    """``folder/<part>.jsonl`` per part, one JSON object a line (UTF-8, unescaped), packed by ``pack``."""
    return pack(
        {
            f"{folder}/{part}.jsonl": "".join(
                json.dumps(row, ensure_ascii=False) + "\n" for row in rows
            ).encode()
            for part, rows in parts.items()
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/shared/data/20news-bydate.tar.gz"))
    parser.add_argument("--out", type=Path, default=Path("data/20news-sample.tar.gz"))
    parser.add_argument("--train", type=int, default=300, help="training documents per category")
    parser.add_argument("--test", type=int, default=200, help="test documents per category")
    args = parser.parse_args(argv)

    documents = select(args.source, {PARTS[0]: args.train, PARTS[1]: args.test})
    data = pack(documents)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    counts: dict[str, int] = defaultdict(int)
    for name in documents:
        part, group, _ = name.split("/")
        counts[f"{part} {group}"] += 1
    for key in sorted(counts):
        print(f"{key}: {counts[key]}")
    digest = hashlib.sha256(data).hexdigest()
    print(f"{args.out}: {len(documents)} documents, {len(data):,} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
