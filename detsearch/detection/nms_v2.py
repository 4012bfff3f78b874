"""Model Garden's ``nms_version: v2`` post-processing (its default), in NumPy.

Model Garden's ``_generate_detections_v2_class_aware`` (``official/vision/modeling/layers/
detection_generator.py``), per class of a batch of images:

1. the top ``pre_nms_top_k`` (5000) anchors by score, over every anchor (``tf.nn.top_k``:
   equal scores lower anchor first);
2. ``score > pre_nms_score_threshold`` (float32); the others become all-zero boxes ("dots")
   with score -1 and are never selected;
3. ``nms.sorted_non_max_suppression_padded``: a tiled NMS over tiles of 512 boxes with
   ``box_ops.bbox_overlap`` as IoU (``i_area / (bb_area + gt_area - i_area + 1e-8)`` in
   float32). A box is suppressed by a kept box of an earlier tile when their IoU is
   ``>= iou_threshold``. Within a tile a fixed-point loop decides, with two constants of its
   own: a box "can suppress" when no box overlaps it by more than 0.5, and the loop stops
   when no image of the batch lost more than 0.5 of summed IoU in an iteration. Above an IoU
   threshold of 0.5 this is greedy NMS (every change is then > 0.5 and the loop runs to its
   fixed point); at 0.5 and below it is not (a box suppressed at an IoU in [threshold, 0.5]
   can still suppress others). Selected: the boxes with a coordinate > 0, the first
   ``max_num_detections``;
4. all classes merged by ``tf.nn.top_k`` over the concatenated per-class lists: descending
   score, equal scores by (class, position); valid: score > 0.

Two properties the sweep relies on, both from the loop's rules. (a) A row of the tile's IoU
matrix is cleared (its box can no longer suppress) only by entries > 0.5, and "can suppress"
is decided by entries > 0.5 only; an iteration that changes the sums by 0.5 or less cleared
only rows without such entries, so the next one would change nothing: the loop stops exactly
at its fixed point, for every image, whatever the other images of the batch do. (b) Whether a
box is suppressed depends on the boxes before it only, so a higher score threshold (a shorter
prefix) keeps the same boxes of that prefix, and the output at cap ``c`` is the first ``c`` at a
larger cap, as for greedy NMS.

`detsearch.detection.reference_nms_v2.generate_detections_v2_reference` is Model Garden's code
transcribed line by line (every tile, every dot, the batch; no code shared with this module),
the oracle the tests hold against its TensorFlow function.
`tiled_nms` is step 3 for one image on the boxes that pass the score threshold only, its loop
run to the fixed point on the entries > 0.5 alone (the sweep's path). The transcription sums
the loop's IoUs in float64 where TensorFlow sums in float32, and the fast path stops at the
fixed point: only a change within float32 rounding of exactly 0.5 could be judged otherwise.

With ``use_class_agnostic_nms: true`` Model Garden's v2 (``_generate_detections_v2_class_agnostic``)
keeps each anchor's best class, the top ``pre_nms_top_k`` anchors of an image by it, and calls
TensorFlow's ``tf.image.non_max_suppression_padded`` instead: a tiled NMS of its own, whose loop
compares with the IoU threshold where Model Garden's compares with 0.5, and which is greedy NMS at
IoU >= the threshold at every threshold > 0. `padded_nms` is that for one image (the sweep's
path); `detsearch.detection.reference_nms_agnostic` is the line-by-line transcription.
"""

from __future__ import annotations

import numpy as np

# The transcription lives in its own module (it shares no code with the fast path); its names
# stay importable from here.
from detsearch.detection.reference_nms_v2 import (bbox_overlap, generate_detections_v2_reference,
                                                  sorted_nms_padded_reference)

__all__ = [
    "NMS_TILE_SIZE",
    "TF_TILE_SIZE",
    "bbox_overlap",
    "generate_detections_v2_reference",
    "padded_nms",
    "pairwise_overlap",
    "sorted_nms_padded_reference",
    "tiled_nms",
]

