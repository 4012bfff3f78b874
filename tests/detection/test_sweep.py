"""The sweep's table equals the slow reference (NMS from scratch + pycocotools) everywhere."""

import ast
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detsearch.detection.sweep as sweep_module
from detsearch.detection import cocoeval
from detsearch.detection.cache import import_coco_detections
from detsearch.detection.pycoco import pycocotools_stats
from detsearch.detection.sweep import PostProcessing
from detsearch.executor import ProcessExecutor
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import outcome, random_case

# Two-stage tests are marked tf: the first stage runs the TensorFlow op. One-stage ones are NumPy only.

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_val2014_100"
REPO = Path(__file__).resolve().parents[2]


thresholds = st.lists(st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]), min_size=1, max_size=3, unique=True)
ious = st.lists(st.sampled_from([0.0, 0.3, 0.45, 0.5, 0.6, 0.75, 1.0]), min_size=1, max_size=3, unique=True)


# ------------------------------------------------------------------------------------------
# equality with the reference

# What each reference may import of the project (None: anything the module offers): the cache
# reader, the COCO JSON loader, the pycocotools wrapper, the other references, the types it
# returns and the settings it is given (ParamSpec, PostProcessing); no code of the fast path, so
# no bug can sit on both sides of a comparison.
REFERENCE_IMPORTS = {
    "detsearch/detection/reference_nms.py": {},
    "detsearch/detection/reference_nms_v2.py": {},
    "detsearch/detection/reference_nms_agnostic.py": {},
    "detsearch/detection/reference_nms_v1.py": {"detsearch.detection.reference_nms": {"kernel_iou"}},
    "detsearch/detection/sweep/_reference.py": {
        "detsearch.detection.cache": {"CacheKind", "DetectionCache"},
        "detsearch.detection.cocoeval": {"GroundTruth", "load_ground_truth"},
        "detsearch.detection.pycoco": None,
        "detsearch.detection.reference_nms": None,
        "detsearch.detection.reference_nms_v2": None,
        "detsearch.detection.reference_nms_agnostic": None,
        "detsearch.detection.reference_nms_v1": None,
        "detsearch.detection.sweep.result": {"DEFAULT_TOLERANCE", "SweepResult", "SweepRow"},
        "detsearch.detection.sweep.settings": {"NmsVersion", "PostProcessing", "ProposalNms"},
        "detsearch.params": {"ParamSpec"},
    },
}


@pytest.mark.parametrize("path", sorted(REFERENCE_IMPORTS))
def test_the_references_share_no_code_with_the_fast_path(path):
    allowed = REFERENCE_IMPORTS[path]
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.Import):
            imported = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            imported = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for module, name in imported:
            if module.split(".")[0] != "detsearch":
                continue
            assert module in allowed, f"{path} imports {module}"
            assert allowed[module] is None or name in allowed[module], f"{path} imports {name} from {module}"



@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), scores=thresholds, iou=ious, ties=st.booleans(), caps=st.sampled_from([(100, 100), (3, 7), (1, 2)]),
       objective=st.sampled_from([("map", None), ("ap50", None), ("f1", None), ("map_at_budget", 4.0)]),
       tolerance=st.sampled_from([0.0, 0.001, 0.02]))
def test_one_stage_sweep_equals_reference(seed, scores, iou, ties, caps, objective, tolerance):
    cache, dataset = random_case(seed, "one_stage", ties=ties)
    spec = ParamSpec(score_threshold=scores, iou_threshold=iou)
    post = PostProcessing(max_detections_per_class=caps[0], max_total_detections=caps[1])
    kwargs = dict(objective=objective[0], budget=objective[1], tolerance=tolerance)
    try:
        fast = sweep_module.sweep(cache, dataset, spec, post, **kwargs)
    except ValueError as error:  # every configuration over the budget
        assert "detections per image" in str(error)
        with pytest.raises(ValueError, match="budget"):
            sweep_module.sweep_reference(cache, dataset, spec, post, **kwargs)
        return
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, **kwargs))
    assert len(fast.table) == len(scores) * len(iou)


@pytest.mark.tf
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    nms_scores=st.lists(st.sampled_from([0.0, 0.2, 0.5]), min_size=1, max_size=2, unique=True),
    nms_ious=st.lists(st.sampled_from([0.3, 0.5, 0.7, 1.0]), min_size=1, max_size=2, unique=True),
    scores=thresholds,
    iou=ious,
    levels=st.booleans(),
    ties=st.booleans(),
    num_proposals=st.sampled_from([4, 12, 1000]),
)
def test_two_stage_sweep_equals_reference(seed, nms_scores, nms_ious, scores, iou, levels, ties, num_proposals):
    cache, dataset = random_case(seed, "two_stage", levels=levels, ties=ties, num_proposals=num_proposals)
    spec = ParamSpec(nms_score_threshold=nms_scores, nms_iou_threshold=nms_ious, score_threshold=scores, iou_threshold=iou)
    post = PostProcessing(max_detections_per_class=5, max_total_detections=8)
    fast = sweep_module.sweep(cache, dataset, spec, post)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post))


