"""TIDE's error anatomy of COCO-matched detections (Bolya et al., ECCV 2020), as hotcoco's
``COCOeval.tide_errors`` computes it, for every score cut of one matching pass.

Each false positive at IoU ``pos_thr`` (0.5; area "all", the first ``maxDets[2]`` detections of
an image and category) gets one type, in tidecv's priority order:

1. ``Loc``: its highest IoU with a box of its own category is in ``[bg_thr, pos_thr]``;
2. ``Cls``: its highest IoU with a box of another category (crowd regions excluded) is
   ``>= pos_thr``;
3. ``Dupe``: a box of its category with IoU ``>= pos_thr`` is matched (by a higher-scoring
   detection: a false positive with an IoU >= 0.5 pair is one whose pairs were all taken);
4. ``Bkg``: its highest IoU with a box of another category is ``<= bg_thr``;
5. ``Both``: the rest.

A ground truth box that is counted and not matched is one a fix could still recover: the ``Loc``
and ``Cls`` errors may target it (a ``Loc`` error its highest-IoU box of its own category, a
``Cls`` error its highest-IoU box of another). Of the errors targeting one box the highest score
wins it, ties to the detection first in the output (tidecv's ``BestGTMatch``); a box no error
targets is a ``Miss``. ``delta_ap[e]`` is the mean over the categories with ground truth of (AP
at ``pos_thr`` with the errors of type ``e`` fixed) - (AP at ``pos_thr``):

- ``Loc``: a winner becomes a true positive, the other ``Loc`` errors are dropped;
- ``Cls``: a winner becomes a true positive of its box's category, every ``Cls`` error leaves its
  own;
- ``Both``, ``Dupe``, ``Bkg``: the errors are dropped (ranked, counted neither way);
- ``Miss``: the missed boxes leave the ground truth count;
- ``FP`` drops every false positive, ``FN`` takes every unmatched box out of the ground truth
  count (tidecv's oracles).

AP is pycocotools' 101-point interpolation of one category; the means add the categories one
after the other, in category id order.

What a detection needs beyond its match (`Evidence`) depends on its box and class alone, so the
sweep computes it once per cache entry (`evidence`) and every score cut reads it
(`tide_errors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numba
import numpy as np

from detsearch.detection.cocoeval import RECALL_THRESHOLDS, CocoMatcher, Matches, _pair_iou

__all__ = ["COUNT_TYPES", "ERROR_TYPES", "Evidence", "TideErrors", "evidence", "tide_errors", "tide_errors_at"]

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FP", "FN")
"""The keys of `TideErrors.delta_ap`, hotcoco's."""
COUNT_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
"""The keys of `TideErrors.counts`."""
POS_THR = 0.5
BG_THR = 0.1

# Detection kinds in the kernels: the five false positive types (FP_TYPES order), then these.
_TRUE_POSITIVE, _IGNORED, _CUT = 5, 6, 7
_EPS = np.spacing(1.0)


@dataclass(frozen=True, eq=False)
class Evidence:
    """What TIDE reads of each detection's box besides its match, aligned with the detections.

    Attributes:
      same_iou: float64 ``[D]`` highest IoU with a ground truth box of the detection's image and
        category (crowd regions by pycocotools' crowd IoU), 0 without one.
      same_gt: int64 ``[D]`` that box (`GroundTruth` annotation index; the first of equal IoU,
        boxes that are not ignored first, then file order), -1 where the IoU is 0.
      cross_iou, cross_gt: the same over the image's boxes of other categories, crowd regions
        excluded (plain IoU; ties to the first in file order).
    """

    same_iou: np.ndarray
    same_gt: np.ndarray
    cross_iou: np.ndarray
    cross_gt: np.ndarray

    def __len__(self) -> int:
        return len(self.same_iou)

    def take(self, rows: np.ndarray) -> "Evidence":
        return Evidence(self.same_iou[rows], self.same_gt[rows], self.cross_iou[rows], self.cross_gt[rows])

    @staticmethod
    def concatenate(parts: Sequence["Evidence"]) -> "Evidence":
        return Evidence(*(np.concatenate([getattr(p, name) for p in parts])
                          for name in ("same_iou", "same_gt", "cross_iou", "cross_gt")))

    @staticmethod
    def empty(n: int) -> "Evidence":
        return Evidence(np.zeros(n), np.full(n, -1, np.int64), np.zeros(n), np.full(n, -1, np.int64))


