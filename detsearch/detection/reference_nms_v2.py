"""Model Garden's ``nms_version: v2`` post-processing transcribed line by line in NumPy: the
oracle for `detsearch.detection.nms_v2.tiled_nms` (the sweep's path) and the sweep's reference,
itself held against Model Garden's TensorFlow function by the tests.

``_generate_detections_v2_class_aware`` and ``nms.sorted_non_max_suppression_padded``
(``official/vision/modeling/layers/detection_generator.py``, ``official/vision/ops/nms.py``)
and ``box_ops.bbox_overlap``: every tile, every dot (an all-zero box with score -1), every image
of the batch, the self-suppression loop with its own 0.5 constant. The one difference: the
loop's IoU sums are taken in float64 where TensorFlow sums in float32 (only a change within
float32 rounding of exactly 0.5 could be judged otherwise).

Shares no code with `detsearch.detection.nms_v2`; imports only NumPy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bbox_overlap", "generate_detections_v2_reference", "sorted_nms_padded_reference"]

_TILE = 512  # Model Garden's nms.NMS_TILE_SIZE
_HALF = 0.5  # the constant of Model Garden's self-suppression loop (not the IoU threshold)


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
    tiles = -(-num_boxes // _TILE)
    pad = tiles * _TILE - num_boxes
    boxes = np.pad(boxes, [(0, 0), (0, pad), (0, 0)])
    scores = np.pad(scores, [(0, 0), (0, pad)], constant_values=-1)
    threshold = np.float32(iou_threshold)
    output_size = np.zeros(batch, np.int64)
    upper = np.triu(np.ones((_TILE, _TILE), bool), 1)[None]
    idx = 0
    while output_size.min() < max_output_size and idx < tiles:
        tile = slice(idx * _TILE, (idx + 1) * _TILE)
        box_slice = boxes[:, tile].copy()
        for inner in range(idx):
            earlier = boxes[:, inner * _TILE:(inner + 1) * _TILE]
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
