"""NMS: the plain reference, the TensorFlow ops and the batched paths keep the same boxes.

The boundary semantics are pinned against TensorFlow 2.20's kernels: a score equal to the
score threshold is dropped, an IoU equal to the IoU threshold does not suppress, equal scores
are visited lower index first. Every implementation is held to them, the reference
(`detsearch.detection.reference_nms`, which shares no code with the others) included.
"""

import math

import numpy as np
import pytest

from detsearch.detection import nms, reference_nms
from detsearch.detection.boxes import iou_yxyx


def random_boxes(rng, n, extent=200.0, size=(5.0, 60.0)):
    corner = rng.uniform(0, extent, (n, 2))
    return np.concatenate([corner, corner + rng.uniform(*size, (n, 2))], axis=1).astype(np.float32)


def grid_boxes(rng, n, extent=12):
    """Boxes on a coarse integer grid: many pairs with an IoU exactly at 0.5 (or 0, or 1) in float32."""
    corner = rng.integers(0, extent, (n, 2))
    return np.concatenate([corner, corner + rng.integers(1, 6, (n, 2))], axis=1).astype(np.float32)


def random_image(rng, n, num_classes=4, ties=False, grid=False):
    boxes = grid_boxes(rng, n) if grid else random_boxes(rng, n)
    scores = rng.random(n).astype(np.float32)
    if ties:  # few distinct values: many exact ties
        scores = (np.round(scores * 4) / 4).astype(np.float32)
    return boxes, scores, rng.integers(0, num_classes, n)


def walk_single(boxes, scores, *, iou_threshold, score_threshold=-math.inf, max_output_size=None):
    """`nms.per_class_nms_batched` (the sweep's walk) on one image of one class."""
    n = len(scores)
    cap = n if max_output_size is None else max_output_size
    indices, _ = nms.per_class_nms_batched(boxes, scores, np.zeros(n, np.int64), [0, n], iou_threshold=iou_threshold,
                                           score_threshold=score_threshold, max_detections_per_class=cap,
                                           max_total_detections=cap)
    return indices


def agnostic_single(boxes, scores, *, iou_threshold, score_threshold=-math.inf, max_output_size=None):
    n = len(scores)
    indices, _ = nms.class_agnostic_nms_batched(boxes, scores, [0, n], iou_threshold=iou_threshold,
                                                score_threshold=score_threshold,
                                                max_output_size=n if max_output_size is None else max_output_size)
    return indices


SINGLE_GROUP = [
    pytest.param(reference_nms.nms_reference, id="reference"),
    pytest.param(walk_single, id="walk"),
    pytest.param(agnostic_single, id="agnostic"),
    pytest.param(lambda *a, **k: nms.nms_tf(*a, **k), id="tf", marks=pytest.mark.tf),
]


# ------------------------------------------------------------------------------------------
# boundaries, measured on the TF op, held by every implementation


@pytest.mark.parametrize("fn", SINGLE_GROUP)
def test_iou_exactly_at_threshold_does_not_suppress(fn):
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], np.float32)  # IoU exactly 0.5 in float32
    scores = np.array([0.9, 0.8], np.float32)
    assert iou_yxyx(boxes[:1], boxes[1:])[0, 0] == np.float32(0.5)
    assert reference_nms.kernel_iou(boxes[0], boxes[1]) == np.float32(0.5)
    np.testing.assert_array_equal(fn(boxes, scores, iou_threshold=0.5), [0, 1])
    np.testing.assert_array_equal(fn(boxes, scores, iou_threshold=np.nextafter(np.float32(0.5), np.float32(0))), [0])
    twins = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)  # IoU 1 and 0
    three = np.array([0.9, 0.8, 0.7], np.float32)
    np.testing.assert_array_equal(fn(twins, three, iou_threshold=1.0), [0, 1, 2])
    np.testing.assert_array_equal(fn(twins, three, iou_threshold=0.0), [0, 2])


@pytest.mark.parametrize("fn", SINGLE_GROUP)
def test_score_exactly_at_threshold_is_dropped(fn):
    boxes = random_boxes(np.random.default_rng(0), 3, extent=1000)
    scores = np.array([0.5, 0.3, 0.7], np.float32)
    np.testing.assert_array_equal(fn(boxes, scores, iou_threshold=0.5, score_threshold=0.5), [2])
    np.testing.assert_array_equal(fn(boxes, scores, iou_threshold=0.5, score_threshold=0.3), [2, 0])


