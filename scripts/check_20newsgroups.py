"""Check that rnnkit's own 20 Newsgroups reader returns exactly what scikit-learn returns for an archive.

scikit-learn is fed the same archive through its own download code path: only the network fetch
(``_fetch_remote``) is replaced by a copy of the local file, so extraction, ``load_files``, caching,
cleaning and shuffling are all scikit-learn's. Prints one PASS/FAIL line per case; exits 1 on any
mismatch.

    python scripts/check_20newsgroups.py --archive /path/to/20news-bydate.tar.gz
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from sklearn.datasets import _twenty_newsgroups as sk20
from sklearn.datasets import fetch_20newsgroups

from rnnkit.data import load_20newsgroups

CASES = [
    (subset, remove) for remove in ((), ("headers", "footers", "quotes")) for subset in ("train", "test")
]


def sklearn_loader(archive: Path, data_home: Path):
    """``fetch_20newsgroups`` bound to ``data_home``, whose 'download' copies ``archive``."""

    def fake_fetch(remote, dirname=None, n_retries=3, delay=1):
        target = Path(dirname) / remote.filename
        shutil.copyfile(archive, target)
        return str(target)

    def load(**kwargs):
        with mock.patch.object(sk20, "_fetch_remote", fake_fetch):
            return fetch_20newsgroups(data_home=str(data_home), **kwargs)

    return load


def compare(ours, theirs) -> list[str]:
    problems = []
    if list(ours.label_names) != list(theirs.target_names):
        problems.append("label names differ")
    if not np.array_equal(ours.labels, np.asarray(theirs.target)):
        problems.append("labels differ")
    if len(ours.texts) != len(theirs.data):
        problems.append(f"{len(ours.texts)} vs {len(theirs.data)} texts")
    else:
        differing = sum(a != b for a, b in zip(ours.texts, theirs.data, strict=True))
        if differing:
            problems.append(f"{differing} texts differ")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archive", required=True, type=Path, help="20news-bydate.tar.gz or its extracted folder"
    )
    parser.add_argument("--categories", nargs="*", default=None, help="optional subset of categories")
    args = parser.parse_args(argv)
    if args.archive.is_dir():
        parser.error("give the .tar.gz: scikit-learn's download path only reads archives")

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        sklearn_load = sklearn_loader(args.archive, Path(tmp) / "sklearn")
        for subset, remove in CASES:
            common = {"subset": subset, "remove": remove, "categories": args.categories}
            ours = load_20newsgroups(**common, archive=args.archive)
            theirs = sklearn_load(**common)
            problems = compare(ours, theirs)
            failures += bool(problems)
            verdict = "FAIL: " + "; ".join(problems) if problems else "PASS"
            print(
                f"{subset:5s} remove={','.join(remove) or 'none':22s} {len(ours.texts):6,d} docs "
                f"{len(ours.label_names):2d} labels  {verdict}"
            )
    print("all cases PASS" if not failures else f"{failures} case(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
