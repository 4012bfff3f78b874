"""TIDE along the sweep equals hotcoco's ``tide_errors`` on each configuration's detections.

The oracle's detections come from the sweep's slow reference (NMS from scratch by the plain
references, `sweep._reference.reference_detections`), so neither the fast NMS nor the fast
matching is on both sides. Every figure is compared with ``==``.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import detsearch.detection.sweep as sweep_module
from detsearch.detection.cache import import_coco_detections
from detsearch.detection.sweep import PostProcessing
from detsearch.detection.sweep._reference import reference_detections
from detsearch.detection.cocoeval import CocoMatcher
from detsearch.detection.tide import COUNT_TYPES, ERROR_TYPES, Evidence, TideErrors, evidence, tide_errors
from detsearch.executor import ProcessExecutor
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import random_case

hotcoco = pytest.importorskip("hotcoco")

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_val2014_100"
ONE_STAGE = ParamSpec(score_threshold=[0.05, 0.3, 0.6], iou_threshold=[0.3, 0.6, 1.0])
TWO_STAGE = ParamSpec(nms_score_threshold=[0.0, 0.5], nms_iou_threshold=[0.7], score_threshold=[0.05, 0.4],
                      iou_threshold=[0.5])


def oracle(dataset, results, image_ids, max_detections=100):
    """hotcoco's TIDE of ``results`` (a COCO results list) on ``image_ids``."""
    gt = hotcoco.COCO(dataset)
    evaluator = hotcoco.COCOeval(gt, gt.load_res(results), "bbox")
    evaluator.params.img_ids = [int(i) for i in image_ids]
    evaluator.params.max_dets = [1, 10, max_detections]
    evaluator.evaluate()
    found = evaluator.tide_errors(pos_thr=0.5, bg_thr=0.1)
    return {"delta_ap": {k: found["delta_ap"][k] for k in ERROR_TYPES}, "counts": {k: found["counts"][k] for k in COUNT_TYPES}}


def check_rows(result, cache, dataset, post, max_detections=100):
    """Every row with detections equals the oracle; returns how many rows were compared."""
    checked = 0
    for row in result.table:
        results = reference_detections(cache, dict(row.params), post)
        if not results:
            continue
        # hotcoco breaks equal-score ties between errors targeting one box by input order: the
        # sweep's output order is image by image, by descending score.
        results.sort(key=lambda r: (r["image_id"], -r["score"]))
        assert row.errors.to_dict() == oracle(dataset, results, cache.meta.image_ids, max_detections), dict(row.params)
        checked += 1
    return checked


@pytest.mark.parametrize("seed", range(6))
def test_one_stage_rows_equal_hotcoco(seed):
    cache, dataset = random_case(seed, "one_stage", num_images=6, max_rows=40, ties=seed % 2 == 1)
    result = sweep_module.sweep(cache, dataset, ONE_STAGE, errors=True)
    assert check_rows(result, cache, dataset, PostProcessing().checked(cache, ONE_STAGE)) >= 6


@pytest.mark.parametrize("seed", range(3))
def test_two_stage_rows_equal_hotcoco(seed):
    cache, dataset = random_case(seed, "two_stage", num_images=6, max_rows=40)
    result = sweep_module.sweep(cache, dataset, TWO_STAGE, errors=True)
    assert check_rows(result, cache, dataset, PostProcessing().checked(cache, TWO_STAGE)) >= 2


def test_caps_and_crowded_images_equal_hotcoco():
    """A ``max_detections`` axis (rows read off the largest cap) and maxDets 5 (cells cut)."""
    cache, dataset = random_case(7, "one_stage", num_images=5, max_rows=60)
    post = PostProcessing(max_eval_detections=5)
    result = sweep_module.sweep(cache, dataset, ParamSpec(score_threshold=[0.05, 0.5], iou_threshold=[0.6]), post,
                                max_detections=[3, 20], errors=True)
    checked = 0
    for row in result.table:
        capped = PostProcessing(max_detections_per_class=row.params["max_detections"],
                                max_total_detections=row.params["max_detections"], max_eval_detections=5)
        spec = ParamSpec(score_threshold=[row.params["score_threshold"]], iou_threshold=[row.params["iou_threshold"]])
        results = reference_detections(cache, dict(row.params), capped.checked(cache, spec))
        results.sort(key=lambda r: (r["image_id"], -r["score"]))
        assert row.errors.to_dict() == oracle(dataset, results, cache.meta.image_ids, 5), dict(row.params)
        checked += 1
    assert checked == 4


