"""``detsearch cache`` as a script: the same flags (``detsearch cache --help``)."""

import sys

from detsearch import cli


def main(argv=None) -> int:
    return cli.main(argv, command="cache")


if __name__ == "__main__":
    sys.exit(main())