NMS_TILE_SIZE = 512
"""Model Garden's ``nms.NMS_TILE_SIZE``."""
TF_TILE_SIZE = 512
"""``tf.image.non_max_suppression_padded``'s default ``tile_size`` (Model Garden's class-agnostic
v2 passes none)."""

_HALF = 0.5  # the constant of Model Garden's self-suppression loop (not the IoU threshold)
_UPPER = np.triu(np.ones((NMS_TILE_SIZE, NMS_TILE_SIZE), bool), 1)  # i < j within a tile


def pairwise_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Model Garden's ``box_ops.bbox_overlap`` of ``[n, 4]`` and ``[m, 4]`` boxes without the -1
    padding rule (for boxes after score filtering, whose coordinates are >= 0 or which are
    dots): the same float32 operations in the same order. TensorFlow's own tiled NMS
    (``image_ops_impl._bbox_overlap``) computes the same, operation for operation. A zero or
    negative union (boxes given with their corners the other way round) divides without a
    warning."""
    ay0, ax0, ay1, ax1 = (a[:, k:k + 1] for k in range(4))
    by0, bx0, by1, bx1 = (b[None, :, k] for k in range(4))
    width = np.minimum(ax1, bx1)
    width -= np.maximum(ax0, bx0)
    np.maximum(width, np.float32(0), out=width)
    height = np.minimum(ay1, by1)
    height -= np.maximum(ay0, by0)
    np.maximum(height, np.float32(0), out=height)
    width *= height  # i_area
    union = (ay1 - ay0) * (ax1 - ax0) + (by1 - by0) * (bx1 - bx0)
    union -= width
    union += np.float32(1e-8)
    with np.errstate(divide="ignore", invalid="ignore"):
        width /= union
    return width


def _tile_suppressed(iou: np.ndarray, threshold: np.float32, above: np.float32 = np.float32(_HALF)) -> np.ndarray:
    """Which boxes of one tile Model Garden's loop suppresses, from the tile's IoU matrix: its
    fixed point computed on the entries that drive it. Rows are cleared ("can no longer
    suppress") only through entries > 0.5 between boxes with such entries; the loop runs on
    those alone, as booleans, to the fixed point Model Garden's loop stops at (property (a));
    then a box is suppressed when a row not cleared holds an entry ``>= threshold`` for it.
    With ``above`` 0 every entry ``>= threshold > 0`` drives the loop: TensorFlow's loop, whose
    fixed point is greedy NMS (`padded_nms`)."""
    n = len(iou)
    weak = _UPPER[:n, :n] & (iou >= threshold)
    weak &= iou > 0
    strong = weak & (iou > above)
    involved = np.flatnonzero(strong.any(0) | strong.any(1))
    cleared = np.zeros(n, bool)
    if len(involved):
        edges = strong[np.ix_(involved, involved)]
        done = np.zeros(len(involved), bool)
        while True:
            live = edges & ~done[:, None]
            can = ~live.any(0)
            newly = (live & can[:, None]).any(0) & ~done
            if not newly.any():
                break
            done |= newly
        cleared[involved] = done
    return (weak & ~cleared[:, None]).any(0)


def tiled_nms(boxes: np.ndarray, iou_threshold: float, max_output_size: int) -> np.ndarray:
    """``nms.sorted_non_max_suppression_padded`` for one image given only its real boxes: those that passed
    the score threshold, sorted (a prefix of its sorted list, at positions ``0..n-1``; the
    dots after them neither suppress, nor are selected, nor add to the loop's sums). Returns
    the selected positions in order, at most ``max_output_size``. The images of a batch do
    not interact (see the module's docstring), so one image is enough."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    threshold = np.float32(iou_threshold)
    alive = np.ones(len(boxes), bool)  # not suppressed: may suppress later boxes
    selected = np.zeros(len(boxes), bool)  # alive with a coordinate > 0
    for lo in range(0, len(boxes), NMS_TILE_SIZE):
        if selected.sum() >= max_output_size:
            break
        hi = min(len(boxes), lo + NMS_TILE_SIZE)
        earlier = boxes[:lo][alive[:lo]]
        if len(earlier):
            alive[lo:hi] &= ~(pairwise_overlap(earlier, boxes[lo:hi]) >= threshold).any(0)
        tile = boxes[lo:hi] * alive[lo:hi, None]  # suppressed boxes become dots
        alive[lo:hi] &= ~_tile_suppressed(pairwise_overlap(tile, tile), threshold)
        selected[lo:hi] = alive[lo:hi] & (tile > 0).any(1)
    return np.flatnonzero(selected)[:max_output_size]


_FIRST_CHUNK = 128  # padded_nms's first chunk; then doubled up to TF_TILE_SIZE


def padded_nms(boxes: np.ndarray, iou_threshold: float, max_output_size: int) -> np.ndarray:
    """``tf.image.non_max_suppression_padded`` as Model Garden's class-agnostic v2 runs it
    (``sorted_input``, score threshold applied; TensorFlow's ``non_max_suppression_padded_v2``)
    for one image given only its real boxes: those that passed the score threshold, sorted (a
    prefix of its sorted list, at positions ``0..n-1``; the dots after them have IoU 0 with every
    box, so at a threshold > 0 they neither suppress nor are selected). Returns the selected
    positions in order, at most ``max_output_size``.

    What it computes (`detsearch.detection.reference_nms_agnostic` says why that is TensorFlow's
    algorithm): at ``t = float32(iou_threshold) > 0`` greedy NMS over the whole list, a box
    suppressed when a kept earlier box overlaps it by ``>= t`` (IoU in `pairwise_overlap`'s
    float32 arithmetic, TensorFlow's ``_bbox_overlap`` operation by operation), selected when
    kept and with a coordinate > 0 (a kept box without one still suppresses); at ``t = 0`` the
    first `TF_TILE_SIZE` positions that have a coordinate > 0 (no suppression within a tile,
    every later tile suppressed). Greedy NMS does not depend on how the list is cut into tiles,
    so this one walks chunks of its own (128 boxes, then doubling up to 512): each chunk
    suppressed by the kept boxes before it, then within itself by `_tile_suppressed` with every
    entry driving the loop (its fixed point: greedy NMS over the chunk), stopping once
    ``max_output_size`` are selected. TensorFlow's loop may stop short of that fixed point only
    after an iteration in which no image of its batch lost more than ``t`` of summed IoU though
    one lost an entry: a single IoU equal to ``t`` (or within its float32 sums' rounding of
    ``t``); this path is the fixed point (the tests show both on a chain of boxes).

    Both properties the sweep needs hold: whether a box is kept depends on the boxes before it
    only (greedy; at ``t = 0`` on its position), so a shorter prefix (a higher score threshold)
    keeps the same boxes of that prefix, and the output at cap ``c`` is the first ``c`` at a
    larger cap.

    Raises:
      ValueError: ``t < 0`` (TensorFlow's loop does not end there).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    threshold = np.float32(iou_threshold)
    if not threshold >= 0:
        raise ValueError(f"iou_threshold {iou_threshold!r} < 0: TensorFlow's padded NMS never ends there")
    selectable = (boxes > 0).any(1)
    if threshold == 0:
        return np.flatnonzero(selectable[:TF_TILE_SIZE])[:max_output_size]
    alive = np.ones(len(boxes), bool)  # not suppressed: may suppress later boxes
    lo, size, count = 0, _FIRST_CHUNK, 0
    while lo < len(boxes) and count < max_output_size:
        hi = min(len(boxes), lo + size)
        earlier = boxes[:lo][alive[:lo]]
        if len(earlier):
            alive[lo:hi] &= ~(pairwise_overlap(earlier, boxes[lo:hi]) >= threshold).any(0)
        inside = lo + np.flatnonzero(alive[lo:hi])
        chunk = boxes[inside]
        alive[inside] = ~_tile_suppressed(pairwise_overlap(chunk, chunk), threshold, np.float32(0))
        count += int(np.count_nonzero(alive[lo:hi] & selectable[lo:hi]))
        lo, size = hi, min(2 * size, TF_TILE_SIZE)
    return np.flatnonzero(alive[:lo] & selectable[:lo])[:max_output_size]
