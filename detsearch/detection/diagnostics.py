"""The chosen configuration's confusion matrix and score calibration, as hotcoco's
``COCOeval.confusion_matrix`` and ``COCOeval.calibration`` compute them.

- `confusion_matrix`: every detection of an image against every ground truth box of any category
  (crowd regions excluded), greedy by descending score (ties by category, then output order),
  the first ``max_det`` of the image: a detection takes the unmatched box of highest IoU
  ``>= iou_thr`` (the later of equal IoU), whatever its category. Rows are ground truth
  categories, columns detected ones; the last row and column are background (unmatched
  detections, missed boxes).
- `calibration`: the detections COCO counts at IoU 0.5 (area "all", the first ``maxDets[2]`` of
  an image and category, ignored ones left out), a detection correct when it is matched, in
  ``n_bins`` equal-width score bins (``min(int(score * n_bins), n_bins - 1)``). The expected
  calibration error adds ``count / total * |accuracy - confidence|`` bin by bin; the maximum
  is the largest gap. Sums run in image, category, score order, as hotcoco's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from detsearch.detection.cocoeval import CocoMatcher, Matches, _pair_iou

__all__ = ["Calibration", "Confusion", "calibration", "confusion_matrix"]


@dataclass(frozen=True, eq=False)
class Confusion:
    """``matrix``: uint64 ``[K + 1, K + 1]`` (ground truth category by detected category, index K
    background); ``normalized``: each row over its sum (zero rows stay zero)."""

    matrix: np.ndarray
    normalized: np.ndarray
    category_ids: tuple[int, ...]
    names: tuple[str, ...]
    iou_thr: float

    def to_dict(self) -> dict[str, Any]:
        return {"category_ids": list(self.category_ids), "iou_thr": self.iou_thr,
                "matrix": self.matrix.tolist()}


def confusion_matrix(matcher: CocoMatcher, image_pos, category_pos, boxes_xywh, scores, *, iou_thr: float = 0.5,
                     max_det: int | None = None) -> Confusion:
    """The confusion matrix of detections given in output order (their order breaks score and
    category ties). ``max_det``: detections per image (default ``maxDets[2]``)."""
    image_pos = np.asarray(image_pos, np.int64).reshape(-1)
    category_pos = np.asarray(category_pos, np.int64).reshape(-1)
    boxes = np.ascontiguousarray(boxes_xywh, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    max_det = matcher.max_dets[-1] if max_det is None else int(max_det)
    order = np.lexsort((np.arange(len(scores)), category_pos, -scores, image_pos))
    num_k = matcher.num_categories
    matrix = np.zeros((num_k + 1, num_k + 1), np.uint64)
    image_bounds = np.searchsorted(image_pos[order], np.arange(matcher.num_images + 1))
    gt_bounds = np.searchsorted(matcher._gt_image, np.arange(matcher.num_images + 1))
    _confusion(order, image_bounds, gt_bounds, category_pos, boxes, matcher._gt_category, matcher._gt_boxes,
               matcher._gt_crowd, float(iou_thr), max_det, matrix)
    sums = matrix.sum(axis=1)
    normalized = np.zeros(matrix.shape, np.float64)
    rows = sums > 0
    normalized[rows] = matrix[rows].astype(np.float64) / sums[rows].astype(np.float64)[:, None]
    return Confusion(matrix, normalized, tuple(int(c) for c in matcher.category_ids),
                     tuple(matcher.ground_truth.category_names), float(iou_thr))


@numba.njit(cache=True, nogil=True)
def _confusion(order, image_bounds, gt_bounds, category, boxes, gt_category, gt_boxes, gt_crowd, iou_thr, max_det,
               matrix):
    background = matrix.shape[0] - 1
    for image in range(len(image_bounds) - 1):
        first, stop = gt_bounds[image], gt_bounds[image + 1]
        taken = np.zeros(stop - first, np.bool_)
        for j in range(image_bounds[image], min(image_bounds[image + 1], image_bounds[image] + max_det)):
            d = order[j]
            best, match = iou_thr, -1
            for g in range(first, stop):
                if gt_crowd[g] or taken[g - first]:
                    continue
                iou = _pair_iou(boxes[d], gt_boxes[g], False)
                if iou >= best:
                    best, match = iou, g
            if match >= 0:
                taken[match - first] = True
                matrix[gt_category[match], category[d]] += 1
            else:
                matrix[background, category[d]] += 1
        for g in range(first, stop):
            if not gt_crowd[g] and not taken[g - first]:
                matrix[gt_category[g], background] += 1


@dataclass(frozen=True)
class Calibration:
    """Score calibration at IoU 0.5: ``ece``, ``mce``; per bin its edges, mean score
    (``confidence``), fraction correct (``accuracy``) and count; ``per_category``: (category id,
    name, ECE) of each category with counted detections."""

    ece: float
    mce: float
    bins: tuple[dict[str, float], ...]
    per_category: tuple[tuple[int, str, float], ...]
    num_detections: int

    def to_dict(self) -> dict[str, Any]:
        return {"ece": self.ece, "mce": self.mce, "num_detections": self.num_detections, "bins": list(self.bins),
                "per_category": [{"category_id": c, "name": name, "ece": ece} for c, name, ece in self.per_category]}


def calibration(matches: Matches, n_bins: int = 10) -> Calibration | None:
    """`Calibration` of ``matches`` (None where a counted score lies outside [0, 1])."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    counted = matches.counted[:, 0, 0]
    scores = matches.scores[counted]  # matches are in (image, category, rank) order: hotcoco's
    if len(scores) and not ((scores >= 0.0) & (scores <= 1.0)).all():
        return None
    correct = (matches.matched_gt >= 0)[counted]
    category = matches.category_pos[counted]
    ece, mce, sums, hits, counts = _calibration_curve(scores, correct, n_bins)
    bins = tuple({"lower": i / n_bins, "upper": (i + 1) / n_bins,
                  "confidence": sums[i] / counts[i] if counts[i] else 0.0,
                  "accuracy": hits[i] / counts[i] if counts[i] else 0.0, "count": int(counts[i])}
                 for i in range(n_bins))
    matcher = matches.matcher
    per_category = []
    for k in np.unique(category):
        members = category == k
        per_category.append((int(matcher.category_ids[k]), matcher.ground_truth.category_names[k],
                             float(_calibration_curve(scores[members], correct[members], n_bins)[0])))
    return Calibration(float(ece), float(mce), bins, tuple(per_category), int(len(scores)))


@numba.njit(cache=True, nogil=True)
def _calibration_curve(scores, correct, n_bins):
    sums = np.zeros(n_bins, np.float64)
    hits = np.zeros(n_bins, np.float64)
    counts = np.zeros(n_bins, np.int64)
    for i in range(len(scores)):
        b = min(int(scores[i] * np.float64(n_bins)), n_bins - 1)
        sums[b] += scores[i]
        hits[b] += 1.0 if correct[i] else 0.0
        counts[b] += 1
    total = counts.sum()
    ece = 0.0
    mce = 0.0
    if total == 0:
        return ece, mce, sums, hits, counts
    for b in range(n_bins):
        if counts[b] == 0:
            continue
        gap = abs(hits[b] / counts[b] - sums[b] / counts[b])
        ece += (counts[b] / total) * gap
        mce = max(mce, gap)
    return ece, mce, sums, hits, counts