def test_crowded_images_equal_reference():
    # The random cases rarely keep more than 10 detections per image and category, where AR@10
    # and AR@100 part, nor more than 100 per image, where COCO's cap cuts: a row that took the
    # wrong recall, or the cap in the wrong place, would still agree there.
    cache, dataset = random_case(37, "one_stage", num_images=4, num_classes=1, max_rows=250, floor=0.01)
    spec = ParamSpec(score_threshold=[0.01, 0.5], iou_threshold=[0.5, 1.0])
    post = PostProcessing(max_detections_per_class=300, max_total_detections=300)
    fast = sweep_module.sweep(cache, dataset, spec, post)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post))
    assert all(row.stats[7] < row.stats[8] for row in fast.table)  # AR@10 < AR@100
    assert max(row.dets_per_image for row in fast.table) > 100



@pytest.mark.parametrize("max_eval", [300, 150, 40])
def test_raised_or_lowered_max_eval_detections_equal_reference(max_eval):
    # COCO's maxDets[2] (Model Garden's max_num_eval_detections): the crowded images above keep
    # more than 100 detections of one image and category, which count at 150 and 300.
    cache, dataset = random_case(37, "one_stage", num_images=4, num_classes=1, max_rows=250, floor=0.01)
    spec = ParamSpec(score_threshold=[0.01, 0.5], iou_threshold=[0.5, 1.0])
    post = PostProcessing(max_eval_detections=max_eval)
    fast = sweep_module.sweep(cache, dataset, spec, post, max_detections=[50, 300])
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, max_detections=[50, 300]))
    at_100 = sweep_module.sweep(cache, dataset, spec, PostProcessing(max_detections_per_class=300, max_total_detections=300))
    crowded = next(row for row in fast.table if row.params == {"score_threshold": 0.01, "iou_threshold": 1.0, "max_detections": 300})
    usual = next(row for row in at_100.table if row.params == {"score_threshold": 0.01, "iou_threshold": 1.0})
    assert (crowded.stats[8] > usual.stats[8]) == (max_eval > 100)


@pytest.mark.tf
def test_reference_nms_backend_agrees():
    cache, dataset = random_case(3, "two_stage", ties=True)
    spec = ParamSpec(nms_score_threshold=[0.0, 0.4], nms_iou_threshold=[0.5], score_threshold=[0.05, 0.4], iou_threshold=[0.5, 0.7])
    fast = sweep_module.sweep(cache, dataset, spec)
    slow = sweep_module.sweep(cache, dataset, spec, nms_backend="reference")
    assert outcome(fast) == outcome(slow)


@pytest.mark.parametrize("kind", ["one_stage", pytest.param("two_stage", marks=pytest.mark.tf)])
def test_worker_processes_give_the_same_table(kind):
    cache, dataset = random_case(29, kind, num_images=6)
    if kind == "one_stage":
        spec = ParamSpec(score_threshold=[0.05, 0.4], iou_threshold=[0.3, 0.5, 0.7])
    else:
        spec = ParamSpec(nms_score_threshold=[0.0, 0.4], nms_iou_threshold=[0.5, 0.7], score_threshold=[0.05, 0.4], iou_threshold=[0.4, 0.6])
    calls = []
    parallel = sweep_module.sweep(cache, dataset, spec, executor=ProcessExecutor(2),
                                  progress=lambda done, total: calls.append((done, total)))
    assert outcome(parallel) == outcome(sweep_module.sweep(cache, dataset, spec))
    assert calls[-1][0] == calls[-1][1]
    with pytest.raises(ValueError, match="coordinate strategy runs in this process"):
        sweep_module.sweep(cache, dataset, spec, executor=ProcessExecutor(2), strategy="coordinate")


@pytest.mark.tf
def test_first_stage_settings_without_levels():
    cache, dataset = random_case(5, "two_stage", levels=True, num_proposals=6)
    spec = ParamSpec(nms_score_threshold=[0.0], nms_iou_threshold=[0.5], score_threshold=[0.05], iou_threshold=[0.5])
    post = PostProcessing(per_level=False)
    fast = sweep_module.sweep(cache, dataset, spec, post)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post))


# ------------------------------------------------------------------------------------------
# properties of the results


