"""Same as `rnnkit train ...`: see `python scripts/train.py --help`."""

import sys

from rnnkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