def evidence(matcher: CocoMatcher, image_pos, category_pos, boxes_xywh) -> Evidence:
    """`Evidence` of detections (image and category positions of ``matcher``, COCO boxes)."""
    image_pos = np.asarray(image_pos, np.int64).reshape(-1)
    category_pos = np.asarray(category_pos, np.int64).reshape(-1)
    boxes = np.ascontiguousarray(boxes_xywh, np.float64).reshape(-1, 4)
    gt_image = matcher._gt_image
    image_bounds = np.searchsorted(gt_image, np.arange(matcher.num_images + 1))
    out = Evidence.empty(len(boxes))
    _evidence(boxes, image_pos, category_pos, image_bounds, matcher._gt_category, matcher._gt_boxes,
              matcher._gt_crowd, matcher._gt_ignore[:, 0], out.same_iou, out.same_gt, out.cross_iou, out.cross_gt)
    rows = matcher._gt_rows
    for name in ("same_gt", "cross_gt"):
        found = getattr(out, name)
        found[found >= 0] = rows[found[found >= 0]]
    return out


@numba.njit(cache=True, nogil=True)
def _evidence(boxes, image_pos, category_pos, image_bounds, gt_category, gt_boxes, gt_crowd, gt_ignore,
              same_iou, same_gt, cross_iou, cross_gt):
    """`evidence`'s walk; ground truth rows are the matcher's ((image, category, file order))."""
    for d in range(len(boxes)):
        first, stop = image_bounds[image_pos[d]], image_bounds[image_pos[d] + 1]
        k = category_pos[d]
        best, best_g = 0.0, -1
        for ignored in (False, True):  # hotcoco's cell order: boxes not ignored first
            for g in range(first, stop):
                if gt_category[g] != k or gt_ignore[g] != ignored:
                    continue
                iou = _pair_iou(boxes[d], gt_boxes[g], gt_crowd[g])
                if iou > best:
                    best, best_g = iou, g
        same_iou[d], same_gt[d] = best, best_g
        best, best_g = 0.0, -1
        for g in range(first, stop):
            if gt_category[g] == k or gt_crowd[g]:
                continue
            iou = _pair_iou(boxes[d], gt_boxes[g], False)
            if iou > best:
                best, best_g = iou, g
        cross_iou[d], cross_gt[d] = best, best_g


@dataclass(frozen=True)
class TideErrors:
    """``delta_ap`` by `ERROR_TYPES`, ``counts`` by `COUNT_TYPES` (false positives of each type
    and missed boxes, over all categories)."""

    delta_ap: dict[str, float]
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"delta_ap": dict(self.delta_ap), "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data) -> "TideErrors":
        return cls({name: float(data["delta_ap"][name]) for name in ERROR_TYPES},
                   {name: int(data["counts"][name]) for name in COUNT_TYPES})


def tide_errors(matches: Matches, found: Evidence, cut: float = -math.inf, *, pos_thr: float = POS_THR,
                bg_thr: float = BG_THR) -> TideErrors:
    """TIDE of the detections of ``matches`` with ``score > cut``.

    Args:
      matches: COCO matches (`cocoeval.CocoMatcher.match`).
      found: their `Evidence`, aligned with ``matches``' rows.
      cut: keep ``score > cut`` (float64, as `Matches.evaluate` compares).
      pos_thr, bg_thr: tidecv's thresholds. ``pos_thr`` 0.5 only: it is the IoU the matches'
        true positives are read at.
    """
    return tide_errors_at(matches, found, [cut], pos_thr=pos_thr, bg_thr=bg_thr)[0]


