"""A deterministic COCO-format "MNIST detection" set built from the real MNIST digits.

Each image is a black ``image_size x image_size`` canvas (3 identical channels, PNG) holding
1 to ``MAX_DIGITS`` real MNIST digits. Per digit:

1. the digit is cropped to its nonzero pixels and resized (aspect ratio kept; OpenCV bilinear,
   area interpolation when shrinking) so that its longer side is a size drawn uniformly from
   ``DIGIT_SIZE_RANGE`` (both ends included, capped at the canvas size);
2. the resized patch is cropped again to its nonzero pixels; its box is therefore the tight
   bounding box of the digit's nonzero pixels after scaling;
3. a top-left position is drawn uniformly such that the box lies inside the canvas; the
   placement is accepted when the box's IoU with every digit already placed is
   ``<= MAX_IOU``, otherwise a new size and position are drawn, up to ``PLACEMENT_TRIES``
   times, after which the digit is dropped (so an image may hold fewer digits than drawn,
   never zero: the first always fits);
4. the patch is drawn with ``maximum`` blending, so overlapping digits never erase each other.

Boxes are integers: the digit covering pixel rows ``r0..r1`` and columns ``c0..c1`` has yxyx
box ``(r0, c0, r1 + 1, c1 + 1)`` and COCO bbox ``[c0, r0, c1 - c0 + 1, r1 - r0 + 1]``.
Categories: ids 1..10 for digits 0..9, names ``"0"``..``"9"``. The train split draws from
the 60000 MNIST training digits, the val split from the 10000 test digits. Everything is
drawn from ``numpy.random.default_rng([seed, split])`` (split 0 train, 1 val), so each split
depends only on the seed and its own size.

Layout of ``out_dir``::

    train/000001.png ...   val/000001.png ...     (image ids 1..N per split)
    instances_train.json   instances_val.json     (COCO instances)
    manifest.json          (parameters and a sha256 over every file; written last)

The set is written to a temporary sibling directory and renamed into place. A set already
at ``out_dir`` whose manifest carries the same parameters and whose files still hash to the
manifest's digest is reused as is.

Command line (`detsearch.cli.prepare`)::

    detsearch prepare-demo --out data/demo
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from detsearch.atomic import replace_directory
from detsearch.checks import positive_int
from detsearch.datasets import mnist
from detsearch.datasets.coco import load_coco
from detsearch.datasets.detection import DatasetError, DetectionDataset, write_json_atomic
from detsearch.datasets.paths import data_root
from detsearch.detection.boxes import iou_yxyx

__all__ = ["SPLITS", "build_demo", "default_demo_dir", "load_demo"]

logger = logging.getLogger(__name__)

DEMO_FORMAT_VERSION = 1
SPLITS = ("train", "val")
NUM_CLASSES = 10
MAX_DIGITS = 5
DIGIT_SIZE_RANGE = (16, 56)  # Longer side of a scaled digit, pixels, both ends included.
MAX_IOU = 0.3  # A placement is accepted when its IoU with every placed digit is <= this.
PLACEMENT_TRIES = 20
MANIFEST = "manifest.json"


def default_demo_dir() -> Path:
    """``demo`` under `detsearch.datasets.paths.data_root` (``$DETSEARCH_DATA_DIR``, else ``./data``)."""
    return data_root() / "demo"


def _paths(out_dir: Path) -> dict[str, Path]:
    return {
        "root": out_dir,
        "manifest": out_dir / MANIFEST,
        "train_images": out_dir / "train",
        "val_images": out_dir / "val",
        "train_annotations": out_dir / "instances_train.json",
        "val_annotations": out_dir / "instances_val.json",
    }


def _crop_nonzero(image: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(image.any(axis=1))
    cols = np.flatnonzero(image.any(axis=0))
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _scaled_digit(digit: np.ndarray, size: int) -> np.ndarray:
    """Crops a 28x28 digit to its ink, resizes its longer side to ``size``, crops again."""
    import cv2

    ink = _crop_nonzero(digit)
    height, width = ink.shape
    factor = size / max(height, width)
    new_height = max(1, round(height * factor))
    new_width = max(1, round(width * factor))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(ink, (new_width, new_height), interpolation=interpolation)
    return _crop_nonzero(resized)


def _generate_split(
    images: np.ndarray, labels: np.ndarray, num_images: int, image_size: int,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[list[tuple[int, list[int]]]]]:
    """Draws ``num_images`` canvases; returns them and, per canvas, ``(digit, [r0, c0, r1, c1])``
    with ``r1``/``c1`` exclusive."""
    high = min(DIGIT_SIZE_RANGE[1], image_size)
    low = min(DIGIT_SIZE_RANGE[0], high)
    canvases, objects = [], []
    for _ in range(num_images):
        canvas = np.zeros((image_size, image_size), dtype=np.uint8)
        placed: list[list[int]] = []
        digits: list[tuple[int, list[int]]] = []
        for _ in range(int(rng.integers(1, MAX_DIGITS + 1))):
            index = int(rng.integers(len(images)))
            for _ in range(PLACEMENT_TRIES):
                patch = _scaled_digit(images[index], int(rng.integers(low, high + 1)))
                patch_height, patch_width = patch.shape
                top = int(rng.integers(0, image_size - patch_height + 1))
                left = int(rng.integers(0, image_size - patch_width + 1))
                box = [top, left, top + patch_height, left + patch_width]
                if placed and iou_yxyx(np.array([box], np.float32),
                                       np.array(placed, np.float32)).max() > MAX_IOU:
                    continue
                region = canvas[top:box[2], left:box[3]]
                np.maximum(region, patch, out=region)
                placed.append(box)
                digits.append((int(labels[index]), box))
                break
        canvases.append(canvas)
        objects.append(digits)
    return canvases, objects


def _coco_dict(objects: list[list[tuple[int, list[int]]]], image_size: int) -> dict[str, Any]:
    images, annotations = [], []
    for image_id, digits in enumerate(objects, start=1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png",
                       "height": image_size, "width": image_size})
        for digit, (top, left, bottom, right) in digits:
            width, height = right - left, bottom - top
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": digit + 1,
                "bbox": [left, top, width, height],
                "area": width * height,
                "iscrowd": 0,
            })
    categories = [{"id": d + 1, "name": str(d), "supercategory": "digit"}
                  for d in range(NUM_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _imwrite(path: str, image: np.ndarray) -> bool:
    import cv2

    return bool(cv2.imwrite(path, image))


def _files_digest(root: Path) -> tuple[int, str]:
    """(file count, sha256 over sorted (relative path, file sha256)), manifest excluded."""
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    for path in files:
        relative = path.relative_to(root).as_posix()
        digest.update(f"{relative}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return len(files), digest.hexdigest()


def _is_complete(out_dir: Path, parameters: dict[str, Any]) -> bool:
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("parameters") != parameters:
        return False
    return [manifest.get("num_files"), manifest.get("sha256")] == list(_files_digest(out_dir))


def build_demo(
    out_dir: str | os.PathLike[str] | None = None,
    num_train: int = 2000,
    num_val: int = 500,
    image_size: int = 128,
    seed: int = 0,
    mnist_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Builds (or reuses) the MNIST detection set at ``out_dir``.

    Args:
        out_dir: Target directory; None means :func:`default_demo_dir`. It must not exist,
            be empty, or hold an earlier demo set (which is replaced when its parameters
            differ or its files changed).
        num_train: Train images (MNIST training digits), >= 1.
        num_val: Val images (MNIST test digits), >= 1.
        image_size: Canvas side in pixels, >= 28.
        seed: Non-negative seed; the same seed and parameters give byte-identical files.
        mnist_dir: MNIST IDX directory for :func:`detsearch.datasets.mnist.ensure`; None: its default.

    Returns:
        Paths: ``root``, ``manifest``, ``train_images``, ``val_images`` (directories),
        ``train_annotations``, ``val_annotations`` (COCO json).

    Raises:
        ValueError: A bad parameter.
        DatasetError: ``out_dir`` holds something other than a demo set.
        detsearch.datasets.mnist.MnistError: MNIST cannot be prepared.
    """
    import cv2

    out_dir = default_demo_dir() if out_dir is None else Path(out_dir)
    parameters = {
        "format_version": DEMO_FORMAT_VERSION,
        "num_train": positive_int(num_train, "num_train"),
        "num_val": positive_int(num_val, "num_val"),
        "image_size": positive_int(image_size, "image_size", minimum=28),
        "seed": positive_int(seed, "seed", minimum=0),
        "max_digits": MAX_DIGITS,
        "digit_size_range": list(DIGIT_SIZE_RANGE),
        "max_iou": MAX_IOU,
        "placement_tries": PLACEMENT_TRIES,
    }
    paths = _paths(out_dir)
    if _is_complete(out_dir, parameters):
        logger.info("Reusing the demo set in %s", out_dir)
        return paths
    if out_dir.exists() and (not out_dir.is_dir() or (
            any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file())):
        raise DatasetError(f"{out_dir}: exists and is not a demo set (no {MANIFEST}); "
                           "choose another directory")

    started = time.monotonic()
    data = mnist.input_data.read_data_sets(mnist.ensure(mnist_dir), dtype=np.uint8,
                                           reshape=False, validation_size=0)
    sources = {"train": data.train, "val": data.test}
    sizes = {"train": parameters["num_train"], "val": parameters["num_val"]}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for split_index, split in enumerate(SPLITS):
            source = sources[split]
            rng = np.random.default_rng([parameters["seed"], split_index])
            canvases, objects = _generate_split(source.images[..., 0], source.labels,
                                                sizes[split], image_size, rng)
            (tmp_dir / split).mkdir()
            for image_id, canvas in enumerate(canvases, start=1):
                path = tmp_dir / split / f"{image_id:06d}.png"
                if not _imwrite(str(path), cv2.merge([canvas, canvas, canvas])):
                    raise OSError(f"cannot write {path}")
            write_json_atomic(tmp_dir / f"instances_{split}.json",
                              _coco_dict(objects, image_size))
        num_files, digest = _files_digest(tmp_dir)
        write_json_atomic(tmp_dir / MANIFEST,
                          {"parameters": parameters, "num_files": num_files, "sha256": digest})
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes 0700.
        replace_directory(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    logger.info("Built the demo set in %s in %.1f s", out_dir, time.monotonic() - started)
    return paths


def load_demo(out_dir: str | os.PathLike[str] | None, split: str) -> DetectionDataset:
    """Loads one split of a built demo set with :func:`detsearch.datasets.coco.load_coco`.

    Args:
        out_dir: The directory given to :func:`build_demo`; None means
            :func:`default_demo_dir`.
        split: ``"train"`` or ``"val"``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    paths = _paths(default_demo_dir() if out_dir is None else Path(out_dir))
    return load_coco(paths[f"{split}_annotations"], paths[f"{split}_images"])
