"""Model Garden's v1 post-processing (``nms_version: v1``, hard and soft NMS): the line-by-line
port against Model Garden's TensorFlow function, the per-image fast path against the port, and
the two properties a sweep relies on (score thresholds, caps)."""

import ctypes
import ctypes.util

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detsearch.detection import nms_v1, nms_v2, reference_nms, reference_nms_v1

SIGMAS = [None, 0.0, 0.3, 0.5]

# The chain on which TensorFlow's padded NMS stops its loop early: s suppresses r (IoU 0.75),
# r overlaps j at IoU exactly 0.5 (its only entry), j overlaps m at 0.5, m overlaps q at 0.75;
# z, a duplicate of r scored last, adds entries to r's row. All IoUs are dyadic: TensorFlow's
# float32 sums are exact.
CHAIN = np.array([[0, a, 8, b] for a, b in [(0, 7), (1, 8), (4, 9), (6, 10), (7, 10), (1, 8)]], np.float32)
CHAIN_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], np.float32)


def clustered(seed, batch, anchors, classes, quantize=False, per_class=False, flip=False):
    """Boxes ``[batch, anchors, 1 or classes, 4]`` crowding around a few centres (many IoUs near
    any threshold), clipped to a 128 px image, and squared uniform scores (rounded to 1/50 with
    ``quantize``: ties). ``flip``: random boxes given as ``[y2, x2, y1, x1]``."""
    rng = np.random.default_rng(seed)
    q = classes if per_class else 1
    centres = rng.uniform(10, 120, (batch, 8, 2))
    picked = rng.integers(0, 8, (batch, anchors * q))
    centre = np.take_along_axis(centres, picked[..., None], 1) + rng.normal(0, 4, (batch, anchors * q, 2))
    half = rng.uniform(4, 15, (batch, anchors * q, 2))
    boxes = np.concatenate([centre - half, centre + half], -1).clip(0, 128).astype(np.float32)
    if flip:
        flipped = rng.random((batch, anchors * q)) < 0.3
        boxes[flipped] = boxes[flipped][:, [2, 3, 0, 1]]
    scores = rng.uniform(0, 1, (batch, anchors, classes)) ** 2
    if quantize:
        scores = np.round(scores * 50) / 50
    return boxes.reshape(batch, anchors, q, 4), scores.astype(np.float32)


def grid_boxes(seed, n):
    """Boxes on a coarse integer grid: duplicates and many IoUs exactly at common thresholds."""
    rng = np.random.default_rng(seed)
    corner = rng.integers(1, 30, (n, 2))
    return np.concatenate([corner, corner + rng.integers(1, 5, (n, 2))], 1).astype(np.float32)


def assert_same_output(theirs, ours):
    for name, a, b in zip(("boxes", "scores", "classes", "valid"), theirs, ours):
        np.testing.assert_array_equal(a, b, err_msg=name)


def run_model_garden(function, boxes, scores, top_k, score_threshold, iou_threshold, cap, sigma):
    import tensorflow as tf

    out = function(tf.constant(boxes), tf.constant(scores), None, top_k, score_threshold, iou_threshold, cap, sigma)
    return [t.numpy() for t in out[:4]]


# ---------------------------------------------------------------------------------------------
# (a) the port is Model Garden's function


@pytest.mark.tf
@pytest.mark.parametrize("sigma", SIGMAS, ids=str)
@pytest.mark.parametrize("seed", range(3))
def test_the_port_is_model_gardens_v1(seed, sigma):
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator

    v1 = detection_generator._generate_detections_v1  # pylint: disable=protected-access
    rng = np.random.default_rng(seed)
    anchors = int(rng.integers(250, 400))
    boxes, scores = clustered(seed, batch=2, anchors=anchors, classes=2, quantize=seed != 1, per_class=seed == 2,
                              flip=seed == 1 and sigma is not None)
    # (score threshold, IoU threshold below / at / above 0.5, cap, pre_nms_top_k below / above the anchors)
    configs = [(0.05, 0.5, 50, anchors - 40), (0.01, 0.3, 120, anchors + 10), (0.3, 0.7, 30, 150), (0.0, 0.45, 8, 60)]
    for i, (score_threshold, iou_threshold, cap, top_k) in enumerate(configs):
        ours = reference_nms_v1.generate_detections_v1_reference(
            boxes, scores, pre_nms_top_k=top_k, pre_nms_score_threshold=score_threshold,
            nms_iou_threshold=iou_threshold, max_num_detections=cap, soft_nms_sigma=sigma)
        assert_same_output(run_model_garden(v1, boxes, scores, top_k, score_threshold, iou_threshold, cap, sigma), ours)
        if i == seed:  # one configuration per test under tf.function (each one traces anew)
            graph = tf.function(v1)
            theirs = run_model_garden(graph, boxes, scores, top_k, score_threshold, iou_threshold, cap, sigma)
            assert_same_output(theirs, ours)


