"""``python -m detsearch``: the command line (see `detsearch.cli`)."""

import sys

from detsearch.cli import main

if __name__ == "__main__":
    sys.exit(main())
