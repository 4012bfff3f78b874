"""COCO bounding-box evaluation, equal to pycocotools to the last bit, compiled.

`evaluate_bbox` returns pycocotools' 12 summary stats (``COCOeval(gt, dt, "bbox")`` then
``evaluate(); accumulate(); summarize()``) and its ``precision`` / ``recall`` arrays, bitwise
equal (float64), by replaying pycocotools' arithmetic in the same order:

- per (image, category): detections sorted by descending score with a stable sort (input
  order breaks ties), the first ``maxDets[-1]`` kept (100 by default); ground truth sorted with ignored boxes last (stable);
  a ground truth box is ignored when it is a crowd region or its ``area`` field (not its box)
  lies outside the area range, both ends included;
- greedy matching per IoU threshold ``t`` in ``0.50:0.05:0.95``: each detection, best score
  first, takes the unmatched (or crowd) ground truth box of highest IoU ``>= min(t, 1 - 1e-10)``,
  the last such box on equal IoU, non-ignored boxes before ignored ones; crowd boxes may be
  matched repeatedly and use ``IoU = intersection / area(detection)``; a detection matched to
  an ignored box is ignored, an unmatched detection whose ``w * h`` is outside the area range
  is ignored;
- accumulation per (category, area range, maxDets in 1/10/100): the first ``maxDets``
  detections of each image, all images merged by a stable sort on descending score (images in
  ascending id order), cumulative TP/FP, ``precision = tp / (tp + fp + eps)``, its monotone
  envelope, read at the 101 recall thresholds with ``searchsorted(side="left")``; -1 where a
  category has no non-ignored ground truth.

Quirks kept on purpose: pycocotools records the matched ground-truth *id*, so a ground truth
annotation with id 0 counts as unmatched in the accumulation and is never marked as taken.

Crowded scenes: ``max_detections`` (`CocoMatcher`) is pycocotools' ``params.maxDets[2]``, which
Model Garden's evaluator sets to ``task.max_num_eval_detections``; pycocotools sorts
``maxDets``, keeps the first ``maxDets[-1]`` detections per image and category, and reads ten of
the 12 stats at ``maxDets[2]``. The one departure from pycocotools' ``summarize``: it reads AP
(``stats[0]``) at ``maxDets`` 100 whatever the parameters say, so with any other
``max_detections`` it prints -1 (and Model Garden logs -1 as ``AP``); here AP is read at
``maxDets[2]``, as AP50 and the others are (pycocotools' own precision array, the same mean).
With ``max_detections`` 100 every stat is pycocotools' to the bit.

Why it is fast, and what the threshold sweep reuses (`CocoMatcher`, `Matches`):

- IoUs against ground truth depend only on the boxes: `CocoMatcher.iou_pairs` computes them
  once (a compiled pass over each detection's image and category) and keeps only pairs with
  IoU >= 0.5 (no other pair can ever match).
- Matching is one compiled pass over the detections in (image, category, rank) order
  (`_greedy`), for all 10 thresholds and 4 area ranges. The match of any score-threshold
  prefix is the prefix of the full match.
- The precision envelope read at a recall threshold only depends on the precision at true
  positives, so the accumulation works on the (few) true positives: one compiled walk in
  pycocotools' accumulation order writes the precision at each (`_precision_at_true_positives`).
  A higher score threshold truncates the score-sorted arrays, so `Matches.evaluate` answers
  many thresholds from one matching pass.
- Reading the envelope is one compiled pass (`_read_envelopes`) per score threshold over each
  (maxDets, area, IoU, category)'s true positives, from the last kept one back to the first a
  recall threshold needs.

This module imports NumPy and numba (pycocotools is the oracle in the tests, never a
dependency here).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numba
import numpy as np

from detsearch.detection.coco import coco_document, parse_instances

__all__ = [
    "AREA_NAMES",
    "AREA_RANGES",
    "CocoEvaluation",
    "CocoMatcher",
    "GroundTruth",
    "IOU_THRESHOLDS",
    "IouPairs",
    "MAX_DETECTIONS",
    "Matches",
    "RECALL_THRESHOLDS",
    "STAT_NAMES",
    "concatenate_matches",
    "evaluate_bbox",
    "evaluate_results",
    "load_ground_truth",
    "max_dets",
    "ragged_arange",
    "summarize",
]

# Built exactly as pycocotools' Params.setDetParams, so that the float64 values are identical.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = (1, 10, 100)
"""pycocotools' default ``params.maxDets``; `CocoMatcher`'s ``max_detections`` replaces the 100."""
AREA_RANGES = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2), (96**2, 1e5**2))
AREA_NAMES = ("all", "small", "medium", "large")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""The 12 summary stats in pycocotools' order (AP@[.5:.95], ..., AR large)."""

_MATCH_THRESHOLDS = np.array([min(t, 1 - 1e-10) for t in IOU_THRESHOLDS])
_MIN_MATCH_IOU = float(_MATCH_THRESHOLDS.min())
_EPS = np.spacing(1)
_NUM_T = len(IOU_THRESHOLDS)
_NUM_A = len(AREA_RANGES)
_NUM_M = len(MAX_DETECTIONS)
_NUM_R = len(RECALL_THRESHOLDS)


