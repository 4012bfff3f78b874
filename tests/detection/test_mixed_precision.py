"""Scores in a reduced dtype (Model Garden's mixed precision, ``runtime.mixed_precision_dtype``):
the threshold as TensorFlow makes it that dtype, and the sweep against its reference where v2
filters scores in that dtype (class-aware) and where its NMS compares in float32 (class-agnostic
v2, v1), and on a two-stage cache whose tiled first stage filters the objectness in that dtype."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detsearch.detection.sweep as sweep_module
from detsearch.detection.cache import DetectionCache
from detsearch.detection.sweep import PostProcessing
from detsearch.detection.sweep.cuts import reduced_threshold
from detsearch.errors import BadSetting
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import outcome, random_case


def as_dtype(scores, dtype):
    """float32 scores rounded to ``dtype``'s values (as a model computing in it gives them), in
    float32."""
    scores = np.asarray(scores, np.float32)
    if dtype == "float16":
        return scores.astype(np.float16).astype(np.float32)
    bits = scores.view(np.uint32).astype(np.uint64)  # bfloat16: the top 16 bits, to nearest, ties to even
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def reduced_case(seed, dtype, ties, kind="one_stage"):
    """`random_case` with its scores (two-stage: and objectness) rounded to ``dtype``."""
    cache, dataset = random_case(seed, kind, ties=ties, max_rows=60)
    arrays = cache.arrays()
    arrays["entry_score"] = as_dtype(arrays["entry_score"], dtype)
    if kind == "two_stage":
        arrays["row_objectness"] = as_dtype(arrays["row_objectness"], dtype)
    # A score at the floor can round below it (float16's 0.05 is 0.0499877...): so does the floor.
    floor = min(cache.meta.score_floor, float(as_dtype([cache.meta.score_floor], dtype)[0]))
    return DetectionCache.from_arrays(dataclasses.replace(cache.meta, score_floor=floor), **arrays), dataset


@pytest.mark.tf
def test_the_threshold_is_tensorflows_conversion():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    values = np.r_[rng.uniform(0, 1, 2000), 0.05, 0.3, 1 + 2 ** -8 + 2 ** -40, 1 + 2 ** -11 + 2 ** -40]
    for dtype, tf_dtype in (("bfloat16", tf.bfloat16), ("float16", tf.float16)):
        theirs = tf.cast(tf.stack([tf.constant(float(v), tf_dtype) for v in values]), tf.float64).numpy()
        assert [reduced_threshold(float(v), dtype) for v in values] == theirs.tolist()


@pytest.mark.tf
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_model_gardens_filter_compares_in_the_scores_dtype(dtype):
    # box_ops.filter_boxes_by_scores, as v2's class-aware path calls it on reduced scores: a score
    # keeps exactly when it is above the reduced threshold.
    import tensorflow as tf
    from official.vision.ops import box_ops

    grid = np.arange(0.04, 0.06, 1e-5)
    scores = tf.cast(tf.constant(grid, tf.float32), getattr(tf, dtype))
    for threshold in (0.05, 0.0501, 0.04995):
        _, kept = box_ops.filter_boxes_by_scores(tf.zeros([len(grid), 4], scores.dtype), scores, threshold)
        values = tf.cast(scores, tf.float64).numpy()
        assert ((tf.cast(kept, tf.float64).numpy() > -1) == (values > reduced_threshold(threshold, dtype))).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), dtype=st.sampled_from(["bfloat16", "float16"]), ties=st.booleans(),
       version=st.sampled_from([("v2", False), ("v2", True), ("v1", False)]),
       scores=st.lists(st.sampled_from([0.05, 0.0501, 0.1, 0.3, 0.302]), min_size=1, max_size=3, unique=True))
def test_reduced_scores_sweep_equals_reference(seed, dtype, ties, version, scores):
    cache, dataset = reduced_case(seed, dtype, ties)
    spec = ParamSpec(score_threshold=scores, iou_threshold=[0.4, 0.6])
    post = PostProcessing(nms_version=version[0], class_agnostic=version[1], score_dtype=dtype)
    fast = sweep_module.sweep(cache, dataset, spec, post, max_detections=[3, 100])
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, max_detections=[3, 100]))
    threshold = fast.best_params["score_threshold"]
    if version == ("v2", False):  # written as the dtype compares it: Model Garden rounds it to itself
        assert threshold == reduced_threshold(fast.best_row.params["score_threshold"], dtype)
        assert reduced_threshold(threshold, dtype) == threshold


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), dtype=st.sampled_from(["bfloat16", "float16"]), ties=st.booleans(),
       nms_scores=st.lists(st.sampled_from([0.0, 0.2, 0.2002, 0.5]), min_size=1, max_size=2, unique=True),
       scores=st.lists(st.sampled_from([0.05, 0.0501, 0.3]), min_size=1, max_size=2, unique=True))
def test_reduced_two_stage_sweep_equals_reference(seed, dtype, ties, nms_scores, scores):
    # A Faster R-CNN under mixed precision: the tiled first stage filters the objectness and v2
    # the second stage's scores at the thresholds as the reduced dtype.
    cache, dataset = reduced_case(seed, dtype, ties, "two_stage")
    spec = ParamSpec(nms_score_threshold=nms_scores, nms_iou_threshold=[0.5, 0.7], score_threshold=scores,
                     iou_threshold=[0.5])
    post = PostProcessing(nms_version="v2", proposal_nms="tiled", max_detections_per_class=5, max_total_detections=5,
                          score_dtype=dtype)
    fast = sweep_module.sweep(cache, dataset, spec, post)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post))
    chosen = fast.best_params["nms_score_threshold"]
    assert chosen == reduced_threshold(fast.best_row.params["nms_score_threshold"], dtype)  # as Model Garden compares it


def test_the_reduced_threshold_decides_which_proposals_pass():
    # bfloat16's 0.2 is 0.2001953125: objectness of that value passes a float32 first stage at
    # 0.2 and not Model Garden's bfloat16 filter, and so neither do its second-stage entries.
    cache, dataset = reduced_case(3, "bfloat16", False, "two_stage")
    arrays = cache.arrays()
    arrays["row_objectness"] = arrays["row_objectness"].copy()
    arrays["row_objectness"][::3] = np.float32(reduced_threshold(0.2, "bfloat16"))
    cache = DetectionCache.from_arrays(cache.meta, **arrays)
    spec = ParamSpec(nms_score_threshold=[0.2], nms_iou_threshold=[0.7], score_threshold=[0.05], iou_threshold=[0.5])
    wide, narrow = (sweep_module.sweep(cache, dataset, spec, PostProcessing(nms_version="v2", proposal_nms="tiled",
                                                                            score_dtype=dtype))
                    for dtype in ("float32", "bfloat16"))
    assert narrow.best_row.dets_per_image < wide.best_row.dets_per_image
    post = PostProcessing(nms_version="v2", proposal_nms="tiled", score_dtype="bfloat16")
    assert outcome(narrow) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post))


def test_the_reduced_threshold_decides_which_scores_pass():
    # 0.05 is 0.050048828125 in bfloat16: a score of 0.0500488... is kept at float32 but dropped
    # by v2's bfloat16 filter.
    cache, dataset = reduced_case(3, "bfloat16", False)
    arrays = cache.arrays()
    arrays["entry_score"] = arrays["entry_score"].copy()
    arrays["entry_score"][:5] = np.float32(reduced_threshold(0.05, "bfloat16"))
    cache = DetectionCache.from_arrays(cache.meta, **arrays)
    spec = ParamSpec(score_threshold=[0.05], iou_threshold=[0.5])
    wide, narrow = (sweep_module.sweep(cache, dataset, spec, PostProcessing(nms_version="v2", score_dtype=dtype))
                    for dtype in ("float32", "bfloat16"))
    assert narrow.best_row.dets_per_image < wide.best_row.dets_per_image
    assert outcome(narrow) == outcome(sweep_module.sweep_reference(cache, dataset, spec,
                                                                   PostProcessing(nms_version="v2", score_dtype="bfloat16")))


@pytest.mark.parametrize("settings, message", [
    (dict(score_dtype="bfloat16"), "nms_version batched: Model Garden's combined_non_max_suppression takes float32"),
    (dict(nms_version="v2", score_dtype="int8"), "score_dtype must be float32, bfloat16 or float16"),
])
def test_bad_reduced_settings(settings, message):
    cache, _ = random_case(1, "one_stage")
    with pytest.raises(BadSetting, match=message):
        PostProcessing(**settings).checked(cache)
    two, _ = random_case(1, "two_stage", num_proposals=12)
    with pytest.raises(BadSetting, match="proposal_nms batched: Model Garden's first stage then runs "
                                         "combined_non_max_suppression"):
        PostProcessing(nms_version="v2", score_dtype="bfloat16").checked(two)
