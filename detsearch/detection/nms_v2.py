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
run to the fixed point (the sweep's path); `tiled_nms_groups` is the same on many lists in one
call (every image and class of a sweep). Both run `_tiled_groups`, a compiled kernel (numba):
one box at a time, in order, against the boxes that can still suppress it, which is the loop's
fixed point (its docstring says why) without the tile's IoU matrix. The transcription sums the
loop's IoUs in float64 where TensorFlow sums in float32, and the fast path stops at the fixed
point: only a change within float32 rounding of exactly 0.5 could be judged otherwise. The
kernel assumes finite boxes (a cache holds no others).

With ``use_class_agnostic_nms: true`` Model Garden's v2 (``_generate_detections_v2_class_agnostic``)
keeps each anchor's best class, the top ``pre_nms_top_k`` anchors of an image by it, and calls
TensorFlow's ``tf.image.non_max_suppression_padded`` instead: a tiled NMS of its own, whose loop
compares with the IoU threshold where Model Garden's compares with 0.5, and which is greedy NMS at
IoU >= the threshold at every threshold > 0. `padded_nms` is that for one image and
`padded_nms_groups` for many (the sweep's path, the same kernel);
`detsearch.detection.reference_nms_agnostic` is the line-by-line transcription.
"""

from __future__ import annotations

import numba
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
    "merge_classes",
    "padded_nms",
    "padded_nms_groups",
    "pairwise_overlap",
    "sorted_nms_padded_reference",
    "tiled_nms",
    "tiled_nms_groups",
]

NMS_TILE_SIZE = 512
"""Model Garden's ``nms.NMS_TILE_SIZE``."""
TF_TILE_SIZE = 512
"""``tf.image.non_max_suppression_padded``'s default ``tile_size`` (Model Garden's class-agnostic
v2 passes none)."""

_HALF = np.float32(0.5)  # the constant of Model Garden's self-suppression loop (not the IoU threshold)
_NONE = np.float32(0)  # TensorFlow's loop: every entry >= the threshold drives it
_EPS = np.float32(1e-8)
_ZERO = np.float32(0)


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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _overlap(boxes, i, j):  # pragma: no cover - compiled
    """`pairwise_overlap` of boxes ``i`` (the earlier) and ``j``: the same float32 operations in
    the same order (float32 operands give float32 results in compiled code too)."""
    ay0, ax0, ay1, ax1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
    by0, bx0, by1, bx1 = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
    width = (ax1 if ax1 <= bx1 else bx1) - (ax0 if ax0 >= bx0 else bx0)
    if width < _ZERO:
        width = _ZERO
    height = (ay1 if ay1 <= by1 else by1) - (ay0 if ay0 >= by0 else by0)
    if height < _ZERO:
        height = _ZERO
    inter = width * height
    union = (ay1 - ay0) * (ax1 - ax0) + (by1 - by0) * (bx1 - bx0)
    union = union - inter
    union = union + _EPS
    return inter / union


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _tiled_groups(boxes, offsets, threshold, above, cap, tile):  # pragma: no cover - compiled
    """The kernel behind `tiled_nms`, `padded_nms` and `tiled_nms_groups`: for every group
    ``boxes[offsets[g]:offsets[g + 1]]`` (sorted, real boxes only) which boxes are selected.

    One box at a time, in order (whether a box is suppressed depends on the boxes before it
    only, property (b)): a box is suppressed by a box of an earlier tile that was not suppressed
    when their IoU is ``>= threshold``; one so suppressed is a dot in its own tile (no IoU > 0
    with anything). Otherwise, within its tile, it is suppressed by an earlier box of the tile
    that is not a dot and not cleared when their IoU is ``>= threshold`` and ``> 0``, and it is
    cleared (can no longer suppress) when such an IoU is also ``> above``. Why that is the
    loop's fixed point: "box j is cleared iff a box i < j not cleared has a strong entry
    (``> above``) for it" has one solution (decide the boxes in order). The loop's end state
    solves it: a box it cleared was cleared by one that could suppress then, and such a box is
    never cleared later (the live entries into it only go); and were a box not cleared with a
    live entry from one not cleared, the first such box's source would have no live entry
    itself, so could suppress, and the loop would not have stopped. Selected: not suppressed and
    a coordinate > 0; a group stops once ``cap`` are selected (nothing before a box depends on
    the boxes after it)."""
    n = boxes.shape[0]
    selected = np.zeros(n, np.bool_)
    kept = np.empty(n, np.int64)  # not suppressed, of the group's finished tiles
    live = np.empty(tile, np.int64)  # the current tile's boxes that are not dots and not cleared
    alive = np.empty(tile, np.int64)  # the current tile's boxes not suppressed
    for g in range(len(offsets) - 1):
        lo, hi = offsets[g], offsets[g + 1]
        num_kept = num_live = num_alive = count = 0
        for j in range(lo, hi):
            if (j - lo) % tile == 0:  # a new tile
                kept[num_kept:num_kept + num_alive] = alive[:num_alive]
                num_kept += num_alive
                num_live = num_alive = 0
            if count >= cap:
                break
            suppressed = False
            for k in range(num_kept):
                if _overlap(boxes, kept[k], j) >= threshold:
                    suppressed = True
                    break
            if suppressed:
                continue  # a dot in its tile
            cleared = False
            for k in range(num_live):
                iou = _overlap(boxes, live[k], j)
                if iou >= threshold and iou > _ZERO:
                    suppressed = True
                    if iou > above:
                        cleared = True
                        break
            if not cleared:
                live[num_live] = j
                num_live += 1
            if not suppressed:
                alive[num_alive] = j
                num_alive += 1
                if boxes[j, 0] > _ZERO or boxes[j, 1] > _ZERO or boxes[j, 2] > _ZERO or boxes[j, 3] > _ZERO:
                    selected[j] = True
                    count += 1
    return selected


def tiled_nms_groups(boxes: np.ndarray, offsets: np.ndarray, iou_threshold: float, max_output_size: int) -> np.ndarray:
    """`tiled_nms` on many lists at once: list ``g`` is ``boxes[offsets[g]:offsets[g + 1]]``.
    Returns a bool mask over ``boxes``: selected (each list's first ``max_output_size`` at most)."""
    boxes = np.ascontiguousarray(boxes, np.float32).reshape(-1, 4)
    return _tiled_groups(boxes, np.asarray(offsets, np.int64), np.float32(iou_threshold), _HALF,
                         int(max_output_size), NMS_TILE_SIZE)


@numba.njit(cache=True, nogil=True)
def _merged(image, score, cap):  # pragma: no cover - compiled
    out = np.empty(len(image), np.int64)
    size = lo = 0
    while lo < len(image):
        hi = lo + 1
        while hi < len(image) and image[hi] == image[lo]:
            hi += 1
        order = np.argsort(-score[lo:hi], kind="mergesort")  # stable: ties keep the given order
        k = min(cap, hi - lo)
        out[size:size + k] = lo + order[:k]
        size += k
        lo = hi
    return out[:size]


def merge_classes(image: np.ndarray, score: np.ndarray, max_total: int) -> np.ndarray:
    """Step 4 for many images: given the selected boxes of each image's classes by ascending
    image, within an image in the merge's tie order (ascending class, then position in the
    class's selection), the positions of each image's first ``max_total`` by descending score
    (ties in that order: ``tf.nn.top_k`` over the concatenated lists), image by image."""
    return _merged(np.asarray(image, np.int64), np.asarray(score, np.float32), int(max_total))


def tiled_nms(boxes: np.ndarray, iou_threshold: float, max_output_size: int) -> np.ndarray:
    """``nms.sorted_non_max_suppression_padded`` for one image given only its real boxes: those that passed
    the score threshold, sorted (a prefix of its sorted list, at positions ``0..n-1``; the
    dots after them neither suppress, nor are selected, nor add to the loop's sums). Returns
    the selected positions in order, at most ``max_output_size``. The images of a batch do
    not interact (see the module's docstring), so one image is enough."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.flatnonzero(tiled_nms_groups(boxes, np.array([0, len(boxes)]), iou_threshold, max_output_size))


def padded_nms_groups(boxes: np.ndarray, offsets: np.ndarray, iou_threshold: float, max_output_size: int) -> np.ndarray:
    """`padded_nms` on many lists at once, as `tiled_nms_groups`."""
    boxes = np.ascontiguousarray(boxes, np.float32).reshape(-1, 4)
    offsets = np.asarray(offsets, np.int64)
    threshold = np.float32(iou_threshold)
    if not threshold >= 0:
        raise ValueError(f"iou_threshold {iou_threshold!r} < 0: TensorFlow's padded NMS never ends there")
    if threshold == 0:  # no suppression within the first tile, every later tile suppressed
        position = np.arange(len(boxes)) - np.repeat(offsets[:-1], np.diff(offsets))
        selectable = (boxes > 0).any(1) & (position < TF_TILE_SIZE)
        group_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        rank = np.cumsum(selectable) - 1
        first = np.r_[0, np.cumsum(selectable)][offsets[:-1]]
        return selectable & (rank - first[group_of] < max_output_size)
    return _tiled_groups(boxes, offsets, threshold, _NONE, int(max_output_size), TF_TILE_SIZE)


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
    every later tile suppressed). Greedy NMS is `_tiled_groups` with every entry ``>= t``
    driving the loop (``above`` 0: a suppressed box is cleared), whatever the tiles.
    TensorFlow's loop may stop short of that fixed point only after an iteration in which no
    image of its batch lost more than ``t`` of summed IoU though one lost an entry: a single IoU
    equal to ``t`` (or within its float32 sums' rounding of ``t``); this path is the fixed point
    (the tests show both on a chain of boxes).

    Both properties the sweep needs hold: whether a box is kept depends on the boxes before it
    only (greedy; at ``t = 0`` on its position), so a shorter prefix (a higher score threshold)
    keeps the same boxes of that prefix, and the output at cap ``c`` is the first ``c`` at a
    larger cap.

    Raises:
      ValueError: ``t < 0`` (TensorFlow's loop does not end there).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.flatnonzero(padded_nms_groups(boxes, np.array([0, len(boxes)]), iou_threshold, max_output_size))
