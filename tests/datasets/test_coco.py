"""Tests for detsearch.datasets.coco: real COCO val2014 annotations, round trip, errors, and a
loaded set through Model Garden's TFRecords."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from detsearch.datasets.coco import load_coco
from detsearch.datasets.detection import DatasetError

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_val2014_100"
GT_JSON = DATA / "instances_val2014_100.json"
RESULTS_JSON = DATA / "instances_val2014_fakebbox100_results.json"


@pytest.fixture(scope="module")
def real() -> dict:
    return json.loads(GT_JSON.read_text())


def coco_stats(ground_truth: dict) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(ground_truth)
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(str(RESULTS_JSON)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


# ---------------------------------------------------------------------------
# Real COCO annotations (no images).
# ---------------------------------------------------------------------------


def test_real_annotations_load(real: dict, capsys: pytest.CaptureFixture) -> None:
    dataset = load_coco(GT_JSON, DATA / "no_images", check_images=False)
    assert capsys.readouterr().out == ""  # Nothing printed.
    assert len(dataset) == 100 and dataset.num_boxes == 839
    assert sum(int(e.is_crowd.sum()) for e in dataset.examples) == 9
    assert len(dataset.categories) == 80 and dataset.category_names[18] == "dog"
    assert [e.image_id for e in dataset.examples] == [i["id"] for i in real["images"]]
    assert dataset.image_dir == DATA / "no_images"
    # Annotation id 1774: bbox [61.87, 276.25, 296.42, 103.18] on image 74.
    [image] = [e for e in dataset.examples if e.image_id == 74]
    [row] = np.flatnonzero(image.annotation_ids == 1774)
    np.testing.assert_array_equal(
        image.boxes[row], np.float32([276.25, 61.87, 276.25 + 103.18, 61.87 + 296.42]))
    assert image.classes[row] == 18 and image.areas[row] == np.float32(18234.62355)
    assert (image.height, image.width) == (
        next((i["height"], i["width"]) for i in real["images"] if i["id"] == 74))


def test_round_trip_preserves_ids_boxes_areas_crowd(real: dict) -> None:
    coco = load_coco(GT_JSON, DATA, check_images=False).to_coco_json()
    keys = ("id", "file_name", "height", "width")
    assert coco["images"] == [{k: i[k] for k in keys} for i in real["images"]]
    assert coco["categories"] == real["categories"]
    # Annotations grouped by image (json order within an image); values exactly as read.
    order = {image["id"]: index for index, image in enumerate(real["images"])}
    expected = sorted(real["annotations"], key=lambda a: order[a["image_id"]])
    keys = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
    assert coco["annotations"] == [{k: a[k] for k in keys} for a in expected]


def test_round_trip_gives_pycocotools_numbers(real: dict) -> None:
    """COCO evaluation against the loaded-and-exported json equals evaluation against the
    file to the last bit (float32 boxes alone would move AP by 2e-4 here)."""
    stats = coco_stats(real)
    np.testing.assert_allclose(stats[:2], [0.505, 0.697], atol=5e-4)
    exported = load_coco(GT_JSON, DATA, check_images=False).to_coco_json()
    np.testing.assert_array_equal(coco_stats(exported), stats)


def test_missing_images_are_reported(real: dict) -> None:
    first = real["images"][0]
    with pytest.raises(DatasetError, match=rf"{GT_JSON.name}: image id {first['id']}: image "
                                           rf"file .*{first['file_name']} not found"):
        load_coco(GT_JSON, DATA / "no_images")


# ---------------------------------------------------------------------------
# A tiny synthetic set with images.
# ---------------------------------------------------------------------------


def tiny_coco(root: Path, decodable: bool = False) -> dict:
    """Two images (ids 20, 30), categories 4 and 9, one crowd region. The image files are
    written by OpenCV when ``decodable`` (the TFRecord test reads them), else they only exist:
    ``load_coco`` checks nothing more."""
    (root / "images").mkdir(exist_ok=True)
    for name, (height, width) in (("a.png", (48, 64)), ("b.jpg", (32, 32))):
        if decodable:
            import cv2

            image = np.zeros((height, width, 3), np.uint8)
            image[8:24, 16:40] = (255, 128, 0)
            assert cv2.imwrite(str(root / "images" / name), image)
        else:
            (root / "images" / name).write_bytes(b"an image file: load_coco checks that it exists")
    return {
        "images": [
            {"id": 20, "file_name": "a.png", "height": 48, "width": 64},
            {"id": 30, "file_name": "b.jpg", "height": 32, "width": 32},
        ],
        "annotations": [
            {"id": 5, "image_id": 20, "category_id": 9, "bbox": [16, 8, 24, 16], "area": 300.5,
             "iscrowd": 0},
            {"id": 6, "image_id": 20, "category_id": 4, "bbox": [0, 0, 64, 48], "iscrowd": 1},
            {"id": 7, "image_id": 30, "category_id": 4, "bbox": [1.5, 2.5, 10, 20]},
        ],
        "categories": [{"id": 4, "name": "four"}, {"id": 9, "name": "nine"}],
    }


def write(root: Path, payload: dict) -> Path:
    path = root / "instances.json"
    path.write_text(json.dumps(payload))
    return path


def test_tiny_set_loads(tmp_path: Path) -> None:
    payload = tiny_coco(tmp_path)
    dataset = load_coco(write(tmp_path, payload), tmp_path / "images")
    first, second = dataset.examples
    np.testing.assert_array_equal(first.boxes, [[8, 16, 24, 40], [0, 0, 48, 64]])
    np.testing.assert_array_equal(first.classes, [9, 4])
    np.testing.assert_array_equal(first.is_crowd, [False, True])
    np.testing.assert_array_equal(first.areas, [300.5, 64 * 48])  # Missing area: box area.
    np.testing.assert_array_equal(second.boxes, [[2.5, 1.5, 22.5, 11.5]])
    assert not second.is_crowd[0]  # Missing iscrowd: 0.


@pytest.mark.tf
def test_tiny_set_through_model_garden_records(tmp_path: Path) -> None:
    """The loaded set as users train on it: `write_records`, read back by Model Garden's own
    decoder: every image's pixels and size, and every box (crowd included, flagged)."""
    from detsearch.models.pipeline import write_records
    from tests.datasets.records_cases import assert_records_hold, decoded_records

    dataset = load_coco(write(tmp_path, tiny_coco(tmp_path, decodable=True)), tmp_path / "images")
    decoded = decoded_records(write_records(dataset, tmp_path / "records"))
    assert sorted(decoded) == [20, 30]
    assert_records_hold(dataset, decoded)
    image = decoded[20]["image"].numpy()  # a.png: lossless.
    np.testing.assert_array_equal(image[10, 20], [0, 128, 255])  # BGR written, RGB read.
    assert image[:8].max() == 0 and image[24:].max() == 0