# --------------------------------------------------------------------------------------------
# ground truth


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """COCO instances (bbox) ground truth as arrays.

    Annotations are grouped by (image, category) with file order kept inside a group (the
    order pycocotools sees them in).

    Attributes:
      image_ids: int64 ``[I]`` ascending image ids of the file's ``images``.
      category_ids: int64 ``[K]`` ascending category ids of the file's ``categories``.
      category_names: names, aligned with ``category_ids``.
      image_index: int64 ``[G]`` position of each annotation's image in ``image_ids``.
      category_index: int64 ``[G]`` position of each annotation's category in ``category_ids``.
      boxes: float64 ``[G, 4]`` COCO ``[x, y, w, h]``.
      areas: float64 ``[G]`` the annotations' ``area`` field (decides the area range).
      crowd: bool ``[G]`` iscrowd.
      annotation_ids: int64 ``[G]``.
      image_sizes: int64 ``[I, 2]`` (height, width), 0 where the file does not say.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    image_index: np.ndarray
    category_index: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    crowd: np.ndarray
    annotation_ids: np.ndarray
    image_sizes: np.ndarray

    @property
    def num_annotations(self) -> int:
        return len(self.annotation_ids)

    @classmethod
    def from_coco(cls, source: Any) -> "GroundTruth":
        """See `load_ground_truth`."""
        return load_ground_truth(source)


def load_ground_truth(source: Any, *, name: str | None = None) -> GroundTruth:
    """Reads COCO instances ground truth (checked by `detsearch.detection.coco.parse_instances`).

    Args:
      source: a path to an instances json, the parsed dict, or a pycocotools ``COCO`` object
        (its ``dataset`` is read; nothing is modified).
      name: how to name the source in error messages (default: the path, or "annotations").

    Image sizes absent or 0 are kept as 0 (unknown; evaluation does not use them).

    Raises:
      ValueError: unreadable or malformed content; the message names the record
        and the problem (an annotation whose image or category is not listed, a bbox that is
        not four finite numbers or has negative width/height, a missing ``area`` or ``id``,
        duplicate ids).
      TypeError: ``source`` is none of those.
    """
    if not isinstance(source, (str, os.PathLike, Mapping)) and not hasattr(source, "dataset"):
        raise TypeError(f"ground truth must be a path, a dict or a pycocotools COCO object, got {type(source).__name__}")
    dataset, where = coco_document(source, "annotations", name)
    if not isinstance(source, (str, os.PathLike)) and name is None:
        where = "annotations"
    instances = parse_instances(dataset, where)

    image_ids = np.asarray([image.id for image in instances.images], np.int64)
    order = np.argsort(image_ids, kind="stable")
    unique_images = image_ids[order]
    sizes = np.asarray([(image.height, image.width) for image in instances.images], np.int64).reshape(-1, 2)[order]
    names = {category.id: category.name for category in instances.categories}
    categories = np.unique(np.asarray(list(names), np.int64))
    image_position = {int(v): i for i, v in enumerate(unique_images)}
    category_position = {int(v): i for i, v in enumerate(categories)}

    annotations = instances.annotations
    n = len(annotations)
    img = np.fromiter((image_position[a.image_id] for a in annotations), np.int64, n)
    cat = np.fromiter((category_position[a.category_id] for a in annotations), np.int64, n)
    boxes = np.asarray([a.bbox for a in annotations], np.float64).reshape(n, 4)
    areas = np.fromiter((a.area for a in annotations), np.float64, n)
    crowd = np.fromiter((a.iscrowd for a in annotations), bool, n)
    ids = np.fromiter((a.id for a in annotations), np.int64, n)
    order = np.lexsort((np.arange(n), cat, img))
    return GroundTruth(
        image_ids=unique_images,
        category_ids=categories,
        category_names=tuple(names[int(c)] for c in categories),
        image_index=img[order],
        category_index=cat[order],
        boxes=boxes[order],
        areas=areas[order],
        crowd=crowd[order],
        annotation_ids=ids[order],
        image_sizes=sizes,
    )


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True, eq=False)
class CocoEvaluation:
    """One evaluation, as pycocotools' ``COCOeval`` after ``summarize()``.

    Attributes:
      stats: float64 ``[12]`` in `STAT_NAMES` order (``COCOeval.stats``); -1 where undefined.
      precision: float64 ``[T=10, R=101, K, A=4, M=3]`` (``COCOeval.eval['precision']``); None
        when evaluated for the stats alone (`Matches.evaluate` with ``precision=False``).
      recall: float64 ``[T, K, A, M]`` (``COCOeval.eval['recall']``).
      category_ids: int64 ``[K]``.
      num_detections: detections evaluated (after the ``max_dets[-1]`` per image and category
        cut).
      f1: best-match F1 at IoU 0.5, area all, ``max_dets[2]`` detections, pooled over categories:
        ``2 TP / (detections + ground truth)`` counting neither ignored detections nor
        ignored ground truth (0 when both are 0).
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    category_ids: np.ndarray
    num_detections: int
    f1: float
    max_dets: tuple[int, int, int] = MAX_DETECTIONS
    """pycocotools' ``params.maxDets`` (sorted): the M axis of ``precision`` and ``recall``."""

    @property
    def per_category_ap(self) -> np.ndarray:
        """AP@[.5:.95] per category (area all, ``max_dets[2]`` detections), -1 without ground truth."""
        return self._per_category(slice(None))

    @property
    def per_category_ap50(self) -> np.ndarray:
        """AP@.5 per category (area all, ``max_dets[2]`` detections), -1 without ground truth."""
        return self._per_category(slice(0, 1))

    def _per_category(self, iou: slice) -> np.ndarray:
        out = np.full(len(self.category_ids), -1.0)
        for k in range(len(self.category_ids)):
            values = self.precision[iou, :, k, 0, -1]
            values = values[values > -1]
            if values.size:
                out[k] = np.mean(values)
        return out

    def stats_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in zip(STAT_NAMES, self.stats)}


def max_dets(max_detections: int = MAX_DETECTIONS[-1]) -> tuple[int, int, int]:
    """pycocotools' ``params.maxDets`` with ``maxDets[2] = max_detections`` (Model Garden's
    ``max_num_eval_detections``), sorted as ``COCOeval.evaluate`` sorts it."""
    if isinstance(max_detections, bool) or not isinstance(max_detections, (int, np.integer)) or max_detections < 1:
        raise ValueError(f"max_detections must be an int >= 1, got {max_detections!r}")
    return tuple(sorted((1, 10, int(max_detections))))


