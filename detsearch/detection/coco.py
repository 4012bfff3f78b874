"""The COCO boundary: reading and checking COCO instances JSON, once, for every reader.

`read_json` reads any JSON file of the project's inputs with one error line. `parse_images`,
`parse_categories` and `parse_annotations` check the three lists of an instances document
(``parse_instances`` all three); `detsearch.detection.cocoeval.load_ground_truth`, the cache
importers (`detsearch.detection.cache.importers`) and `detsearch.datasets.coco.load_coco`
build on them. Errors are plain ``ValueError``s naming the source, the record and the problem;
callers with their own error type (`CacheError`, `DatasetError`) wrap them.

Image size rule: ``height`` and ``width`` are whole numbers of pixels >= 0; absent, null or 0
means *unknown* (pycocotools never reads them, and evaluation does not need them), parsed as
0. A reader that needs sizes (a detection cache, a training dataset) refuses an image of
unknown size with `require_sizes`, naming it.

This module imports numpy and the standard library only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CocoAnnotation",
    "CocoCategory",
    "CocoImage",
    "CocoInstances",
    "coco_document",
    "is_coco_id",
    "is_finite_number",
    "parse_annotations",
    "parse_categories",
    "parse_images",
    "parse_instances",
    "read_json",
    "require_sizes",
]

_INT64 = np.iinfo(np.int64)


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed JSON file at ``path`` (``what`` names it in errors, e.g. "annotations").

    Raises:
      ValueError: ``"<path>: cannot read <what>: <reason>"`` (missing, unreadable, not UTF-8)
        or ``"<path>: malformed JSON: <reason>"``.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read {what}: {error}") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{path}: malformed JSON: {error}") from None


def coco_document(source: Any, what: str = "annotations", name: str | None = None) -> tuple[Any, str]:
    """``(document, where)`` of a JSON path, an already loaded document or a pycocotools ``COCO``.

    ``where`` names the source in messages: ``name`` when given, else the path, else
    ``"<what>"`` (a loaded document) or ``"<what>: COCO object>"``.
    """
    if isinstance(source, (str, os.PathLike)):
        return read_json(source, what), name or os.fspath(source)
    if not isinstance(source, Mapping) and isinstance(getattr(source, "dataset", None), dict):
        return source.dataset, name or f"<{what}: COCO object>"
    return source, name or f"<{what}>"


def is_coco_id(value: Any) -> bool:
    """An id the arrays can hold: an int (not a bool) within int64."""
    return isinstance(value, int) and not isinstance(value, bool) and _INT64.min <= value <= _INT64.max


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float64."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float64
        return False


@dataclass(frozen=True)
class CocoImage:
    """One ``images`` record: ``height``/``width`` 0 when the file does not give them."""

    id: int
    height: int
    width: int
    file_name: str | None
    position: int
    """Index in the file's ``images`` list."""


@dataclass(frozen=True)
class CocoCategory:
    id: int
    name: str
    position: int


@dataclass(frozen=True)
class CocoAnnotation:
    """One ``annotations`` record; ``bbox`` is COCO ``[x, y, w, h]`` as given."""

    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    area: float
    iscrowd: bool
    position: int


@dataclass(frozen=True)
class CocoInstances:
    """A checked COCO instances document, in file order (annotations empty when not parsed)."""

    where: str
    images: tuple[CocoImage, ...]
    categories: tuple[CocoCategory, ...]
    annotations: tuple[CocoAnnotation, ...]