def tide_errors_at(matches: Matches, found: Evidence, cuts: Sequence[float], *, pos_thr: float = POS_THR,
                   bg_thr: float = BG_THR) -> list[TideErrors]:
    """`tide_errors` at each score cut of ``cuts`` (the inputs prepared once)."""
    if pos_thr != POS_THR:
        raise ValueError(f"pos_thr must be {POS_THR} (the matching's IoU threshold), got {pos_thr!r}")
    if len(found) != len(matches):
        raise ValueError(f"evidence covers {len(found)} detections, the matches {len(matches)}")
    matcher = matches.matcher
    row_of = np.full(matcher.ground_truth.num_annotations, -1, np.int64)
    row_of[matcher._gt_rows] = np.arange(len(matcher._gt_rows))

    def rows(annotations):
        out = np.full(len(annotations), -1, np.int64)
        known = annotations >= 0
        out[known] = row_of[annotations[known]]
        return out

    order = matches.accumulation_order()
    num_k = matcher.num_categories
    bounds = np.zeros(num_k + 1, np.int64)
    np.cumsum(np.bincount(matches.category_pos, minlength=num_k), out=bounds[1:])
    inputs = (order, bounds, matches.category_pos, matches.scores, matches.input_index,
              np.ascontiguousarray(matches.true_positive[:, 0, 0]), np.ascontiguousarray(matches.counted[:, 0, 0]),
              matches.has_pairs, rows(matches.matched_gt), found.same_iou, rows(found.same_gt), found.cross_iou,
              rows(found.cross_gt), matcher._gt_category, ~matcher._gt_ignore[:, 0], matcher._npig[:, 0],
              RECALL_THRESHOLDS)
    results = []
    for cut in cuts:
        delta = np.zeros(len(ERROR_TYPES), np.float64)
        counts = np.zeros(len(COUNT_TYPES), np.int64)
        _tide(*inputs, float(cut), float(pos_thr), float(bg_thr), delta, counts)
        results.append(TideErrors({name: float(v) for name, v in zip(ERROR_TYPES, delta)},
                                  {name: int(v) for name, v in zip(COUNT_TYPES, counts)}))
    return results


@numba.njit(cache=True, nogil=True)
def _average_precision(kinds, won, scores, fix, incoming, num_gt, rec_thrs, precision, recall):
    """pycocotools' 101-point AP of one category's ranked detections (``kinds``, ``scores``), in
    hotcoco's arithmetic. ``fix`` 0-4 fixes that false positive type: a ``Loc`` error that
    ``won`` its box becomes a true positive, every other error of the type is dropped (ranked,
    counted neither way); 5 drops every false positive; -1 fixes nothing. ``incoming``
    (descending) are true positives merged in before the detections they score above."""
    n = len(kinds) + len(incoming)
    if n == 0 or num_gt <= 0:
        return 0.0
    tp = 0.0
    fp = 0.0
    r = 0
    j = 0
    for i in range(len(kinds) + 1):
        while j < len(incoming) and (i == len(kinds) or incoming[j] > scores[i]):
            tp += 1.0
            recall[r] = tp / num_gt
            precision[r] = tp / (tp + fp + _EPS)
            r += 1
            j += 1
        if i == len(kinds):
            break
        kind = kinds[i]
        if kind == _TRUE_POSITIVE:
            tp += 1.0
        elif kind < 5:
            if fix == kind:
                if kind == 1 and won[i]:
                    tp += 1.0
            elif fix != 5:
                fp += 1.0
        recall[r] = tp / num_gt
        precision[r] = tp / (tp + fp + _EPS)
        r += 1
    for r in range(n - 2, -1, -1):
        if precision[r + 1] > precision[r]:
            precision[r] = precision[r + 1]
    total = 0.0
    r = 0
    for i in range(len(rec_thrs)):
        while r < n and recall[r] < rec_thrs[i]:
            r += 1
        if r < n:
            total += precision[r]
    return total / len(rec_thrs)


