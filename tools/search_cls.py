"""``detsearch search-cls`` as a script: the same flags (``detsearch search-cls --help``)."""

import sys

from detsearch import cli


def main(argv=None) -> int:
    return cli.main(argv, command="search-cls")


if __name__ == "__main__":
    sys.exit(main())