def test_coco_fixture_equals_hotcoco():
    """The real COCO fixture (100 val2014 images, the fake-bbox results as candidates)."""
    annotations = DATA / "instances_val2014_100.json"
    cache = import_coco_detections(DATA / "instances_val2014_fakebbox100_results.json", annotations)
    spec = ParamSpec(score_threshold=[0.0, 0.5], iou_threshold=[0.5, 1.0])
    result = sweep_module.sweep(cache, annotations, spec, errors=True)
    dataset = json.loads(annotations.read_text())
    assert check_rows(result, cache, dataset, PostProcessing().checked(cache, spec)) == 4
    everything = next(r for r in result.table if r.params == {"score_threshold": 0.0, "iou_threshold": 1.0})
    assert sum(everything.errors.counts.values()) > 100


def test_worker_processes_and_image_ranges_give_the_same_errors():
    cache, dataset = random_case(3, "one_stage", num_images=9, max_rows=40)
    alone = sweep_module.sweep(cache, dataset, ONE_STAGE, errors=True)
    ranged = sweep_module.sweep(cache, dataset, ONE_STAGE, errors=True, executor=ProcessExecutor(2), shards=4)
    assert [r.errors for r in alone.table] == [r.errors for r in ranged.table]
    coordinate = sweep_module.sweep(cache, dataset, ONE_STAGE, errors=True, strategy="coordinate")
    by_params = {tuple(r.params.items()): r.errors for r in alone.table}
    assert all(by_params[tuple(r.params.items())] == r.errors for r in coordinate.table)


def test_without_errors_rows_hold_none_and_json_has_no_key():
    cache, dataset = random_case(4, "one_stage")
    result = sweep_module.sweep(cache, dataset, ONE_STAGE)
    assert all(row.errors is None for row in result.table)
    assert "errors" not in json.loads(result.to_json())["table"][0]
    with_errors = sweep_module.sweep(cache, dataset, ONE_STAGE, errors=True)
    assert [r.stats for r in with_errors.table] == [r.stats for r in result.table]
    row = json.loads(with_errors.to_json())["table"][0]
    assert set(row["errors"]) == {"delta_ap", "counts"} and list(row["errors"]["delta_ap"]) == list(ERROR_TYPES)
    with pytest.raises(TypeError, match="errors must be a bool"):
        sweep_module.sweep(cache, dataset, ONE_STAGE, errors="yes")


def test_journal_keeps_errors_and_tells_sweeps_with_and_without_apart(tmp_path):
    cache, dataset = random_case(5, "one_stage")
    result = sweep_module.sweep(cache, dataset, ONE_STAGE, errors=True, journal=tmp_path / "j.jsonl")
    resumed = sweep_module.sweep(cache, dataset, ONE_STAGE, errors=True, journal=tmp_path / "j.jsonl")
    assert [r.errors for r in resumed.table] == [r.errors for r in result.table]
    assert TideErrors.from_dict(result.table[0].errors.to_dict()) == result.table[0].errors
    # A journal of rows without errors is another sweep's: dropped, not read as rows without them.
    plain = sweep_module.sweep(cache, dataset, ONE_STAGE, journal=tmp_path / "j.jsonl")
    assert all(row.errors is None for row in plain.table)


