"""models.pipeline.write_records: a DetectionDataset as Model Garden's TFRecords, read back by
Model Garden's own decoder (the pixels and boxes its input pipeline sees)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detsearch.datasets.detection import DetectionDataset, DetectionExample
from tests.datasets.records_cases import decoded_records as decoded

pytestmark = pytest.mark.tf

cv2 = pytest.importorskip("cv2")


def dataset_of(image_dir, images):
    """One example per ``(file name, pixels)`` with two boxes of class 1 and 2."""
    examples = []
    for index, (name, pixels) in enumerate(images):
        height, width = pixels.shape[:2]
        examples.append(DetectionExample(
            image_id=index + 1, file_name=name, height=height, width=width,
            boxes=np.array([[1, 2, 10, 12], [3.5, 0, height, width]], np.float32),
            classes=np.array([1, 2], np.int32), is_crowd=np.array([False, True]),
            areas=np.array([90, (height - 3.5) * width], np.float32)))
    return DetectionDataset(tuple(examples), ({"id": 1, "name": "a"}, {"id": 2, "name": "b"}), image_dir)


def test_records_hold_the_pixels_and_boxes_of_every_image_format(tmp_path):
    """A TIFF (which TensorFlow's decoder does not read, as in the VOC sample) is stored as a PNG
    of the pixels OpenCV reads; a PNG and a JPEG are stored as their files' bytes."""
    from detsearch.models.pipeline import write_records

    rng = np.random.default_rng(0)
    images = [(name, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for name in ("a.tif", "b.png", "c.jpg")]
    for name, pixels in images:
        assert cv2.imwrite(str(tmp_path / name), pixels)
    records = write_records(dataset_of(tmp_path, images), tmp_path / "records")
    assert records.num_images == 3 and records.num_classes == 3
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == [
        "instances.json", "records-00000-of-00001.tfrecord", "records.json"]
    found = decoded(records)
    for index, (name, pixels) in enumerate(images):
        got = found[index + 1]
        expected = cv2.cvtColor(cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        if name.endswith(".jpg"):
            import tensorflow as tf
            expected = tf.io.decode_jpeg((tmp_path / name).read_bytes()).numpy()  # the file's own bytes
        np.testing.assert_array_equal(got["image"].numpy(), expected)
        # normalized boxes, as Model Garden's converter writes them from the COCO json
        np.testing.assert_allclose(got["groundtruth_boxes"].numpy(),
                                   np.array([[1, 2, 10, 12], [3.5, 0, 24, 32]]) / [24, 32, 24, 32], rtol=1e-6)
        assert got["groundtruth_classes"].numpy().tolist() == [1, 2]
        assert got["groundtruth_is_crowd"].numpy().tolist() == [False, True]
    # the ground truth the evaluator reads names the stored file
    coco = json.loads(records.annotations.read_text())
    assert [image["file_name"] for image in coco["images"]] == ["a.tif.png", "b.png", "c.jpg"]


def test_records_are_converted_once(tmp_path):
    from detsearch.models.pipeline import write_records

    pixels = np.zeros((16, 16, 3), np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.png"), pixels)
    dataset = dataset_of(tmp_path, [("a.png", pixels)])
    first = write_records(dataset, tmp_path / "records")
    stamp = (tmp_path / "records" / "records.json").stat().st_mtime_ns
    assert write_records(dataset, tmp_path / "records") == first
    assert (tmp_path / "records" / "records.json").stat().st_mtime_ns == stamp
    # another image file (its size changed) is converted again
    assert cv2.imwrite(str(tmp_path / "a.png"), np.full((16, 16, 3), 7, np.uint8))
    write_records(dataset, tmp_path / "records")
    assert decoded(first)[1]["image"].numpy().max() == 7


def test_an_unreadable_image_is_one_line(tmp_path):
    from detsearch.errors import BadSetting
    from detsearch.models.pipeline import write_records

    (tmp_path / "a.tif").write_bytes(b"not an image")
    dataset = dataset_of(tmp_path, [("a.tif", np.zeros((16, 16, 3), np.uint8))])
    with pytest.raises(BadSetting, match="a.tif: neither TensorFlow nor OpenCV can read it"):
        write_records(dataset, tmp_path / "records")
    assert not (tmp_path / "records").exists()


def test_shipped_runs_are_found_by_name_and_the_retired_one_names_its_successor(tmp_path, monkeypatch):
    from pathlib import Path

    from detsearch.errors import BadSetting
    from detsearch.models.pipeline import SHIPPED_RUNS, shipped_run

    monkeypatch.chdir(tmp_path)
    assert shipped_run("retinanet_demo") == SHIPPED_RUNS / "retinanet_demo"
    assert shipped_run("runs/mine") == Path("runs/mine")
    with pytest.raises(BadSetting, match="model_dir ssd_tiny_demo: that shipped detector is gone; the shipped demo "
                                         "detector is retinanet_demo"):
        shipped_run("ssd_tiny_demo")
    (tmp_path / "ssd_tiny_demo").mkdir()  # a directory of that name is the user's
    assert shipped_run("ssd_tiny_demo") == Path("ssd_tiny_demo")
