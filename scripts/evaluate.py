"""Same as `rnnkit evaluate ...`: see `python scripts/evaluate.py --help`."""

import sys

from rnnkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
