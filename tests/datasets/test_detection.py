"""Tests for detsearch.datasets.detection: the in-memory form, its validation, COCO export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detsearch.datasets.detection import (
    BOX_TOLERANCE,
    DatasetError,
    DetectionDataset,
    DetectionExample,
    check_box,
)

CATEGORIES = ({"id": 3, "name": "cat"}, {"id": 7, "name": "dog"})


def example(image_id=1, boxes=((10, 20, 30, 60),), classes=(3,), crowd=None, height=40,
            width=80, file_name=None) -> DetectionExample:
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    crowd = np.zeros(len(boxes), bool) if crowd is None else np.array(crowd, bool)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return DetectionExample(image_id=image_id, file_name=file_name or f"{image_id}.png",
                            height=height, width=width, boxes=boxes, classes=classes,
                            is_crowd=crowd, areas=areas)


# ---------------------------------------------------------------------------
# Containers and validation.
# ---------------------------------------------------------------------------


def test_example_copies_and_freezes_arrays() -> None:
    boxes = np.array([[1, 2, 3, 4]], np.float64)
    classes = [3]
    item = DetectionExample(1, "a.png", 10, 10, boxes, classes, [False], [4.0])
    boxes[0, 0] = 99
    assert item.boxes.dtype == np.float32 and item.boxes[0, 0] == 1
    assert item.classes.dtype == np.int32 and item.is_crowd.dtype == np.bool_
    assert item.areas.dtype == np.float32 and item.annotation_ids is None
    with pytest.raises(ValueError):
        item.boxes[0, 0] = 5
    empty = DetectionExample(2, "b.png", 10, 10, [], [], [], [])
    assert empty.boxes.shape == (0, 4) and empty.num_boxes == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"boxes": [[1, 2, 3]]}, "expected shape [N, 4]"),
        ({"classes": [3, 3]}, "classes has 2 entries for 1 boxes"),
        ({"areas": [-1.0]}, "areas must be finite and >= 0"),
        ({"height": 0}, "size 0x10 is not positive"),
        ({"image_id": 1.5}, "image_id must be an int"),
        ({"source_xywh": [[2, 1, 2, 3]]}, "source_xywh does not convert to boxes"),
        ({"source_xywh": [[2, 1, 2, 2]], "source_areas": [4.5]}, "source_areas do not round"),
        ({"annotation_ids": [1, 2]}, "annotation_ids has 2 entries for 1 boxes"),
    ],
)
def test_example_rejects_bad_fields(kwargs, message) -> None:
    fields = dict(image_id=1, file_name="a.png", height=10, width=10, boxes=[[1, 2, 3, 4]],
                  classes=[3], is_crowd=[False], areas=[4.0])
    fields.update(kwargs)
    with pytest.raises(DatasetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DetectionExample(**fields)


def test_check_box_tolerance_endpoints() -> None:
    # Exactly BOX_TOLERANCE outside is accepted on every side; a little more is not.
    check_box([-BOX_TOLERANCE, -BOX_TOLERANCE, 40 + BOX_TOLERANCE, 80 + BOX_TOLERANCE], 40, 80, "x")
    for box in ([-1.01, 0, 10, 10], [0, -1.01, 10, 10], [0, 0, 41.01, 10], [0, 0, 10, 81.01]):
        with pytest.raises(DatasetError, match=r"x: box .* outside the 40x80"):
            check_box(box, 40, 80, "x")
    for box in ([5, 0, 5, 10], [0, 5, 10, 4]):
        with pytest.raises(DatasetError, match="zero or negative size"):
            check_box(box, 40, 80, "x")
    with pytest.raises(DatasetError, match="not 4 finite numbers"):
        check_box([0, 0, np.nan, 1], 40, 80, "x")


def test_dataset_validation_names_the_image_and_box(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="empty dataset"):
        DetectionDataset((), CATEGORIES, tmp_path)
    with pytest.raises(DatasetError, match=r"image '1.png' \(id 1\) box 1: unknown category id 5"):
        DetectionDataset((example(boxes=[[0, 0, 1, 1], [0, 0, 2, 2]], classes=[3, 5]),),
                         CATEGORIES, tmp_path)
    with pytest.raises(DatasetError, match=r"image '1.png' \(id 1\) box 0: .* outside"):
        DetectionDataset((example(boxes=[[0, 0, 50, 10]]),), CATEGORIES, tmp_path)
    with pytest.raises(DatasetError, match="zero or negative size"):
        DetectionDataset((example(boxes=[[0, 10, 5, 10]]),), CATEGORIES, tmp_path)
    with pytest.raises(DatasetError, match="duplicate image id 1"):
        DetectionDataset((example(), example(file_name="x.png")), CATEGORIES, tmp_path)
    with pytest.raises(DatasetError, match="duplicate ids"):
        DetectionDataset((example(),), CATEGORIES + ({"id": 3, "name": "x"},), tmp_path)


def test_categories_are_copied(tmp_path: Path) -> None:
    categories = [{"id": 3, "name": "cat", "extra": 1}, {"id": 7, "name": "dog"}]
    dataset = DetectionDataset((example(),), categories, tmp_path)
    categories[0]["id"] = 99
    assert dataset.categories == ({"id": 3, "name": "cat"}, {"id": 7, "name": "dog"})
    assert dataset.category_names == {3: "cat", 7: "dog"}


def test_to_coco_json_and_atomic_write(tmp_path: Path) -> None:
    first = example(1, boxes=[[10, 20, 30, 60], [0, 0, 40, 80]], classes=[3, 7], crowd=[0, 1])
    second = example(5, boxes=[], classes=[])
    dataset = DetectionDataset((first, second), CATEGORIES, tmp_path)
    coco = dataset.to_coco_json()
    assert coco["images"] == [
        {"id": 1, "file_name": "1.png", "height": 40, "width": 80},
        {"id": 5, "file_name": "5.png", "height": 40, "width": 80},
    ]
    assert coco["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [20.0, 10.0, 40.0, 20.0],
         "area": 800.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [0.0, 0.0, 80.0, 40.0],
         "area": 3200.0, "iscrowd": 1},
    ]
    assert coco["categories"] == [dict(c) for c in CATEGORIES]
    coco["categories"][0]["name"] = "changed"
    assert dataset.categories[0]["name"] == "cat"

    path = tmp_path / "out" / "gt.json"
    path.parent.mkdir()
    path.write_text("old")
    assert dataset.write_coco_json(path) == path
    assert json.loads(path.read_text()) == dataset.to_coco_json()
    assert sorted(p.name for p in path.parent.iterdir()) == ["gt.json"]  # No temp file left.


def test_annotation_ids_are_kept(tmp_path: Path) -> None:
    item = DetectionExample(4, "a.png", 40, 80, [[0, 0, 1, 1], [1, 1, 2, 2]], [3, 3],
                            [False, False], [1, 1], annotation_ids=[900, 17])
    coco = DetectionDataset((item,), CATEGORIES, tmp_path).to_coco_json()
    assert [a["id"] for a in coco["annotations"]] == [900, 17]

