"""The ``detsearch`` command: one program, one subcommand per job.

    detsearch sweep ...          thresholds from cached raw predictions (NumPy only)
    detsearch eval ...           COCO evaluation of final detections, pycocotools' numbers
    detsearch search-det ...     detector, cache, sweep, report (the demo by default)
    detsearch search-cls ...     classification search on MNIST (the seed's program)
    detsearch train ...          train a Model Garden detector
    detsearch cache ...          record a detector's raw predictions (resumable, sharded)
    detsearch prepare-mnist ...  the MNIST IDX files, offline
    detsearch prepare-demo ...   the MNIST-detection demo set

Bad input ends with one line on stderr, ``detsearch COMMAND: error: ...``, and exit status 2;
nothing is written to the output directory then. `main` is the one place that does this, for
`BadInput` (the CLI's own checks), `detsearch.errors.BadSetting` and any `ValueError` or
`OSError` of the library, and `detsearch.errors.MissingExtra` (a command whose extra is not
installed: ``search-det needs the tf extra: pip install 'detsearch[tf]'``); ``-v`` prints the
traceback as well. A `TypeError` is not bad input: command-line values reach the library as the
types argparse made, so one that escapes is a bug, and its traceback is shown. Flags are spelled
with dashes; the underscore spellings (``--score_floor``) are accepted too. ``tools/*.py`` are
thin scripts over these.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import Sequence

from detsearch.cli.args import EXIT_BAD_INPUT, BadInput, Parser, dashed
from detsearch.errors import MissingExtra, extra_of, require_extra

COMMANDS = {
    "sweep": "detsearch.cli.sweep",
    "eval": "detsearch.cli.evaluate",
    "search-det": "detsearch.cli.search_det",
    "search-cls": "detsearch.cli.search_cls",
    "train": "detsearch.cli.train",
    "cache": "detsearch.cli.cache",
    "prepare-mnist": "detsearch.cli.prepare",
    "prepare-demo": "detsearch.cli.prepare",
}
"""Subcommand -> the module that defines it (``add_arguments(name, parser)``, ``HELP[name]``
or ``HELP``, ``DESCRIPTION``, and ``run(args) -> int``). Modules are imported only when needed."""

EXTRAS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "sweep": {"plots": None},  # the report's pictures
    "search-det": {"tf": None, "plots": None},
    "search-cls": {"tf": None, "plots": None},
    "train": {"tf": None},
    "cache": {"tf": None},
    "prepare-demo": {"tf": ("cv2",)},  # OpenCV draws the canvases; nothing else of the extra
}
"""Subcommand -> the extras it needs (`detsearch.errors.EXTRA_MODULES`), each with the modules
of it that the command imports (None: all of them). `main` checks them before the command runs
(`detsearch.errors.require_extra`: a module lookup, no import), so a missing extra is one line,
not a traceback after minutes of work."""


def _module(command: str):
    return importlib.import_module(COMMANDS[command])


def build_parser(command: str | None = None) -> Parser:
    """The top-level parser; with ``command``, only that subcommand's module is imported."""
    parser = Parser(prog="detsearch", description="detsearch: hyperparameter and detection-threshold search.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS if command is None else [command]:
        module = _module(name)
        help_text = module.HELP[name] if isinstance(module.HELP, dict) else module.HELP
        description = getattr(module, "DESCRIPTION", None)
        if isinstance(description, dict):
            description = description[name]
        sub = commands.add_parser(name, help=help_text, description=description or help_text,
                                  epilog=getattr(module, "EPILOG", None), formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(name, sub)
        sub.add_argument("-v", "--verbose", action="store_true",
                         help="log details to stderr, and with an error its traceback")
    return parser


def main(argv: Sequence[str] | None = None, *, command: str | None = None) -> int:
    """Runs ``detsearch ARGV``; ``command`` prefixes ARGV with a subcommand (the tools/ scripts).

    Returns the command's exit status; bad input (see the module's docstring) is reported here
    as one line on stderr and status `EXIT_BAD_INPUT`.
    """
    argv = dashed(list(sys.argv[1:] if argv is None else argv))
    if command is not None:
        argv = [command, *argv]
    name = argv[0] if argv and argv[0] in COMMANDS else None
    verbose = False
    try:
        parser = build_parser(name)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        verbose = args.verbose
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
        for extra, modules in EXTRAS.get(args.command, {}).items():
            require_extra(extra, args.command, modules)
        return _module(args.command).run(args)
    except (BadInput, MissingExtra, ValueError, OSError) as error:
        return _report(name, error, error, verbose)
    except ModuleNotFoundError as error:  # an extra's module imported where no check foresaw it
        extra = extra_of(error.name or "", tuple(EXTRAS.get(name, {})))
        if extra is None:
            raise
        return _report(name, MissingExtra(name or "detsearch", extra), error, verbose)


def _report(command: str | None, error: BaseException, cause: BaseException, verbose: bool) -> int:
    """One line, ``detsearch COMMAND: error: MESSAGE``, after ``cause``'s traceback with ``-v``."""
    if verbose:
        traceback.print_exception(cause, file=sys.stderr)
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"detsearch{'' if command is None else ' ' + command}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT
