"""Operating points: the tolerance rule, the max_detections and class_agnostic axes, per-class
thresholds and the holdout, each against NMS from scratch + pycocotools."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detsearch.detection.sweep as sweep_module
from detsearch.detection.cocoeval import load_ground_truth
from detsearch.detection.pycoco import coco_ground_truth, load_results, pycocotools_eval
from detsearch.detection.sweep import PostProcessing
from detsearch.detection.sweep._reference import reference_detections
from detsearch.detection.sweep.holdout import split_images, subset_cache
from detsearch.detection.sweep.per_class import PerClassRule, ScoreCurve, choose_cut
from detsearch.detection.sweep.result import SweepRow, select_best
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import outcome, random_case

pytest.importorskip("pycocotools")


# ------------------------------------------------------------------------------------------
# the choice: within tolerance of the best, fewest detections per image


def _row(value, ap50, f1, dets):
    return SweepRow(params={"score_threshold": 0.1, "iou_threshold": 0.5}, stats=(value, ap50) + (0.0,) * 10, recall=0.0,
                    ap50=ap50, dets_per_image=float(dets), f1=f1, f1_max=f1, f1_max_score=None)


def _select_reference(rows, objective, budget, tolerance):
    """The documented choice, plainly: of the rows within ``tolerance`` of the highest value
    (rows over the budget have none), the fewest detections per image, then the highest value,
    then the earlier row; None when no row has a value."""
    value = {"map": lambda r: r.stats[0], "ap50": lambda r: r.stats[1], "f1": lambda r: r.f1,
             "map_at_budget": lambda r: r.stats[0] if r.dets_per_image <= budget else None}[objective]
    valued = [(value(r), r) for r in rows if value(r) is not None]
    if not valued:
        return None
    top = max(v for v, _ in valued)
    near = [(v, r) for v, r in valued if v >= top - tolerance]
    fewest = min(r.dets_per_image for _, r in near)
    near = [(v, r) for v, r in near if r.dets_per_image == fewest]
    highest = max(v for v, _ in near)
    return next(r for v, r in near if v == highest)


values = st.sampled_from([0.3, 0.3005, 0.301, 0.302, 0.31])


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(values, values, values, st.integers(0, 5)), min_size=1, max_size=8),
       tolerance=st.sampled_from([0.0, 0.0005, 0.001, 0.002, 0.05]),
       objective=st.sampled_from(["map", "ap50", "f1", "map_at_budget"]), budget=st.sampled_from([0, 2, 5]))
def test_select_best_takes_the_fewest_detections_within_the_tolerance(rows, tolerance, objective, budget):
    rows = [_row(*row) for row in rows]
    expected = _select_reference(rows, objective, budget, tolerance)
    if expected is None:
        with pytest.raises(ValueError, match="no configuration has <= "):
            select_best(rows, objective, budget, tolerance)
        return
    assert select_best(rows, objective, budget, tolerance) is expected  # the same row: ties to the earlier one


@pytest.mark.parametrize("tolerance", [-0.1, math.inf, math.nan, "0.1", True])
def test_bad_tolerance(tolerance):
    cache, dataset = random_case(1, "one_stage")
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        sweep_module.sweep(cache, dataset, ParamSpec(score_threshold=[0.1], iou_threshold=[0.5]), tolerance=tolerance)


def test_result_json_names_the_tolerance_and_every_row_objective():
    cache, dataset = random_case(11, "one_stage", num_images=8, max_rows=60)
    spec = ParamSpec(score_threshold=[0.05, 0.3, 0.6], iou_threshold=[0.3, 0.5, 0.7])
    result = sweep_module.sweep(cache, dataset, spec, tolerance=0.01)
    payload = result.to_dict()
    assert payload["tolerance"] == 0.01
    assert [row["objective"] for row in payload["table"]] == [row.stats[0] for row in result.table]
    top = max(row.stats[0] for row in result.table)
    assert payload["top_row"]["objective"] == top
    assert result.best_row.stats[0] >= top - 0.01
    assert result.best_row.dets_per_image == min(r.dets_per_image for r in result.table if r.stats[0] >= top - 0.01)
    assert payload["best"] == dict(result.best_row.params)


# ------------------------------------------------------------------------------------------
# max_detections and class_agnostic axes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), caps=st.lists(st.sampled_from([1, 2, 3, 7, 100]), min_size=1, max_size=3, unique=True),
       agnostic=st.sampled_from([None, True, False, (False, True)]), ties=st.booleans())
def test_one_stage_axes_equal_reference(seed, caps, agnostic, ties):
    cache, dataset = random_case(seed, "one_stage", ties=ties, max_rows=40)
    spec = ParamSpec(score_threshold=[0.05, 0.4], iou_threshold=[0.3, 0.6])
    kwargs = dict(max_detections=caps, class_agnostic=agnostic, tolerance=0)
    fast = sweep_module.sweep(cache, dataset, spec, **kwargs)
    slow = sweep_module.sweep_reference(cache, dataset, spec, **kwargs)
    assert outcome(fast) == outcome(slow)
    assert len(fast.table) == 4 * len(caps) * (2 if agnostic == (False, True) else 1)
    assert all(("class_agnostic" in row.params) == (agnostic is not None) and row.params["max_detections"] in caps for row in fast.table)


def test_float64_scores_that_tie_in_float32_under_a_cap():
    # Scores equal in float32, different in float64: NMS's output order (float32) and COCO's
    # matching order (float64) differ, so a cap cuts a group in the middle of its matching order.
    cache, dataset = random_case(4, "one_stage", num_images=4, max_rows=30)
    scores = np.asarray(cache.entry_score, np.float64).astype(np.float32).astype(np.float64)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-1, 1, len(scores)) * np.spacing(np.float32(scores)).astype(np.float64) * 0.3
    from detsearch.detection.cache import DetectionCache

    jittered = DetectionCache.from_arrays(cache.meta, **{**cache.arrays(), "entry_score": np.clip(scores + jitter, 0.05, 1.0)})
    spec = ParamSpec(score_threshold=[0.05], iou_threshold=[0.5, 1.0])
    kwargs = dict(max_detections=[1, 2, 5])
    assert outcome(sweep_module.sweep(jittered, dataset, spec, **kwargs)) == outcome(
        sweep_module.sweep_reference(jittered, dataset, spec, **kwargs))


@pytest.mark.tf
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), caps=st.lists(st.sampled_from([1, 3, 8]), min_size=1, max_size=2, unique=True),
       agnostic=st.sampled_from([True, (False, True)]))
def test_two_stage_axes_equal_reference(seed, caps, agnostic):
    cache, dataset = random_case(seed, "two_stage", ties=True)
    spec = ParamSpec(nms_score_threshold=[0.0, 0.4], nms_iou_threshold=[0.5], score_threshold=[0.05, 0.4], iou_threshold=[0.5])
    kwargs = dict(max_detections=caps, class_agnostic=agnostic)
    assert outcome(sweep_module.sweep(cache, dataset, spec, **kwargs)) == outcome(
        sweep_module.sweep_reference(cache, dataset, spec, **kwargs))


def test_axes_bad_arguments():
    cache, dataset = random_case(1, "one_stage")
    spec = ParamSpec(score_threshold=[0.1], iou_threshold=[0.5])
    for value in (0, [], [3, -1], 2.5, True):
        with pytest.raises(ValueError, match="max_detections must be an integer >= 1"):
            sweep_module.sweep(cache, dataset, spec, max_detections=value)
    for value in ([], 1, "yes", [True, 0]):
        with pytest.raises(ValueError, match="class_agnostic must be a bool"):
            sweep_module.sweep(cache, dataset, spec, class_agnostic=value)
    with pytest.raises(ValueError, match="do not give max_total_detections with it"):
        sweep_module.sweep(cache, dataset, spec, PostProcessing(max_total_detections=5), max_detections=[10])
    with pytest.raises(ValueError, match="the class_agnostic axis sets class_agnostic"):
        sweep_module.sweep(cache, dataset, spec, PostProcessing(class_agnostic=True), class_agnostic=[False, True])


def test_coordinate_search_over_the_extra_axes():
    cache, dataset = random_case(21, "one_stage", num_images=8, max_rows=60)
    spec = ParamSpec(score_threshold=[0.05, 0.3, 0.6], iou_threshold=[0.3, 0.5, 0.7])
    kwargs = dict(max_detections=[2, 5, 100], class_agnostic=(False, True), tolerance=0)
    grid = sweep_module.sweep(cache, dataset, spec, **kwargs)
    coordinate = sweep_module.sweep(cache, dataset, spec, strategy="coordinate", **kwargs)
    by_params = {tuple(sorted(row.params.items())): row for row in grid.table}
    for row in coordinate.table:
        assert row == by_params[tuple(sorted(row.params.items()))]


# ------------------------------------------------------------------------------------------
# per-class thresholds


def _figures(true_positives, counted, ground_truth):
    """(precision, recall, F1) of ``counted`` detections holding ``true_positives``."""
    precision = true_positives / counted if counted else None
    recall = true_positives / ground_truth if ground_truth else 0.0
    f1 = 2 * true_positives / (counted + ground_truth) if counted + ground_truth else 0.0
    return precision, recall, f1


def _rule_cut(scores, true_positive, ground_truth, rule):
    """One category's cut under ``rule``, from its counted detections (``scores`` any order,
    ``true_positive`` bools) as per_class.py's docstring states the rule, by trying every cut:
    ``(lowest float32 score kept, or None for nothing, or "all" for everything the
    configuration keeps; the cut's figures; whether the rule's target was reached)``. A cut
    keeps the detections whose float32 score is at least one of their float32 values; ties
    between cuts go to the higher cut."""
    as_float32 = [np.float32(v) for v in scores]
    cuts = [(None, _figures(0, 0, ground_truth))]  # highest first: nothing, then each distinct value
    for value in sorted(set(as_float32), reverse=True):
        kept = [k for k, v in enumerate(as_float32) if v >= value]
        cuts.append((value, _figures(sum(bool(true_positive[k]) for k in kept), len(kept), ground_truth)))
    if rule.kind == "f1":
        best = max(figures[2] for _, figures in cuts)
        return next((value, figures, True) for value, figures in cuts if figures[2] == best)
    if rule.kind == "precision":  # the lowest cut reaching the precision
        reaching = [(value, figures) for value, figures in cuts if figures[0] is not None and figures[0] >= rule.target]
        return (*reaching[-1], True) if reaching else (None, cuts[0][1], False)
    reaching = [(value, figures) for value, figures in cuts if figures[1] >= rule.target]  # the highest reaching the recall
    return (*reaching[0], True) if reaching else ("all", cuts[-1][1], False)


def _check_per_class(result, cache, dataset, rule):
    """``result.per_class`` against reference NMS + pycocotools' own evaluateImg matches: for
    each category the detections the rule keeps, computed here, are exactly those its threshold
    keeps with ``score > t`` in float64 and in float32; the figures, counts, AP and the stats
    with every cut applied are pycocotools'."""
    rule = PerClassRule.parse(rule)
    gt = load_ground_truth(dataset)
    coco_gt = coco_ground_truth(gt)
    image_ids = list(cache.meta.image_ids)
    results = reference_detections(cache, dict(result.best_row.params), PostProcessing().checked(cache))
    evaluator = pycocotools_eval(coco_gt, load_results(coco_gt, results), image_ids)
    all_area = list(evaluator.params.areaRng[0])
    expected = {}
    for category in gt.category_ids:
        scores, true_positive, ground_truth = [], [], 0
        for e in evaluator.evalImgs:
            if e is None or e["category_id"] != category or list(e["aRng"]) != all_area:
                continue
            ground_truth += int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            counted = ~np.asarray(e["dtIgnore"][0], bool)
            scores += np.asarray(e["dtScores"])[counted].tolist()
            true_positive += (np.asarray(e["dtMatches"][0]) != 0)[counted].tolist()
        output = [k for k, r in enumerate(results) if r["category_id"] == category]
        if ground_truth == 0:
            expected[int(category)] = (set(output), None, True)
            continue
        lowest, figures, reached = _rule_cut(scores, true_positive, ground_truth, rule)
        if lowest is None:
            kept = set()
        elif lowest == "all":
            kept = set(output)
        else:
            kept = {k for k in output if np.float32(results[k]["score"]) >= lowest}
        expected[int(category)] = (kept, figures, reached)
    assert sorted(c.category_id for c in result.per_class.classes) == sorted(expected)
    for entry in result.per_class.classes:
        kept, figures, reached = expected[entry.category_id]
        output = [k for k, r in enumerate(results) if r["category_id"] == entry.category_id]
        t = entry.score_threshold
        assert {k for k in output if results[k]["score"] > t} == kept, (entry, "float64")
        assert {k for k in output if np.float32(results[k]["score"]) > np.float32(t)} == kept, (entry, "float32")
        assert entry.detections == len(kept)
        assert entry.reached == reached
        assert (entry.precision, entry.recall, entry.f1) == (figures or (None, None, None))
    chosen = sorted(set().union(*(kept for kept, _, _ in expected.values())))
    filtered = pycocotools_eval(coco_gt, load_results(coco_gt, [results[k] for k in chosen]), image_ids)
    assert result.per_class.stats == tuple(float(v) for v in filtered.stats)
    assert result.per_class.dets_per_image == len(chosen) / len(image_ids)
    for k, category in enumerate(gt.category_ids):
        entry = next(c for c in result.per_class.classes if c.category_id == category)
        if expected[int(category)][1] is None:
            assert entry.ap is None
            continue
        values = filtered.eval["precision"][:, :, k, 0, -1]
        assert entry.ap == (float(np.mean(values[values > -1])) if (values > -1).any() else -1.0)
    return expected