@pytest.mark.tf
@pytest.mark.parametrize("sigma", SIGMAS, ids=str)
def test_the_port_at_ious_exactly_at_the_threshold(sigma):
    # Integer-grid boxes (IoUs exactly 0.5, 1/3, 1, ...) with tied scores: >= (padded) against >
    # (kernel), ties in both queues.
    from official.vision.modeling.layers import detection_generator

    v1 = detection_generator._generate_detections_v1  # pylint: disable=protected-access
    rng = np.random.default_rng(7)
    boxes = np.stack([grid_boxes(7, 300), grid_boxes(8, 300)])[:, :, None]
    scores = (np.round(rng.uniform(0, 1, (2, 300, 2)) * 20) / 20).astype(np.float32)
    for iou_threshold in (0.5, 1 / 3, 1.0):
        ours = reference_nms_v1.generate_detections_v1_reference(
            boxes, scores, pre_nms_top_k=250, pre_nms_score_threshold=0.05, nms_iou_threshold=iou_threshold,
            max_num_detections=60, soft_nms_sigma=sigma)
        assert_same_output(run_model_garden(v1, boxes, scores, 250, 0.05, iou_threshold, 60, sigma), ours)


@pytest.mark.tf
def test_tensorflows_padded_nms_stops_early_on_a_single_entry_at_the_threshold():
    # Iteration 1 clears r's row, removing only (r, j) = 0.5: not more than the threshold, so
    # the loop stops while m's row still suppresses q. Greedy NMS (and the full list, where z's
    # entries keep the loop going) keeps q: the selection above 0.45 is not the selection above
    # 0.05 restricted.
    from official.vision.modeling.layers import detection_generator

    v1 = detection_generator._generate_detections_v1  # pylint: disable=protected-access
    boxes, scores = CHAIN[None, :, None], CHAIN_SCORES[None, :, None]
    for score_threshold, expected in [(0.05, [0.9, 0.7, 0.5]), (0.45, [0.9, 0.7])]:
        theirs = run_model_garden(v1, boxes, scores, 10, score_threshold, 0.5, 6, None)
        np.testing.assert_array_equal(theirs[1][0][:theirs[3][0]], np.float32(expected))
        ours = reference_nms_v1.generate_detections_v1_reference(boxes, scores, pre_nms_top_k=10,
                                                                 pre_nms_score_threshold=score_threshold,
                                                                 nms_iou_threshold=0.5, max_num_detections=6)
        assert_same_output(theirs, ours)


@pytest.mark.tf
def test_the_kernels_decay_is_glibcs_expf():
    # Candidate score 1.0 below one selected box: its output score is the weight itself.
    import tensorflow as tf

    rng = np.random.default_rng(3)
    numpy_differs = 0
    for _ in range(150):
        shift = np.float32(rng.uniform(0, 10))
        boxes = np.array([[0, 0, 10, 10], [0, shift, 10, 10 + shift]], np.float32)
        sigma = float(rng.choice([0.1, 0.3, 0.5, 0.9]))
        _, out = tf.image.non_max_suppression_with_scores(boxes, np.array([2.0, 1.0], np.float32), 2, 0.5, 0.0, sigma)
        _, ours = reference_nms_v1.non_max_suppression_v5(boxes, [2.0, 1.0], 2, 0.5, 0.0, sigma)
        np.testing.assert_array_equal(out.numpy(), ours)
        scale = np.float32(-0.5) / np.float32(sigma)
        sim = reference_nms.kernel_iou(boxes[1], boxes[0])
        assert out.numpy()[1] == reference_nms_v1.expf(scale * sim * sim)
        numpy_differs += out.numpy()[1] != np.exp(scale * sim * sim)  # NumPy's float32 exp
    print(f"np.exp(float32) differs from the kernel's weight in {numpy_differs} of 150")