def _top_level(document: Any, where: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(document, Mapping):
        raise ValueError(f"{where}: COCO annotations must be a JSON object, got {type(document).__name__}")
    for key in keys:
        if not isinstance(document.get(key), list):
            raise ValueError(f"{where}: missing or non-list '{key}'")
    return document


def _image_size(image: Mapping[str, Any], key: str, where: str) -> int:
    value = image.get(key, 0) or 0
    if not is_finite_number(value) or value < 0 or value != int(value) or int(value) > _INT64.max:
        raise ValueError(f"{where}: {key!r} {value!r} is not a whole number of pixels")
    return int(value)


def parse_images(document: Any, where: str) -> tuple[CocoImage, ...]:
    """The checked ``images`` of an instances document (see the module's size rule).

    Raises:
      ValueError: not an object, no ``images`` list, a record without an int64 ``id``, a bad
        ``height``/``width``, a repeated id.
    """
    records = _top_level(document, where, ("images",))["images"]
    images = []
    seen: set[int] = set()
    for position, image in enumerate(records):
        if not isinstance(image, Mapping) or not is_coco_id(image.get("id")):
            raise ValueError(f"{where}: images[{position}] has no integer 'id' (64-bit)")
        at = f"{where}: images[{position}] (id {image['id']})"
        height = _image_size(image, "height", at)
        width = _image_size(image, "width", at)
        if image["id"] in seen:
            raise ValueError(f"{where}: image id {image['id']} appears twice in 'images'")
        seen.add(image["id"])
        file_name = image.get("file_name")
        images.append(CocoImage(image["id"], height, width, file_name if isinstance(file_name, str) else None,
                                position))
    return tuple(images)


def require_sizes(images: tuple[CocoImage, ...], where: str, needed_by: str) -> None:
    """Refuses an image of unknown size (height or width 0 or absent), naming it."""
    for image in images:
        if image.height == 0 or image.width == 0:
            raise ValueError(
                f"{where}: images[{image.position}] (id {image.id}) has size {image.height}x{image.width}: "
                f"height and width must be given (>= 1) for {needed_by}"
            )


def parse_categories(document: Any, where: str) -> tuple[CocoCategory, ...]:
    """The checked ``categories``: int64 ids without repeats; ``name`` a string (default: the id).

    Raises:
      ValueError: no ``categories`` list, a record without an int64 ``id``, a repeated id, a
        name that is not a string.
    """
    records = _top_level(document, where, ("categories",))["categories"]
    categories = []
    seen: set[int] = set()
    for position, category in enumerate(records):
        if not isinstance(category, Mapping) or not is_coco_id(category.get("id")):
            raise ValueError(f"{where}: categories[{position}] has no integer 'id' (64-bit)")
        if category["id"] in seen:
            raise ValueError(f"{where}: category id {category['id']} appears twice in 'categories'")
        seen.add(category["id"])
        name = category.get("name", str(category["id"]))
        if not isinstance(name, str):
            raise ValueError(f"{where}: categories[{position}] (id {category['id']}): 'name' {name!r} is not a string")
        categories.append(CocoCategory(category["id"], name, position))
    return tuple(categories)


def parse_annotations(
    document: Any, where: str, images: tuple[CocoImage, ...], categories: tuple[CocoCategory, ...]
) -> tuple[CocoAnnotation, ...]:
    """The checked ``annotations`` (bbox ground truth) of the given images and categories.

    Raises:
      ValueError: no ``annotations`` list, a record that is not an object, lacks an int64
        ``id``, names an image or category not listed, has a bbox that is not four finite
        numbers or has negative width or height, lacks a finite ``area``; a repeated id.
    """
    records = _top_level(document, where, ("annotations",))["annotations"]
    image_ids = {image.id for image in images}
    category_ids = {category.id for category in categories}
    annotations = []
    seen: set[int] = set()
    for position, ann in enumerate(records):
        at = f"{where}: annotations[{position}]"
        if not isinstance(ann, Mapping):
            raise ValueError(f"{at} is not an object")
        if "id" in ann:
            at += f" (id {ann['id']!r})"
        if not is_coco_id(ann.get("id")):
            raise ValueError(f"{at}: missing integer 'id' (64-bit)")
        if not is_coco_id(ann.get("image_id")) or ann["image_id"] not in image_ids:
            raise ValueError(f"{at}: image_id {ann.get('image_id')!r} is not in 'images'")
        if not is_coco_id(ann.get("category_id")) or ann["category_id"] not in category_ids:
            raise ValueError(f"{at}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(is_finite_number(v) for v in bbox):
            raise ValueError(f"{at}: bbox must be four finite numbers [x, y, w, h], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{at}: bbox has negative width or height {list(bbox)!r}")
        if not is_finite_number(ann.get("area")):
            raise ValueError(f"{at}: missing or non-finite 'area'")
        if ann["id"] in seen:
            raise ValueError(f"{where}: annotation id {ann['id']} appears twice")
        seen.add(ann["id"])
        annotations.append(CocoAnnotation(
            ann["id"], ann["image_id"], ann["category_id"], tuple(bbox), ann["area"], bool(ann.get("iscrowd", 0)),
            position,
        ))
    return tuple(annotations)


def parse_instances(document: Any, where: str, *, with_annotations: bool = True) -> CocoInstances:
    """`parse_images`, `parse_categories` and (with ``with_annotations``) `parse_annotations`."""
    keys = ("images", "annotations", "categories") if with_annotations else ("images", "categories")
    _top_level(document, where, keys)
    images = parse_images(document, where)
    categories = parse_categories(document, where)
    annotations = parse_annotations(document, where, images, categories) if with_annotations else ()
    return CocoInstances(where, images, categories, annotations)
