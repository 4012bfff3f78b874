"""COCO instances json -> :class:`detsearch.datasets.detection.DetectionDataset`.

The json is read with the standard library (pycocotools' ``COCO()`` prints to stdout and
validates nothing); the result's :meth:`~detsearch.datasets.detection.DetectionDataset.to_coco_json`
is what pycocotools' ``COCO``/``COCOeval`` consume.

- Image, category and annotation ids are kept as in the json; examples come in the order
  of ``images``, annotations of an image in the order of ``annotations``.
- ``bbox`` ``[x, y, width, height]`` becomes yxyx ``(y, x, y + height, x + width)`` in
  float32; ``area`` is kept (it is the segment area COCO evaluation uses for its size
  ranges), or the box area when missing. The exact json values are kept too
  (``source_xywh``, ``source_areas``), so ``to_coco_json()`` gives them back unchanged and
  COCO evaluation against it equals evaluation against the file.
- Crowd annotations (``iscrowd: 1``) are kept with ``is_crowd=True``.
- Images without annotations are kept (COCO evaluation counts them).
- Image sizes follow `detsearch.detection.coco`'s rule (0 or absent means unknown); a
  training dataset needs them, so an image of unknown size is refused.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from detsearch.datasets.detection import DatasetError, DetectionDataset, DetectionExample, check_box
from detsearch.detection.boxes import xywh_to_yxyx
from detsearch.detection.coco import is_coco_id

__all__ = ["load_coco"]


def _is_number(value: Any) -> bool:
    """An int or float that converts to float64 (NaN and inf pass; a 400-digit int does not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            payload = json.load(stream)
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable json file ({exc})") from exc
    if not isinstance(payload, dict):
        raise DatasetError(f"{path}: top level is {type(payload).__name__}, expected an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(payload.get(key), list):
            raise DatasetError(f"{path}: missing list {key!r} (not a COCO instances file)")
    return payload


def _parse_images(path: Path, records: list[Any]) -> dict[int, dict[str, Any]]:
    images: dict[int, dict[str, Any]] = {}
    for index, record in enumerate(records):
        where = f"{path}: images[{index}]"
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: not an object")
        image_id = record.get("id")
        if not is_coco_id(image_id):
            raise DatasetError(f"{where}: 'id' {image_id!r} is not a 64-bit int")
        where = f"{path}: image id {image_id}"
        if image_id in images:
            raise DatasetError(f"{where}: duplicate image id")
        file_name = record.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise DatasetError(f"{where}: 'file_name' {file_name!r} is not a non-empty string")
        for key in ("height", "width"):
            value = record.get(key)
            if not is_coco_id(value) or value <= 0:
                raise DatasetError(
                    f"{where} ({file_name}): {key!r} {value!r} is not a positive int"
                )
        images[image_id] = {
            "file_name": file_name,
            "height": record["height"],
            "width": record["width"],
            "boxes": [],
            "classes": [],
            "is_crowd": [],
            "areas": [],
            "annotation_ids": [],
            "source_xywh": [],
            "source_areas": [],
        }
    return images


def load_coco(
    annotations_json: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    check_images: bool = True,
) -> DetectionDataset:
    """Loads a COCO instances json.

    Args:
        annotations_json: Path of the json (``instances_*.json`` layout).
        image_dir: Directory the images' ``file_name`` are relative to.
        check_images: Require every image file to exist (only existence is checked; the
            image size is the json's: :func:`detsearch.models.pipeline.write_records`, like
            Model Garden's converter, does not compare it with the decoded image).

    Returns:
        The dataset (see the module docstring for ids, order, crowd and areas).

    Raises:
        DatasetError: Naming the json and the record: unreadable or non-COCO json, no
            images, a bad or duplicate image record, an annotation with an unknown image id
            or category id, a bbox that is not 4 numbers, has zero or negative size, or lies
            outside its image by more than ``BOX_TOLERANCE`` pixel, a missing image file.
    """
    path = Path(annotations_json)
    image_dir = Path(image_dir)
    payload = _read_json(path)
    if not payload["images"]:
        raise DatasetError(f"{path}: empty dataset (no images)")

    categories = []
    for index, category in enumerate(payload["categories"]):
        if not isinstance(category, dict) or not is_coco_id(category.get("id")):
            raise DatasetError(f"{path}: categories[{index}] has no 64-bit int 'id': {category!r}")
        if not isinstance(category.get("name"), str):
            raise DatasetError(f"{path}: category id {category['id']} has no string 'name'")
        categories.append(category)
    category_ids = {category["id"] for category in categories}
    if len(category_ids) != len(categories):
        raise DatasetError(f"{path}: duplicate category ids")

    images = _parse_images(path, payload["images"])

    annotation_ids: set[int] = set()
    for index, record in enumerate(payload["annotations"]):
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: annotations[{index}]: not an object")
        annotation_id = record.get("id")
        if not is_coco_id(annotation_id):
            raise DatasetError(
                f"{path}: annotations[{index}]: 'id' {annotation_id!r} is not a 64-bit int"
            )
        where = f"{path}: annotation id {annotation_id}"
        if annotation_id in annotation_ids:
            raise DatasetError(f"{where}: duplicate annotation id")
        annotation_ids.add(annotation_id)
        image_id = record.get("image_id")
        if not is_coco_id(image_id) or image_id not in images:
            raise DatasetError(f"{where}: unknown image id {image_id!r}")
        image = images[image_id]
        where = f"{where} (image id {image_id}, {image['file_name']})"
        category_id = record.get("category_id")
        if not is_coco_id(category_id) or category_id not in category_ids:
            raise DatasetError(
                f"{where}: unknown category id {category_id!r} (known: {sorted(category_ids)})"
            )
        bbox = record.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
            raise DatasetError(f"{where}: 'bbox' {bbox!r} is not [x, y, width, height] numbers")
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise DatasetError(
                f"{where}: bbox [x, y, width, height] = {bbox} has zero or negative size"
            )
        box = xywh_to_yxyx(np.array([bbox], dtype=np.float64))[0]
        check_box(box, image["height"], image["width"], where)
        area = record.get("area", float(bbox[2]) * float(bbox[3]))
        if not _is_number(area) or not math.isfinite(area) or area < 0:
            raise DatasetError(f"{where}: 'area' {area!r} is not a number >= 0")
        is_crowd = record.get("iscrowd", 0)
        if is_crowd not in (0, 1) or isinstance(is_crowd, float):
            raise DatasetError(f"{where}: 'iscrowd' {is_crowd!r} is not 0 or 1")
        image["boxes"].append(box)
        image["classes"].append(category_id)
        image["is_crowd"].append(bool(is_crowd))
        image["areas"].append(area)
        image["annotation_ids"].append(annotation_id)
        image["source_xywh"].append(bbox)
        image["source_areas"].append(area)

    examples = []
    for image_id, image in images.items():
        if check_images and not (image_dir / image["file_name"]).is_file():
            missing = image_dir / image["file_name"]
            raise DatasetError(f"{path}: image id {image_id}: image file {missing} not found")
        try:
            examples.append(DetectionExample(image_id=image_id, **image))
        except DatasetError as exc:  # e.g. an area beyond float32; the message names the image
            raise DatasetError(f"{path}: {exc}") from None
    try:
        return DetectionDataset(tuple(examples), tuple(categories), image_dir)
    except DatasetError as exc:  # checks over the float32 boxes; the message names the image
        raise DatasetError(f"{path}: {exc}") from None