# ---------------------------------------------------------------------------------------------
# (b) the fast path is the port (no TensorFlow)


def sorted_class(seed, anchors, quantize, flip=False, grid=False):
    """One class's candidates in visiting order (descending score, ties lower anchor)."""
    boxes, scores = clustered(seed, 1, anchors, 1, quantize=quantize, flip=flip)
    boxes, scores = boxes[0, :, 0], scores[0, :, 0]
    if grid:
        boxes = grid_boxes(seed, anchors)
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order]


def port_single(boxes, scores, sigma, iou_threshold, score_threshold, cap):
    """The port's NMS for one class (input already in visiting order): positions, scores."""
    if sigma is None:
        idx, valid = reference_nms_v1.non_max_suppression_padded_v2(boxes, scores, cap, iou_threshold, score_threshold)
        return idx[:valid], scores[idx[:valid]]
    return reference_nms_v1.non_max_suppression_v5(boxes, scores, cap, iou_threshold, score_threshold, sigma)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), sigma=st.sampled_from([None, 0.0, 0.1, 0.3, 0.5, 1.0]),
       score_threshold=st.sampled_from([0.0, 0.05, 0.3]), iou=st.sampled_from([0.0, 0.3, 0.45, 0.5, 0.55, 0.7, 1.0]),
       cap=st.sampled_from([1, 5, 100, 600]), quantize=st.booleans(), shape=st.sampled_from(["plain", "flip", "grid"]))
def test_fast_path_is_the_port(seed, sigma, score_threshold, iou, cap, quantize, shape):
    anchors = int(np.random.default_rng(seed).integers(1, 700 if sigma is None or cap < 100 else 250))
    boxes, scores = sorted_class(seed, anchors, quantize, flip=shape == "flip", grid=shape == "grid")
    ours = nms_v1.nms_v1(boxes, scores, soft_nms_sigma=sigma, iou_threshold=iou, score_threshold=score_threshold,
                         max_output=cap)
    port = port_single(boxes, scores, sigma, iou, score_threshold, cap)
    np.testing.assert_array_equal(ours[0], port[0])
    np.testing.assert_array_equal(ours[1], port[1])
    assert ours[1].dtype == np.float32


@pytest.mark.parametrize("iou", [0.5, 1 / 3, 0.25, 2 / 3, 1.0])
def test_fast_padded_path_at_ious_exactly_at_the_threshold(iou):
    # Two tiles of integer-grid boxes: duplicates and many IoUs exactly at the threshold, within
    # a tile and across tiles.
    boxes = grid_boxes(int(iou * 100), 700)
    assert (nms_v2.pairwise_overlap(boxes, boxes)[np.triu_indices(700, 1)] == np.float32(iou)).any()
    scores = np.linspace(1, 0.01, 700).astype(np.float32)
    idx, valid = reference_nms_v1.non_max_suppression_padded_v2(boxes, scores, 1000, iou, 0.0)
    np.testing.assert_array_equal(nms_v1.padded_nms_v1(boxes, iou, 1000), idx[:valid])


def test_the_chain_through_the_fast_path():
    np.testing.assert_array_equal(nms_v1.padded_nms_v1(CHAIN, 0.5, 10), [0, 2, 4])
    np.testing.assert_array_equal(nms_v1.padded_nms_v1(CHAIN[:5], 0.5, 10), [0, 2])  # not [0, 2, 4]: the early stop
    assert not nms_v1.padded_nms_v1_checked(CHAIN, 0.5, 10)[1]
    assert nms_v1.padded_nms_v1_checked(CHAIN, 0.45, 10)[1]  # no IoU exactly 0.45
    full, prefix = nms_v1.padded_nms_v1_by_prefix(CHAIN, 0.5, 10, [6, 5])
    np.testing.assert_array_equal(full, [0, 2, 4])
    np.testing.assert_array_equal(prefix, [0, 2])
    np.testing.assert_array_equal(nms_v1.greedy_nms_v1(CHAIN, 0.5, 10), [0, 2, 3])  # the kernel: > 0.5 suppresses


