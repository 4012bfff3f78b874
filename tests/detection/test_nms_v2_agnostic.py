"""Model Garden's class-agnostic v2 post-processing (``use_class_agnostic_nms: true``): the
line-by-line transcription against Model Garden's TensorFlow function, what TensorFlow's padded
NMS keeps (greedy at IoU >= the threshold, and where it is not), the sweep's per-image path
(`nms_v2.padded_nms`) against the transcription, and the sweep against its reference."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detsearch.detection.sweep as sweep_module
from detsearch.detection import nms_v2, reference_nms_agnostic
from detsearch.detection.sweep import PostProcessing
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import (IOU_LISTS, SCORE_LISTS, check_lists_in_one_call, clustered, outcome,
                                         random_case, table_dicts)


def greedy(boxes, threshold, cap):
    """Plain greedy NMS of boxes in score order, suppressing at IoU >= threshold (the
    transcription's float32 IoU); selects only boxes with a coordinate > 0 (one without still
    suppresses)."""
    kept = []
    for i in range(len(boxes)):
        if kept and (reference_nms_agnostic.bbox_overlap(boxes[kept][None], boxes[None, i:i + 1])[0, :, 0]
                     >= np.float32(threshold)).any():
            continue
        kept.append(i)
    return np.asarray([i for i in kept if (boxes[i] > 0).any()][:cap], np.int64)


# (score threshold, IoU threshold, max_num_detections): IoU thresholds below, at and above 0.5,
# 0 (the first tile), caps reaching past the first 512-box tile.
SETTINGS = [(0.05, 0.5, 100), (0.01, 0.3, 700), (0.2, 0.45, 100), (0.05, 0.6, 700), (0.0, 0.7, 100), (0.05, 0.1, 50),
            (0.05, 0.0, 600), (0.05, 1.0, 100)]


@pytest.mark.tf
@pytest.mark.parametrize("seed", range(4))
def test_the_transcription_is_model_gardens_class_agnostic_v2(seed):
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator

    function = detection_generator._generate_detections_v2_class_agnostic  # pylint: disable=protected-access
    graph = tf.function(function)
    rng = np.random.default_rng(seed)
    anchors = int(rng.integers(600, 1300))
    boxes, scores = clustered(seed, batch=3, anchors=anchors, classes=3, quantize=seed % 2 == 1,
                              per_class_boxes=seed >= 2)
    for score_threshold, iou_threshold, cap in [SETTINGS[k] for k in rng.choice(len(SETTINGS), 4, replace=False)]:
        top_k = int(rng.integers(300, anchors))  # fewer than the anchors
        ours = reference_nms_agnostic.generate_detections_v2_class_agnostic_reference(
            boxes, scores, pre_nms_top_k=top_k, pre_nms_score_threshold=score_threshold, nms_iou_threshold=iou_threshold,
            max_num_detections=cap)
        for run in (function, graph):
            theirs = [t.numpy() for t in run(tf.constant(boxes), tf.constant(scores), top_k, score_threshold,
                                             iou_threshold, cap)]
            for their, our in zip(theirs, ours[:4]):
                np.testing.assert_array_equal(their, our)
        valid = ours[3]
        assert (valid > 0).all()
        # the anchors: the outputs' scores and classes are those anchors' best
        for b in range(3):
            anchor = ours[4][b, :valid[b]]
            np.testing.assert_array_equal(ours[1][b, :valid[b]], scores[b, anchor].max(1))
            np.testing.assert_array_equal(ours[2][b, :valid[b]], scores[b, anchor].argmax(1))


def chain(n, offset=1.0):
    """``n`` boxes 3 px wide in a row, each ``offset`` px right of the previous: IoU 0.5 between
    neighbours (with ``offset`` 1), 0.2 two apart."""
    return np.asarray([[0, offset * i, 1, offset * i + 3] for i in range(n)], np.float32)


@pytest.mark.tf
def test_what_tensorflows_padded_nms_keeps():
    import tensorflow as tf

    def padded(boxes, iou, cap=10, score=0.0):
        boxes = np.asarray(boxes, np.float32)
        scores = np.linspace(1, 0.5, boxes.shape[1], dtype=np.float32)[None].repeat(len(boxes), 0)
        idx, valid = tf.image.non_max_suppression_padded(tf.constant(boxes), tf.constant(scores), cap, iou_threshold=iou,
                                                         score_threshold=score, pad_to_max_output_size=True,
                                                         sorted_input=True)
        ours = reference_nms_agnostic.non_max_suppression_padded_reference(boxes, scores, cap, iou, score)
        np.testing.assert_array_equal(idx.numpy(), ours[0])
        np.testing.assert_array_equal(valid.numpy(), ours[1])
        return [list(row[:n]) for row, n in zip(ours[0], ours[1])]

    # Below 0.5 it is greedy: box 1 suppressed by box 0 at IoU 0.4 (threshold 0.3) no longer
    # suppresses box 2, though they overlap by more than 0.5 (Model Garden's own tiled NMS keeps
    # only box 0 there).
    boxes = np.array([[0, 0, 10, 10], [0, 4.2, 10, 14.2], [0, 6.5, 10, 16.5]], np.float32)
    assert padded(boxes[None], 0.3) == [[0, 2]]
    np.testing.assert_array_equal(nms_v2.padded_nms(boxes, 0.3, 10), [0, 2])
    assert padded(boxes[None], 0.05) == [[0]]
    # IoU equal to the threshold suppresses (>=): 0.5 between neighbours, 0.2 two apart.
    assert padded(chain(3)[None], 0.5) == [[0, 2]] and padded(chain(3)[None], 0.2) == [[0]]
    assert padded(chain(3)[None], 0.51) == [[0, 1, 2]]
    # Threshold 0: nothing suppresses within the first 512 boxes, every later box is suppressed.
    many = np.tile(chain(1), (600, 1))
    assert padded(many[None], 0.0, cap=600) == [list(range(512))]
    np.testing.assert_array_equal(nms_v2.padded_nms(many, 0.0, 600), np.arange(512))
    # The loop stops when no image lost more than the threshold in an iteration: an IoU exactly at
    # the threshold, cleared alone, ends it before its fixed point (greedy keeps box 4 too) ...
    five = chain(5)
    assert padded(five[None], 0.5) == [[0, 2]]
    np.testing.assert_array_equal(greedy(five, 0.5, 10), [0, 2, 4])
    np.testing.assert_array_equal(nms_v2.padded_nms(five, 0.5, 10), [0, 2, 4])  # the sweep's path: the fixed point
    # ... unless another image of the batch keeps the loop going (here by a first iteration that
    # clears two such IoUs): then the same image gets greedy's answer.
    other = np.concatenate([chain(5), chain(5) + np.float32(20)])[[0, 5, 1, 6, 2, 7, 3, 8, 4, 9]]
    assert padded(np.stack([five, other[:5]]), 0.5) == [[0, 2], [0, 1, 4]]
    assert padded(np.stack([np.pad(five, [(0, 5), (0, 0)]), other]), 0.5) == [[0, 2, 4], [0, 1, 4, 5, 8, 9]]


def test_a_negative_threshold_is_refused():
    with pytest.raises(ValueError, match="< 0"):
        nms_v2.padded_nms(chain(3), -0.1, 10)
    with pytest.raises(ValueError, match="< 0"):
        reference_nms_agnostic.non_max_suppression_padded_reference(chain(3)[None], np.ones((1, 3), np.float32), 10, -0.1)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), score=st.sampled_from([0.0, 0.05, 0.3]),
       iou=st.sampled_from([0.0, 0.1, 0.3, 0.45, 0.5, 0.55, 0.7, 1.0]), cap=st.sampled_from([1, 5, 100, 700]))
def test_padded_nms_is_the_transcription(seed, score, iou, cap):
    rng = np.random.default_rng(seed)
    boxes, scores = clustered(seed, batch=3, anchors=int(rng.integers(1, 1400)), classes=1, quantize=seed % 2 == 0)
    boxes = boxes[:, :, 0]
    if seed % 3 == 0:
        boxes[:, ::7] -= 140  # boxes with no coordinate > 0 suppress (each other), are not selected
        boxes[:, 1::5] = boxes[:, ::5][:, :boxes[:, 1::5].shape[1]]  # exact duplicates
    order = np.argsort(-scores[:, :, 0], axis=1, kind="stable")
    scores = np.take_along_axis(scores[:, :, 0], order, 1)
    boxes = np.take_along_axis(boxes, order[..., None], 1)
    index, valid = reference_nms_agnostic.non_max_suppression_padded_reference(boxes, scores, cap, iou, score)
    passed = scores > np.float32(score)
    for b in range(3):
        ours = nms_v2.padded_nms(boxes[b][passed[b]], iou, cap)
        np.testing.assert_array_equal(ours, index[b, :valid[b]])
        if np.float32(iou) > 0:
            np.testing.assert_array_equal(ours, greedy(boxes[b][passed[b]], iou, cap))
        # a higher score threshold keeps the prefix; a smaller cap the first ones
        shorter = int(np.count_nonzero(scores[b] > np.float32(0.5)))
        np.testing.assert_array_equal(nms_v2.padded_nms(boxes[b][:shorter], iou, cap), ours[ours < shorter])
        np.testing.assert_array_equal(nms_v2.padded_nms(boxes[b][passed[b]], iou, min(cap, 3)), ours[:3])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("iou", [0.0, 0.3, 0.5, 0.7])
def test_many_lists_in_one_call_are_each_the_transcription(seed, iou):
    # The sweep's call: every image's list end to end; each list's selection is the
    # transcription's on that list.
    def transcription(boxes, scores, cap):
        if not len(boxes):
            return np.zeros(0, np.int64)
        index, valid = reference_nms_agnostic.non_max_suppression_padded_reference(boxes[None], scores[None], cap, iou, -1.0)
        return index[0, :valid[0]]

    check_lists_in_one_call(seed, transcription,
                            lambda boxes, offsets, cap: nms_v2.padded_nms_groups(boxes, offsets, iou, cap))


def test_padded_nms_on_an_empty_list():
    assert nms_v2.padded_nms(np.zeros((0, 4), np.float32), 0.5, 10).tolist() == []
    assert nms_v2.padded_nms(np.zeros((0, 4), np.float32), 0.0, 10).tolist() == []


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), scores=SCORE_LISTS, iou=IOU_LISTS, ties=st.booleans(),
       top_k=st.sampled_from([None, 1, 4, 20]), caps=st.sampled_from([None, [2, 100], [1, 3, 7]]))
def test_class_agnostic_v2_sweep_equals_reference(seed, scores, iou, ties, top_k, caps):
    cache, dataset = random_case(seed, "one_stage", ties=ties, max_rows=60)
    spec = ParamSpec(score_threshold=scores, iou_threshold=iou)
    post = PostProcessing(nms_version="v2", pre_nms_top_k=top_k, class_agnostic=True)
    fast = sweep_module.sweep(cache, dataset, spec, post, max_detections=caps)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, max_detections=caps))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), iou=IOU_LISTS, ties=st.booleans(), kind=st.sampled_from(["one_stage", "two_stage"]))
def test_the_class_agnostic_axis_with_v2_equals_reference(seed, iou, ties, kind):
    # Both values of the axis in one sweep, with the max_detections axis; two-stage with Model
    # Garden's tiled first stage (no TensorFlow).
    cache, dataset = random_case(seed, kind, ties=ties, max_rows=40)
    spec = ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=iou)
    post = PostProcessing(nms_version="v2")
    if kind == "two_stage":
        spec = ParamSpec(nms_score_threshold=[0.0, 0.3], nms_iou_threshold=[0.5], score_threshold=[0.05, 0.3],
                         iou_threshold=iou[:1])  # the reference is slow
        post = PostProcessing(nms_version="v2", proposal_nms="tiled")
    axes = dict(max_detections=[2, 100], class_agnostic=[False, True])
    fast = sweep_module.sweep(cache, dataset, spec, post, **axes)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, **axes))


@pytest.mark.parametrize("cap", [5, 100])
def test_long_candidate_lists_equal_reference(cap):
    # Hundreds of candidates per image: padded_nms walks chunks until the cap is reached.
    cache, dataset = random_case(11, "one_stage", num_images=3, num_classes=2, max_rows=400, floor=0.01)
    spec = ParamSpec(score_threshold=[0.01, 0.3], iou_threshold=[0.0, 0.3, 0.5, 0.7])
    post = PostProcessing(nms_version="v2", class_agnostic=True)
    fast = sweep_module.sweep(cache, dataset, spec, post, max_detections=cap)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, max_detections=cap))


def test_class_agnostic_v2_differs_from_class_aware_v2():
    cache, dataset = random_case(7, "one_stage", max_rows=60, num_images=8)
    spec = ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.3, 0.5, 0.7])
    agnostic = sweep_module.sweep(cache, dataset, spec, PostProcessing(nms_version="v2", class_agnostic=True))
    aware = sweep_module.sweep(cache, dataset, spec, PostProcessing(nms_version="v2"))
    assert table_dicts(agnostic) != table_dicts(aware)


def test_class_agnostic_v2_keeps_one_cap():
    cache, dataset = random_case(1, "one_stage")
    with pytest.raises(ValueError, match="one max_num_detections"):
        sweep_module.sweep(cache, dataset, ParamSpec(score_threshold=[0.05], iou_threshold=[0.5]),
                           PostProcessing(nms_version="v2", class_agnostic=True, max_detections_per_class=10,
                                          max_total_detections=100))


@pytest.mark.tf
def test_an_experiment_with_use_class_agnostic_nms_is_swept_class_agnostic():
    from detsearch.models.experiment import Experiment, check_supported, load_config

    runnable = "task.validation_data.input_path=/records,runtime.mixed_precision_dtype=float32"
    override = runnable + ",task.model.detection_generator.use_class_agnostic_nms=true"
    config = load_config("retinanet_resnetfpn_coco", params_override=override)
    kind = check_supported(config)
    post = Experiment("retinanet_resnetfpn_coco", config, kind, "").post_processing
    assert (post.nms_version, post.class_agnostic, post.pre_nms_top_k) == ("v2", True, 5000)
    default = load_config("retinanet_resnetfpn_coco", params_override=runnable)
    assert not Experiment("retinanet_resnetfpn_coco", default, kind, "").post_processing.class_agnostic
    batched = load_config("retinanet_resnetfpn_coco",
                          params_override=override + ",task.model.detection_generator.nms_version=batched")
    with pytest.raises(ValueError, match="use_class_agnostic_nms true with nms_version 'batched': Model Garden runs "
                                         "class-agnostic NMS with v2 only"):
        check_supported(batched)