def summarize(precision: np.ndarray, recall: np.ndarray, max_dets: Sequence[int] = MAX_DETECTIONS,
              precision_max_dets: Sequence[int] | None = None) -> np.ndarray:
    """pycocotools' ``COCOeval.summarize`` for bbox, without printing: the 12 stats, ten of them
    at ``max_dets[2]``; AP too (where pycocotools reads it at 100: the module's docstring).
    ``precision_max_dets``: the maxDets of ``precision``'s last axis when it holds only some
    (every stat reads it at ``max_dets[2]``); default ``max_dets``."""
    precision_max_dets = max_dets if precision_max_dets is None else precision_max_dets

    def one(ap: bool, iou=None, area="all", max_detections=max_dets[2]):
        area_index = [i for i, label in enumerate(AREA_NAMES) if label == area]
        max_index = [i for i, value in enumerate(precision_max_dets if ap else max_dets) if value == max_detections]
        if ap:
            s = precision
            if iou is not None:
                s = s[np.where(iou == IOU_THRESHOLDS)[0]]
            s = s[:, :, :, area_index, max_index]
        else:
            s = recall
            if iou is not None:
                s = s[np.where(iou == IOU_THRESHOLDS)[0]]
            s = s[:, :, area_index, max_index]
        if len(s[s > -1]) == 0:
            return -1
        return np.mean(s[s > -1])

    stats = np.zeros((12,))
    stats[0] = one(True)
    stats[1] = one(True, iou=0.5)
    stats[2] = one(True, iou=0.75)
    stats[3] = one(True, area="small")
    stats[4] = one(True, area="medium")
    stats[5] = one(True, area="large")
    stats[6] = one(False, max_detections=max_dets[0])
    stats[7] = one(False, max_detections=max_dets[1])
    stats[8] = one(False)
    stats[9] = one(False, area="small")
    stats[10] = one(False, area="medium")
    stats[11] = one(False, area="large")
    return stats


# --------------------------------------------------------------------------------------------
# IoU pairs