@pytest.mark.parametrize("fn", SINGLE_GROUP)
def test_thresholds_are_compared_in_float32(fn):
    # float32(0.1) > 0.1: a score of float32(0.1) equals the float32 threshold and is dropped.
    boxes = random_boxes(np.random.default_rng(1), 2, extent=1000)
    scores = np.array([0.1, 0.2], np.float32)
    np.testing.assert_array_equal(fn(boxes, scores, iou_threshold=0.5, score_threshold=0.1), [1])


@pytest.mark.parametrize("fn", SINGLE_GROUP)
def test_equal_scores_lower_index_first(fn):
    boxes = np.stack([np.arange(30) * 20.0, np.zeros(30), np.arange(30) * 20.0 + 10, np.full(30, 10.0)], axis=1).astype(np.float32)
    scores = np.full(30, 0.5, np.float32)
    np.testing.assert_array_equal(fn(boxes, scores, iou_threshold=0.5, max_output_size=5), [0, 1, 2, 3, 4])
    overlapping = np.array([[0, 0, 10, 10], [0, 1, 10, 11], [0, 2, 10, 12]], np.float32)
    np.testing.assert_array_equal(fn(overlapping, np.full(3, 0.5, np.float32), iou_threshold=0.5), [0])


def test_reference_iou_equals_the_kernel_formula_of_boxes():
    """The reference's own IoU and `boxes.iou_yxyx` (the fast paths') give the same float32 bits,
    flipped corners and empty boxes included."""
    rng = np.random.default_rng(9)
    a = random_boxes(rng, 400)
    b = (a + rng.normal(0, 8, (400, 4))).astype(np.float32)
    b[::7] = b[::7][:, [2, 3, 0, 1]]  # corners given in the other order
    b[::11, 2] = b[::11, 0]  # zero height
    fast = iou_yxyx(a, b).diagonal()
    ours = np.array([reference_nms.kernel_iou(x, y) for x, y in zip(a, b)], np.float32)
    np.testing.assert_array_equal(ours.view(np.uint32), fast.view(np.uint32))
    assert (ours == 0).sum() >= 400 // 11 and ((0 < ours) & (ours < 1)).sum() > 200


@pytest.mark.tf
def test_iou_bits_equal_the_kernel_at_the_boundary():
    """For random pairs, the op keeps both boxes at threshold = the reference's float32 IoU and
    suppresses one box at the next float32 below: the kernel computes exactly that value."""
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(300):
        a = random_boxes(rng, 1)[0]
        b = (a + rng.normal(0, 8, 4)).astype(np.float32)
        value = reference_nms.kernel_iou(a, b)
        if not 0 < value < 1:
            continue
        assert value == iou_yxyx(a[None], b[None])[0, 0]
        pair, scores = np.stack([a, b]), np.array([0.9, 0.8], np.float32)
        assert len(nms.nms_tf(pair, scores, iou_threshold=float(value))) == 2
        assert len(nms.nms_tf(pair, scores, iou_threshold=float(np.nextafter(value, np.float32(0))))) == 1
        checked += 1
    assert checked > 200


def test_empty_and_capped():
    empty = np.zeros((0, 4), np.float32)
    assert reference_nms.nms_reference(empty, np.zeros(0, np.float32), iou_threshold=0.5).shape == (0,)
    assert reference_nms.per_class_nms_reference(empty, [], np.zeros(0, int), iou_threshold=0.5).shape == (0,)
    assert reference_nms.class_agnostic_nms_reference(empty, [], iou_threshold=0.5, levels=np.zeros(0, int)).shape == (0,)
    indices, offsets = nms.per_class_nms_batched(empty, [], np.zeros(0, int), [0, 0, 0], iou_threshold=0.5)
    assert indices.shape == (0,) and offsets.tolist() == [0, 0, 0]
    boxes, scores, classes = random_image(np.random.default_rng(3), 50)
    kept = reference_nms.per_class_nms_reference(boxes, scores, classes, iou_threshold=1.0, max_detections_per_class=3,
                                                 max_total_detections=7)
    assert len(kept) == 7 and np.bincount(classes[kept]).max() <= 3


@pytest.mark.tf
def test_empty_tf():
    empty = np.zeros((0, 4), np.float32)
    assert nms.nms_tf(empty, np.zeros(0, np.float32), iou_threshold=0.5).shape == (0,)
    assert nms.per_class_nms_tf(empty, [], np.zeros(0, int), iou_threshold=0.5).shape == (0,)


