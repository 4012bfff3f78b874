"""The sweep is exact on the user's own detections: float64 coordinates and scores as given,
score ties in file order, so that with suppression off it equals pycocotools on the file,
all 12 stats bit for bit; and with suppression on it equals the reference (NumPy NMS, then
pycocotools)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from detsearch import cli
from detsearch.detection.cache import import_coco_detections
from detsearch.detection.cocoeval import load_ground_truth
from detsearch.detection.sweep import sweep, sweep_reference
from detsearch.detection.sweep.cuts import float32_cut
from detsearch.params import ParamSpec

pytest.importorskip("pycocotools")
from detsearch.detection.pycoco import pycocotools_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "coco_val2014_100"
ANNOTATIONS = FIXTURE / "instances_val2014_100.json"
RESULTS = FIXTURE / "instances_val2014_fakebbox100_results.json"


def test_the_real_fixture_through_the_sweep_cli_equals_pycocotools(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli.main(["sweep", "--no-progress", "--detections", str(RESULTS), "--annotations", str(ANNOTATIONS),
                         "--score-thresholds", "0", "--iou-thresholds", "1.0", "--out", str(tmp_path)])
    assert code == 0, err.getvalue()
    (row,) = json.loads((tmp_path / "result.json").read_text())["table"]
    records = json.loads(RESULTS.read_text())
    assert all(r["score"] > 0 for r in records)  # score 0 would not pass score_threshold 0
    expected = pycocotools_stats(json.loads(ANNOTATIONS.read_text()), records, None)
    assert list(row["stats"]) == [float(v) for v in expected]
    assert row["stats"][0] == pytest.approx(0.504581, abs=1e-6)  # 0.50407 when stored in float32


def _records(rng: np.random.Generator, images: list[dict], categories: list[int], annotations: list[dict]) -> list[dict]:
    records = []
    for annotation in annotations:
        for _ in range(int(rng.integers(0, 3))):
            bbox = np.maximum(np.asarray(annotation["bbox"]) + rng.normal(0, 3, 4), [0, 0, 0.5, 0.5])
            records.append({"image_id": annotation["image_id"], "category_id": annotation["category_id"],
                            "bbox": [float(v) for v in bbox], "score": float(rng.choice([0.5, 0.25, rng.random()]))})
    for record in list(records[:15]):  # an equal box in another category, the same score
        others = [c for c in categories if c != record["category_id"]]
        records.append({**record, "category_id": int(rng.choice(others))})
    for record in records[15:35]:  # scores equal in float32 only
        record["score"] = 0.5 + float(rng.integers(1, 4)) * 1e-10
    return [records[i] for i in rng.permutation(len(records))]


def _case(seed: int):
    rng = np.random.default_rng(seed)
    images = [{"id": i, "height": 240, "width": 320, "file_name": f"{i}.jpg"} for i in (3, 5, 8, 13)]
    categories = [1, 2, 7]
    annotations = []
    for k in range(30):
        x, y = rng.uniform(0, 220, 2)
        w, h = rng.uniform(3, 90, 2)
        annotations.append({"id": k + 1, "image_id": int(rng.choice([3, 5, 8, 13])), "category_id": int(rng.choice(categories)),
                            "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
    dataset = {"images": images, "categories": [{"id": c, "name": f"c{c}"} for c in categories], "annotations": annotations}
    return dataset, _records(rng, images, categories, annotations)


@pytest.mark.parametrize("seed", range(8))
def test_no_suppression_equals_pycocotools_on_the_records(seed):
    dataset, records = _case(seed)
    cache = import_coco_detections(records, dataset)
    result = sweep(cache, load_ground_truth(dataset), ParamSpec(score_threshold=[0.0], iou_threshold=[1.0]))
    expected = pycocotools_stats(dataset, records, None)
    assert list(result.table[0].stats) == [float(v) for v in expected]


@pytest.mark.parametrize("seed", range(4))
def test_float64_caches_agree_with_the_reference(seed):
    dataset, records = _case(100 + seed)
    cache = import_coco_detections(records, dataset)
    spec = ParamSpec(score_threshold=[0.0, 0.25, 0.5, 0.50000000005, 0.9], iou_threshold=[0.3, 0.5, 1.0])
    fast = sweep(cache, load_ground_truth(dataset), spec)
    slow = sweep_reference(cache, load_ground_truth(dataset), spec)
    assert [r.params for r in fast.table] == [r.params for r in slow.table]
    for a, b in zip(fast.table, slow.table):
        assert list(a.stats) == list(b.stats), a.params
        assert a.dets_per_image == b.dets_per_image and a.f1 == b.f1


def test_float32_cut_is_the_float32_comparison_in_float64():
    rng = np.random.default_rng(0)
    thresholds = np.concatenate([rng.random(200), [0.0, 0.05, 0.5, 1.0, 1e-30, 0.1]])
    for threshold in thresholds:
        t32 = np.float32(threshold)
        cut = float32_cut(threshold)
        below, above = np.nextafter(t32, np.float32(0)), np.nextafter(t32, np.float32(2))
        # every float64 between the neighbouring float32 values, densely near the midpoints
        grid = np.concatenate([np.linspace(float(below), float(above), 2001),
                               [cut, np.nextafter(cut, 2.0), np.nextafter(cut, -1.0), (float(t32) + float(above)) / 2]])
        np.testing.assert_array_equal(grid > cut, grid.astype(np.float32) > t32)


@pytest.mark.tf  # the fast sweep's first stage runs the TensorFlow op
@pytest.mark.parametrize("seed", range(3))
def test_two_stage_json_keeps_float64_and_agrees_with_the_reference(seed):
    from detsearch.detection.cache import import_two_stage_json

    dataset, _ = _case(200 + seed)
    rng = np.random.default_rng(seed)
    image_ids = [image["id"] for image in dataset["images"]]
    categories = [c["id"] for c in dataset["categories"]]
    per_image = 12
    proposals, class_boxes = [], []
    for image_id in image_ids:
        own = [a["bbox"] for a in dataset["annotations"] if a["image_id"] == image_id] or [[10.0, 10.0, 50.0, 40.0]]
        for k in range(per_image):
            x, y, w, h = np.asarray(own[k % len(own)]) + rng.normal(0, 4, 4)
            w, h = abs(w) + 1, abs(h) + 1
            proposals.append([y, x, y + h, x + w])
            class_boxes.append([[y + rng.normal(0, 1), x + rng.normal(0, 1), y + h + rng.normal(0, 1), x + w + 1e-9 * c]
                                for c in range(len(categories))])
    class_boxes = np.sort(np.asarray(class_boxes).reshape(-1, len(categories), 2, 2), axis=2).reshape(-1, len(categories), 4)
    scores = rng.random((len(proposals), len(categories)))
    scores[::5] = 0.5 + 1e-11  # ties, and scores equal in float32 only
    scores[1::5] = 0.5
    document = {
        "image_ids": image_ids,
        "proposal_offsets": [per_image * i for i in range(len(image_ids) + 1)],
        "proposals": np.asarray(proposals).tolist(),
        "objectness": rng.random(len(proposals)).tolist(),
        "class_scores": scores.tolist(),
        "class_boxes": class_boxes.tolist(),
        "category_ids": categories,
    }
    cache = import_two_stage_json(document, dataset, score_floor=0.05)
    assert cache.entry_score.dtype == np.float64 and cache.entry_boxes.dtype == np.float64
    spec = ParamSpec(nms_score_threshold=[0.0, 0.3], nms_iou_threshold=[0.5, 1.0],
                     score_threshold=[0.05, 0.5, 0.5000000000005], iou_threshold=[0.5, 1.0])
    fast = sweep(cache, load_ground_truth(dataset), spec)
    slow = sweep_reference(cache, load_ground_truth(dataset), spec)
    assert [list(r.stats) for r in fast.table] == [list(r.stats) for r in slow.table]
    assert [r.params for r in fast.table] == [r.params for r in slow.table]


@pytest.mark.tf  # the fast sweep's first stage runs the TensorFlow op
def test_two_stage_boxes_are_matched_as_given():
    """A float64 second-stage box with IoU 0.55 exactly against its ground truth (0.5500000000000002),
    which rounding the box to float32 would put below 0.55."""
    from detsearch.detection.cache import import_two_stage_json

    dataset = {"images": [{"id": 1, "height": 40, "width": 40}], "categories": [{"id": 1, "name": "a"}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 7.0, 7.0],
                                "area": 49.0, "iscrowd": 0}]}
    x2 = 12.727272727272725
    box = [0.0, 0.0, 7.0, x2]
    document = {"image_ids": [1], "proposal_offsets": [0, 1], "proposals": [box], "objectness": [0.9],
                "class_scores": [[0.8]], "class_boxes": [[box]], "category_ids": [1]}
    cache = import_two_stage_json(document, dataset)
    spec = ParamSpec(nms_score_threshold=[0.0], nms_iou_threshold=[0.7], score_threshold=[0.0], iou_threshold=[0.5])
    (row,) = sweep(cache, load_ground_truth(dataset), spec).table
    records = [{"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, x2, 7.0], "score": 0.8}]
    assert list(row.stats) == [float(v) for v in pycocotools_stats(dataset, records, None)]
    rounded = [{**records[0], "bbox": [0.0, 0.0, float(np.float32(x2)), 7.0]}]
    assert pycocotools_stats(dataset, rounded, None)[0] < row.stats[0]  # float32 would lose the match at 0.55
