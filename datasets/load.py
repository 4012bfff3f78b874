"""The detection datasets the commands take by name (`load_dataset`): the demo, COCO, VOC."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from detsearch.checks import positive_int
from detsearch.datasets.detection import DetectionDataset

__all__ = ["DATASETS", "load_dataset"]

DATASETS = ("demo", "coco", "voc")


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    annotations: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    max_images: int | None = None,
) -> DetectionDataset:
    """A dataset by name, as the tools take it.

    - ``demo``: the MNIST detection demo at ``data_dir`` (default
      `detsearch.datasets.demo.default_demo_dir`), built there first when missing; ``split`` is
      ``train`` or ``val``.
    - ``coco``: ``annotations`` (an instances json) with images under ``images``.
    - ``voc``: Pascal VOC XML under ``data_dir`` (a VOCdevkit year directory or a directory of
      XML files), images under ``images`` (default: VOC's layout), ``class_names`` in id order
      (default: the sorted names found).

    ``max_images`` keeps the first images only.
    """
    from detsearch.datasets import coco, demo, voc

    if name == "demo":
        root = demo.default_demo_dir() if data_dir is None else Path(data_dir)
        if not (root / "manifest.json").is_file():
            demo.build_demo(root)
        dataset = demo.load_demo(root, split)
    elif name == "coco":
        if annotations is None or images is None:
            raise ValueError("the coco dataset needs an annotations json and an images directory")
        dataset = coco.load_coco(annotations, images)
    elif name == "voc":
        if data_dir is None:
            raise ValueError("the voc dataset needs a data directory (VOCdevkit year directory or XML files)")
        dataset = voc.load_voc(data_dir, images, class_names)
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if max_images is not None:
        positive_int(max_images, "max_images")
        dataset = DetectionDataset(dataset.examples[:max_images], dataset.categories, dataset.image_dir)
    return dataset