def _brute_force_cut(scores, tp, ground_truth, rule):
    """choose_cut's index over the distinct float32 scores, descending (-1: nothing), by `_rule_cut`."""
    lowest, _, reached = _rule_cut(scores, tp, ground_truth, rule)
    distinct = sorted({np.float32(v) for v in scores}, reverse=True)
    if lowest is None:
        return -1, reached
    return (len(distinct) - 1 if lowest == "all" else distinct.index(lowest)), reached


@settings(max_examples=300, deadline=None)
@given(tp=st.lists(st.booleans(), max_size=12), ground_truth=st.integers(0, 10),
       rule=st.sampled_from(["f1", "precision:0.5", "precision:1", "recall:0.3", "recall:1"]))
def test_choose_cut_equals_brute_force(tp, ground_truth, rule):
    scores = np.round(np.linspace(0.9, 0.1, len(tp)), 1)  # some equal scores
    ground_truth = max(ground_truth, sum(tp))
    curve = ScoreCurve.from_detections(scores, tp, ground_truth)
    rule = PerClassRule.parse(rule)
    expected = _brute_force_cut(scores, tp, ground_truth, rule)
    assert choose_cut(curve, rule) == expected
    assert curve.figures(expected[0]) == _rule_cut(scores, tp, ground_truth, rule)[1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("rule", ["f1", "precision:0.6", "recall:0.5", "recall:1"])
def test_per_class_thresholds_equal_pycocotools(seed, rule):
    cache, dataset = random_case(seed, "one_stage", num_images=8, max_rows=50, ties=seed % 2 == 1)
    spec = ParamSpec(score_threshold=[0.1], iou_threshold=[0.5])
    result = sweep_module.sweep(cache, dataset, spec, per_class=rule)
    expected = _check_per_class(result, cache, dataset, rule)
    assert any(figures is None for _, figures, _ in expected.values())  # a category without ground truth
    payload = result.to_dict()
    assert payload["per_class_rule"] == rule
    assert {"category_id", "name", "score_threshold", "precision", "recall", "f1", "ap"} <= set(payload["per_class"][0])


def _float64_scores(cache, seed):
    """``cache`` with its scores moved off float32 by less than a float32 step: many pairs equal
    in float32 and different as given (where ``score > t`` can disagree between precisions)."""
    from detsearch.detection.cache import DetectionCache

    scores = np.asarray(cache.entry_score, np.float64).astype(np.float32).astype(np.float64)
    jitter = np.random.default_rng(seed).uniform(-1, 1, len(scores)) * np.spacing(np.float32(scores)).astype(np.float64) * 0.4
    return DetectionCache.from_arrays(cache.meta, **{**cache.arrays(), "entry_score": np.clip(scores + jitter, 0.05, 1.0)})


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("rule", ["f1", "precision:0.6", "recall:0.5"])
def test_per_class_thresholds_on_float64_scores(seed, rule):
    cache, dataset = random_case(seed, "one_stage", num_images=8, max_rows=50, ties=True)
    cache = _float64_scores(cache, seed)
    assert cache.entry_score.dtype == np.float64
    result = sweep_module.sweep(cache, dataset, ParamSpec(score_threshold=[0.1], iou_threshold=[0.5]), per_class=rule)
    _check_per_class(result, cache, dataset, rule)


@pytest.mark.tf
@pytest.mark.parametrize("rule", ["f1", "precision:0.5"])
def test_two_stage_per_class_thresholds_equal_pycocotools(rule):
    cache, dataset = random_case(6, "two_stage", num_images=8, ties=True)
    spec = ParamSpec(nms_score_threshold=[0.2], nms_iou_threshold=[0.5], score_threshold=[0.1], iou_threshold=[0.5])
    result = sweep_module.sweep(cache, dataset, spec, per_class=rule)
    _check_per_class(result, cache, dataset, rule)


@pytest.mark.parametrize("text", ["f2", "precision", "precision:0", "recall:1.5", "recall:x", "precision:-0.1", ""])
def test_bad_per_class_rule(text):
    cache, dataset = random_case(1, "one_stage")
    with pytest.raises(ValueError, match="per-class rule|target must be in"):
        sweep_module.sweep(cache, dataset, ParamSpec(score_threshold=[0.1], iou_threshold=[0.5]), per_class=text)


# ------------------------------------------------------------------------------------------
# holdout


@pytest.mark.parametrize("seed", [0, 5])
def test_holdout_chooses_on_the_rest_and_scores_the_held_out_images_as_pycocotools(seed):
    cache, dataset = random_case(seed, "one_stage", num_images=12, max_rows=50)
    spec = ParamSpec(score_threshold=[0.05, 0.3, 0.6], iou_threshold=[0.3, 0.6])
    result = sweep_module.sweep(cache, dataset, spec, holdout=0.4, seed=seed, replicates=50)
    gt = load_ground_truth(dataset)
    chosen, held = split_images(cache.meta.image_ids, 0.4, seed, gt)
    on_rest = sweep_module.sweep_reference(subset_cache(cache, chosen), dataset, spec)
    assert outcome(result) == outcome(on_rest)
    held_ids = sorted(cache.meta.image_ids[i] for i in held)
    assert list(result.holdout.image_ids) == held_ids
    held_cache = subset_cache(cache, held)
    results = reference_detections(held_cache, dict(result.best_row.params), PostProcessing().checked(held_cache))
    coco_gt = coco_ground_truth(gt)
    expected = pycocotools_eval(coco_gt, load_results(coco_gt, results), held_ids).stats
    assert result.holdout.stats == tuple(float(v) for v in expected)
    low, high = result.holdout.ci95["AP"]
    assert low <= high and set(result.holdout.ci95) >= {"AP", "AP50", "objective"}
    payload = result.to_dict()["holdout"]
    assert set(payload) >= {"image_ids", "stats", "ci95"}


def test_holdout_with_swept_caps_scores_the_chosen_cap():
    cache, dataset = random_case(2, "one_stage", num_images=12, max_rows=50)
    spec = ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.5])
    result = sweep_module.sweep(cache, dataset, spec, holdout=0.4, seed=1, replicates=20, max_detections=[1, 3, 100],
                                tolerance=0.05)
    _, held = split_images(cache.meta.image_ids, 0.4, 1, load_ground_truth(dataset))
    params = dict(result.best_row.params)
    results = reference_detections(subset_cache(cache, held), params, PostProcessing().checked(cache))
    coco_gt = coco_ground_truth(load_ground_truth(dataset))
    held_ids = sorted(cache.meta.image_ids[i] for i in held)
    assert result.holdout.stats == tuple(float(v) for v in pycocotools_eval(coco_gt, load_results(coco_gt, results), held_ids).stats)


