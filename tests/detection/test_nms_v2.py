"""Model Garden's v2 post-processing: the line-by-line port against Model Garden's TensorFlow
function, the sweep's per-image path against the port, and the sweep against the reference."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detsearch.detection.sweep as sweep_module
from detsearch.detection import nms_v2, reference_nms_v2
from detsearch.detection.sweep import PostProcessing
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import (IOU_LISTS, SCORE_LISTS, check_lists_in_one_call, clustered, outcome,
                                         random_case, table_dicts)


@pytest.mark.tf
@pytest.mark.parametrize("seed", range(4))
def test_the_port_is_model_gardens_v2(seed):
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator

    rng = np.random.default_rng(seed)
    boxes, scores = clustered(seed, batch=3, anchors=int(rng.integers(600, 1300)), classes=3, quantize=seed % 2 == 1)
    graph = tf.function(detection_generator._generate_detections_v2_class_aware)  # pylint: disable=protected-access
    for score_threshold, iou_threshold in [(0.05, 0.5), (0.01, 0.3), (0.2, 0.45), (0.05, 0.6), (0.0, 0.7)]:
        top_k = int(rng.integers(300, 1300))
        ours = reference_nms_v2.generate_detections_v2_reference(boxes, scores, pre_nms_top_k=top_k,
                                                       pre_nms_score_threshold=score_threshold,
                                                       nms_iou_threshold=iou_threshold, max_num_detections=100)
        for function in (detection_generator._generate_detections_v2_class_aware, graph):  # pylint: disable=protected-access
            theirs = [t.numpy() for t in function(tf.constant(boxes), tf.constant(scores), top_k, score_threshold,
                                                  iou_threshold, 100)]
            np.testing.assert_array_equal(theirs[0], ours[0])
            np.testing.assert_array_equal(theirs[1], ours[1])
            valid = ours[1] > 0
            np.testing.assert_array_equal(theirs[2][valid], ours[2][valid])
            np.testing.assert_array_equal(theirs[3], ours[3])


def greedy(boxes, threshold, cap):
    """Greedy NMS of boxes in score order, suppressing at IoU >= threshold with Model Garden's
    IoU arithmetic; as Model Garden's, it selects only boxes with a coordinate > 0 (a box without
    one still suppresses as a kept box would: padding, whose IoU is -1, never does)."""
    kept = []
    for i in range(len(boxes)):
        if kept and (reference_nms_v2.bbox_overlap(boxes[kept][None], boxes[None, i:i + 1])[0, :, 0] >= np.float32(threshold)).any():
            continue
        kept.append(i)
    return np.asarray([i for i in kept if (boxes[i] > 0).any()][:cap], np.int64)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), score=st.sampled_from([0.0, 0.05, 0.3]),
       iou=st.sampled_from([0.0, 0.3, 0.4, 0.5, 0.55, 0.7, 1.0]), cap=st.sampled_from([5, 100, 700]))
def test_tiled_nms_on_real_boxes_is_the_port(seed, score, iou, cap):
    rng = np.random.default_rng(seed)
    boxes, scores = clustered(seed, batch=3, anchors=int(rng.integers(1, 1400)), classes=1)
    boxes = boxes[:, :, 0]
    if seed % 3 == 0:
        boxes[:, ::7] = boxes[:, ::7] * 0 - rng.uniform(0, 3)  # boxes with no coordinate > 0 suppress, are not selected
        boxes[:, 1::5] = boxes[:, ::5][:, :boxes[:, 1::5].shape[1]]  # exact duplicates
    order = np.argsort(-scores[:, :, 0], axis=1, kind="stable")
    scores = np.take_along_axis(scores[:, :, 0], order, 1)
    boxes = np.take_along_axis(boxes, order[..., None], 1)
    passed = scores > np.float32(score)
    _, _, positions = reference_nms_v2.sorted_nms_padded_reference(np.where(passed, scores, -1), boxes * passed[..., None], cap, iou)
    for b in range(3):
        ours = nms_v2.tiled_nms(boxes[b][passed[b]], iou, cap)
        np.testing.assert_array_equal(ours, positions[b][positions[b] >= 0])
        alone = reference_nms_v2.sorted_nms_padded_reference(np.where(passed, scores, -1)[b:b + 1], (boxes * passed[..., None])[b:b + 1], cap, iou)[2]
        np.testing.assert_array_equal(alone, positions[b:b + 1])  # the batch does not matter
        if np.float32(iou) > 0.5:
            np.testing.assert_array_equal(ours, greedy(boxes[b][passed[b]], iou, cap))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("iou", [0.0, 0.3, 0.5, 0.7])
def test_many_lists_in_one_call_are_each_the_port(seed, iou):
    # The sweep's call: the lists of every (image, class) end to end; each list's selection is
    # the port's on that list.
    def tweak(boxes):
        if len(boxes) and seed == 1:
            boxes[1::5] = boxes[::5][:len(boxes[1::5])]  # exact duplicates
        if seed == 2:
            boxes /= np.float32(1280)  # normalized coordinates, small boxes: the IoU's 1e-8 counts

    def port(boxes, scores, cap):
        _, _, positions = reference_nms_v2.sorted_nms_padded_reference(scores[None], boxes[None], cap, iou)
        return positions[0][positions[0] >= 0]

    check_lists_in_one_call(seed, port, lambda boxes, offsets, cap: nms_v2.tiled_nms_groups(boxes, offsets, iou, cap),
                            tweak)


@pytest.mark.parametrize("seed", [0, 1])
def test_tiled_nms_at_ious_exactly_at_the_threshold(seed):
    # Boxes on a coarse integer grid over two tiles: duplicates (IoU 1) and many pairs whose IoU
    # (Model Garden's arithmetic) is exactly a threshold tried, within a tile and across tiles.
    rng = np.random.default_rng(seed)
    corner = rng.integers(1, 30, (700, 2))
    boxes = np.concatenate([corner, corner + rng.integers(1, 5, (700, 2))], 1).astype(np.float32)
    scores = np.linspace(1, 0.01, len(boxes)).astype(np.float32)
    iou = reference_nms_v2.bbox_overlap(boxes[None], boxes[None])[0]
    present = np.unique(iou[np.triu_indices(len(boxes), 1)])
    for threshold in [0.5, 1.0, *rng.choice(present[(present > 0.05) & (present < 1)], 4, replace=False)]:
        assert (iou[np.triu_indices(len(boxes), 1)] == np.float32(threshold)).any()
        _, _, positions = reference_nms_v2.sorted_nms_padded_reference(scores[None], boxes[None], 1000, threshold)
        np.testing.assert_array_equal(nms_v2.tiled_nms(boxes, threshold, 1000), positions[0][positions[0] >= 0])


def test_below_half_the_tiled_nms_is_not_greedy():
    # Box 1 is suppressed by box 0 at IoU 0.4 (threshold 0.3) but overlaps box 2 by more than
    # 0.5: Model Garden's loop still lets it suppress box 2; greedy NMS keeps box 2.
    boxes = np.array([[0, 0, 10, 10], [0, 4.2, 10, 14.2], [0, 6.5, 10, 16.5]], np.float32)
    iou = reference_nms_v2.bbox_overlap(boxes[None], boxes[None])[0]
    assert 0.3 <= iou[0, 1] <= 0.5 and iou[1, 2] > 0.5 and iou[0, 2] < 0.3
    np.testing.assert_array_equal(nms_v2.tiled_nms(boxes, 0.3, 10), [0])
    np.testing.assert_array_equal(greedy(boxes, 0.3, 10), [0, 2])
    _, _, positions = reference_nms_v2.sorted_nms_padded_reference(np.array([[0.9, 0.8, 0.7]], np.float32), boxes[None], 10, 0.3)
    np.testing.assert_array_equal(positions[0][positions[0] >= 0], [0])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), scores=SCORE_LISTS, iou=IOU_LISTS, ties=st.booleans(),
       cap_top_k=st.sampled_from([(100, None), (3, 5), (1, 2), (7, 1)]))
def test_v2_sweep_equals_reference(seed, scores, iou, ties, cap_top_k):
    cache, dataset = random_case(seed, "one_stage", ties=ties, max_rows=60)
    spec = ParamSpec(score_threshold=scores, iou_threshold=iou)
    cap, top_k = cap_top_k
    post = PostProcessing(nms_version="v2", pre_nms_top_k=top_k, max_detections_per_class=cap, max_total_detections=cap)
    fast = sweep_module.sweep(cache, dataset, spec, post)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), nms_scores=st.lists(st.sampled_from([0.0, 0.2, 0.5]), min_size=1, max_size=2, unique=True),
       nms_ious=st.lists(st.sampled_from([0.3, 0.5, 0.7, 1.0]), min_size=1, max_size=2, unique=True), scores=SCORE_LISTS,
       iou=IOU_LISTS, ties=st.booleans(), num_proposals=st.sampled_from([4, 12, 1000]), proposal_top_k=st.sampled_from([3, 1000]),
       second_stage=st.sampled_from(["v2", "batched"]))
def test_model_gardens_default_two_stage_sweep_equals_reference(seed, nms_scores, nms_ious, scores, iou, ties, num_proposals,
                                                                 proposal_top_k, second_stage):
    # roi_generator.use_batched_nms false (tiled first stage) with either second stage: no TensorFlow.
    cache, dataset = random_case(seed, "two_stage", ties=ties, num_proposals=num_proposals, max_rows=60)
    spec = ParamSpec(nms_score_threshold=nms_scores, nms_iou_threshold=nms_ious, score_threshold=scores, iou_threshold=iou)
    post = PostProcessing(nms_version=second_stage, proposal_nms="tiled", proposal_top_k=proposal_top_k,
                          max_detections_per_class=5, max_total_detections=5 if second_stage == "v2" else 8)
    fast = sweep_module.sweep(cache, dataset, spec, post)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post))


@pytest.mark.tf
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), iou=IOU_LISTS, ties=st.booleans())
def test_batched_first_stage_with_a_v2_second_stage_equals_reference(seed, iou, ties):
    cache, dataset = random_case(seed, "two_stage", ties=ties, num_proposals=12, max_rows=60)
    spec = ParamSpec(nms_score_threshold=[0.0, 0.2], nms_iou_threshold=[0.5, 0.7], score_threshold=[0.05, 0.3], iou_threshold=iou)
    post = PostProcessing(nms_version="v2")
    fast = sweep_module.sweep(cache, dataset, spec, post, max_detections=[3, 100])
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, max_detections=[3, 100]))


@pytest.mark.parametrize("cap", [5, 40, 100])
def test_long_candidate_lists_equal_reference(cap):
    # Hundreds of candidates per class and image: the sweep extends a class's list only as far as
    # the image's output can reach; the reference runs all of it.
    cache, dataset = random_case(11, "one_stage", num_images=3, num_classes=2, max_rows=400, floor=0.01)
    spec = ParamSpec(score_threshold=[0.01, 0.3], iou_threshold=[0.3, 0.5, 0.7])
    post = PostProcessing(nms_version="v2")
    fast = sweep_module.sweep(cache, dataset, spec, post, max_detections=cap)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, max_detections=cap))


def test_v2_differs_from_batched_and_sweeps_caps():
    cache, dataset = random_case(7, "one_stage", max_rows=60, num_images=8)
    spec = ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.3, 0.5, 0.7])
    v2 = sweep_module.sweep(cache, dataset, spec, PostProcessing(nms_version="v2"), max_detections=[2, 100])
    batched = sweep_module.sweep(cache, dataset, spec, max_detections=[2, 100])
    assert table_dicts(v2) != table_dicts(batched)
    assert outcome(v2) == outcome(sweep_module.sweep_reference(cache, dataset, spec, PostProcessing(nms_version="v2"),
                                                               max_detections=[2, 100]))


@pytest.mark.parametrize("post, axes, message", [
    (dict(nms_version="v3"), {}, "nms_version must be one of batched, v2"),
    (dict(pre_nms_top_k=10), {}, "pre_nms_top_k is a setting of nms_version v1 and v2"),
    (dict(nms_version="v2", pre_nms_top_k=0), {}, "pre_nms_top_k must be an integer >= 1"),
    (dict(nms_version="v2", class_agnostic=True), dict(class_agnostic=[False, True]), "do not set it in the post-processing"),
    (dict(nms_version="v2", max_detections_per_class=10, max_total_detections=100), {}, "one max_num_detections"),
    (dict(proposal_nms="tiled"), {}, "proposal_nms is a setting of two-stage sweeps"),
    (dict(proposal_top_k=10), {}, "proposal_top_k is a setting of proposal_nms tiled"),
    (dict(proposal_nms="v9"), {}, "proposal_nms must be one of batched, tiled"),
    (dict(num_proposals=10), {}, "num_proposals is a setting of two-stage sweeps"),
])
def test_bad_v2_settings(post, axes, message):
    cache, dataset = random_case(1, "one_stage")
    with pytest.raises(ValueError, match=message):
        sweep_module.sweep(cache, dataset, ParamSpec(score_threshold=[0.05], iou_threshold=[0.5]), PostProcessing(**post),
                           **axes)
