"""`export_detector` with per-category score thresholds: the SavedModel gives exactly the NumPy
filtering of `Detector.predict`'s detections (same boxes, scores, ids, order, counts, zero
padding); the filter alone agrees with a reference on random inputs; bad mappings write nothing.

The detector is an untrained tiny SSD whose score layer is redrawn so that its scores spread
around Model Garden's default NMS score threshold: every category has detections, some images
fewer than the 100 rows."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("official")

import tensorflow as tf

from detsearch.models.detector import build_detector, pinned_box_arithmetic
from detsearch.models.export import class_threshold_tables, export_detector, keep_above_class_thresholds

pytestmark = pytest.mark.tf

CATEGORIES = [11, 3, 7]
NMS = {"score_threshold": 0.078, "iou_threshold": 0.5}


def reference_filter(found: dict[str, np.ndarray], thresholds: dict[int, float]) -> dict[str, np.ndarray]:
    """One image's detections kept by ``float32(score) > float32(threshold of its category)``."""
    keep = np.array([int(c) not in thresholds or np.float32(s) > np.float32(thresholds[int(c)])
                     for s, c in zip(found["scores"], found["category_ids"])], bool)
    return {k: v[keep] for k, v in found.items()}


@pytest.fixture(scope="module")
def detector():
    built = build_detector("ssd", "tiny", CATEGORIES, ["eleven", "three", "seven"], thresholds=NMS, seed=0)
    rng = np.random.default_rng(1)
    # Keras numbers the layer names of every model built in the process (retina_net_head_3/...).
    scores = [v for v in built.model.variables if v.name.split("/")[-2:] in (["scores", "kernel:0"], ["scores", "bias:0"])]
    assert len(scores) == 2, [v.name for v in scores]
    for variable in scores:
        if variable.name.endswith("kernel:0"):
            variable.assign(rng.normal(0.0, 0.05, variable.shape).astype(np.float32))
        else:
            variable.assign(rng.normal(-3.5, 0.5, variable.shape).astype(np.float32))
    return built


