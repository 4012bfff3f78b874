"""Model Garden's default Faster R-CNN first stage (``roi_generator.use_batched_nms: false``) against
the project's port, on seeded random multilevel inputs.

Model Garden's ``_multilevel_propose_rois`` (its TensorFlow function, eager and traced): per FPN
level the sigmoid, decoding and clipping, the score filter, the top ``pre_nms_top_k``, the tiled
``sorted_non_max_suppression_padded`` keeping ``num_proposals``; the levels merged by a top-k.
The port: the rows a two-stage cache records (`experiment_two_stage.rank_proposals`: the same
function with NMS skipped, the top-k per level), then the sweep's first stage
(`SweepEngine.first_stage`, proposal_nms ``tiled``) and the sweep's reference. Both must keep
Model Garden's proposals: the same boxes and scores, in the same order, and nothing else.

The inputs have tied objectness (logits rounded to 0.1), pairs of boxes whose IoU is exactly a
threshold (integer boxes, zero deltas: decoding keeps them exact), exact duplicates, boxes
clipped to the image's edges (some to all-zero "dots", which Model Garden never selects), a
level of more than one 512-box tile, and two images per batch.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.tf

LEVELS = {"2": (16, 16), "3": (8, 8), "4": (4, 4)}  # level 2: 768 anchors, two tiles of 512
PER_LOCATION = 3
IMAGE_SIZE = 64
AT_THRESHOLD = (0.3, 0.5, 0.6, 0.7)  # IoU h/10 of a 10x10 box and a 10xh box, exact in float32

SETTINGS = [
    # (pre_nms_top_k, pre_nms_score_threshold, nms_iou_threshold, num_proposals)
    (1000, 0.0, 0.7, 1000),  # Model Garden's test_* defaults
    (768, 0.0, 0.3, 64),  # below 0.5: the tiled NMS is not greedy
    (300, 0.05, 0.5, 300),
    (100, 0.3, 0.5, 50),
    (50, 0.5, 0.3, 200),  # more proposals than the levels' top-k together
    (600, 0.1, 0.6, 20),
    (20, 0.0, 0.7, 1),
    (1000, 0.3, 0.7, 1000),  # every proposal above 0.3: those at bfloat16's 0.3 (0.30078125) too
]


AT_REDUCED = -0.84375  # a bfloat16 logit whose bfloat16 sigmoid is 0.30078125, bfloat16's 0.3


def multilevel_inputs(seed: int, batch: int = 2, dtype: str = "float32"):
    """``(raw_boxes, raw_scores, anchor_boxes, image_shape)`` as Model Garden's RPN head and
    anchor generator give them: per level ``[B, H, W, A * 4]`` deltas, ``[B, H, W, A]`` logits
    (in ``dtype``, the RPN's compute dtype: bfloat16 under mixed precision) and ``[B, H * W * A,
    4]`` yxyx anchors (float32)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    raw_boxes, raw_scores, anchors = {}, {}, {}
    for level, (height, width) in LEVELS.items():
        n = height * width * PER_LOCATION
        centres = rng.integers(4, IMAGE_SIZE - 4, (batch, 6, 2))
        centre = np.take_along_axis(centres, rng.integers(0, 6, (batch, n))[..., None], 1) + rng.integers(-5, 6, (batch, n, 2))
        half = rng.integers(2, 12, (batch, n, 2))
        boxes = np.concatenate([centre - half, centre + half], -1)  # some beyond the image: clipped
        size = rng.integers(8, 12, (batch, n, 2))
        for b in range(batch):
            # Pairs at exactly the IoU thresholds, exact duplicates, boxes left of and above the image.
            for first in rng.choice(n - 1, n // 8, replace=False):
                y, x = rng.integers(0, IMAGE_SIZE - 10, 2)
                h = int(round(10 * float(rng.choice(AT_THRESHOLD))))
                boxes[b, first] = [y, x, y + 10, x + 10]
                boxes[b, first + 1] = [y, x, y + h, x + 10]
            for index in rng.choice(n, n // 16, replace=False):
                boxes[b, index] = boxes[b, rng.integers(n)]
            for index in rng.choice(n, n // 32, replace=False):
                boxes[b, index] = [-size[b, index, 0], -size[b, index, 1], 0, 0]  # clipped to a dot
        deltas = rng.normal(0, 0.1, (batch, n, 4)) * (rng.random((batch, n, 1)) < 0.5)  # half decoded exactly
        logits = np.round(rng.normal(0, 2, (batch, n)), 1)  # ties
        logits[rng.random((batch, n)) < 1 / 16] = AT_REDUCED
        raw_boxes[level] = tf.cast(tf.constant(deltas.reshape(batch, height, width, PER_LOCATION * 4), tf.float32), dtype)
        raw_scores[level] = tf.cast(tf.constant(logits.reshape(batch, height, width, PER_LOCATION), tf.float32), dtype)
        anchors[level] = tf.constant(boxes, tf.float32)
    image_shape = tf.constant([[IMAGE_SIZE, IMAGE_SIZE]] * batch, tf.float32)
    return raw_boxes, raw_scores, anchors, image_shape


def port_first_stage(rois, objectness, levels, setting, dtype: str = "float32"):
    """The sweep's first stage on the recorded rows of each image (``dtype``: the RPN's, as
    `PostProcessing.score_dtype`): per image the kept local rows, by `SweepEngine.first_stage`
    and by the sweep's reference."""
    from detsearch.detection.cache import CacheBuilder, CacheKind, CacheSettings
    from detsearch.detection.cocoeval import GroundTruth
    from detsearch.detection.sweep import PostProcessing
    from detsearch.detection.sweep._reference import _tiled_proposals  # pylint: disable=protected-access
    from detsearch.detection.sweep.engine import SweepEngine
    from detsearch.detection.sweep.grid import Grid
    from detsearch.params import ParamSpec

    top_k, score_threshold, iou_threshold, num_proposals = setting
    batch = len(rois)
    builder = CacheBuilder(CacheSettings(kind=CacheKind.TWO_STAGE, category_ids=(1,), score_floor=0.01,
                                         num_proposals=num_proposals))
    for b in range(batch):
        rows = np.arange(len(rois[b]))
        builder.add_image(b + 1, (IMAGE_SIZE, IMAGE_SIZE), row_boxes=rois[b], entry_row=rows,
                          entry_class=np.zeros_like(rows), entry_score=np.full(len(rows), 0.5, np.float32),
                          entry_boxes=rois[b], row_objectness=objectness[b], row_level=levels[b])
    cache = builder.build()
    ground_truth = GroundTruth.from_coco({"images": [{"id": b + 1, "height": IMAGE_SIZE, "width": IMAGE_SIZE}
                                                     for b in range(batch)],
                                          "categories": [{"id": 1, "name": "one"}], "annotations": []})
    grid = ParamSpec(nms_score_threshold=score_threshold, nms_iou_threshold=iou_threshold, score_threshold=0.05,
                     iou_threshold=0.5)
    post = PostProcessing(nms_version="v2", pre_nms_top_k=max(5000, num_proposals), proposal_nms="tiled",
                          proposal_top_k=top_k, score_dtype=dtype)
    engine = SweepEngine(cache, ground_truth, Grid.build(CacheKind.TWO_STAGE, grid, post), post.checked(cache, grid))
    kept, offsets = engine.first_stage(iou_threshold)
    starts = np.asarray(cache.row_offsets)[:-1]
    fast = [kept[offsets[b]:offsets[b + 1]] - starts[b] for b in range(batch)]
    params = {"nms_score_threshold": score_threshold, "nms_iou_threshold": iou_threshold}
    reference = [_tiled_proposals(rois[b], objectness[b], levels[b], params, top_k, num_proposals, dtype)
                 for b in range(batch)]
    return fast, reference


@pytest.mark.parametrize("seed, traced, dtype", [(0, False, "float32"), (1, False, "float32"), (2, False, "float32"),
                                                 (0, True, "float32"), (3, False, "bfloat16"), (4, True, "bfloat16")],
                         ids=["eager-0", "eager-1", "eager-2", "tf.function-0", "eager-bfloat16-3",
                              "tf.function-bfloat16-4"])  # a trace per setting: one seed each
def test_the_port_keeps_model_gardens_proposals(seed, traced, dtype):
    # bfloat16: the RPN under Model Garden's mixed_bfloat16. Its sigmoid, decoding, clipping, score
    # filter and top-k run in bfloat16 (the anchors cast to it), its NMS in float32.
    import tensorflow as tf
    from official.vision.modeling.layers import roi_generator

    from detsearch.models.experiment_two_stage import rank_proposals

    raw_boxes, raw_scores, anchors, image_shape = multilevel_inputs(seed, dtype=dtype)
    theirs_fn = roi_generator._multilevel_propose_rois  # pylint: disable=protected-access
    ranked_fn = rank_proposals
    if traced:
        theirs_fn = tf.function(theirs_fn, autograph=False)
        ranked_fn = tf.function(ranked_fn, autograph=False)
    tried = {"at_threshold": 0, "ties": 0, "cut": 0, "at_reduced": 0}
    for setting in SETTINGS:
        top_k, score_threshold, iou_threshold, num_proposals = setting
        rois, scores = theirs_fn(raw_boxes, raw_scores, anchors, image_shape, pre_nms_top_k=top_k,
                                 pre_nms_score_threshold=score_threshold, pre_nms_min_size_threshold=0.0,
                                 nms_iou_threshold=iou_threshold, num_proposals=num_proposals, use_batched_nms=False)
        rois, scores = rois.numpy(), scores.numpy()
        assert rois.dtype == scores.dtype == np.float32  # its NMS casts them
        recorded = [t.numpy() for t in ranked_fn(raw_boxes, raw_scores, anchors, image_shape, top_k=top_k)]
        assert recorded[1].dtype.name == dtype
        recorded = [recorded[0].astype(np.float32), recorded[1].astype(np.float32), recorded[2]]
        fast, reference = port_first_stage(*recorded, setting, dtype)
        if dtype != "float32":  # the threshold compared in float32 keeps what Model Garden's bfloat16 one drops
            as_float32, _ = port_first_stage(*recorded, setting, "float32")
            tried["at_reduced"] += sum(len(as_float32[b]) != len(fast[b]) for b in range(len(fast)))
        for b in range(len(rois)):
            real = scores[b] > 0  # Model Garden pads with all-zero boxes of score 0
            count = int(real.sum())
            assert real[:count].all() and not rois[b][count:].any(), "padding only after the proposals"
            for kept in (fast[b], reference[b]):
                np.testing.assert_array_equal(recorded[0][b][kept], rois[b][:count])
                np.testing.assert_array_equal(recorded[1][b][kept], scores[b][:count])
            kept_scores = scores[b][:count]
            tried["ties"] += int((np.diff(kept_scores) == 0).sum())
            tried["cut"] += int(count < min(num_proposals, int((recorded[1][b] > score_threshold).sum())))
            tried["at_threshold"] += _pairs_at(recorded[0][b], iou_threshold)
    # The cases the inputs are built for happened: ties among kept proposals, pairs at the
    # threshold, suppression or caps that dropped proposals, and (bfloat16) objectness that only
    # the threshold as bfloat16 drops.
    assert tried["ties"] > 0 and tried["at_threshold"] > 0 and tried["cut"] > 0, tried
    assert (tried["at_reduced"] > 0) == (dtype != "float32"), tried


def _pairs_at(boxes, threshold) -> int:
    """How many pairs of ``boxes`` have an IoU of exactly ``threshold`` in Model Garden's float32
    arithmetic (`nms_v2.bbox_overlap`)."""
    from detsearch.detection import nms_v2

    iou = nms_v2.bbox_overlap(boxes[None], boxes[None])[0]
    return int(np.triu(iou == np.float32(threshold), 1).sum())


def test_the_recorded_rows_are_model_gardens_ranking_with_nms_skipped():
    # rank_proposals is the function the two-stage cache records with: per level (Model Garden's
    # sorted order) the top-k by objectness, ties lower anchor first, as Model Garden's own top-k.
    import tensorflow as tf
    from official.vision.modeling.layers import roi_generator

    from detsearch.models.experiment_two_stage import rank_proposals

    raw_boxes, raw_scores, anchors, image_shape = multilevel_inputs(7)
    rois, objectness, levels = [t.numpy() for t in rank_proposals(raw_boxes, raw_scores, anchors, image_shape, top_k=100)]
    assert rois.shape == (2, 100 + 100 + 48, 4) and objectness.shape == levels.shape == (2, 248)
    np.testing.assert_array_equal(levels[0], np.repeat([2, 3, 4], [100, 100, 48]))
    for level in LEVELS:
        count = min(100, int(np.prod(LEVELS[level])) * PER_LOCATION)
        theirs = roi_generator._multilevel_propose_rois(  # pylint: disable=protected-access
            {level: raw_boxes[level]}, {level: raw_scores[level]}, {level: anchors[level]}, image_shape,
            pre_nms_top_k=count, nms_iou_threshold=0.0, num_proposals=count)
        at = levels[0] == int(level)
        np.testing.assert_array_equal(rois[:, at], theirs[0].numpy())
        np.testing.assert_array_equal(objectness[:, at], theirs[1].numpy())
        logits = tf.reshape(raw_scores[level], [2, -1]).numpy()
        order = np.argsort(-logits, axis=1, kind="stable")[:, :count]  # ties: the lower anchor first
        np.testing.assert_array_equal(objectness[:, at], tf.sigmoid(np.take_along_axis(logits, order, 1)).numpy())
    # every anchor when there is no top-k (use_batched_nms true records them all)
    everything = rank_proposals(raw_boxes, raw_scores, anchors, image_shape, top_k=None)[0]
    assert everything.shape[1] == sum(h * w * PER_LOCATION for h, w in LEVELS.values())