def test_bad_arguments():
    boxes, scores, classes = random_image(np.random.default_rng(4), 5)
    for module in (reference_nms, nms):  # nms re-exports the reference
        with pytest.raises(ValueError, match="iou_threshold must be in"):
            module.nms_reference(boxes, scores, iou_threshold=1.5)
        with pytest.raises(ValueError, match="scores has 4 entries for 5 boxes"):
            module.nms_reference(boxes, scores[:4], iou_threshold=0.5)
        with pytest.raises(ValueError, match="max_detections_per_class"):
            module.per_class_nms_reference(boxes, scores, classes, iou_threshold=0.5, max_detections_per_class=-1)
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        nms.per_class_nms_batched(boxes, scores, classes, [0, 5], iou_threshold=1.5)


# ------------------------------------------------------------------------------------------
# the implementations agree


SETTINGS = ((0.5, 0.0, 100, 100), (0.3, 0.25, 4, 9), (0.7, 0.5, 100, 5), (0.0, 0.1, 3, 6), (1.0, 0.0, 100, 100))


def random_images(seed):
    rng = np.random.default_rng(seed)
    images = [random_image(rng, int(rng.integers(0, 120)), ties=(i % 2 == 0), grid=(i % 3 == 0)) for i in range(12)]
    images.append(images[1])  # duplicate boxes and scores across images must not interact
    boxes = np.concatenate([im[0] for im in images])
    scores = np.concatenate([im[1] for im in images])
    classes = np.concatenate([im[2] for im in images])
    offsets = np.r_[0, np.cumsum([len(im[0]) for im in images])]
    return images, boxes, scores, classes, offsets


@pytest.mark.parametrize("seed", range(4))
def test_per_class_reference_and_batched_walk_agree(seed):
    images, boxes, scores, classes, offsets = random_images(seed)
    at_threshold = 0
    for iou_threshold, score_threshold, per_class, total in SETTINGS:
        kwargs = dict(iou_threshold=iou_threshold, score_threshold=score_threshold, max_detections_per_class=per_class,
                      max_total_detections=total)
        batched, batched_offsets = nms.per_class_nms_batched(boxes, scores, classes, offsets, **kwargs)
        for i, (b, s, c) in enumerate(images):
            reference = reference_nms.per_class_nms_reference(b, s, c, **kwargs)
            np.testing.assert_array_equal(batched[batched_offsets[i] : batched_offsets[i + 1]] - offsets[i], reference)
            if iou_threshold == 0.5 and len(b):
                at_threshold += int((iou_yxyx(b, b) == np.float32(0.5)).sum())
    assert at_threshold > 0  # the grid images put IoUs exactly at the threshold


@pytest.mark.tf
@pytest.mark.parametrize("seed", range(4))
def test_per_class_reference_and_tf_agree(seed):
    images, *_ = random_images(seed)
    for iou_threshold, score_threshold, per_class, total in SETTINGS:
        kwargs = dict(iou_threshold=iou_threshold, score_threshold=score_threshold, max_detections_per_class=per_class,
                      max_total_detections=total)
        for b, s, c in images:
            np.testing.assert_array_equal(nms.per_class_nms_tf(b, s, c, **kwargs),
                                          reference_nms.per_class_nms_reference(b, s, c, **kwargs))


def test_per_class_output_order_and_caps():
    rng = np.random.default_rng(5)
    boxes, scores, classes = random_image(rng, 200, ties=True)
    kept = reference_nms.per_class_nms_reference(boxes, scores, classes, iou_threshold=0.5, max_detections_per_class=6,
                                                 max_total_detections=15)
    assert len(kept) == 15
    order = np.lexsort((kept, -scores[kept]))
    np.testing.assert_array_equal(order, np.arange(len(kept)))  # descending score, ties by index
    assert np.bincount(classes[kept]).max() <= 6


@pytest.mark.tf
def test_combined_nms_agrees_without_ties():
    """Model Garden's batched path (combined_non_max_suppression) keeps the same detections
    when scores are distinct."""
    import tensorflow as tf

    rng = np.random.default_rng(6)
    num_classes = 5
    for _ in range(6):
        n = 150
        boxes = random_boxes(rng, n)
        dense = np.where(rng.random((n, num_classes)) < 0.4, rng.random((n, num_classes)), 0).astype(np.float32)
        rows, cols = np.nonzero(dense)
        entry_boxes, entry_scores = boxes[rows], dense[rows, cols]
        assert len(np.unique(entry_scores)) == len(entry_scores)
        for iou_threshold, score_threshold in ((0.5, 0.05), (0.3, 0.4)):
            kept = reference_nms.per_class_nms_reference(
                entry_boxes, entry_scores, cols, iou_threshold=iou_threshold, score_threshold=score_threshold,
                max_detections_per_class=20, max_total_detections=40,
            )
            out = tf.image.combined_non_max_suppression(
                boxes[None, :, None, :], dense[None], 20, 40,
                iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False,
            )
            valid = int(out.valid_detections[0])
            np.testing.assert_array_equal(out.nmsed_scores[0, :valid].numpy(), entry_scores[kept])
            np.testing.assert_array_equal(out.nmsed_classes[0, :valid].numpy(), cols[kept])
            np.testing.assert_array_equal(out.nmsed_boxes[0, :valid].numpy(), entry_boxes[kept])