def test_the_compiled_decay_is_libms_expf():
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.expf.restype, libm.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    rng = np.random.default_rng(0)
    sim = rng.uniform(0, 1, 200_000).astype(np.float32)
    scale = np.float32(-0.5) / rng.choice(np.float32([0.05, 0.1, 0.3, 0.5, 1.0]), sim.shape)
    x = (scale * sim) * sim
    expected = np.array([libm.expf(float(v)) for v in x], np.float32)
    # float32 arguments, float32 arithmetic (a float64 result would not equal expf's here)
    got = np.array([nms_v1._decay(scale_i, sim_i) for scale_i, sim_i in zip(scale, sim)])  # pylint: disable=protected-access
    np.testing.assert_array_equal(got, expected.astype(np.float64))


# ---------------------------------------------------------------------------------------------
# (c) properties: score thresholds and caps


THRESHOLDS = [0.05, 0.1, 0.2, 0.35, 0.6]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), sigma=st.sampled_from([0.1, 0.3, 0.5, 1.0]), quantize=st.booleans(),
       cap=st.sampled_from([10, 100, 1000]))
def test_soft_nms_at_the_lowest_threshold_answers_every_threshold(seed, sigma, quantize, cap):
    boxes, scores = sorted_class(seed, 400, quantize)
    low, low_scores = nms_v1.soft_nms_v1(boxes, scores, sigma, THRESHOLDS[0], cap)
    assert (np.diff(low_scores) <= 0).all()  # decayed scores come out non-increasing
    for t in THRESHOLDS[1:]:
        above = low_scores > np.float32(t)
        assert above.all() or not above[np.argmin(above):].any()  # a prefix
        high, high_scores = nms_v1.soft_nms_v1(boxes, scores, sigma, t, cap)
        np.testing.assert_array_equal(high, low[above])
        np.testing.assert_array_equal(high_scores, low_scores[above])
    if seed % 5 == 0:  # and the port agrees at one higher threshold
        port = reference_nms_v1.non_max_suppression_v5(boxes, scores, cap, 0.5, THRESHOLDS[2], sigma)
        np.testing.assert_array_equal(port[0], low[low_scores > np.float32(THRESHOLDS[2])])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), iou=st.sampled_from([0.3, 0.5, 0.7, 1 / 3]), quantize=st.booleans(),
       grid=st.booleans(), cap=st.sampled_from([10, 100, 1000]))
def test_hard_nms_at_the_lowest_threshold_answers_every_threshold(seed, iou, quantize, grid, cap):
    boxes, scores = sorted_class(seed, 700, quantize, grid=grid)
    lengths = [int(np.count_nonzero(scores > np.float32(t))) for t in THRESHOLDS]
    by_prefix = nms_v1.padded_nms_v1_by_prefix(boxes, iou, cap, lengths)
    greedy = nms_v1.greedy_nms_v1(boxes[:lengths[0]], iou, cap)
    for t, length, padded in zip(THRESHOLDS, lengths, by_prefix):
        np.testing.assert_array_equal(padded, nms_v1.padded_nms_v1(boxes[:length], iou, cap))
        np.testing.assert_array_equal(nms_v1.greedy_nms_v1(boxes[:length], iou, cap), greedy[greedy < length])
    idx, valid = reference_nms_v1.non_max_suppression_padded_v2(boxes, scores, cap, iou, THRESHOLDS[2])
    np.testing.assert_array_equal(by_prefix[2], idx[:valid])


def fast_pipeline(boxes, scores, *, pre_nms_top_k, pre_nms_score_threshold, nms_iou_threshold, max_num_detections,
                  soft_nms_sigma):
    """Model Garden's v1 for one image from the fast path: per class the top-k in visiting
    order, `nms_v1.nms_v1`, then `nms_v1.merge_classes`. Returns (anchors, scores, classes)."""
    per_class = []
    for c in range(scores.shape[1]):
        order = np.argsort(-scores[:, c], kind="stable")[:pre_nms_top_k]
        chosen, out = nms_v1.nms_v1(boxes[order, min(boxes.shape[1] - 1, c)], scores[order, c],
                                    soft_nms_sigma=soft_nms_sigma, iou_threshold=nms_iou_threshold,
                                    score_threshold=pre_nms_score_threshold, max_output=max_num_detections)
        per_class.append((order[chosen], out))
    classes, position = nms_v1.merge_classes([out for _, out in per_class], max_num_detections)
    anchors = np.asarray([per_class[c][0][p] for c, p in zip(classes, position)], np.int64)
    out = np.asarray([per_class[c][1][p] for c, p in zip(classes, position)], np.float32)
    return anchors, out, classes


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), sigma=st.sampled_from([None, 0.0, 0.3, 0.5]), quantize=st.booleans(),
       iou=st.sampled_from([0.3, 0.5, 0.7]))