@numba.njit(cache=True, nogil=True)
def _tide(order, bounds, category, scores, detection_id, true_positive, counted, has_pairs, matched_row, same_iou,
          same_row, cross_iou, cross_row, gt_category, gt_counted, num_gt, rec_thrs, cut, pos_thr, bg_thr, delta,
          counts):
    n = len(category)
    num_gt_rows = len(gt_category)
    kind = np.full(n, _CUT, np.int8)
    taken = np.zeros(num_gt_rows, np.bool_)
    for d in range(n):
        if scores[d] > cut and matched_row[d] >= 0:
            taken[matched_row[d]] = True
    # A Loc or Cls error targets a box (its highest-IoU one) that a fix could still turn into a
    # true positive: unmatched and counted. Of the errors targeting one box the highest score
    # wins it, ties to the detection first in the output (tidecv's BestGTMatch).
    target = np.full(n, -1, np.int64)
    best_score = np.full(num_gt_rows, -np.inf)
    best_id = np.full(num_gt_rows, -1, np.int64)
    for d in range(n):
        if not scores[d] > cut:
            continue
        if not counted[d]:
            kind[d] = _IGNORED
            continue
        if true_positive[d]:
            kind[d] = _TRUE_POSITIVE
            continue
        g = -1
        if same_iou[d] >= bg_thr and same_iou[d] <= pos_thr:
            kind[d] = 1  # Loc
            g = same_row[d]
        elif cross_iou[d] >= pos_thr:
            kind[d] = 0  # Cls
            g = cross_row[d]
        elif has_pairs[d]:
            kind[d] = 3  # Dupe
        elif cross_iou[d] <= bg_thr:
            kind[d] = 4  # Bkg
        else:
            kind[d] = 2  # Both
        counts[kind[d]] += 1
        if g >= 0 and gt_counted[g] and not taken[g]:
            target[d] = g
            if best_id[g] < 0 or scores[d] > best_score[g] or (scores[d] == best_score[g]
                                                                 and detection_id[d] < best_id[g]):
                best_score[g] = scores[d]
                best_id[g] = detection_id[d]
    num_k = len(num_gt)
    won = np.zeros(n, np.bool_)
    incoming_count = np.zeros(num_k, np.int64)
    for d in range(n):
        if target[d] >= 0 and best_id[target[d]] == detection_id[d]:
            won[d] = True
            if kind[d] == 0:
                incoming_count[gt_category[target[d]]] += 1
    incoming_start = np.zeros(num_k + 1, np.int64)
    for k in range(num_k):
        incoming_start[k + 1] = incoming_start[k] + incoming_count[k]
    incoming = np.empty(incoming_start[num_k], np.float64)
    fill = incoming_start[:num_k].copy()
    for d in range(n):
        if won[d] and kind[d] == 0:
            k = gt_category[target[d]]
            incoming[fill[k]] = scores[d]
            fill[k] += 1
    for k in range(num_k):
        incoming[incoming_start[k]:incoming_start[k + 1]] = -np.sort(-incoming[incoming_start[k]:incoming_start[k + 1]])
    missed = np.zeros(num_k, np.int64)  # unmatched, not targeted: Miss
    unmatched = np.zeros(num_k, np.int64)  # FN
    for g in range(num_gt_rows):
        if gt_counted[g] and not taken[g]:
            unmatched[gt_category[g]] += 1
            if best_id[g] < 0:
                missed[gt_category[g]] += 1
    counts[5] = missed.sum()
    longest = 0
    for k in range(num_k):
        longest = max(longest, bounds[k + 1] - bounds[k])
    ranked = np.empty(longest, np.int8)
    ranked_won = np.empty(longest, np.bool_)
    ranked_scores = np.empty(longest, np.float64)
    precision = np.empty(longest + len(incoming) + 1, np.float64)
    recall = np.empty_like(precision)
    no_incoming = incoming[:0]
    fixed = np.zeros(8, np.float64)
    categories = 0
    for k in range(num_k):
        if num_gt[k] == 0:
            continue
        categories += 1
        m = 0
        for j in range(bounds[k], bounds[k + 1]):
            d = order[j]
            if kind[d] != _CUT:
                ranked[m] = kind[d]
                ranked_won[m] = won[d]
                ranked_scores[m] = scores[d]
                m += 1
        kinds, wins, ranked_at = ranked[:m], ranked_won[:m], ranked_scores[:m]
        mine = incoming[incoming_start[k]:incoming_start[k + 1]]
        base = _average_precision(kinds, wins, ranked_at, -1, no_incoming, num_gt[k], rec_thrs, precision, recall)
        for e in range(5):
            fixed[e] = _average_precision(kinds, wins, ranked_at, e, mine if e == 0 else no_incoming, num_gt[k],
                                          rec_thrs, precision, recall) - base
        fixed[5] = _average_precision(kinds, wins, ranked_at, -1, no_incoming, num_gt[k] - missed[k], rec_thrs,
                                      precision, recall) - base
        fixed[6] = _average_precision(kinds, wins, ranked_at, 5, no_incoming, num_gt[k], rec_thrs, precision,
                                      recall) - base
        fixed[7] = _average_precision(kinds, wins, ranked_at, -1, no_incoming, num_gt[k] - unmatched[k], rec_thrs,
                                      precision, recall) - base
        for e in range(8):
            delta[e] += fixed[e]
    if categories:
        for e in range(8):
            delta[e] /= categories