def class_agnostic_case(with_levels):
    rng = np.random.default_rng(7)
    sizes = [0, 1, 80, 150, 40]
    boxes = np.concatenate([random_boxes(rng, n) if n != 40 else grid_boxes(rng, n) for n in sizes])
    scores = (np.round(rng.random(len(boxes)) * 20) / 20).astype(np.float32)  # ties
    levels = rng.integers(2, 5, len(boxes)) if with_levels else None
    return sizes, boxes, scores, levels, np.r_[0, np.cumsum(sizes)]


@pytest.mark.parametrize("with_levels", [False, True])
def test_class_agnostic_implementations_agree(with_levels):
    sizes, boxes, scores, levels, offsets = class_agnostic_case(with_levels)
    for iou_threshold, score_threshold, limit in ((0.7, 0.0, 1000), (0.5, 0.2, 30), (0.3, 0.5, 7), (0.0, 0.0, 1000)):
        kwargs = dict(iou_threshold=iou_threshold, score_threshold=score_threshold, max_output_size=limit)
        indices, out_offsets = nms.class_agnostic_nms_batched(boxes, scores, offsets, levels=levels, **kwargs)
        for i in range(len(sizes)):
            lo, hi = offsets[i], offsets[i + 1]
            image_levels = None if levels is None else levels[lo:hi]
            reference = reference_nms.class_agnostic_nms_reference(boxes[lo:hi], scores[lo:hi], levels=image_levels, **kwargs)
            np.testing.assert_array_equal(indices[out_offsets[i] : out_offsets[i + 1]] - lo, reference)


@pytest.mark.tf
@pytest.mark.parametrize("with_levels", [False, True])
def test_class_agnostic_reference_is_the_tf_op(with_levels):
    sizes, boxes, scores, levels, offsets = class_agnostic_case(with_levels)
    for iou_threshold, score_threshold, limit in ((0.7, 0.0, 1000), (0.5, 0.2, 30), (0.3, 0.5, 7), (0.0, 0.0, 1000)):
        kwargs = dict(iou_threshold=iou_threshold, score_threshold=score_threshold, max_output_size=limit)
        for i in range(len(sizes)):
            lo, hi = offsets[i], offsets[i + 1]
            image_levels = None if levels is None else levels[lo:hi]
            np.testing.assert_array_equal(
                nms.class_agnostic_nms_tf(boxes[lo:hi], scores[lo:hi], levels=image_levels, **kwargs),
                reference_nms.class_agnostic_nms_reference(boxes[lo:hi], scores[lo:hi], levels=image_levels, **kwargs))


def test_higher_score_threshold_is_a_prefix():
    """The sweep's premise, caps included: output(s_high) == output(s_low) with score > s_high."""
    rng = np.random.default_rng(8)
    for _ in range(20):
        boxes, scores, classes = random_image(rng, 120, ties=True)
        low = reference_nms.per_class_nms_reference(boxes, scores, classes, iou_threshold=0.5, score_threshold=0.1,
                                                    max_detections_per_class=5, max_total_detections=12)
        for high in (0.25, 0.5, 0.75):
            expected = low[scores[low] > np.float32(high)]
            got = reference_nms.per_class_nms_reference(boxes, scores, classes, iou_threshold=0.5, score_threshold=high,
                                                        max_detections_per_class=5, max_total_detections=12)
            np.testing.assert_array_equal(got, expected)
        levels = rng.integers(0, 3, len(boxes))
        low = reference_nms.class_agnostic_nms_reference(boxes, scores, iou_threshold=0.6, score_threshold=0.1,
                                                         max_output_size=25, levels=levels)
        for high in (0.25, 0.5):
            got = reference_nms.class_agnostic_nms_reference(boxes, scores, iou_threshold=0.6, score_threshold=high,
                                                             max_output_size=25, levels=levels)
            np.testing.assert_array_equal(got, low[scores[low] > np.float32(high)])