def test_caps_and_the_fast_pipeline(seed, sigma, quantize, iou):
    # The port's output at cap c is the first c of its output at a larger cap (valid entries),
    # and the fast pipeline (per class, then the merge) is the port at every cap.
    boxes, scores = clustered(seed, batch=2, anchors=150, classes=3, quantize=quantize, per_class=seed % 2 == 0)
    settings_ = dict(pre_nms_top_k=120, pre_nms_score_threshold=0.05, nms_iou_threshold=iou, soft_nms_sigma=sigma)
    generate = reference_nms_v1.generate_detections_v1_reference
    outputs = {cap: generate(boxes, scores, max_num_detections=cap, **settings_) for cap in (3, 20, 60)}
    for b in range(2):
        _, big_scores, big_classes, big_valid, big_anchors = (o[b] for o in outputs[60])
        for cap, (_, out_scores, out_classes, valid, out_anchors) in outputs.items():
            valid = valid[b]
            assert valid == min(cap, big_valid)
            np.testing.assert_array_equal(out_scores[b][:valid], big_scores[:valid])
            np.testing.assert_array_equal(out_classes[b][:valid], big_classes[:valid])
            np.testing.assert_array_equal(out_anchors[b][:valid], big_anchors[:valid])
            anchors, fast_scores, classes = fast_pipeline(boxes[b], scores[b], max_num_detections=cap, **settings_)
            np.testing.assert_array_equal(anchors, out_anchors[b][:valid])
            np.testing.assert_array_equal(fast_scores, out_scores[b][:valid])
            np.testing.assert_array_equal(classes, out_classes[b][:valid])


def test_the_iou_threshold_is_ignored_by_soft_nms():
    boxes, scores = sorted_class(4, 200, quantize=True)
    runs = [reference_nms_v1.non_max_suppression_v5(boxes, scores, 50, iou, 0.05, 0.5) for iou in (0.0, 0.3, 1.0)]
    for positions, decayed in runs[1:]:
        np.testing.assert_array_equal(positions, runs[0][0])
        np.testing.assert_array_equal(decayed, runs[0][1])
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        reference_nms_v1.non_max_suppression_v5(boxes, scores, 50, 1.5, 0.05, 0.5)


@pytest.mark.parametrize("sigma", SIGMAS, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_the_port_at_a_higher_threshold_is_the_lowest_one_filtered(seed, sigma):
    # Model Garden's whole function (top-k, NMS, merge, cap): the valid output at t' is the valid
    # output at the lowest t whose (decayed) scores are > t', in order. (For None this needs no
    # IoU exactly at the threshold: these float boxes have none.)
    boxes, scores = clustered(seed, batch=2, anchors=120, classes=3, quantize=seed == 1)
    settings_ = dict(pre_nms_top_k=100, nms_iou_threshold=0.5, max_num_detections=40, soft_nms_sigma=sigma)
    low = reference_nms_v1.generate_detections_v1_reference(boxes, scores, pre_nms_score_threshold=0.05, **settings_)
    for t in (0.1, 0.3, 0.6):
        high = reference_nms_v1.generate_detections_v1_reference(boxes, scores, pre_nms_score_threshold=t, **settings_)
        for b in range(2):
            above = low[1][b][:low[3][b]] > np.float32(t)
            assert high[3][b] == above.sum()
            for k in (0, 1, 2, 4):  # boxes, scores, classes, anchors
                np.testing.assert_array_equal(high[k][b][:high[3][b]], low[k][b][:low[3][b]][above])


# ---------------------------------------------------------------------------------------------
# the sweep: every score threshold and cap from one pass, against the reference


import detsearch.detection.sweep as sweep_module  # noqa: E402
from detsearch.detection.cache import CACHE_VERSION, CacheMeta, DetectionCache  # noqa: E402
from detsearch.detection.sweep import PostProcessing  # noqa: E402
from detsearch.params import ParamSpec  # noqa: E402
from tests.detection.sweep_cases import IOU_LISTS, SCORE_LISTS, outcome, random_case  # noqa: E402


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), scores=SCORE_LISTS, iou=IOU_LISTS, ties=st.booleans(), sigma=st.sampled_from(SIGMAS),
       top_k=st.sampled_from([None, 1, 4]), caps=st.sampled_from([None, [2, 100], [1, 3, 7]]))
