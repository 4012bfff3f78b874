"""The dataset flags that ``detsearch train``, ``cache`` and ``search-det`` share."""

from __future__ import annotations

import argparse


def add_dataset_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    parser.add_argument("--dataset", choices=("demo", "coco", "voc"), default="demo", help="dataset kind (default demo)")
    parser.add_argument("--split", default=default_split, help=f"demo split: train or val (default {default_split})")
    parser.add_argument("--data-dir", default=None,
                        help="demo: set directory (default data/demo); voc: VOCdevkit year directory or XML directory")
    parser.add_argument("--annotations", default=None, help="coco: instances json")
    parser.add_argument("--images", default=None, help="coco: image directory; voc: image directory (optional)")
    parser.add_argument("--voc-classes", default=None, help="voc: comma-separated class names in id order")
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images")


def dataset_from_args(args):
    from detsearch.models.data import load_dataset

    classes = None if args.voc_classes is None else [c.strip() for c in args.voc_classes.split(",") if c.strip()]
    return load_dataset(args.dataset, args.split, data_dir=args.data_dir, annotations=args.annotations,
                        images=args.images, class_names=classes, max_images=args.max_images)
