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
"""

from __future__ import annotations

import numpy as np

# The transcription lives in its own module (it shares no code with the fast path); its names
# stay importable from here.
from detsearch.detection.reference_nms_v2 import (bbox_overlap, generate_detections_v2_reference,
                                                  sorted_nms_padded_reference)

__all__ = [
    "NMS_TILE_SIZE",
    "bbox_overlap",
    "generate_detections_v2_reference",
    "sorted_nms_padded_reference",
    "tiled_nms",
]

NMS_TILE_SIZE = 512
"""Model Garden's ``nms.NMS_TILE_SIZE``."""

_HALF = 0.5  # the constant of Model Garden's self-suppression loop (not the IoU threshold)
_UPPER = np.triu(np.ones((NMS_TILE_SIZE, NMS_TILE_SIZE), bool), 1)  # i < j within a tile


def _pairwise_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Model Garden's ``box_ops.bbox_overlap`` of ``[n, 4]`` and ``[m, 4]`` boxes without the -1
    padding rule (for boxes after score filtering, whose coordinates are >= 0 or which are
    dots): the same float32 operations in the same order."""
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
    width /= union
    return width


def _tile_suppressed(iou: np.ndarray, threshold: np.float32) -> np.ndarray:
    """Which boxes of one tile Model Garden's loop suppresses, from the tile's IoU matrix: its
    fixed point computed on the entries that drive it. Rows are cleared ("can no longer
    suppress") only through entries > 0.5 between boxes with such entries; the loop runs on
    those alone, as booleans, to the fixed point Model Garden's loop stops at (property (a));
    then a box is suppressed when a row not cleared holds an entry ``>= threshold`` for it."""
    n = len(iou)
    weak = _UPPER[:n, :n] & (iou >= threshold)
    weak &= iou > 0
    strong = weak & (iou > np.float32(_HALF))
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
            alive[lo:hi] &= ~(_pairwise_overlap(earlier, boxes[lo:hi]) >= threshold).any(0)
        tile = boxes[lo:hi] * alive[lo:hi, None]  # suppressed boxes become dots
        alive[lo:hi] &= ~_tile_suppressed(_pairwise_overlap(tile, tile), threshold)
        selected[lo:hi] = alive[lo:hi] & (tile > 0).any(1)
    return np.flatnonzero(selected)[:max_output_size]
