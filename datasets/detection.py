"""The in-memory detection dataset every reader produces, and a ``tf.data`` input pipeline.

:func:`detsearch.datasets.coco.load_coco`, :func:`detsearch.datasets.voc.load_voc` and
:func:`detsearch.datasets.demo.load_demo` all return a :class:`DetectionDataset`: a tuple of
:class:`DetectionExample` (one per image) plus the category list and the image directory.

Boxes are float32 ``[N, 4]`` ``(ymin, xmin, ymax, xmax)`` in absolute, continuous pixel
coordinates of the original image (pixel ``(r, c)`` covers ``[r, r + 1) x [c, c + 1)``), the
TF Model Garden convention. COCO ``[x, y, width, height]`` appears only in
:meth:`DetectionDataset.to_coco_json`. Class values are the category ids of the dataset (COCO
ids as written in the json, not contiguous indices).

Validation is shared by the readers: every box must be finite, have positive height and width,
and lie inside the image up to ``BOX_TOLERANCE`` pixels on each side; every class must be a
known category id; image ids must be unique; a dataset holds at least one image. A violation
raises :class:`DatasetError` naming the file and the record.

This module imports NumPy only; TensorFlow and OpenCV are imported by
:func:`make_tf_dataset` when it is called.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from detsearch import atomic
from detsearch.checks import positive_int
from detsearch.detection.boxes import xywh_to_yxyx, yxyx_to_xywh

__all__ = [
    "BOX_TOLERANCE",
    "DatasetError",
    "DetectionDataset",
    "DetectionExample",
    "check_box",
    "letterbox_scale",
    "make_tf_dataset",
    "write_json_atomic",
]

# Boxes may extend this many pixels past each image border (rounding in annotation tools).
BOX_TOLERANCE = 1.0


class DatasetError(ValueError):
    """An annotation or image problem; the message names the file and the record."""


def check_box(box: Any, height: int, width: int, where: str) -> None:
    """Raises :class:`DatasetError` unless ``box`` is a valid yxyx box of an image.

    Valid: four finite numbers, ``ymax > ymin`` and ``xmax > xmin`` (zero size is invalid),
    ``ymin >= -BOX_TOLERANCE``, ``xmin >= -BOX_TOLERANCE``, ``ymax <= height + BOX_TOLERANCE``
    and ``xmax <= width + BOX_TOLERANCE`` (tolerance endpoints included).

    Args:
        box: ``(ymin, xmin, ymax, xmax)`` in absolute pixels.
        height: Image height in pixels.
        width: Image width in pixels.
        where: Prefix of the message naming the file and the record, e.g.
            ``"instances.json: annotation id 7 (image id 3)"``.
    """
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise DatasetError(f"{where}: box {values.tolist()} is not 4 finite numbers")
    ymin, xmin, ymax, xmax = values.tolist()
    if ymax <= ymin or xmax <= xmin:
        raise DatasetError(
            f"{where}: box (ymin, xmin, ymax, xmax) = {values.tolist()} has zero or negative "
            f"size (height {ymax - ymin:g}, width {xmax - xmin:g})"
        )
    if (
        ymin < -BOX_TOLERANCE
        or xmin < -BOX_TOLERANCE
        or ymax > height + BOX_TOLERANCE
        or xmax > width + BOX_TOLERANCE
    ):
        raise DatasetError(
            f"{where}: box (ymin, xmin, ymax, xmax) = {values.tolist()} lies outside the "
            f"{height}x{width} (height x width) image by more than {BOX_TOLERANCE:g} pixel"
        )


def _frozen_array(values: Any, dtype: Any, shape_tail: tuple[int, ...], what: str) -> np.ndarray:
    array = np.array(values, dtype=dtype)  # Always a copy: the caller's array stays theirs.
    if array.size == 0:
        array = array.reshape((0, *shape_tail))
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail:
        raise DatasetError(f"{what}: expected shape [N{''.join(f', {d}' for d in shape_tail)}], "
                           f"got {list(np.shape(values))}")
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class DetectionExample:
    """The ground truth of one image.

    Arrays are copied on construction and made read-only. Equality is identity (the fields
    are arrays); compare fields with ``np.testing`` instead.

    Attributes:
        image_id: The dataset's image id (COCO ``images[].id``).
        file_name: Image path relative to :attr:`DetectionDataset.image_dir`.
        height: Image height in pixels.
        width: Image width in pixels.
        boxes: float32 ``[N, 4]`` ``(ymin, xmin, ymax, xmax)``, absolute pixels.
        classes: int32 ``[N]`` category ids (as in the source annotations).
        is_crowd: bool ``[N]``; True for COCO crowd regions and VOC ``difficult`` objects,
            which COCO evaluation treats as ignore regions.
        areas: float32 ``[N]``; COCO's ``area`` (segment area) for COCO data, box area
            otherwise. COCO evaluation sorts ground truth into small/medium/large by it.
        annotation_ids: int64 ``[N]`` annotation ids, or None to number annotations
            1, 2, ... across the dataset in :meth:`DetectionDataset.to_coco_json`.
        source_xywh: float64 ``[N, 4]`` COCO ``bbox`` values exactly as read from a COCO json,
            or None. Rounding them to float32 moves some IoUs across COCO's thresholds (on
            the COCO API demo set it shifts AP by 2e-4), so
            :meth:`DetectionDataset.to_coco_json` writes these when present. Must convert
            to ``boxes`` exactly (checked).
        source_areas: float64 ``[N]`` COCO ``area`` values exactly as read, or None; written
            by :meth:`DetectionDataset.to_coco_json` when present.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    is_crowd: np.ndarray
    areas: np.ndarray
    annotation_ids: np.ndarray | None = None
    source_xywh: np.ndarray | None = None
    source_areas: np.ndarray | None = None

    def __post_init__(self) -> None:
        what = f"image {self.file_name!r} (id {self.image_id})"
        for name in ("image_id", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise DatasetError(f"{what}: {name} must be an int, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.height <= 0 or self.width <= 0:
            raise DatasetError(f"{what}: size {self.height}x{self.width} is not positive")
        if not isinstance(self.file_name, str) or not self.file_name:
            raise DatasetError(f"{what}: file_name must be a non-empty string")
        boxes = _frozen_array(self.boxes, np.float32, (4,), f"{what} boxes")
        object.__setattr__(self, "boxes", boxes)
        num_boxes = boxes.shape[0]
        fields = [
            ("classes", np.int32, ()),
            ("is_crowd", np.bool_, ()),
            ("areas", np.float32, ()),
            ("annotation_ids", np.int64, ()),
            ("source_xywh", np.float64, (4,)),
            ("source_areas", np.float64, ()),
        ]
        for name, dtype, tail in fields:
            if getattr(self, name) is None and name not in ("classes", "is_crowd", "areas"):
                continue  # An optional field left out.
            array = _frozen_array(getattr(self, name), dtype, tail, f"{what} {name}")
            if array.shape[0] != num_boxes:
                raise DatasetError(
                    f"{what}: {name} has {array.shape[0]} entries for {num_boxes} boxes"
                )
            object.__setattr__(self, name, array)
        if not (np.isfinite(self.areas).all() and (self.areas >= 0).all()):
            raise DatasetError(
                f"{what}: areas must be finite and >= 0, got {self.areas.tolist()}"
            )
        if self.source_xywh is not None and not np.array_equal(
                xywh_to_yxyx(self.source_xywh), boxes):
            raise DatasetError(f"{what}: source_xywh does not convert to boxes")
        if self.source_areas is not None and not np.array_equal(
                self.source_areas.astype(np.float32), self.areas):
            raise DatasetError(f"{what}: source_areas do not round to areas")

    @property
    def num_boxes(self) -> int:
        """N, the number of annotations (crowd ones included)."""
        return int(self.boxes.shape[0])


def _copy_category(category: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(category, Mapping) or "id" not in category or "name" not in category:
        raise DatasetError(f"{where}: category {category!r} needs an 'id' and a 'name'")
    category_id = category["id"]
    if isinstance(category_id, bool) or not isinstance(category_id, (int, np.integer)):
        raise DatasetError(f"{where}: category id {category_id!r} is not an int")
    copy = {"id": int(category_id), "name": str(category["name"])}
    if "supercategory" in category:
        copy["supercategory"] = str(category["supercategory"])
    return copy


@dataclasses.dataclass(frozen=True, eq=False)
class DetectionDataset:
    """A detection dataset in memory.

    Construction validates everything (see the module docstring) and raises
    :class:`DatasetError`; the readers validate first with messages naming their source file.

    Attributes:
        examples: One :class:`DetectionExample` per image, in the reader's order.
        categories: ``({'id': int, 'name': str}, ...)`` (plus ``'supercategory'`` when the
            source has one), in the source's order. Copies; mutating them does not change
            the dataset's validation.
        image_dir: Directory the examples' ``file_name`` are relative to.
    """

    examples: tuple[DetectionExample, ...]
    categories: tuple[dict[str, Any], ...]
    image_dir: Path

    def __post_init__(self) -> None:
        examples = tuple(self.examples)
        if not examples:
            raise DatasetError(f"empty dataset: no images (image_dir {self.image_dir})")
        categories = tuple(_copy_category(c, "categories") for c in self.categories)
        category_ids = [c["id"] for c in categories]
        if len(set(category_ids)) != len(category_ids):
            raise DatasetError(f"categories: duplicate ids in {category_ids}")
        known = set(category_ids)
        seen_images: set[int] = set()
        for example in examples:
            if not isinstance(example, DetectionExample):
                raise DatasetError(f"examples: {example!r} is not a DetectionExample")
            where = f"image {example.file_name!r} (id {example.image_id})"
            if example.image_id in seen_images:
                raise DatasetError(f"{where}: duplicate image id {example.image_id}")
            seen_images.add(example.image_id)
            for index in range(example.num_boxes):
                if int(example.classes[index]) not in known:
                    raise DatasetError(
                        f"{where} box {index}: unknown category id {int(example.classes[index])}"
                        f" (known: {sorted(known)})"
                    )
                check_box(example.boxes[index], example.height, example.width,
                          f"{where} box {index}")
        object.__setattr__(self, "examples", examples)
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "image_dir", Path(self.image_dir))

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_boxes(self) -> int:
        """Total number of annotations (crowd ones included)."""
        return sum(example.num_boxes for example in self.examples)

    @property
    def category_names(self) -> dict[int, str]:
        """``{category id: name}``."""
        return {c["id"]: c["name"] for c in self.categories}

    def to_coco_json(self) -> dict[str, Any]:
        """Returns the dataset as a COCO instances dict (ground truth for COCO evaluation).

        Keys ``images`` (``id``, ``file_name``, ``height``, ``width``), ``annotations``
        (``id``, ``image_id``, ``category_id``, ``bbox`` = ``[x, y, width, height]``,
        ``area``, ``iscrowd`` 0/1) and ``categories``. Image, category and annotation ids are
        preserved (annotation ids numbered 1, 2, ... in example order when the examples carry
        none). ``bbox`` and ``area`` are the exact source values when the examples carry
        them (``source_xywh``/``source_areas``, set by :func:`detsearch.datasets.coco.load_coco`), so a
        loaded COCO json comes back with its numbers unchanged; otherwise they are computed
        from the float32 ``boxes`` and ``areas``. The result shares nothing with the dataset.
        """
        images = []
        annotations = []
        next_id = 1
        for example in self.examples:
            images.append({
                "id": example.image_id,
                "file_name": example.file_name,
                "height": example.height,
                "width": example.width,
            })
            if example.source_xywh is None:
                xywh = yxyx_to_xywh(example.boxes)
            else:
                xywh = example.source_xywh
            areas = example.areas if example.source_areas is None else example.source_areas
            for index in range(example.num_boxes):
                if example.annotation_ids is None:
                    annotation_id = next_id
                    next_id += 1
                else:
                    annotation_id = int(example.annotation_ids[index])
                annotations.append({
                    "id": annotation_id,
                    "image_id": example.image_id,
                    "category_id": int(example.classes[index]),
                    "bbox": [float(v) for v in xywh[index]],
                    "area": float(areas[index]),
                    "iscrowd": int(bool(example.is_crowd[index])),
                })
        return {
            "images": images,
            "annotations": annotations,
            "categories": [dict(c) for c in self.categories],
        }

    def write_coco_json(self, path: str | os.PathLike[str]) -> Path:
        """Writes :meth:`to_coco_json` to ``path`` atomically (temp file, then rename).

        Returns:
            ``path`` as a Path. Parent directories are created.
        """
        return write_json_atomic(path, self.to_coco_json())


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Writes ``payload`` as compact json to ``path`` atomically (see `detsearch.atomic`)."""
    return atomic.write_json_atomic(path, payload, indent=None, separators=(",", ":"))


# ---------------------------------------------------------------------------
# tf.data pipeline.
# ---------------------------------------------------------------------------


def _image_shape(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        shape = (int(image_size), int(image_size))
    else:
        shape = tuple(int(v) for v in image_size)
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(
            f"image_size must be a positive int or (height, width), got {image_size!r}"
        )
    return shape  # type: ignore[return-value]


def letterbox_scale(height: int, width: int, image_size: int | tuple[int, int]) -> float:
    """The factor :func:`make_tf_dataset` resizes an image by: ``min(H / height, W / width)``
    for ``image_size = (H, W)``, so the whole image fits."""
    target_height, target_width = _image_shape(image_size)
    return min(target_height / height, target_width / width)


def _read_letterboxed(path: str, height: int, width: int, target: tuple[int, int],
                      scale: float) -> np.ndarray:
    """Reads an image with OpenCV and letterboxes it into ``target`` (float32 RGB 0..255)."""
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"image {path}: missing or unreadable by OpenCV")
    if image.shape[:2] != (height, width):
        raise DatasetError(
            f"image {path}: decoded size {image.shape[0]}x{image.shape[1]} differs from the "
            f"annotated {height}x{width} (height x width)"
        )
    new_height = min(target[0], max(1, round(height * scale)))
    new_width = min(target[1], max(1, round(width * scale)))
    if (new_height, new_width) != (height, width):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
    out = np.zeros((*target, 3), dtype=np.float32)
    out[:new_height, :new_width] = image[:, :, ::-1]  # BGR -> RGB.
    return out


def make_tf_dataset(
    dataset: DetectionDataset,
    image_size: int | tuple[int, int],
    batch_size: int,
    training: bool,
    seed: int | None = 0,
    shuffle: bool = True,
    max_boxes: int | None = None,
):
    """Builds a batched ``tf.data.Dataset`` of letterboxed images and padded boxes.

    Resizing (letterbox). Each image is scaled by ``scale = min(H / height, W / width)`` for
    ``image_size = (H, W)``, keeping its aspect ratio, to ``round(height * scale) x
    round(width * scale)`` (OpenCV, area interpolation when shrinking, bilinear when
    growing), and placed at the TOP-LEFT corner of an ``H x W`` canvas padded with zeros
    (as Model Garden's ``resize_and_crop_image``). Placing it at the corner makes the
    transform a pure scale with no offset::

        box_resized = box_original * scale        # all four yxyx coordinates
        box_original = box_resized / scale        # how predictions are mapped back

    (Rounding the resized size makes the true per-axis factor differ from ``scale`` by less
    than half a pixel over the whole image.) Boxes are clipped to the resized image.

    Elements are dicts of:

    - ``'image'``: float32 ``[B, H, W, 3]`` RGB, values 0..255 (not normalized; for Model
      Garden use ``normalize_image(image, MEAN_RGB, STDDEV_RGB)``).
    - ``'image_id'``: int64 ``[B]``.
    - ``'scale'``: float32 ``[B]``, resized / original.
    - ``'boxes'``: float32 ``[B, max_boxes, 4]`` yxyx in resized pixels, padded with -1.
    - ``'classes'``: int32 ``[B, max_boxes]`` category ids, padded with -1.
    - ``'original_size'``: int32 ``[B, 2]`` (height, width) of the original image.

    Crowd regions (and VOC difficult objects) are ignore regions, not objects: they are left
    out of ``'boxes'``/``'classes'`` (COCO evaluation still sees them through
    :meth:`DetectionDataset.to_coco_json`). There is no augmentation.

    Order. When ``training`` and ``shuffle``, examples are shuffled from ``seed`` (the same
    sequence of epoch orders for the same seed, reshuffled on each pass, e.g. after
    ``.repeat()``); otherwise they come in dataset order. ``training`` also drops the last
    partial batch, so training batches have a static batch size. One pass over the data.

    Args:
        dataset: The examples.
        image_size: ``S`` for ``S x S`` or ``(H, W)``.
        batch_size: Images per batch, > 0.
        training: Shuffle (when ``shuffle``) and drop the remainder.
        seed: Shuffle seed; None means 0.
        shuffle: Allows shuffling in training; False gives dataset order.
        max_boxes: Padded box count; None means the largest non-crowd box count of any
            image (at least 1).

    Returns:
        ``tf.data.Dataset`` of the dicts above.

    Raises:
        ValueError: Bad ``image_size``/``batch_size``/``max_boxes``.
        DatasetError: An image has more than ``max_boxes`` non-crowd boxes. An image file that
            is missing, unreadable or of a size other than the annotated one fails when the
            dataset is iterated (TensorFlow wraps the DatasetError message in its error).
    """
    import tensorflow as tf

    target = _image_shape(image_size)
    batch_size = positive_int(batch_size, "batch_size")
    seed = 0 if seed is None else int(seed)
    examples = dataset.examples
    kept = [~example.is_crowd for example in examples]
    counts = [int(keep.sum()) for keep in kept]
    max_boxes = max(1, max(counts)) if max_boxes is None else positive_int(max_boxes, "max_boxes")

    num = len(examples)
    boxes = np.full((num, max_boxes, 4), -1.0, dtype=np.float32)
    classes = np.full((num, max_boxes), -1, dtype=np.int32)
    scales = np.empty(num, dtype=np.float32)
    for index, (example, keep, count) in enumerate(zip(examples, kept, counts)):
        if count > max_boxes:
            raise DatasetError(
                f"image {example.file_name!r} (id {example.image_id}): {count} boxes, more than "
                f"max_boxes={max_boxes}"
            )
        scale = letterbox_scale(example.height, example.width, target)
        scales[index] = scale
        resized = example.boxes[keep].astype(np.float64) * scale
        limit = [example.height * scale, example.width * scale] * 2
        boxes[index, :count] = np.clip(resized, 0.0, limit)
        classes[index, :count] = example.classes[keep]

    image_dir = dataset.image_dir
    tensors = {
        "image_id": np.array([e.image_id for e in examples], dtype=np.int64),
        "scale": scales,
        "boxes": boxes,
        "classes": classes,
        "original_size": np.array([[e.height, e.width] for e in examples], dtype=np.int32),
    }
    scale64 = scales.astype(np.float64)  # The exact factor boxes were scaled with.

    def load(index: np.ndarray) -> np.ndarray:
        example = examples[int(index)]
        return _read_letterboxed(str(image_dir / example.file_name), example.height,
                                 example.width, target, float(scale64[int(index)]))

    def to_element(index, element):
        image = tf.numpy_function(load, [index], tf.float32, stateful=False)
        image = tf.ensure_shape(image, (*target, 3))
        output = dict(element)
        output["image"] = image
        return output

    indices = tf.data.Dataset.range(num)
    data = tf.data.Dataset.zip(indices, tf.data.Dataset.from_tensor_slices(tensors))
    if training and shuffle:
        data = data.shuffle(num, seed=seed, reshuffle_each_iteration=True)
    data = data.map(to_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    data = data.batch(batch_size, drop_remainder=bool(training))
    return data.prefetch(tf.data.AUTOTUNE)