@pytest.fixture(scope="module")
def batch(detector):
    side = detector.image_size
    rng = np.random.default_rng(0)
    return {"image": rng.uniform(0, 255, (4, side, side, 3)).astype(np.float32),
            "original_size": np.array([[side, side], [side // 2, side], [300, 200], [50, 70]], np.int64)}


@pytest.fixture(scope="module")
def predicted(detector, batch):
    return detector.predict(batch)


def serve(path, batch) -> dict[str, np.ndarray]:
    function = tf.saved_model.load(str(path)).signatures["serving_default"]
    with pinned_box_arithmetic():
        outputs = function(images=tf.constant(batch["image"]),
                           original_size=tf.constant(batch["original_size"], tf.int32))
    return {k: v.numpy() for k, v in outputs.items()}


def assert_outputs_are(outputs: dict[str, np.ndarray], expected: list[dict[str, np.ndarray]], rows: int = 100) -> None:
    """``expected`` per image in the first ``num_detections`` rows, zeros after."""
    assert outputs["detection_boxes"].dtype == np.float32 and outputs["detection_scores"].dtype == np.float32
    assert outputs["detection_category_ids"].dtype == np.int64 and outputs["num_detections"].dtype == np.int32
    assert outputs["detection_boxes"].shape == (len(expected), rows, 4)
    assert outputs["detection_scores"].shape == outputs["detection_category_ids"].shape == (len(expected), rows)
    for i, found in enumerate(expected):
        n = int(outputs["num_detections"][i])
        assert n == len(found["scores"])
        np.testing.assert_array_equal(outputs["detection_boxes"][i, :n], found["boxes"])
        np.testing.assert_array_equal(outputs["detection_scores"][i, :n], found["scores"])
        np.testing.assert_array_equal(outputs["detection_category_ids"][i, :n], found["category_ids"])
        assert not outputs["detection_boxes"][i, n:].any()
        assert not outputs["detection_scores"][i, n:].any()
        assert not outputs["detection_category_ids"][i, n:].any()


def test_the_fixture_spreads_detections_over_every_category(predicted):
    counts = [len(found["scores"]) for found in predicted]
    assert min(counts) < 100 and max(counts) > 0
    every = np.concatenate([found["category_ids"] for found in predicted])
    assert set(every.tolist()) == set(CATEGORIES)


def test_the_export_filters_predict_by_class_thresholds(detector, batch, predicted, tmp_path):
    threes = np.concatenate([f["scores"][f["category_ids"] == 3] for f in predicted])
    # a score of category 3 as its threshold: the detections at it are dropped (strict >)
    at = float(np.sort(threes)[len(threes) // 2])
    thresholds = {3: at, 7: 1.0}  # 11 keeps what the NMS keeps; 7 keeps nothing
    expected = [reference_filter(found, thresholds) for found in predicted]
    kept = np.concatenate([f["category_ids"] for f in expected])
    assert 7 not in kept and 11 in kept and 3 in kept
    assert np.sum(threes == np.float32(at)) >= 1 and np.sum(threes > np.float32(at)) < len(threes) - 1

    plain = export_detector(detector, tmp_path / "plain")
    assert_outputs_are(serve(plain, batch), predicted)
    assert "class_score_thresholds" not in json.loads((plain / "detector.json").read_text())

    path = export_detector(detector, tmp_path / "filtered", class_score_thresholds=thresholds)
    assert_outputs_are(serve(path, batch), expected)
    info = json.loads((path / "detector.json").read_text())
    assert info["class_score_thresholds"] == {"3": at, "7": 1.0}
    assert info["thresholds"] == NMS


def test_the_filter_agrees_with_the_reference_on_random_inputs():
    rng = np.random.default_rng(7)
    fake = SimpleNamespace(category_ids=(2, 5, 9, 40), num_classes=5)
    levels = np.float32([0.0, 0.1, 0.25, 0.5, 1.0])
    for trial in range(20):
        batch_size, rows = 3, 12
        counts = rng.integers(0, rows + 1, batch_size)
        counts[0] = 0 if trial % 2 else rows
        classes = rng.integers(1, 5, (batch_size, rows))
        scores = rng.choice(levels, (batch_size, rows)) if trial % 3 == 0 else rng.random((batch_size, rows))
        scores = scores.astype(np.float32)
        boxes = rng.random((batch_size, rows, 4)).astype(np.float32)
        for i, n in enumerate(counts):  # Model Garden's padding: zeros, RetinaNet's classes 1
            classes[i, n:], scores[i, n:], boxes[i, n:] = trial % 2, 0.0, 0.0
        ids = np.array([0, *fake.category_ids], np.int64)[classes]
        chosen = rng.permutation(fake.category_ids)[:rng.integers(0, 5)]
        thresholds = {int(c): float(rng.choice(levels)) for c in chosen}
        outputs = keep_above_class_thresholds(
            {"detection_boxes": tf.constant(boxes), "detection_scores": tf.constant(scores),
             "detection_category_ids": tf.constant(ids), "num_detections": tf.constant(counts, tf.int32)},
            tf.constant(classes, tf.int64), *class_threshold_tables(fake, thresholds))
        outputs = {k: v.numpy() for k, v in outputs.items()}
        expected = [reference_filter({"boxes": boxes[i, :n], "scores": scores[i, :n], "category_ids": ids[i, :n]},
                                     thresholds) for i, n in enumerate(counts)]
        assert_outputs_are(outputs, expected, rows=rows)


@pytest.mark.parametrize("mapping, message", [
    ({3: 0.5, 99: 0.5, 4: 0.1}, r"category ids \[4, 99\] are not among the detector's categories \[3, 7, 11\]"),
    ({3: 1.5}, r"category 3's threshold must be a number in \[0, 1\], got 1.5"),
    ({3: -0.5}, r"category 3's threshold must be a number in \[0, 1\], got -0.5"),
    ({3: math.nan}, r"category 3's threshold must be a number in \[0, 1\], got nan"),
])
def test_a_bad_mapping_is_a_value_error_and_writes_nothing(detector, tmp_path, mapping, message):
    with pytest.raises(ValueError, match=message):
        export_detector(detector, tmp_path / "export", class_score_thresholds=mapping)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_detsearch_train_exports_with_per_class_thresholds(tmp_path, capsys):
    from detsearch import cli
    from detsearch.datasets import demo

    root = tmp_path / "demo"
    demo.build_demo(root, num_train=8, num_val=1, image_size=128, seed=5)
    document = {"keep": "score > score_threshold", "rule": "f1",
                "configuration": {"score_threshold": 0.3, "iou_threshold": 0.4},
                "classes": [{"category_id": 4, "name": "3", "score_threshold": 0.25},
                            {"category_id": 1, "name": "0", "score_threshold": 0.5}]}
    per_class = tmp_path / "per_class_thresholds.json"
    per_class.write_text(json.dumps(document))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"score_threshold": 0.3, "iou_threshold": 0.4}))
    arguments = ["train", "--model", "ssd", "--dataset", "demo", "--data-dir", str(root), "--steps", "2",
                 "--batch-size", "4", "--log-every", "0", "--warmup-steps", "0", "--out", str(tmp_path / "run"),
                 "--export", str(tmp_path / "export"), "--per-class-thresholds", str(per_class)]

    # the export would run Model Garden's defaults, not the file's configuration: nothing trained
    assert cli.main(arguments) == 2
    error = capsys.readouterr().err
    assert error == (f"detsearch train: error: --per-class-thresholds {per_class}: chosen on top of score_threshold "
                     f"0.3 (the export runs 0.05), iou_threshold 0.4 (the export runs 0.5); pass that configuration "
                     f"with --params\n")
    assert not (tmp_path / "run").exists() and not (tmp_path / "export").exists()

    other = tmp_path / "other.json"
    other.write_text(json.dumps({**document, "classes": [{"category_id": 11, "score_threshold": 0.5}]}))
    assert cli.main([*arguments, "--params", str(params), "--per-class-thresholds", str(other)]) == 2
    assert "category ids [11] are not among the detector's categories [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()

    swept = tmp_path / "swept.json"
    swept.write_text(json.dumps({**document, "configuration": {**document["configuration"], "max_detections": 300,
                                                               "class_agnostic": True}}))
    assert cli.main([*arguments, "--params", str(params), "--per-class-thresholds", str(swept)]) == 2
    assert ("chosen on top of max_detections 300 (the export runs 100), class-agnostic NMS (the export runs "
            "class-aware NMS)") in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

    assert cli.main([*arguments, "--params", str(params)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["thresholds"] == {"score_threshold": 0.3, "iou_threshold": 0.4}
    assert summary["class_score_thresholds"] == {"1": 0.5, "4": 0.25}
    info = json.loads((tmp_path / "export" / "detector.json").read_text())
    assert info["class_score_thresholds"] == {"1": 0.5, "4": 0.25} and info["thresholds"] == summary["thresholds"]