def test_only_the_matching_iou_is_a_positive_threshold():
    _, dataset = random_case(1, "one_stage")
    matcher = CocoMatcher(dataset)
    matches = matcher.match(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(ValueError, match="pos_thr must be 0.5"):
        tide_errors(matches, Evidence.empty(0), pos_thr=0.75)
    assert tide_errors(matches, Evidence.empty(0)).counts["Miss"] == int(matcher.ground_truth_counts().sum())


# ------------------------------------------------------------------------------------------
# the chosen configuration's confusion matrix and calibration


def chosen_oracle(dataset, results, image_ids):
    gt = hotcoco.COCO(dataset)
    evaluator = hotcoco.COCOeval(gt, gt.load_res(results), "bbox")
    evaluator.params.img_ids = [int(i) for i in image_ids]
    evaluator.evaluate()
    return evaluator.confusion_matrix(iou_thr=0.5), evaluator.calibration(n_bins=10, iou_threshold=0.5)


def check_chosen(result, cache, dataset, post):
    results = reference_detections(cache, dict(result.best_row.params), post)
    results.sort(key=lambda r: (r["image_id"], -r["score"]))
    confusion, calibration = chosen_oracle(dataset, results, cache.meta.image_ids)
    mine = result.chosen.confusion
    assert np.array_equal(mine.matrix, confusion["matrix"]) and mine.matrix.dtype == confusion["matrix"].dtype
    assert mine.normalized.tobytes() == confusion["normalized"].tobytes()
    assert list(mine.category_ids) == confusion["cat_ids"]
    got = result.chosen.calibration
    assert (got.ece, got.mce, got.num_detections) == (calibration["ece"], calibration["mce"], calibration["num_detections"])
    assert [(b["lower"], b["upper"], b["confidence"], b["accuracy"], b["count"]) for b in got.bins] == [
        (b["bin_lower"], b["bin_upper"], b["avg_confidence"], b["avg_accuracy"], b["count"]) for b in calibration["bins"]]
    assert {name: ece for _, name, ece in got.per_category} == calibration["per_category"]
    payload = json.loads(result.to_json())
    assert payload["confusion"]["matrix"] == confusion["matrix"].tolist()
    assert payload["calibration"]["ece"] == calibration["ece"]


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_confusion_and_calibration_equal_hotcoco(seed):
    cache, dataset = random_case(seed, "one_stage", num_images=8, max_rows=50)
    result = sweep_module.sweep(cache, dataset, ONE_STAGE, errors=True)
    check_chosen(result, cache, dataset, PostProcessing().checked(cache, ONE_STAGE))


def test_confusion_and_calibration_on_the_coco_fixture_equal_hotcoco():
    annotations = DATA / "instances_val2014_100.json"
    cache = import_coco_detections(DATA / "instances_val2014_fakebbox100_results.json", annotations)
    spec = ParamSpec(score_threshold=[0.0, 0.3], iou_threshold=[0.5, 1.0])
    result = sweep_module.sweep(cache, annotations, spec, errors=True)
    check_chosen(result, cache, json.loads(annotations.read_text()), PostProcessing().checked(cache, spec))
    assert result.chosen.confusion.matrix.sum() > 700


# ------------------------------------------------------------------------------------------
# hand-built edges, each against hotcoco


def direct(dataset, detections):
    """`tide_errors` of ``detections`` ((category id, [x, y, w, h], score), in output order) on one
    image, matched directly, and hotcoco's on the same list."""
    matcher = CocoMatcher(dataset)
    image = np.zeros(len(detections), np.int64)
    category = matcher.category_positions([c for c, _, _ in detections])
    boxes = np.array([b for _, b, _ in detections], np.float64)
    scores = np.array([s for _, _, s in detections], np.float64)
    matches = matcher.match(image, category, boxes, scores)
    found = evidence(matcher, image, category, boxes).take(matches.input_index)
    mine = tide_errors(matches, found).to_dict()
    results = [{"image_id": 1, "category_id": c, "bbox": b, "score": s} for c, b, s in detections]
    return mine, oracle(dataset, results, [1])


def one_image(*boxes):
    return {"images": [{"id": 1, "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": crowd} for i, (c, b, crowd) in enumerate(boxes)]}


def test_an_iou_of_exactly_pos_thr_is_loc_not_dupe():
    """A false positive at IoU exactly 0.5 with a taken box: Loc's window is closed above."""
    dataset = one_image((1, [0, 0, 10, 10], 0), (1, [50, 50, 20, 20], 0))
    mine, theirs = direct(dataset, [(1, [0, 0, 10, 10], 0.9), (1, [0, 0, 10, 5], 0.8), (1, [50, 50, 20, 20], 0.3)])
    assert mine == theirs
    assert mine["counts"]["Loc"] == 1 and mine["counts"]["Dupe"] == 0


@pytest.mark.parametrize("cls_first", [False, True])
def test_equal_scores_targeting_one_box_go_to_the_first_in_the_output(cls_first):
    """A Loc and a Cls error of equal score target one missed box: the first in the output wins
    it, which moves AP between the Loc and the Cls fix."""
    dataset = one_image((1, [0, 0, 20, 20], 0), (2, [60, 60, 20, 20], 0), (1, [60, 0, 20, 20], 0))
    loc = (1, [8, 8, 20, 20], 0.7)  # IoU 0.22 with the class-1 box
    cls = (2, [1, 1, 20, 20], 0.7)  # IoU 0.82 with it, another class
    others = [(2, [60, 60, 20, 20], 0.95), (1, [60, 0, 20, 20], 0.9), (1, [30, 30, 5, 5], 0.8)]
    mine, theirs = direct(dataset, others + ([cls, loc] if cls_first else [loc, cls]))
    assert mine == theirs
    assert (mine["delta_ap"]["Cls"] > 0) == cls_first and (mine["delta_ap"]["Loc"] > 0) != cls_first


def test_confusion_ties_as_hotcoco():
    """Equal IoUs with boxes of two classes go to the later box; equal scores of two classes go
    by class, then output order; an IoU of exactly 0.5 matches."""
    from detsearch.detection.diagnostics import confusion_matrix

    dataset = one_image((1, [0, 0, 10, 10], 0), (2, [0, 0, 10, 10], 0), (1, [50, 50, 10, 10], 0))
    detections = [(1, [0, 0, 10, 10], 0.9), (2, [50, 50, 10, 10], 0.5), (1, [50, 50, 10, 10], 0.5),
                  (2, [0, 0, 10, 5], 0.4)]
    matcher = CocoMatcher(dataset)
    mine = confusion_matrix(matcher, np.zeros(4, np.int64), matcher.category_positions([c for c, _, _ in detections]),
                            np.array([b for _, b, _ in detections], np.float64), np.array([s for *_, s in detections]))
    gt = hotcoco.COCO(dataset)
    theirs = hotcoco.COCOeval(gt, gt.load_res([{"image_id": 1, "category_id": c, "bbox": b, "score": s}
                                               for c, b, s in detections]), "bbox").confusion_matrix(iou_thr=0.5)
    assert mine.matrix.tolist() == theirs["matrix"].tolist()
    # The class-2 box to the first class-1 detection; at 0.5 the class-1 detection first; IoU 0.5 matches.
    assert (mine.matrix[1, 0], mine.matrix[0, 0], mine.matrix[2, 1], mine.matrix[0, 1]) == (1, 1, 1, 1)


@pytest.mark.parametrize("post", [PostProcessing(nms_version="v1", soft_nms_sigma=0.5), PostProcessing(nms_version="v2"),
                                  PostProcessing(class_agnostic=True)], ids=["v1-soft", "v2", "agnostic"])
def test_model_garden_post_processing_equals_hotcoco(post):
    """Soft NMS's decayed scores are the detections' scores; v2 and class-agnostic NMS."""
    cache, dataset = random_case(11, "one_stage", num_images=6, max_rows=40)
    spec = ParamSpec(score_threshold=[0.05, 0.4], iou_threshold=[0.5, 0.7])
    result = sweep_module.sweep(cache, dataset, spec, post, errors=True)
    assert check_rows(result, cache, dataset, post.checked(cache, spec)) == 4