def test_score_axis_is_a_prefix_and_map_never_rises_with_the_score_threshold():
    cache, dataset = random_case(7, "one_stage", num_images=8, max_rows=60)
    scores = [0.05, 0.2, 0.4, 0.6, 0.8]
    result = sweep_module.sweep(cache, dataset, ParamSpec(score_threshold=scores, iou_threshold=[0.5]))
    rows = sorted(result.table, key=lambda r: r.params["score_threshold"])
    maps = [r.stats[0] for r in rows]
    dets = [r.dets_per_image for r in rows]
    assert all(a >= b for a, b in zip(maps, maps[1:]))
    assert all(a >= b for a, b in zip(dets, dets[1:]))
    # each row equals an evaluation of NMS run at that threshold from scratch
    reference = sweep_module.sweep_reference(cache, dataset, ParamSpec(score_threshold=scores, iou_threshold=[0.5]))
    assert outcome(result) == outcome(reference)


def test_objectives():
    cache, dataset = random_case(11, "one_stage", num_images=8, max_rows=60)
    spec = ParamSpec(score_threshold=[0.05, 0.3, 0.6], iou_threshold=[0.3, 0.5, 0.7])
    by_map = sweep_module.sweep(cache, dataset, spec, tolerance=0)
    table = by_map.table
    assert by_map.best_row.stats[0] == max(r.stats[0] for r in table)
    ties = [r for r in table if r.stats[0] == by_map.best_row.stats[0]]
    assert by_map.best_row.dets_per_image == min(r.dets_per_image for r in ties)
    by_ap50 = sweep_module.sweep(cache, dataset, spec, objective="ap50", tolerance=0)
    assert by_ap50.best_row.stats[1] == max(r.stats[1] for r in table) and by_ap50.objective == "ap50"
    by_f1 = sweep_module.sweep(cache, dataset, spec, objective="f1", tolerance=0)
    assert by_f1.best_row.f1 == max(r.f1 for r in table)
    for row in table:
        assert 0.0 <= row.f1 <= row.f1_max <= 1.0
        assert row.f1_max_score is None or row.f1_max_score > row.params["score_threshold"]
        assert row.recall == row.stats[8] and row.ap50 == row.stats[1]
    budget = sorted(r.dets_per_image for r in table)[3]
    by_budget = sweep_module.sweep(cache, dataset, spec, objective="map_at_budget", budget=budget, tolerance=0)
    feasible = [r for r in table if r.dets_per_image <= budget]
    assert by_budget.best_row.dets_per_image <= budget
    assert by_budget.best_row.stats[0] == max(r.stats[0] for r in feasible)
    with pytest.raises(ValueError, match="no configuration has <= 0.1 detections per image"):
        sweep_module.sweep(cache, dataset, spec, objective="map_at_budget", budget=0.1)


@pytest.mark.tf
def test_coordinate_search_reuses_grid_rows():
    cache, dataset = random_case(13, "two_stage", num_images=6)
    spec = ParamSpec(
        nms_score_threshold=[0.0, 0.3, 0.6],
        nms_iou_threshold=[0.3, 0.5, 0.7],
        score_threshold=[0.05, 0.3],
        iou_threshold=[0.3, 0.5, 0.7],
    )
    grid = sweep_module.sweep(cache, dataset, spec)
    calls = []
    coordinate = sweep_module.sweep(cache, dataset, spec, strategy="coordinate", progress=lambda done, total: calls.append((done, total)))
    grid_rows = {tuple(r.params.values()): r.to_dict() for r in grid.table}
    assert 0 < len(coordinate.table) < len(grid.table)
    for row in coordinate.table:
        assert grid_rows[tuple(row.params.values())] == row.to_dict()
    assert coordinate.best_row.stats[0] == max(r.stats[0] for r in coordinate.table)
    assert coordinate.strategy == "coordinate" and calls and all(total == 27 for _, total in calls)


def test_progress_and_json():
    cache, dataset = random_case(17, "one_stage")
    calls = []
    result = sweep_module.sweep(
        cache, dataset, ParamSpec(score_threshold=[0.05, 0.5], iou_threshold=[0.4, 0.6]), progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(1, 2), (2, 2)]
    payload = json.loads(result.to_json())
    assert payload["best"] == result.best_params == result.best.to_dict()
    assert payload["objective"] == "map"
    assert len(payload["table"]) == 4 and len(payload["table"][0]["stats"]) == 12
    assert set(payload["table"][0]) == {"params", "objective", "stats", "recall", "ap50", "dets_per_image", "f1", "f1_max", "f1_max_score"}
    assert payload["stat_names"] == list(cocoeval.STAT_NAMES)