def mutate(payload: dict, what: str) -> dict:
    payload = copy.deepcopy(payload)
    first = payload["annotations"][0]
    if what == "unknown image":
        first["image_id"] = 99
    elif what == "unknown category":
        first["category_id"] = 5
    elif what == "outside":
        first["bbox"] = [16, 8, 49.5, 16]  # x + width = 65.5 > 64 + 1.
    elif what == "zero size":
        first["bbox"] = [16, 8, 0, 16]
    elif what == "negative size":
        first["bbox"] = [16, 8, 10, -3]
    elif what == "bad bbox":
        first["bbox"] = [16, 8, "24", 16]
    elif what == "bad crowd":
        first["iscrowd"] = 2
    elif what == "duplicate annotation":
        payload["annotations"][1]["id"] = 5
    elif what == "duplicate image":
        payload["images"][1]["id"] = 20
    elif what == "bad size":
        payload["images"][1]["height"] = 0
    elif what == "empty":
        payload["images"], payload["annotations"] = [], []
    elif what == "no categories key":
        del payload["categories"]
    return payload


@pytest.mark.parametrize(
    "what, message",
    [
        ("unknown image", r"annotation id 5: unknown image id 99"),
        ("unknown category", r"annotation id 5 \(image id 20, a.png\): unknown category id 5"),
        ("outside", r"annotation id 5 \(image id 20, a.png\): box .* outside the 48x64"),
        ("zero size", r"annotation id 5 \(image id 20, a.png\): bbox .* zero or negative size"),
        ("negative size", r"annotation id 5 .*zero or negative size"),
        ("bad bbox", r"annotation id 5 .*'bbox' \[16, 8, '24', 16\] is not"),
        ("bad crowd", r"annotation id 5 .*'iscrowd' 2 is not 0 or 1"),
        ("duplicate annotation", r"annotation id 5: duplicate annotation id"),
        ("duplicate image", r"image id 20: duplicate image id"),
        ("bad size", r"image id 30 \(b.jpg\): 'height' 0 is not a positive int"),
        ("empty", r"empty dataset \(no images\)"),
        ("no categories key", r"missing list 'categories'"),
    ],
)
def test_errors_name_the_file_and_record(tmp_path: Path, what: str, message: str) -> None:
    path = write(tmp_path, mutate(tiny_coco(tmp_path), what))
    with pytest.raises(DatasetError, match=rf"{path}: {message}"):
        load_coco(path, tmp_path / "images")


def test_missing_image_and_unreadable_json(tmp_path: Path) -> None:
    path = write(tmp_path, tiny_coco(tmp_path))
    (tmp_path / "images" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"{path}: image id 30: image file .*b.jpg not found"):
        load_coco(path, tmp_path / "images")
    assert len(load_coco(path, tmp_path / "images", check_images=False)) == 2
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=rf"{path}: not a readable json file"):
        load_coco(path, tmp_path)
    with pytest.raises(DatasetError, match="annotation file not found"):
        load_coco(tmp_path / "nothing.json", tmp_path)
