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
from detsearch.detection.sweep.engine import float32_cut
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
