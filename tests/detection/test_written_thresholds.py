"""Every threshold the sweep writes reproduces its figures on the user's scores, compared in
float64 (a COCO results file) and in float32 (a model's output).

The oracle is pycocotools on the file filtered by ``score > threshold``: its matches at IoU 0.5
give each category's precision, recall and F1, and its 12 stats those of all thresholds applied.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detsearch import cli
from detsearch.detection.cache import import_coco_detections
from detsearch.detection.cocoeval import load_ground_truth
from detsearch.detection.sweep import sweep
from detsearch.detection.sweep.cuts import float32_cut, separating_threshold
from detsearch.params import ParamSpec

CATEGORIES = list(range(1, 13))


def _case(seed: int, num_images: int = 24) -> tuple[dict, list[dict]]:
    """Ground truth and detections with float64 scores of 6 decimals, as exporters write them."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "height": 200, "width": 200, "file_name": f"{i}.jpg"} for i in range(num_images)]
    annotations, records = [], []
    for image in images:
        for _ in range(int(rng.integers(1, 6))):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(8, 50, 2)
            category = int(rng.choice(CATEGORIES))
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": category,
                                "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
                                "iscrowd": int(rng.random() < 0.05)})
            for _ in range(int(rng.integers(0, 3))):  # hits, some poorly placed
                jitter = rng.normal(0, 2 + 8 * rng.random(), 4)
                box = np.maximum(np.array([x, y, w, h]) + jitter, [0, 0, 1, 1])
                records.append({"image_id": image["id"], "category_id": category, "bbox": [float(v) for v in box],
                                "score": round(float(rng.beta(4, 2)), 6)})
        for _ in range(int(rng.integers(0, 5))):  # false positives
            x, y = rng.uniform(0, 150, 2)
            records.append({"image_id": image["id"], "category_id": int(rng.choice(CATEGORIES)),
                            "bbox": [float(x), float(y), 20.0, 20.0], "score": round(float(rng.beta(2, 4)), 6)})
    dataset = {"images": images, "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORIES],
               "annotations": annotations}
    return dataset, records


