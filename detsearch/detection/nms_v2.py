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

`generate_detections_v2_reference` is Model Garden's code transcribed line by line (every
tile, every dot, the batch), the oracle the tests hold against its TensorFlow function.
`tiled_nms` is step 3 for one image on the boxes that pass the score threshold only, its loop
run to the fixed point on the entries > 0.5 alone (the sweep's path). The transcription sums
the loop's IoUs in float64 where TensorFlow sums in float32, and the fast path stops at the
fixed point: only a change within float32 rounding of exactly 0.5 could be judged otherwise.
"""

from __future__ import annotations

import numpy as np

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


def bbox_overlap(boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """``box_ops.bbox_overlap`` in float32: ``[B, N, 4]`` x ``[B, M, 4]`` yxyx -> ``[B, N, M]``
    IoU, -1 where a box's largest coordinate is < 0 (Model Garden's padding)."""
    boxes = np.asarray(boxes, np.float32)
    gt_boxes = np.asarray(gt_boxes, np.float32)
    by0, bx0, by1, bx1 = (boxes[..., k:k + 1] for k in range(4))
    gy0, gx0, gy1, gx1 = (gt_boxes[..., None, :, k] for k in range(4))
    zero = np.float32(0)
    i_area = np.maximum(np.minimum(bx1, gx1) - np.maximum(bx0, gx0), zero) * np.maximum(
        np.minimum(by1, gy1) - np.maximum(by0, gy0), zero)
    bb_area = (by1 - by0) * (bx1 - bx0)
    gt_area = (gy1 - gy0) * (gx1 - gx0)
    u_area = bb_area + gt_area - i_area + np.float32(1e-8)
    iou = i_area / u_area
    iou = np.where(gt_boxes.max(-1)[..., None, :] < 0, np.float32(-1), iou)
    return np.where(boxes.max(-1)[..., :, None] < 0, np.float32(-1), iou).astype(np.float32)


def _self_suppression(iou: np.ndarray) -> np.ndarray:
    """The fixed-point loop over one tile of a batch, ``iou`` ``[B, n, n]`` already masked to
    ``i < j`` and ``>= threshold``; returns the final matrix."""
    total = iou.sum((1, 2), dtype=np.float64)
    while True:
        can_suppress = (iou.max(1, initial=0) <= _HALF).astype(np.float32)[:, :, None]
        iou = ((can_suppress * iou).max(1, initial=0) <= _HALF).astype(np.float32)[:, :, None] * iou
        new_total = iou.sum((1, 2), dtype=np.float64)
        if not (total - new_total > _HALF).any():
            return iou
        total = new_total


def sorted_nms_padded_reference(scores: np.ndarray, boxes: np.ndarray, max_output_size: int,
                                iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``nms.sorted_non_max_suppression_padded`` line by line: ``scores`` ``[B, N]``, ``boxes``
    ``[B, N, 4]`` sorted by score (dots anywhere). Returns ``(scores, boxes, positions)``:
    ``[B, max_output_size]``, ``[B, max_output_size, 4]`` as Model Garden returns them (zero
    past each image's output), and the selected input positions (-1 past the output)."""
    scores = np.asarray(scores, np.float32)
    boxes = np.asarray(boxes, np.float32)
    batch, num_boxes = scores.shape
    tiles = -(-num_boxes // NMS_TILE_SIZE)
    pad = tiles * NMS_TILE_SIZE - num_boxes
    boxes = np.pad(boxes, [(0, 0), (0, pad), (0, 0)])
    scores = np.pad(scores, [(0, 0), (0, pad)], constant_values=-1)
    threshold = np.float32(iou_threshold)
    output_size = np.zeros(batch, np.int64)
    upper = np.triu(np.ones((NMS_TILE_SIZE, NMS_TILE_SIZE), bool), 1)[None]
    idx = 0
    while output_size.min() < max_output_size and idx < tiles:
        tile = slice(idx * NMS_TILE_SIZE, (idx + 1) * NMS_TILE_SIZE)
        box_slice = boxes[:, tile].copy()
        for inner in range(idx):
            earlier = boxes[:, inner * NMS_TILE_SIZE:(inner + 1) * NMS_TILE_SIZE]
            keep = (bbox_overlap(earlier, box_slice) < threshold).all(1)
            box_slice = keep[:, :, None].astype(np.float32) * box_slice
        iou = bbox_overlap(box_slice, box_slice)
        iou = iou * (upper & (iou >= threshold)).astype(np.float32)
        suppressed = _self_suppression(iou).sum(1, dtype=np.float64) > 0
        box_slice = box_slice * (1 - suppressed.astype(np.float32))[:, :, None]
        boxes[:, tile] = box_slice
        output_size += (box_slice > 0).any(2).sum(1)
        idx += 1
    out_scores = np.zeros((batch, max_output_size), np.float32)
    out_boxes = np.zeros((batch, max_output_size, 4), np.float32)
    positions = np.full((batch, max_output_size), -1, np.int64)
    for b in range(batch):
        chosen = np.flatnonzero((boxes[b] > 0).any(1))[:min(max_output_size, output_size[b])]
        out_scores[b, :len(chosen)] = scores[b, chosen]
        out_boxes[b, :len(chosen)] = boxes[b, chosen]
        positions[b, :len(chosen)] = chosen
    return out_scores, out_boxes, positions


def _merge(per_class_scores: np.ndarray, max_num_detections: int) -> np.ndarray:
    """``tf.nn.top_k`` over ``[C, max]`` scores flattened: the first ``max_num_detections``
    flat positions by descending score, ties lower position first."""
    flat = per_class_scores.reshape(-1)
    return np.argsort(-flat, kind="stable")[:max_num_detections]


def generate_detections_v2_reference(boxes: np.ndarray, scores: np.ndarray, *, pre_nms_top_k: int = 5000,
                                     pre_nms_score_threshold: float = 0.05, nms_iou_threshold: float = 0.5,
                                     max_num_detections: int = 100):
    """``_generate_detections_v2_class_aware`` line by line on one batch: ``boxes`` ``[B, N, C
    or 1, 4]``, ``scores`` ``[B, N, C]`` (float32). Returns Model Garden's ``(boxes, scores,
    classes, valid_detections)`` and the anchor index of every output ``[B, max]`` (-1 where
    invalid)."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    batch, num_anchors, num_classes = scores.shape
    k = min(num_anchors, int(pre_nms_top_k))
    threshold = np.float32(pre_nms_score_threshold)
    all_scores, all_boxes, all_anchor = [], [], []
    for c in range(num_classes):
        order = np.argsort(-scores[:, :, c], axis=1, kind="stable")[:, :k]
        scores_c = np.take_along_axis(scores[:, :, c], order, 1)
        boxes_c = np.take_along_axis(boxes[:, :, min(boxes.shape[2] - 1, c)], order[:, :, None], 1)
        mask = scores_c > threshold
        boxes_c = mask[:, :, None].astype(np.float32) * boxes_c
        scores_c = np.where(mask, scores_c, np.float32(-1))
        out_scores, out_boxes, positions = sorted_nms_padded_reference(scores_c, boxes_c, max_num_detections,
                                                                       nms_iou_threshold)
        all_scores.append(out_scores)
        all_boxes.append(out_boxes)
        all_anchor.append(np.where(positions >= 0, np.take_along_axis(order, np.maximum(positions, 0), 1), -1))
    merged_scores = np.stack(all_scores, 1)  # [B, C, max]
    merged_boxes = np.stack(all_boxes, 1)
    merged_anchor = np.stack(all_anchor, 1)
    out = (np.zeros((batch, max_num_detections, 4), np.float32), np.zeros((batch, max_num_detections), np.float32),
           np.zeros((batch, max_num_detections), np.int64), np.zeros(batch, np.int64),
           np.full((batch, max_num_detections), -1, np.int64))
    for b in range(batch):
        top = _merge(merged_scores[b], max_num_detections)
        out[0][b] = merged_boxes[b].reshape(-1, 4)[top]
        out[1][b] = merged_scores[b].reshape(-1)[top]
        out[2][b] = top // max_num_detections
        out[3][b] = int((out[1][b] > 0).sum())
        out[4][b] = np.where(out[1][b] > 0, merged_anchor[b].reshape(-1)[top], -1)
    return out


def _pairwise_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`bbox_overlap` of ``[n, 4]`` and ``[m, 4]`` boxes without the -1 padding rule (for boxes
    after score filtering, whose coordinates are >= 0 or which are dots): the same float32
    operations in the same order."""
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
    """`sorted_nms_padded_reference` for one image given only its real boxes: those that passed
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