def test_subset_cache_keeps_each_image_as_it_was():
    cache, _ = random_case(3, "two_stage", num_images=6)
    positions = np.array([1, 3, 4])
    part = subset_cache(cache, positions)
    assert part.meta.image_ids == tuple(cache.meta.image_ids[i] for i in positions)
    for new, old in enumerate(positions):
        np.testing.assert_array_equal(part.row_boxes[part.image_rows(new)], cache.row_boxes[cache.image_rows(old)])
        entries, old_entries = part.image_entries(new), cache.image_entries(old)
        np.testing.assert_array_equal(part.entry_score[entries], cache.entry_score[old_entries])
        np.testing.assert_array_equal(part.entry_row[entries] - part.row_offsets[new], cache.entry_row[old_entries] - cache.row_offsets[old])


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.2, True])
def test_bad_holdout_fraction(fraction):
    cache, dataset = random_case(1, "one_stage", num_images=8)
    with pytest.raises(ValueError, match="holdout fraction must be in \\(0, 1\\)"):
        sweep_module.sweep(cache, dataset, ParamSpec(score_threshold=[0.1], iou_threshold=[0.5]), holdout=fraction)


def test_holdout_without_ground_truth_in_a_split():
    cache, dataset = random_case(1, "one_stage", num_images=8)
    dataset = dict(dataset, annotations=[a for a in dataset["annotations"] if a["image_id"] == cache.meta.image_ids[0]])
    with pytest.raises(ValueError, match="have no ground truth box"):
        for seed in range(20):  # some seed holds out only images without boxes
            sweep_module.sweep(cache, dataset, ParamSpec(score_threshold=[0.1], iou_threshold=[0.5]), holdout=0.5, seed=seed,
                               replicates=5)
