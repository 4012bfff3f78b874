"""The in-memory detection dataset every reader produces.

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

This module imports NumPy only. Model Garden reads a dataset as TFRecords:
:func:`detsearch.models.pipeline.write_records` converts one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from detsearch import atomic
from detsearch.detection.boxes import xywh_to_yxyx, yxyx_to_xywh

__all__ = [
    "BOX_TOLERANCE",
    "DatasetError",
    "DetectionDataset",
    "DetectionExample",
    "check_box",
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