def test_v1_sweep_equals_reference(seed, scores, iou, ties, sigma, top_k, caps):
    cache, dataset = random_case(seed, "one_stage", ties=ties, max_rows=60)
    spec = ParamSpec(score_threshold=scores, iou_threshold=iou)
    post = PostProcessing(nms_version="v1", soft_nms_sigma=sigma, pre_nms_top_k=top_k)
    fast = sweep_module.sweep(cache, dataset, spec, post, max_detections=caps)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, max_detections=caps))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), ties=st.booleans())
def test_the_soft_nms_sigma_axis_equals_reference(seed, ties):
    # 0 (the kernel's hard NMS) and two sigmas in one sweep, with the max_detections axis; rows
    # name the sigma; soft NMS reads no IoU threshold, so its rows agree along that axis.
    cache, dataset = random_case(seed, "one_stage", ties=ties, max_rows=60)
    spec = ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.3, 0.6])
    axes = dict(max_detections=[3, 100], soft_nms_sigma=[0.0, 0.3, 0.5])
    fast = sweep_module.sweep(cache, dataset, spec, PostProcessing(nms_version="v1"), **axes)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, PostProcessing(nms_version="v1"),
                                                                 **axes))
    soft = [row for row in fast.table if row.params["soft_nms_sigma"] == 0.5]
    assert [row.stats for row in soft if row.params["iou_threshold"] == 0.3] == [
        row.stats for row in soft if row.params["iou_threshold"] == 0.6]
    assert fast.best_params["soft_nms_sigma"] in (0.0, 0.3, 0.5)


def chain_case():
    """One image, one class: `CHAIN` (an IoU exactly at 0.5, on which TensorFlow's padded NMS
    stops its loop early) as a one-stage cache, with ground truth on every box."""
    meta = CacheMeta(version=CACHE_VERSION, kind="one_stage", image_ids=(1,), image_sizes=((20, 20),), category_ids=(1,),
                     score_floor=0.01)
    cache = DetectionCache.from_arrays(
        meta, row_offsets=np.array([0, len(CHAIN)], np.int64), row_boxes=CHAIN,
        entry_offsets=np.array([0, len(CHAIN)], np.int64), entry_row=np.arange(len(CHAIN), dtype=np.int32),
        entry_class=np.zeros(len(CHAIN), np.int32), entry_score=CHAIN_SCORES)
    annotations = [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0} for k, (y0, x0, y1, x1) in enumerate(CHAIN[:5])]
    dataset = {"images": [{"id": 1, "height": 20, "width": 20}], "categories": [{"id": 1, "name": "a"}],
               "annotations": annotations}
    return cache, dataset


def test_where_one_pass_cannot_answer_every_threshold_each_runs_on_its_own():
    # At IoU 0.5 TensorFlow's padded NMS keeps another set at score threshold 0.45 than the
    # lowest threshold's output restricted to scores > 0.45: the sweep runs that threshold on its
    # own and still equals the reference (Model Garden's function transcribed).
    from detsearch.detection.cache import CacheKind
    from detsearch.detection.cocoeval import load_ground_truth
    from detsearch.detection.sweep._reference import reference_detections
    from detsearch.detection.sweep.engine import SweepEngine
    from detsearch.detection.sweep.grid import Grid

    cache, dataset = chain_case()
    spec = ParamSpec(score_threshold=[0.05, 0.45], iou_threshold=[0.5, 0.6])
    post = PostProcessing(nms_version="v1")
    fast = sweep_module.sweep(cache, dataset, spec, post)
    assert outcome(fast) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post))
    checked = post.checked(cache, spec)
    engine = SweepEngine(cache, load_ground_truth(dataset), Grid.build(CacheKind.ONE_STAGE, spec, checked), checked)
    keys = engine.grid.nms_keys()
    assert [engine.exact_prefixes(key) for key in keys] == [False, True]
    restricted = [r for r in reference_detections(cache, {"score_threshold": 0.05, "iou_threshold": 0.5}, checked)
                  if r["score"] > 0.45]
    at_045 = reference_detections(cache, {"score_threshold": 0.45, "iou_threshold": 0.5}, checked)
    assert len(at_045) != len(restricted)  # the case the fallback exists for
