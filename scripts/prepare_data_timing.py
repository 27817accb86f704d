"""Time ``prepare_data`` twice in fresh processes on one cache folder: first run builds, second hits.

python scripts/prepare_data_timing.py --archive /path/to/20news-bydate.tar.gz --source glove-6b-50d
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

RUN = """
import json, sys, time
from rnnkit.config import load_config
from rnnkit.data import prepare_data
start = time.perf_counter()
data = prepare_data(load_config(None, sys.argv[1:]))
print(json.dumps({"seconds": time.perf_counter() - start, "stats": data.stats}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--source", default="glove-6b-50d", help="embeddings.source")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        overrides = [
            f"data.archive={args.archive}",
            f"data.cache_dir={cache}",
            f"embeddings.source={args.source}",
        ]
        for label in ("first (fresh cache)", "second (cached)"):
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", RUN, *overrides], check=True, capture_output=True, text=True
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            total = time.perf_counter() - started
            print(f"{label}: prepare_data {result['seconds']:.2f} s, process incl. imports {total:.2f} s")
        print(json.dumps(result["stats"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
