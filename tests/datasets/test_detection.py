"""Tests for detsearch.datasets.detection: the in-memory form, its validation, COCO export, tf.data."""

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
    letterbox_scale,
    make_tf_dataset,
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


# ---------------------------------------------------------------------------
# tf.data pipeline (OpenCV writes the images: tf tests only).
# ---------------------------------------------------------------------------

RED_BGR = (0, 0, 255)


def write_images(root: Path) -> DetectionDataset:
    """Three images whose single red rectangle is box 0; box 1 of image 1 is a crowd region."""
    import cv2

    specs = [  # (image_id, height, width, red yxyx)
        (11, 40, 80, (10, 20, 30, 60)),
        (12, 60, 30, (6, 3, 54, 27)),
        (13, 32, 32, (0, 0, 32, 16)),
    ]
    examples = []
    for image_id, height, width, (y0, x0, y1, x1) in specs:
        image = np.full((height, width, 3), 40, np.uint8)
        image[y0:y1, x0:x1] = RED_BGR
        assert cv2.imwrite(str(root / f"{image_id}.png"), image)
        boxes = [[y0, x0, y1, x1]]
        crowd = [False]
        if image_id == 11:
            boxes.append([0, 0, 5, 5])
            crowd.append(True)
        examples.append(example(image_id, boxes=boxes, classes=[7] * len(boxes), crowd=crowd,
                                height=height, width=width, file_name=f"{image_id}.png"))
    return DetectionDataset(tuple(examples), CATEGORIES, root)


def batches(data) -> list[dict[str, np.ndarray]]:
    return [{k: v.numpy() for k, v in batch.items()} for batch in data]


@pytest.mark.tf
def test_pipeline_letterbox_and_boxes(tmp_path: Path) -> None:
    dataset = write_images(tmp_path)
    [batch] = batches(make_tf_dataset(dataset, 64, batch_size=3, training=False))
    assert batch["image"].shape == (3, 64, 64, 3) and batch["image"].dtype == np.float32
    np.testing.assert_array_equal(batch["image_id"], [11, 12, 13])
    assert batch["image_id"].dtype == np.int64
    np.testing.assert_array_equal(batch["original_size"], [[40, 80], [60, 30], [32, 32]])
    assert batch["original_size"].dtype == np.int32
    scales = np.array([64 / 80, 64 / 60, 2.0], np.float32)
    np.testing.assert_array_equal(batch["scale"], scales)
    assert scales[0] == letterbox_scale(40, 80, 64)
    # One non-crowd box at most per image: crowd regions are not training targets.
    assert batch["boxes"].shape == (3, 1, 4) and batch["classes"].shape == (3, 1)
    np.testing.assert_array_equal(batch["classes"], [[7], [7], [7]])
    originals = np.array([[10, 20, 30, 60], [6, 3, 54, 27], [0, 0, 32, 16]], np.float64)
    np.testing.assert_allclose(batch["boxes"][:, 0], originals * scales[:, None], rtol=1e-6)
    for index in range(3):
        image = batch["image"][index]
        # RGB order: the rectangle is pure red where it lies well inside.
        red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
        rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
        y0, x0, y1, x1 = batch["boxes"][index, 0]
        # The red pixels sit where box * scale says, within interpolation blur (1 px).
        assert abs(rows[0] - y0) <= 1 and abs(rows[-1] + 1 - y1) <= 1
        assert abs(cols[0] - x0) <= 1 and abs(cols[-1] + 1 - x1) <= 1
        # Padding below/right of the resized image is zero.
        height, width = np.round(batch["original_size"][index] * scales[index]).astype(int)
        assert image[height:].max(initial=0) == 0 and image[:, width:].max(initial=0) == 0
        assert image[:height, :width, 0].min() >= 39  # Background 40, red 255.
    # Mapping predictions back: divide by scale.
    np.testing.assert_allclose(batch["boxes"][:, 0] / batch["scale"][:, None], originals,
                               rtol=1e-6)


@pytest.mark.tf
def test_pipeline_padding_order_and_shuffle(tmp_path: Path) -> None:
    dataset = write_images(tmp_path)
    plain = batches(make_tf_dataset(dataset, (16, 24), 2, training=False, max_boxes=3))
    assert [b["image"].shape for b in plain] == [(2, 16, 24, 3), (1, 16, 24, 3)]
    assert plain[0]["boxes"].shape == (2, 3, 4)
    np.testing.assert_array_equal(plain[0]["boxes"][:, 1:], -1.0)
    np.testing.assert_array_equal(plain[0]["classes"][:, 1:], -1)
    ids = lambda data: [int(i) for b in data for i in b["image_id"]]  # noqa: E731
    assert ids(plain) == [11, 12, 13]
    # Training with shuffle=False: dataset order, last partial batch dropped.
    assert ids(batches(make_tf_dataset(dataset, 16, 2, training=True, shuffle=False))) == [11, 12]
    # Training with a shuffle: the same seed gives the same epochs; a new pass reshuffles.
    orders = []
    for _ in range(2):
        data = make_tf_dataset(dataset, 16, 1, training=True, seed=3).repeat(4)
        orders.append(ids(batches(data)))
    assert orders[0] == orders[1]
    epochs = [orders[0][i:i + 3] for i in range(0, 12, 3)]
    assert all(sorted(epoch) == [11, 12, 13] for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1


@pytest.mark.tf
def test_pipeline_errors(tmp_path: Path) -> None:
    dataset = write_images(tmp_path)
    two = DetectionDataset((example(3, boxes=[[0, 0, 1, 1], [1, 1, 2, 2]], classes=[3, 3]),),
                           CATEGORIES, tmp_path)
    with pytest.raises(DatasetError, match=r"image '3.png' \(id 3\): 2 boxes, more than "
                                           r"max_boxes=1"):
        make_tf_dataset(two, 16, 1, training=False, max_boxes=1)
    with pytest.raises(ValueError, match="max_boxes"):
        make_tf_dataset(dataset, 16, 1, training=False, max_boxes=0)
    with pytest.raises(ValueError, match="image_size"):
        make_tf_dataset(dataset, (16, 0), 1, training=False)
    with pytest.raises(ValueError, match="batch_size"):
        make_tf_dataset(dataset, 16, 0, training=False)

    import cv2
    import tensorflow as tf

    (tmp_path / "12.png").unlink()
    with pytest.raises(tf.errors.OpError, match=r"12.png: missing or unreadable"):
        batches(make_tf_dataset(dataset, 16, 3, training=False))
    cv2.imwrite(str(tmp_path / "12.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(tf.errors.OpError, match=r"12.png: decoded size 10x10 differs from the "
                                                r"annotated 60x30"):
        batches(make_tf_dataset(dataset, 16, 3, training=False))
