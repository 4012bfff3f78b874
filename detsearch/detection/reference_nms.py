"""Greedy non-maximum suppression written the plain way: the reference the fast paths of
`detsearch.detection.nms` (the batched walk, the TensorFlow-op paths) and the sweep's oracle
are tested against.

Semantics: TensorFlow 2.20's ``NonMaxSuppressionV5`` CPU kernel (``non_max_suppression_op.cc``):

- a candidate is visited only if ``float32(score) > float32(score_threshold)``;
- candidates are visited by descending score, equal scores lower index first;
- a candidate is suppressed when its IoU with an already kept box is
  ``> float32(iou_threshold)`` (equal does not suppress);
- IoU is the kernel's float32 formula, step by step: coordinates ordered, a pair where either
  area is ``<= 0`` has IoU 0, otherwise ``intersection / (area_a + area_b - intersection)``.

Per-class NMS runs that pass per class (at most ``max_detections_per_class`` kept each), then
merges by descending score, ties lower index first, and keeps ``max_total_detections``.
Class-agnostic NMS (Faster R-CNN's first stage) is one pass, or one per FPN level merged the
same way, cut to ``max_output_size``.

Nothing here is shared with the fast paths: the IoU, the visiting order and the merge are
written again on purpose, as loops, so that a bug in one side cannot pass an agreement test
by being on both. Imports only NumPy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["class_agnostic_nms_reference", "kernel_iou", "nms_reference", "per_class_nms_reference"]

_PER_CLASS = 100  # Model Garden's max_num_detections, per class and in total
_PROPOSALS = 1000  # Model Garden's test_num_proposals


def kernel_iou(candidate, kept) -> np.float32:
    """IoU of two yxyx boxes (sequences of four float32 values), as the kernel computes it."""
    zero = np.float32(0)
    c_ymin, c_ymax = min(candidate[0], candidate[2]), max(candidate[0], candidate[2])
    c_xmin, c_xmax = min(candidate[1], candidate[3]), max(candidate[1], candidate[3])
    k_ymin, k_ymax = min(kept[0], kept[2]), max(kept[0], kept[2])
    k_xmin, k_xmax = min(kept[1], kept[3]), max(kept[1], kept[3])
    c_area = (c_ymax - c_ymin) * (c_xmax - c_xmin)
    k_area = (k_ymax - k_ymin) * (k_xmax - k_xmin)
    if c_area <= zero or k_area <= zero:
        return zero
    height = max(min(c_ymax, k_ymax) - max(c_ymin, k_ymin), zero)
    width = max(min(c_xmax, k_xmax) - max(c_xmin, k_xmin), zero)
    intersection = height * width
    return np.float32(intersection / (c_area + k_area - intersection))


def nms_reference(boxes, scores, *, iou_threshold, score_threshold=-math.inf, max_output_size=None) -> np.ndarray:
    """Greedy NMS of one group.

    Args:
      boxes: ``[N, 4]`` yxyx (compared in float32).
      scores: ``[N]`` (compared in float32).
      iou_threshold: suppresses a box whose IoU with a kept box is ``> iou_threshold``; in [0, 1].
      score_threshold: keeps only boxes with ``score > score_threshold``.
      max_output_size: stop after this many kept boxes (None: no limit).

    Returns:
      int64 indices of the kept boxes by descending score (ties: lower index first).
    """
    boxes, scores = _boxes_and_scores(boxes, scores)
    iou_limit, score_limit = _thresholds(iou_threshold, score_threshold)
    limit = len(boxes) if max_output_size is None else _count("max_output_size", max_output_size)
    rows = [tuple(box) for box in boxes]  # float32 scalars: every step rounds as the kernel's
    visit = sorted((i for i in range(len(scores)) if scores[i] > score_limit), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in visit:
        if len(kept) >= limit:
            break
        if not any(kernel_iou(rows[i], rows[k]) > iou_limit for k in kept):
            kept.append(i)
    return np.array(kept, np.int64)


def per_class_nms_reference(boxes, scores, classes, *, iou_threshold, score_threshold=-math.inf,
                            max_detections_per_class=_PER_CLASS, max_total_detections=_PER_CLASS) -> np.ndarray:
    """Greedy NMS of one image, class by class (a candidate is a (box, class) pair).

    Args:
      boxes: ``[N, 4]`` yxyx; scores: ``[N]``; classes: ``[N]`` integers.
      iou_threshold: suppresses a box whose IoU with a kept box of its class is ``> iou_threshold``.
      score_threshold: keeps only candidates with ``score > score_threshold``.
      max_detections_per_class: at most this many kept per class (None: 100).
      max_total_detections: at most this many in total (None: 100).

    Returns:
      int64 indices by descending score; equal scores by ascending index.
    """
    boxes, scores = _boxes_and_scores(boxes, scores)
    classes = _labels("classes", classes, len(boxes))
    _thresholds(iou_threshold, score_threshold)
    per_class = _count("max_detections_per_class", _PER_CLASS if max_detections_per_class is None else max_detections_per_class)
    total = _count("max_total_detections", _PER_CLASS if max_total_detections is None else max_total_detections)
    kept = _nms_by_group(boxes, scores, classes, iou_threshold, score_threshold, per_class)
    return _best_first(kept, scores, total)


def class_agnostic_nms_reference(boxes, scores, *, iou_threshold, score_threshold=-math.inf,
                                 max_output_size=_PROPOSALS, levels=None) -> np.ndarray:
    """Greedy NMS over all boxes of one image (Faster R-CNN's first stage), per FPN level when
    ``levels`` is given (as Model Garden's multilevel ROI generator), then merged.

    Args:
      boxes: ``[N, 4]`` yxyx proposals; scores: ``[N]`` objectness.
      iou_threshold, score_threshold: as `nms_reference`.
      max_output_size: keep the best this many after merging the levels (None: 1000).
      levels: optional ``[N]`` integer level of each proposal.

    Returns:
      int64 indices by descending objectness; equal scores by ascending index.
    """
    boxes, scores = _boxes_and_scores(boxes, scores)
    _thresholds(iou_threshold, score_threshold)
    limit = _count("max_output_size", _PROPOSALS if max_output_size is None else max_output_size)
    if levels is None:
        return nms_reference(boxes, scores, iou_threshold=iou_threshold, score_threshold=score_threshold,
                             max_output_size=limit)
    levels = _labels("levels", levels, len(boxes))
    kept = _nms_by_group(boxes, scores, levels, iou_threshold, score_threshold, limit)
    return _best_first(kept, scores, limit)


def _nms_by_group(boxes, scores, groups, iou_threshold, score_threshold, limit: int) -> list[int]:
    """`nms_reference` within each group (class or level), ``limit`` kept per group; the kept
    indices into ``boxes``, group by group."""
    kept: list[int] = []
    for value in sorted(set(groups.tolist())):
        members = [i for i in range(len(groups)) if groups[i] == value]
        chosen = nms_reference(boxes[members], scores[members], iou_threshold=iou_threshold,
                               score_threshold=score_threshold, max_output_size=limit)
        kept += [members[k] for k in chosen]
    return kept


def _best_first(indices: list[int], scores: np.ndarray, limit: int) -> np.ndarray:
    """The first ``limit`` of ``indices`` by descending score, equal scores lower index first."""
    return np.array(sorted(indices, key=lambda i: (-scores[i], i))[:limit], np.int64)


def _boxes_and_scores(boxes, scores) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, np.float32)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {boxes.shape}")
    scores = np.asarray(scores, np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"scores has {len(scores)} entries for {len(boxes)} boxes")
    return boxes, scores


def _labels(name: str, values, size: int) -> np.ndarray:
    values = np.asarray(values).reshape(-1)
    if len(values) != size:
        raise ValueError(f"{name} has {len(values)} entries for {size} boxes")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {values.dtype}")
    return values.astype(np.int64)


def _thresholds(iou_threshold, score_threshold) -> tuple[np.float32, np.float32]:
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    if math.isnan(float(score_threshold)):
        raise ValueError(f"score_threshold must not be NaN, got {score_threshold!r}")
    return np.float32(iou_threshold), np.float32(score_threshold)


def _count(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)
