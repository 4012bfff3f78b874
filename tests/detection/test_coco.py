"""The COCO boundary (`detsearch.detection.coco`): one JSON reader, one parser, one size rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detsearch.datasets.coco import load_coco
from detsearch.datasets.detection import DatasetError
from detsearch.detection import coco
from detsearch.detection.cache import CacheError, import_coco_detections
from detsearch.detection.cocoeval import load_ground_truth


def document(**image):
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 50}, {"id": 2, "file_name": "b.jpg", **image}],
        "categories": [{"id": 1, "name": "digit"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0}],
    }


@pytest.mark.parametrize("size", [dict(height=0, width=30), dict(width=30), dict(height=None, width=30)])
def test_size_zero_or_absent_means_unknown_for_every_reader(tmp_path, size):
    doc = document(**size)
    (tmp_path / "a.jpg").touch()
    (tmp_path / "b.jpg").touch()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    # Evaluation needs no sizes: parsed as 0 (unknown).
    images = coco.parse_images(doc, "gt.json")
    assert (images[1].height, images[1].width) == (0, 30)
    np.testing.assert_array_equal(load_ground_truth(path).image_sizes, [[40, 50], [0, 30]])
    # A cache needs them: the importer names the image.
    with pytest.raises(CacheError, match=r"gt.json: images\[1\] \(id 2\) has size 0x30: height and width must be given"):
        import_coco_detections([], path)
    # So does a training dataset.
    with pytest.raises(DatasetError, match=r"image id 2 \(b.jpg\): 'height' .* is not a positive int"):
        load_coco(path, tmp_path)


def test_sizes_given_pass_every_reader(tmp_path):
    doc = document(height=20, width=30)
    (tmp_path / "a.jpg").touch()
    (tmp_path / "b.jpg").touch()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    np.testing.assert_array_equal(load_ground_truth(path).image_sizes, [[40, 50], [20, 30]])
    assert import_coco_detections([], path).meta.image_sizes == ((40, 50), (20, 30))
    assert [example.height for example in load_coco(path, tmp_path).examples] == [40, 20]


@pytest.mark.parametrize("value", [-1, 2.5, "20", float("nan")])
def test_bad_sizes_are_refused_by_the_parser(value):
    with pytest.raises(ValueError, match=r"images\[1\] \(id 2\): 'height' .* is not a whole number of pixels"):
        coco.parse_images(document(height=value, width=30), "gt.json")


def test_read_json_gives_one_line(tmp_path):
    path = tmp_path / "x.json"
    with pytest.raises(ValueError, match=r"x.json: cannot read annotations: \[Errno 2\]"):
        coco.read_json(path, "annotations")
    path.write_bytes(b"\xff")
    with pytest.raises(ValueError, match=r"x.json: cannot read annotations: 'utf-8' codec"):
        coco.read_json(path, "annotations")
    path.write_text('{"a": ')
    with pytest.raises(ValueError, match=r"x.json: malformed JSON: Expecting value"):
        coco.read_json(path, "annotations")
    path.write_text('{"a": 1}')
    assert coco.read_json(path, "annotations") == {"a": 1}


def test_parse_instances_keeps_file_order_and_checks_annotations():
    instances = coco.parse_instances(document(height=1, width=1), "gt.json")
    assert [image.id for image in instances.images] == [1, 2]
    assert instances.annotations[0].bbox == (1, 2, 3, 4)
    bad = document(height=1, width=1)
    bad["annotations"][0]["image_id"] = 9
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id 1\): image_id 9 is not in 'images'"):
        coco.parse_instances(bad, "gt.json")
