"""``detsearch train`` as a script: the same flags (``detsearch train --help``)."""

import sys

from detsearch import cli


def main(argv=None) -> int:
    return cli.main(argv, command="train")


if __name__ == "__main__":
    sys.exit(main())