def _pycocotools(dataset: dict, records: list[dict]) -> tuple[list[float], dict[int, tuple]]:
    """pycocotools' 12 stats on ``records``, and per category (tp, counted, ground truth) at IoU
    0.5, area all, 100 detections."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(dataset))
        gt.createIndex()
        dt = gt.loadRes(json.loads(json.dumps(records))) if records else COCO()
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    counts = {c: [0, 0, 0] for c in CATEGORIES}
    for entry in evaluation.evalImgs:
        if entry is None or entry["aRng"] != [0, 1e10]:
            continue
        counted = ~np.asarray(entry["dtIgnore"], bool).reshape(len(evaluation.params.iouThrs), -1)[0]
        matched = np.asarray(entry["dtMatches"]).reshape(len(evaluation.params.iouThrs), -1)[0] > 0
        c = counts[entry["category_id"]]
        c[0] += int(np.count_nonzero(matched & counted))
        c[1] += int(np.count_nonzero(counted))
        c[2] += int(np.count_nonzero(~np.asarray(entry["gtIgnore"], bool)))
    return [float(v) for v in evaluation.stats], {k: tuple(v) for k, v in counts.items()}


def _figures(tp: int, counted: int, ground_truth: int) -> tuple:
    precision = tp / counted if counted else None
    recall = tp / ground_truth if ground_truth else 0.0
    return precision, recall, (2 * tp / (counted + ground_truth) if counted + ground_truth else 0.0)


@pytest.mark.parametrize("rule", ["f1", "precision:0.8", "recall:0.6"])
@pytest.mark.parametrize("seed", range(3))
def test_per_class_thresholds_reproduce_their_figures_on_float64_and_float32_scores(tmp_path, seed, rule):
    dataset, records = _case(seed)
    (tmp_path / "gt.json").write_text(json.dumps(dataset))
    (tmp_path / "dt.json").write_text(json.dumps(records))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli.main(["sweep", "--no-progress", "--detections", str(tmp_path / "dt.json"),
                         "--annotations", str(tmp_path / "gt.json"), "--score-thresholds", "0.2",
                         "--iou-thresholds", "1.0", "--per-class", rule, "--out", str(tmp_path / "out")])
    assert code == 0, err.getvalue()
    document = json.loads((tmp_path / "out" / "per_class_thresholds.json").read_text())
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    thresholds = {c["category_id"]: c["score_threshold"] for c in document["classes"]}
    base = result["best"]["score_threshold"]
    output = [r for r in records if r["score"] > base]  # suppression off: the configuration keeps these
    assert 0 < len(output) < len(records)
    as_float64 = [r for r in output if r["score"] > thresholds[r["category_id"]]]
    as_float32 = [r for r in output if np.float32(r["score"]) > np.float32(thresholds[r["category_id"]])]
    assert as_float64 == as_float32
    stats, counts = _pycocotools(dataset, as_float64)
    assert stats == list(result["per_class_stats"].values())
    assert result["per_class_dets_per_image"] == len(as_float64) / len(dataset["images"])
    for entry in result["per_class"]:
        category = entry["category_id"]
        kept = sum(r["category_id"] == category for r in as_float64)
        assert entry["detections"] == kept, entry
        if entry["precision"] is None and entry["recall"] is None:  # no ground truth
            assert entry["score_threshold"] == base
            continue
        assert (entry["precision"], entry["recall"], entry["f1"]) == _figures(*counts[category]), entry


def test_the_seeded_float64_case_differs_in_float32_at_the_next_lower_score():
    """What the written thresholds guard against, on the same data: half the 6-decimal scores
    lie above their float32 value, so a float32 score written as a threshold keeps its own
    detection in float64."""
    _, records = _case(0)
    scores = np.array([r["score"] for r in records])
    above = scores > scores.astype(np.float32).astype(np.float64)
    assert 0.3 < above.mean() < 0.7


@pytest.mark.parametrize("seed", range(40))
def test_separating_threshold_keeps_the_float32_cut_in_both_precisions(seed):
    rng = np.random.default_rng(seed)
    threshold = float(rng.choice([0.05, 0.3, 0.5, rng.random()]))
    t32 = np.float32(threshold)
    below, above = np.nextafter(t32, np.float32(0)), np.nextafter(t32, np.float32(1))
    near = [float(t32), threshold, float(below), float(above), (float(t32) + float(above)) / 2,
            np.nextafter(threshold, 1.0), np.nextafter(threshold, 0.0), np.nextafter(float(t32), 1.0)]
    scores = np.concatenate([rng.random(50), rng.choice(near, 10), np.round(rng.random(20), 6)])
    if seed % 2:
        scores = scores.astype(np.float32).astype(np.float64)  # a model's output
    t = separating_threshold(threshold, scores)
    expected = scores.astype(np.float32) > t32
    assert np.array_equal(scores > t, expected)
    assert np.array_equal(scores.astype(np.float32) > np.float32(t), expected)
    assert np.array_equal(scores > float32_cut(t), expected)
    if np.array_equal(scores > threshold, expected):
        assert t == threshold  # a threshold that already separates is written as given


def test_the_chosen_score_threshold_is_written_separating():
    """A float32 score equal to float32(0.05) passes ``> 0.05`` in float64 only: the written
    threshold moves just enough to say what the sweep kept."""
    dataset, records = _case(7, num_images=6)
    records[0]["score"] = float(np.float32(0.05))
    cache = import_coco_detections(records, dataset)
    result = sweep(cache, load_ground_truth(dataset), ParamSpec(score_threshold=[0.05], iou_threshold=[0.5]))
    written = result.best.score_threshold
    assert result.best_row.params["score_threshold"] == 0.05
    assert written != 0.05 and result.best_params["score_threshold"] == written
    scores = np.array([r["score"] for r in records])
    expected = scores.astype(np.float32) > np.float32(0.05)
    assert np.array_equal(scores > written, expected)
    assert np.array_equal(scores.astype(np.float32) > np.float32(written), expected)