@dataclass(frozen=True, eq=False)
class IouPairs:
    """Detection/ground-truth pairs with IoU >= 0.5 (the only ones that can ever match).

    Attributes:
      offsets: int64 ``[D + 1]``: pairs of detection ``d`` are ``offsets[d]:offsets[d + 1]``,
        in the ground truth's file order.
      gt_index: int64 ``[P]`` row into the matcher's ground truth.
      iou: float64 ``[P]`` pycocotools IoU.
    """

    offsets: np.ndarray
    gt_index: np.ndarray
    iou: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, detections: np.ndarray) -> "IouPairs":
        """The pairs of the given detections (int indices), in that order."""
        detections = np.asarray(detections, np.int64)
        counts = self.offsets[detections + 1] - self.offsets[detections]
        offsets = np.zeros(len(detections) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = ragged_arange(self.offsets[detections], counts)
        return IouPairs(offsets, self.gt_index[rows], self.iou[rows])


def ragged_arange(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c)."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    return np.repeat(np.asarray(starts, np.int64) - (ends - counts), counts) + np.arange(total, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# the matcher


class CocoMatcher:
    """Matches and accumulates detections against fixed ground truth and a fixed image set.

    Args:
      ground_truth: a `GroundTruth` (or anything `load_ground_truth` reads).
      image_ids: the images to evaluate (pycocotools ``params.imgIds``); default all images of
        the ground truth. Every id must be in the ground truth. Categories are always all of
        the ground truth's categories (``params.catIds`` default).
      max_detections: pycocotools' ``params.maxDets[2]`` (Model Garden's
        ``task.max_num_eval_detections``; crowded scenes raise it), default 100.
    """

    def __init__(self, ground_truth: Any, image_ids: Iterable[int] | None = None, *,
                 max_detections: int = MAX_DETECTIONS[-1]):
        gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
        self.ground_truth = gt
        self.max_dets = max_dets(max_detections)
        self.max_rank = self.max_dets[-1]  # detections kept per image and category
        if image_ids is None:
            eval_ids = gt.image_ids
        else:
            eval_ids = np.unique(np.asarray(list(image_ids), np.int64))
            missing = np.setdiff1d(eval_ids, gt.image_ids)
            if missing.size:
                raise ValueError(f"image id {int(missing[0])} is not in the ground truth ({missing.size} such ids)")
        self.image_ids = eval_ids
        self.category_ids = gt.category_ids
        self.num_categories = len(gt.category_ids)
        # Ground truth of the evaluated images, in (image position, category, file order) order.
        position_of = np.searchsorted(eval_ids, gt.image_ids)
        in_eval = np.zeros(len(gt.image_ids), bool)
        valid = position_of < len(eval_ids)
        in_eval[valid] = eval_ids[position_of[valid]] == gt.image_ids[valid]
        rows = np.flatnonzero(in_eval[gt.image_index])
        image_pos = position_of[gt.image_index[rows]]
        order = np.lexsort((np.arange(len(rows)), gt.category_index[rows], image_pos))
        rows = rows[order]
        self._gt_rows = rows
        self._gt_image = image_pos[order]
        self._gt_category = gt.category_index[rows]
        self._gt_boxes = gt.boxes[rows]
        self._gt_crowd = gt.crowd[rows]
        self._gt_id_nonzero = gt.annotation_ids[rows] != 0
        areas = gt.areas[rows]
        lows = np.array([r[0] for r in AREA_RANGES], np.float64)
        highs = np.array([r[1] for r in AREA_RANGES], np.float64)
        self._gt_ignore = self._gt_crowd[:, None] | (areas[:, None] < lows) | (areas[:, None] > highs)
        self._gt_group = self._gt_image * self.num_categories + self._gt_category
        # Non-ignored ground truth per (category, area): pycocotools' npig.
        self._npig = np.zeros((self.num_categories, _NUM_A), np.int64)
        for a in range(_NUM_A):
            self._npig[:, a] = np.bincount(self._gt_category[~self._gt_ignore[:, a]], minlength=self.num_categories)
        self._first_tp = _first_true_positive_needed(self._npig)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def ground_truth_per_image(self) -> np.ndarray:
        """Non-ignored ground truth boxes per evaluated image and category, area range "all".

        Returns:
          int64 ``[I, K]``: row ``i`` is image ``image_ids[i]``, column ``k`` category
          ``category_ids[k]``. Crowd regions and boxes whose ``area`` field lies outside
          ``AREA_RANGES[0]`` are not counted, so the column sums are pycocotools' ``npig`` for
          area "all". A new array on each call.
        """
        keep = ~self._gt_ignore[:, 0]
        flat = self._gt_image[keep] * self.num_categories + self._gt_category[keep]
        counts = np.bincount(flat, minlength=self.num_images * self.num_categories)
        return counts.astype(np.int64, copy=False).reshape(self.num_images, self.num_categories)

    def ground_truth_counts(self) -> np.ndarray:
        """int64 ``[K]``: non-ignored ground truth boxes (area all) per category position."""
        return self._npig[:, 0].copy()

    def image_positions(self, image_ids) -> np.ndarray:
        """Positions of COCO image ids among the evaluated images; ValueError for others."""
        return _positions(self.image_ids, image_ids, "image_id {} is not among the evaluated images")

    def category_positions(self, category_ids) -> np.ndarray:
        """Positions of COCO category ids in the ground truth's categories; ValueError for others."""
        return _positions(self.category_ids, category_ids, "category_id {} is not in the ground truth's categories")

    # -- IoU --------------------------------------------------------------------------------

    def iou_pairs(self, image_pos, category_pos, boxes_xywh) -> IouPairs:
        """IoU >= 0.5 pairs of each detection with the ground truth of its image and category.

        Args:
          image_pos: int ``[D]`` positions among `image_ids`.
          category_pos: int ``[D]`` positions among `category_ids`.
          boxes_xywh: float64 ``[D, 4]``.
        """
        image_pos = np.asarray(image_pos, np.int64).reshape(-1)
        category_pos = np.asarray(category_pos, np.int64).reshape(-1)
        boxes = np.ascontiguousarray(boxes_xywh, np.float64).reshape(-1, 4)
        group = image_pos * self.num_categories + category_pos
        first = np.searchsorted(self._gt_group, group, side="left")
        stop = np.searchsorted(self._gt_group, group, side="right")
        offsets = np.zeros(len(boxes) + 1, np.int64)
        _count_pairs(boxes, first, stop, self._gt_boxes, self._gt_crowd, _MIN_MATCH_IOU, offsets[1:])
        np.cumsum(offsets, out=offsets)
        gt_index = np.empty(offsets[-1], np.int64)
        ious = np.empty(offsets[-1], np.float64)
        _fill_pairs(boxes, first, stop, self._gt_boxes, self._gt_crowd, _MIN_MATCH_IOU, offsets, gt_index, ious)
        return IouPairs(offsets, gt_index, ious)

    # -- matching ---------------------------------------------------------------------------

    def match(self, image_pos, category_pos, boxes_xywh, scores, pairs: IouPairs | None = None) -> "Matches":
        """Greedy COCO matching of detections (pycocotools ``evaluateImg`` for every image,
        category and area range at once).

        Args:
          image_pos: int ``[D]`` positions among `image_ids` (see `image_positions`).
          category_pos: int ``[D]`` positions among `category_ids`.
          boxes_xywh: float64 ``[D, 4]``.
          scores: ``[D]`` real scores (compared as float64).
          pairs: `iou_pairs` of exactly these detections in this order, when already known.

        The input order breaks score ties within an image and category, as the order of a
        results list does for pycocotools.
        """
        image_pos = np.asarray(image_pos, np.int64).reshape(-1)
        category_pos = np.asarray(category_pos, np.int64).reshape(-1)
        boxes = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        n = len(boxes)
        if not (len(image_pos) == len(category_pos) == len(scores) == n):
            raise ValueError(f"detection arrays differ in length: {len(image_pos)}, {len(category_pos)}, {n}, {len(scores)}")
        if n and (np.isnan(scores).any()):
            raise ValueError(f"detection {int(np.flatnonzero(np.isnan(scores))[0])}: score is NaN")
        if pairs is not None and len(pairs) != n:
            raise ValueError(f"pairs cover {len(pairs)} detections, expected {n}")

        group = image_pos * self.num_categories + category_pos
        step_image = np.diff(image_pos)
        if n and (step_image >= 0).all() and ((step_image > 0) | (np.diff(scores) <= 0)).all():
            # Already by image and descending score (NMS output): a stable sort by group keeps
            # score order and input order for ties.
            order = _stable_group_order(np.arange(n), group, self.num_images * self.num_categories)
        else:  # by descending score (stable), then a counting sort by group (stable)
            order = _stable_group_order(np.argsort(-scores, kind="stable"), group,
                                        self.num_images * self.num_categories)
        group_sorted = group[order]
        starts = np.flatnonzero(np.r_[True, group_sorted[1:] != group_sorted[:-1]]) if n else np.zeros(0, np.int64)
        rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        keep = rank < self.max_rank
        order, rank = order[keep], rank[keep]
        if pairs is None:
            pairs = self.iou_pairs(image_pos[order], category_pos[order], boxes[order])
        else:
            pairs = pairs.take(order)
        det_boxes = boxes[order]
        det_area = det_boxes[:, 2] * det_boxes[:, 3]
        lows = np.array([r[0] for r in AREA_RANGES], np.float64)
        highs = np.array([r[1] for r in AREA_RANGES], np.float64)
        area_out = (det_area[:, None] < lows) | (det_area[:, None] > highs)  # [D, A]
        tp, counted, matched_gt = self._greedy_match(pairs, area_out)
        return Matches(
            matcher=self,
            image_pos=image_pos[order],
            category_pos=category_pos[order],
            rank=rank,
            scores=scores[order],
            input_index=order,
            true_positive=tp,
            counted=counted,
            area_out=area_out,
            has_pairs=np.diff(pairs.offsets) > 0,
            matched_gt=matched_gt,
        )

    def _greedy_match(self, pairs: IouPairs, area_out: np.ndarray):
        n = len(pairs)
        tp = np.zeros((n, _NUM_A, _NUM_T), bool)
        counted = np.repeat(~area_out[:, :, None], _NUM_T, axis=2)
        taken = np.zeros((len(self._gt_rows), _NUM_A, _NUM_T), bool)
        matched = np.full(n, -1, np.int64)
        _greedy(pairs.offsets, pairs.gt_index, pairs.iou, _MATCH_THRESHOLDS, self._gt_ignore, self._gt_crowd,
                self._gt_id_nonzero, area_out, taken, tp, counted, matched)
        found = matched >= 0
        matched[found] = self._gt_rows[matched[found]]
        return tp, counted, matched


@numba.njit(cache=True, nogil=True)
def _stable_group_order(order, group, num_groups):
    """``order`` stably sorted by ``group[order]`` (a counting sort; groups in ``[0, num_groups)``)."""
    starts = np.zeros(num_groups + 1, np.int64)
    for d in order:
        starts[group[d] + 1] += 1
    for g in range(num_groups):
        starts[g + 1] += starts[g]
    out = np.empty_like(order)
    for d in order:
        out[starts[group[d]]] = d
        starts[group[d]] += 1
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _pair_iou(d, g, crowd):
    """pycocotools' bbIou of two ``[x, y, w, h]`` boxes (`boxes.iou_xywh_pairs`, one pair)."""
    width = min(d[2] + d[0], g[2] + g[0]) - max(d[0], g[0])
    height = min(d[3] + d[1], g[3] + g[1]) - max(d[1], g[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    area_d = d[2] * d[3]
    union = area_d if crowd else area_d + g[2] * g[3] - intersection
    return intersection / union


@numba.njit(cache=True, nogil=True)
def _count_pairs(boxes, first, stop, gt_boxes, gt_crowd, min_iou, counts):
    """``counts[d]``: ground truth boxes ``first[d]:stop[d]`` with IoU >= ``min_iou`` with box d."""
    for d in range(len(boxes)):
        count = 0
        for g in range(first[d], stop[d]):
            if _pair_iou(boxes[d], gt_boxes[g], gt_crowd[g]) >= min_iou:
                count += 1
        counts[d] = count


@numba.njit(cache=True, nogil=True)
def _fill_pairs(boxes, first, stop, gt_boxes, gt_crowd, min_iou, offsets, gt_index, ious):
    """The pairs `_count_pairs` counted, in ground truth order, at ``offsets[d]:offsets[d + 1]``."""
    for d in range(len(boxes)):
        j = offsets[d]
        for g in range(first[d], stop[d]):
            iou = _pair_iou(boxes[d], gt_boxes[g], gt_crowd[g])
            if iou >= min_iou:
                gt_index[j] = g
                ious[j] = iou
                j += 1


@numba.njit(cache=True, nogil=True)
def _greedy(offsets, gt_index, ious, thresholds, gt_ignore, gt_crowd, gt_id_nonzero, area_out, taken, tp, counted,
            matched):
    """pycocotools' greedy matching (``evaluateImg``), every area range and IoU threshold.

    Detections are in (image, category, rank) order, so each (image, category)'s detections
    come best score first and ground truth of other groups is never among their pairs (in
    ground truth file order). For each (area ``a``, threshold ``t``), a detection takes the
    eligible pair (IoU >= the threshold; its box not taken, or a crowd region) whose box is not
    ignored, else an ignored one, of highest IoU, the last of equal IoU (pycocotools' loop
    over ground truth sorted ignored-last, ``>=`` the running best, stopping at the first
    ignored box once a non-ignored one matched). Writes ``taken`` (the box's ``gtm``), ``tp``
    and ``counted``; a detection without a match keeps ``counted = not area_out``. ``matched[d]``:
    the box detection d takes at area "all" and IoU 0.5 (left as it is without one).
    """
    num_a, num_t = tp.shape[1], tp.shape[2]
    for d in range(len(offsets) - 1):
        start, stop = offsets[d], offsets[d + 1]
        for a in range(num_a):
            for t in range(num_t):
                best = -1
                best_kept = False
                best_iou = 0.0
                for p in range(start, stop):
                    g = gt_index[p]
                    iou = ious[p]
                    if iou < thresholds[t] or (taken[g, a, t] and not gt_crowd[g]):
                        continue
                    kept = not gt_ignore[g, a]
                    if best < 0 or (kept and not best_kept) or (kept == best_kept and iou >= best_iou):
                        best, best_kept, best_iou = p, kept, iou
                if best < 0:
                    continue
                g = gt_index[best]
                taken[g, a, t] = True
                if a == 0 and t == 0:
                    matched[d] = g
                tp[d, a, t] = gt_id_nonzero[g] and best_kept
                # dtIg = gtIg[m] for a match, or-ed with "dtm == 0 and outside the area range".
                counted[d, a, t] = best_kept and (gt_id_nonzero[g] or not area_out[d, a])


def _positions(sorted_ids: np.ndarray, ids, message: str) -> np.ndarray:
    ids = np.asarray(ids, np.int64).reshape(-1)
    pos = np.searchsorted(sorted_ids, ids)
    found = np.zeros(len(ids), bool)
    inside = pos < len(sorted_ids)
    found[inside] = sorted_ids[pos[inside]] == ids[inside]
    if not found.all():
        first = int(np.flatnonzero(~found)[0])
        raise ValueError(f"detection {first}: " + message.format(int(ids[first])))
    return pos


def _first_true_positive_needed(npig: np.ndarray) -> np.ndarray:
    """For each (category, area) and recall threshold r: the smallest integer ``tp`` with
    ``tp / npig >= RECALL_THRESHOLDS[r]`` in float64 (pycocotools' ``rc = tp / npig``).
    int64 ``[K, A, R]``; entries for ``npig == 0`` are meaningless."""
    n = np.maximum(npig, 1).astype(np.float64)[:, :, None]
    need = np.ceil(RECALL_THRESHOLDS[None, None, :] * n)
    # ceil of a rounded product can be one off either way; settle with the exact division.
    for _ in range(3):
        need = np.where((need > 0) & ((need - 1) / n >= RECALL_THRESHOLDS), need - 1, need)
        need = np.where(need / n < RECALL_THRESHOLDS, need + 1, need)
    return need.astype(np.int64)


# --------------------------------------------------------------------------------------------
# matched detections, accumulation


@dataclass(frozen=True, eq=False)
class Matches:
    """Matched detections (the first ``matcher.max_rank`` per image and category), ready to
    accumulate.

    Attributes are aligned arrays, in (image, category, rank) order; ``true_positive`` and
    ``counted`` are bool ``[D, A=4, T=10]``: pycocotools' ``dtm != 0 and not dtIgnore`` and
    ``not dtIgnore``; ``area_out`` is bool ``[D, A]`` (the detection's ``w * h`` is outside the
    area range) and ``has_pairs`` bool ``[D]`` (some ground truth has IoU >= 0.5 with it; the
    others are unmatched everywhere, so ``counted == ~area_out`` for them); ``matched_gt`` int64
    ``[D]`` the ground truth box each detection matches at area "all" and IoU 0.5, as an index
    into the `GroundTruth`'s annotations (-1: none).
    """

    matcher: CocoMatcher
    image_pos: np.ndarray
    category_pos: np.ndarray
    rank: np.ndarray
    scores: np.ndarray
    input_index: np.ndarray
    true_positive: np.ndarray
    counted: np.ndarray
    area_out: np.ndarray
    has_pairs: np.ndarray
    matched_gt: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rank)

    def select(self, keep: np.ndarray, input_position: np.ndarray) -> "Matches":
        """The matches of the detections with ``keep`` (bool ``[len(self)]``), which must be a
        prefix of every (image, category)'s matching order, so that their matches stay as they
        are; ``input_position`` maps an old input index to the new input's (``input_index``)."""
        rows = np.flatnonzero(keep)
        return Matches(
            matcher=self.matcher,
            image_pos=self.image_pos[rows],
            category_pos=self.category_pos[rows],
            rank=self.rank[rows],
            scores=self.scores[rows],
            input_index=np.asarray(input_position)[self.input_index[rows]],
            true_positive=self.true_positive[rows],
            counted=self.counted[rows],
            area_out=self.area_out[rows],
            has_pairs=self.has_pairs[rows],
            matched_gt=self.matched_gt[rows],
        )

    def detached(self) -> "Matches":
        """These matches without their matcher (what another process sends back);
        `concatenate_matches` gives them one again."""
        return replace(self, matcher=None, _cache={})

    def count_above(self, score_thresholds: Sequence[float]) -> np.ndarray:
        """int64 number of detections with ``score > threshold``, per threshold."""
        sorted_scores = np.sort(self.scores)
        return len(sorted_scores) - np.searchsorted(sorted_scores, np.asarray(score_thresholds, np.float64), side="right")

    def evaluate(self, score_thresholds: Sequence[float] | None = None, *, precision: bool = True
                 ) -> list[CocoEvaluation]:
        """pycocotools ``accumulate`` + ``summarize`` of the detections with
        ``score > threshold``, one evaluation per threshold (default: one of all detections).

        Thresholds are compared with the float64 scores; pass ``float(np.float32(t))`` to
        compare as float32 scores are by NMS. ``precision=False`` leaves the evaluations'
        ``precision`` None and reads the envelope only where the stats do (maxDets[2]): the same
        stats, a third of the work.
        """
        thresholds = [-math.inf] if score_thresholds is None else [float(t) for t in score_thresholds]
        if any(math.isnan(t) for t in thresholds):
            raise ValueError("score thresholds must not be NaN")
        prepared = self._prepare()
        distinct = sorted(set(thresholds))
        done = dict(zip(distinct, self._evaluate_thresholds(prepared, distinct, precision)))
        return [done[t] for t in thresholds]

    def evaluate_per_category(self, cuts: np.ndarray) -> CocoEvaluation:
        """`evaluate` with one threshold per category: the detections of category position
        ``k`` with ``score > cuts[k]`` (float64 ``[K]``)."""
        cuts = np.asarray(cuts, np.float64).reshape(-1)
        if len(cuts) != self.matcher.num_categories:
            raise ValueError(f"cuts has {len(cuts)} values for {self.matcher.num_categories} categories")
        if np.isnan(cuts).any():
            raise ValueError("score thresholds must not be NaN")
        return self._evaluate_thresholds(self._prepare(), [cuts])[0]

    def f1_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pooled F1 at IoU 0.5 (area all, ``maxDets[2]`` detections) along the score axis.

        Returns ``(scores, true_positives, counted)``: at each distinct score (descending),
        the cumulative true positives and counted (non-ignored) detections with
        ``score >= that score``. F1 at a cut is ``2 tp / (counted + ground_truth)`` with
        ``ground_truth`` = `num_ground_truth`.
        """
        order = self._score_order()
        order = order[self.counted[order, 0, 0]]
        scores, tp = self.scores[order], self.true_positive[order, 0, 0]
        tp_cum = np.cumsum(tp)
        n_cum = np.arange(1, len(scores) + 1)
        last = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)
        return scores[last], tp_cum[last], n_cum[last]

    @property
    def num_ground_truth(self) -> int:
        """Non-ignored ground truth boxes (area all), all categories."""
        return int(self.matcher._npig[:, 0].sum())

    # -- internals --------------------------------------------------------------------------

    def _score_order(self) -> np.ndarray:
        """Stable argsort by descending score (cached)."""
        if "score_order" not in self._cache:
            self._cache["score_order"] = np.argsort(-self.scores, kind="stable")
        return self._cache["score_order"]

    def accumulation_order(self) -> np.ndarray:
        """Detections of a category across images, by descending score, images ascending, rank:
        the order of pycocotools' mergesort over the concatenation of per-image lists (cached)."""
        if "accumulation_order" not in self._cache:
            # Matches are in (image, category, rank) order, so two stable sorts (score, then the
            # small-integer category, a radix sort) give (category, -score, image, rank).
            order = self._score_order()
            category_key = self.category_pos[order]
            if self.matcher.num_categories <= np.iinfo(np.uint16).max:
                category_key = category_key.astype(np.uint16)
            self._cache["accumulation_order"] = order[np.argsort(category_key, kind="stable")]
        return self._cache["accumulation_order"]

    def _prepare(self):
        if "prepared" in self._cache:
            return self._cache["prepared"]
        order = self.accumulation_order()
        num_k = self.matcher.num_categories
        num_segments = _NUM_M * _NUM_A * _NUM_T * num_k
        max_dets = np.asarray(self.matcher.max_dets, np.int64)
        # Segment s = ((m * A + a) * T + t) * K + k holds its true positives at
        # seg_bounds[s]:seg_bounds[s + 1], in the category's score order.
        seg_bounds = np.zeros(num_segments + 1, np.int64)
        _count_true_positives(order, self.category_pos, self.rank, self.has_pairs, self.true_positive, max_dets,
                              seg_bounds[1:])
        np.cumsum(seg_bounds, out=seg_bounds)
        precision_at_tp = np.empty(seg_bounds[-1], np.float64)
        tp_scores = np.empty(seg_bounds[-1], np.float64)
        _precision_at_true_positives(order, self.category_pos, self.rank, self.scores, self.has_pairs, ~self.area_out,
                                     self.counted, self.true_positive, max_dets, seg_bounds, _EPS, precision_at_tp,
                                     tp_scores)
        # First TP ordinal (1-based) each recall threshold needs, per segment: [S, R].
        need = self.matcher._first_tp  # [K, A, R]
        need = np.broadcast_to(need.transpose(1, 0, 2)[None, :, None, :, :], (_NUM_M, _NUM_A, _NUM_T, num_k, _NUM_R))
        need = np.ascontiguousarray(np.maximum(need.reshape(num_segments, _NUM_R), 1))
        npig = np.ascontiguousarray(
            np.broadcast_to(self.matcher._npig.T[None, :, None, :], (_NUM_M, _NUM_A, _NUM_T, num_k)).reshape(num_segments))
        prepared = dict(
            precision_at_tp=precision_at_tp,
            tp_scores=tp_scores,
            seg_bounds=seg_bounds,
            need=need,
            npig=npig,
            num_segments=num_segments,
        )
        self._cache["prepared"] = prepared
        return prepared

    def _evaluate_thresholds(self, prepared: dict, thresholds: Sequence[float | np.ndarray], full: bool = True
                             ) -> list[CocoEvaluation]:
        """Accumulation of the detections with ``score > t`` for each t, all at once; a t that is
        an array holds one threshold per category. ``full`` False: the precision only at the
        maxDets the stats read it at (`summarize`), and None in the evaluations."""
        num_k = self.matcher.num_categories
        cuts = np.empty((len(thresholds), num_k), np.float64)
        for i, threshold in enumerate(thresholds):
            cuts[i] = threshold  # a number, or one per category
        max_dets = self.matcher.max_dets
        # The precision's maxDets axis: all of them, or those equal to maxDets[2] (two when
        # maxDets[1] is the same number: pycocotools then averages over both).
        kept_m = [m for m, value in enumerate(max_dets) if full or value == max_dets[2]]
        slot = np.full(_NUM_M, -1, np.int64)
        slot[kept_m] = np.arange(len(kept_m))
        precision = np.empty((len(thresholds), _NUM_T, _NUM_R, num_k, _NUM_A, len(kept_m)), np.float64)
        recall = np.empty((len(thresholds), _NUM_T, num_k, _NUM_A, _NUM_M), np.float64)
        n_tp = np.empty((len(thresholds), prepared["num_segments"]), np.int64)
        _read_envelopes(prepared["seg_bounds"], prepared["tp_scores"], prepared["precision_at_tp"], prepared["need"],
                        prepared["npig"], cuts, slot, precision, recall, n_tp)
        seg_f1 = (2 * _NUM_A * _NUM_T + 0) * num_k  # maxDets[2], area all, IoU 0.5
        results = []
        for i in range(len(thresholds)):
            above = self.scores > cuts[i][self.category_pos]
            # Pooled F1 at IoU 0.5, area all, maxDets[2] detections.
            tp_f1 = int(n_tp[i, seg_f1 : seg_f1 + num_k].sum())
            denominator = int(np.count_nonzero(self.counted[:, 0, 0] & above)) + self.num_ground_truth
            results.append(
                CocoEvaluation(
                    stats=summarize(precision[i], recall[i], max_dets, tuple(max_dets[m] for m in kept_m)),
                    precision=precision[i] if full else None,
                    recall=recall[i],
                    category_ids=self.matcher.category_ids,
                    num_detections=int(np.count_nonzero(above)),
                    f1=float(2 * tp_f1) / float(denominator) if denominator else 0.0,
                    max_dets=self.matcher.max_dets,
                )
            )
        return results


@numba.njit(cache=True, nogil=True)
def _count_true_positives(order, category, rank, has_pairs, true_positive, max_dets, counts):
    """``counts[s]``: true positives of segment ``s = ((m * A + a) * T + t) * K + k``."""
    num_k = len(counts) // (len(max_dets) * true_positive.shape[1] * true_positive.shape[2])
    num_a, num_t = true_positive.shape[1], true_positive.shape[2]
    for d in order:
        if not has_pairs[d]:  # never matched
            continue
        for m in range(len(max_dets)):
            if rank[d] >= max_dets[m]:
                continue
            for a in range(num_a):
                for t in range(num_t):
                    if true_positive[d, a, t]:
                        counts[((m * num_a + a) * num_t + t) * num_k + category[d]] += 1


@numba.njit(cache=True, nogil=True)
def _precision_at_true_positives(order, category, rank, scores, has_pairs, area_ok, counted, true_positive, max_dets,
                                 seg_bounds, eps, precision, tp_scores):
    """pycocotools' ``tp / (fp + tp + eps)`` at each true positive, with its score.

    ``order`` is pycocotools' accumulation order: by category, descending score, ascending
    image, rank. Walking it, for each maxDets ``m``, the counted detections of a category so far are,
    per (area, IoU threshold) column, the area's in-range count (what an unmatched detection
    adds everywhere) plus corrections from detections that have IoU >= 0.5 pairs. Each
    segment's true positives are written at ``seg_bounds[s]`` on, in this order.
    """
    num_a, num_t = true_positive.shape[1], true_positive.shape[2]
    num_m = len(max_dets)
    num_k = (len(seg_bounds) - 1) // (num_m * num_a * num_t)
    fill = seg_bounds[:-1].copy()
    area_count = np.zeros((num_m, num_a), np.int64)
    delta = np.zeros((num_m, num_a, num_t), np.int64)
    tp_count = np.zeros((num_m, num_a, num_t), np.int64)
    current = -1
    for d in order:
        k = category[d]
        if k != current:
            current = k
            area_count[:] = 0
            delta[:] = 0
            tp_count[:] = 0
        for m in range(num_m):
            if rank[d] >= max_dets[m]:
                continue
            for a in range(num_a):
                if area_ok[d, a]:
                    area_count[m, a] += 1
            if not has_pairs[d]:
                continue
            for a in range(num_a):
                for t in range(num_t):
                    delta[m, a, t] += np.int64(counted[d, a, t]) - np.int64(area_ok[d, a])
                    if true_positive[d, a, t]:
                        tp_count[m, a, t] += 1
                        tp = tp_count[m, a, t]
                        fp = area_count[m, a] + delta[m, a, t] - tp
                        s = ((m * num_a + a) * num_t + t) * num_k + k
                        precision[fill[s]] = np.float64(tp) / (np.float64(fp) + np.float64(tp) + eps)
                        tp_scores[fill[s]] = scores[d]
                        fill[s] += 1


@numba.njit(cache=True, nogil=True)
def _read_envelopes(seg_bounds, tp_scores, values, need, npig, cuts, slot, precision, recall, n_tp):
    """pycocotools' precision envelope at the recall thresholds, for every score threshold and
    every (maxDets, area, IoU, category) segment.

    Segment ``s = ((m * A + a) * T + t) * K + k`` holds its true positives at
    ``seg_bounds[s]:seg_bounds[s + 1]`` of ``tp_scores`` (descending) and ``values`` (the
    precision at each); ``need[s, r]`` is the 1-based ordinal of the first true positive recall
    threshold ``r`` needs (>= 1). With ``n`` the true positives scored above threshold ``i``'s
    cut (a prefix), recall threshold ``r`` reads the largest precision among true positives
    ``need - 1 .. n - 1`` (pycocotools' envelope: the running maximum from the right, read at the
    first index whose recall reaches ``r``), 0 where ``need > n``; -1 (and recall -1) where the
    category has no ground truth. Writes ``precision[i, t, r, k, a, slot[m]]`` (only where
    ``slot[m] >= 0``), ``recall[i, t, k, a, m]`` and ``n_tp[i, s]``.
    """
    num_thresholds, num_k = cuts.shape
    num_t, num_r, num_a, num_m = precision.shape[1], precision.shape[2], precision.shape[4], recall.shape[4]
    # Segments in the output's order (m fastest): neighbouring segments write neighbouring cells.
    for i, t, k, a, m in np.ndindex(num_thresholds, num_t, num_k, num_a, num_m):
        s = ((m * num_a + a) * num_t + t) * num_k + k
        start, stop = seg_bounds[s], seg_bounds[s + 1]
        # n = the true positives scored above the cut: a prefix (scores descend).
        low, high, cut = start, stop, cuts[i, k]
        while low < high:
            middle = (low + high) // 2
            if tp_scores[middle] > cut:
                low = middle + 1
            else:
                high = middle
        n = low - start
        n_tp[i, s] = n
        recall[i, t, k, a, m] = -1.0 if npig[s] == 0 else n / npig[s]
        out = slot[m]
        if out < 0:
            continue
        if npig[s] == 0:
            for r in range(num_r):
                precision[i, t, r, k, a, out] = -1.0
            continue
        running = -np.inf
        j = start + n  # values[j:start + n] are in `running`
        for r in range(num_r - 1, -1, -1):
            first = need[s, r]
            if first > n:
                precision[i, t, r, k, a, out] = 0.0
                continue
            while j > start + first - 1:
                j -= 1
                if values[j] > running:
                    running = values[j]
            precision[i, t, r, k, a, out] = running


def concatenate_matches(matcher: CocoMatcher, parts: Sequence[tuple[Matches, np.ndarray, int]]) -> Matches:
    """The matches of disjoint image sets' detections as one `Matches` under ``matcher``.

    Matching looks at one image at a time, so matching each set under a matcher of its own
    images and concatenating is matching them all: the result is in ``matcher``'s (image,
    category, rank) order, as `CocoMatcher.match` of all the detections would give it.

    Args:
      matcher: a matcher whose images include every part's.
      parts: ``(matches, positions, input_offset)``: ``positions[i]`` is ``matcher``'s position of
        the part's image position ``i`` (ascending), and ``input_offset`` is added to the part's
        ``input_index`` (where its detections start in the concatenated input).
    """
    if not parts:
        raise ValueError("concatenate_matches needs at least one part")
    arrays = {name: np.concatenate([getattr(matches, name) for matches, _, _ in parts])
              for name in ("category_pos", "rank", "scores", "true_positive", "counted", "area_out", "has_pairs",
                           "matched_gt")}
    image_pos = np.concatenate([np.asarray(positions, np.int64)[matches.image_pos] for matches, positions, _ in parts])
    input_index = np.concatenate([matches.input_index + offset for matches, _, offset in parts])
    if len(image_pos) and (np.diff(image_pos) < 0).any():
        order = np.argsort(image_pos, kind="stable")  # each part is in (image, category, rank) order
        image_pos, input_index = image_pos[order], input_index[order]
        arrays = {name: array[order] for name, array in arrays.items()}
    return Matches(matcher=matcher, image_pos=image_pos, input_index=input_index, **arrays)


# --------------------------------------------------------------------------------------------
# one-shot evaluation


def evaluate_bbox(ground_truth, image_ids, category_ids, boxes_xywh, scores, *, eval_image_ids=None,
                  max_detections: int = MAX_DETECTIONS[-1]) -> CocoEvaluation:
    """COCO bbox evaluation of detections given as arrays, equal to pycocotools.

    Args:
      ground_truth: a `GroundTruth`, a path, a dict or a pycocotools ``COCO`` object.
      image_ids: int ``[D]`` COCO image id of each detection.
      category_ids: int ``[D]`` COCO category id of each detection.
      boxes_xywh: float ``[D, 4]`` COCO ``[x, y, w, h]``.
      scores: float ``[D]``.
      eval_image_ids: images to evaluate (default: all images of the ground truth).
      max_detections: pycocotools' ``params.maxDets[2]`` (`CocoMatcher`).

    Returns:
      `CocoEvaluation`. Input order breaks score ties, as a results list's order does.

    Raises:
      ValueError: a detection's image is not evaluated or its category is not in the ground
        truth (pycocotools would assert, or silently skip it), or a score is NaN.
    """
    matcher = CocoMatcher(ground_truth, eval_image_ids, max_detections=max_detections)
    matches = matcher.match(matcher.image_positions(image_ids), matcher.category_positions(category_ids), boxes_xywh, scores)
    return matches.evaluate()[0]


def evaluate_results(ground_truth, results, *, eval_image_ids=None, max_detections: int = MAX_DETECTIONS[-1]) -> CocoEvaluation:
    """`evaluate_bbox` of a COCO results list (dicts with image_id, category_id, bbox, score),
    or of the path of a results json."""
    if isinstance(results, (str, os.PathLike)):
        with open(results, encoding="utf-8") as handle:
            results = json.load(handle)
    n = len(results)
    image_ids = np.empty(n, np.int64)
    category_ids = np.empty(n, np.int64)
    boxes = np.empty((n, 4), np.float64)
    scores = np.empty(n, np.float64)
    for position, record in enumerate(results):
        try:
            image_ids[position] = record["image_id"]
            category_ids[position] = record["category_id"]
            boxes[position] = record["bbox"]
            scores[position] = record["score"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"results[{position}]: needs image_id, category_id, bbox [x, y, w, h] and score ({error})") from None
    return evaluate_bbox(ground_truth, image_ids, category_ids, boxes, scores, eval_image_ids=eval_image_ids,
                         max_detections=max_detections)
