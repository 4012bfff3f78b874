"""``detsearch search-det`` as a script: the same flags (``detsearch search-det --help``)."""

import sys

from detsearch import cli


def main(argv=None) -> int:
    return cli.main(argv, command="search-det")


if __name__ == "__main__":
    sys.exit(main())
