"""Same as `rnnkit predict ...`: see `python scripts/predict.py --help`."""

import sys

from rnnkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["predict", *sys.argv[1:]]))