def test_fixture_cache_against_pycocotools():
    """The COCO demo detections as one-stage candidates: with no suppression (IoU threshold 1)
    and a zero score threshold every box survives, and the row equals pycocotools on the
    results file itself, stat by stat (the cache keeps the file's float64 boxes and scores)."""
    annotations = DATA / "instances_val2014_100.json"
    detections = DATA / "instances_val2014_fakebbox100_results.json"
    cache = import_coco_detections(detections, annotations)
    spec = ParamSpec(score_threshold=[0.0, 0.5], iou_threshold=[0.5, 1.0])
    fast = sweep_module.sweep(cache, annotations, spec)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, annotations, spec))
    everything = next(r for r in fast.table if r.params == {"score_threshold": 0.0, "iou_threshold": 1.0})
    assert everything.dets_per_image == 7.34
    assert everything.stats == pycocotools_stats(json.loads(annotations.read_text()), json.loads(detections.read_text()))
    assert round(everything.stats[0], 3) == 0.505


# ------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize(
    "spec, kwargs, error, message",
    [
        (ParamSpec(score_threshold=[0.01], iou_threshold=[0.5]), {}, ValueError, "below the cache's score floor"),
        (ParamSpec(score_threshold=[0.1]), {}, ValueError, "needs candidates for iou_threshold"),
        (ParamSpec(score_threshold=[0.1], iou_threshold=[0.5], nms_iou_threshold=[0.5]), {}, ValueError, "takes score_threshold, iou_threshold"),
        (ParamSpec(score_threshold=[0.1], iou_threshold=[0.5], learning_rate=0.1), {}, ValueError, "learning_rate"),
        (ParamSpec(score_threshold=[0.1], iou_threshold=[0.5]), {"objective": "recall"}, ValueError, "unknown objective"),
        (ParamSpec(score_threshold=[0.1], iou_threshold=[0.5]), {"objective": "map_at_budget"}, ValueError, "needs a finite budget"),
        (ParamSpec(score_threshold=[0.1], iou_threshold=[0.5]), {"strategy": "random"}, ValueError, "unknown strategy"),
        (ParamSpec(score_threshold=[0.1], iou_threshold=[0.5]), {"post_processing": PostProcessing(max_total_detections=0)},
         ValueError, "max_total_detections"),
        ({"score_threshold": [0.1]}, {}, TypeError, "ParamSpec"),
    ],
)
def test_bad_arguments(spec, kwargs, error, message):
    cache, dataset = random_case(19, "one_stage")
    with pytest.raises(error, match=message):
        sweep_module.sweep(cache, dataset, spec, **kwargs)


def test_only_a_detection_cache_is_swept():
    cache, dataset = random_case(19, "one_stage")
    spec = ParamSpec(score_threshold=[0.1], iou_threshold=[0.5])
    names = ("meta", "row_offsets", "row_boxes", "row_objectness", "row_level", "entry_offsets", "entry_row",
             "entry_class", "entry_score", "entry_boxes")
    look_alike = SimpleNamespace(**{name: getattr(cache, name) for name in names})
    for sweep in (sweep_module.sweep, sweep_module.sweep_reference):
        with pytest.raises(TypeError, match="cache must be a detsearch.detection.cache.DetectionCache, got SimpleNamespace"):
            sweep(look_alike, dataset, spec)


def test_unknown_images_and_categories():
    cache, dataset = random_case(23, "one_stage")
    dataset_without_image = dict(dataset, images=dataset["images"][1:], annotations=[a for a in dataset["annotations"] if a["image_id"] != dataset["images"][0]["id"]])
    spec = ParamSpec(score_threshold=[0.1], iou_threshold=[0.5])
    with pytest.raises(ValueError, match=f"image id {dataset['images'][0]['id']} is not in the ground truth"):
        sweep_module.sweep(cache, dataset_without_image, spec)
    first_category = dataset["categories"][0]["id"]
    dataset_without_category = dict(
        dataset,
        categories=dataset["categories"][1:],
        annotations=[a for a in dataset["annotations"] if a["category_id"] != first_category],
    )
    with pytest.raises(ValueError, match=f"category_id {first_category} is not in the ground truth"):
        sweep_module.sweep(cache, dataset_without_category, spec)
    assert math.isfinite(sweep_module.sweep(cache, dataset, spec).best_row.stats[0])


@pytest.mark.parametrize("kind", ["one_stage", pytest.param("two_stage", marks=pytest.mark.tf)])
def test_cache_without_entries_sweeps_to_zero_detections(kind):
    # a barely trained detector can record no score above the floor
    cache, dataset = random_case(3, kind, max_rows=1)
    assert len(cache.entry_score) == 0
    spec = ParamSpec(score_threshold=[0.05, 0.5], iou_threshold=[0.5])
    if kind == "two_stage":
        spec = spec.replace(nms_score_threshold=[0.0], nms_iou_threshold=[0.7])
    result = sweep_module.sweep(cache, dataset, spec)
    assert outcome(result) == outcome(sweep_module.sweep_reference(cache, dataset, spec))
    assert all(row.dets_per_image == 0 for row in result.table)
