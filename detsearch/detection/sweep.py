"""Post-processing threshold sweep on cached raw predictions: NMS + COCO mAP per configuration.

A configuration is, by MoXing names:

- one-stage (SSD, RetinaNet): ``(score_threshold, iou_threshold)``;
- two-stage (Faster R-CNN): ``(nms_score_threshold, nms_iou_threshold, score_threshold,
  iou_threshold)``: the first two drive the first stage (class-agnostic NMS of the RPN
  proposals: objectness ``> nms_score_threshold``, IoU ``> nms_iou_threshold`` suppressed, the
  best ``num_proposals`` kept, per FPN level when levels were recorded, then merged), the last
  two the second stage (per-class NMS of the cached second-stage boxes and scores of the
  surviving proposals).

NMS semantics are those of `detsearch.detection.nms` (TensorFlow's kernels); evaluation is
`detsearch.detection.cocoeval` (pycocotools' numbers, bit for bit). `sweep_reference` computes
the same table the slow, obvious way and is what the tests compare against.

Why a whole score axis costs one NMS and one matching pass (the argument the tests check):

1. Per-class greedy NMS visits candidates by descending score (ties by index) and decides each
   one from the earlier kept ones of its class only. Raising the score threshold removes a
   suffix of every class's visiting order, so the kept set at a higher threshold is the kept
   set at the lower one restricted to ``score > threshold``.
2. The per-class cap keeps the first ``max_detections_per_class`` of a class's kept list; the
   first k of a prefix is a prefix of the first k. The merge sorts all kept boxes by
   descending score (ties by index), and ``score > threshold`` is again a prefix of that
   order, so the first ``max_total_detections`` of the prefix is a prefix of the first
   ``max_total_detections``. Hence: output(threshold) = output(lowest threshold) filtered by
   ``score > threshold``. The same holds for the first stage and ``nms_score_threshold``
   (levels merged by objectness, then the top ``num_proposals``).
3. COCO matching walks each (image, category)'s detections by descending score, so the match
   of a prefix is the prefix of the match, and the accumulation of a prefix is a truncation of
   the globally score-sorted arrays (`cocoeval.Matches.evaluate`).

So for each IoU setting (and, two-stage, each first-stage setting) NMS runs once at the lowest
score threshold of the grid and all score thresholds are read off one matching pass. IoUs
between cached boxes and ground truth are computed once per cache entry and reused.

Which code runs NMS: the per-class passes (one-stage, and the two-stage second stage) use
`nms.GreedyWalk`, a vectorized NumPy walk over all images that stops each image at
``max_total_detections`` kept (per-image TF op calls would cost more in call overhead than the
work they do); the two-stage first stage, whose walks keep up to ``num_proposals`` boxes,
batches the TensorFlow op (`nms.class_agnostic_nms_batched`). Both keep exactly the boxes of
TensorFlow's kernels; the tests compare them with the op and with the NumPy reference.

Tie order (equal scores): one-stage candidates by (row, class), as the TF ops see anchors
then classes; two-stage second-stage candidates by (rank of the proposal after the first
stage, class); proposals by row.

Library code logs through `logging` and reports progress through an optional callback; it
never prints.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import multiprocessing
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from detsearch.detection import nms as nms_ops
from detsearch.detection.boxes import yxyx_to_xywh
from detsearch.detection.cocoeval import STAT_NAMES, CocoMatcher, GroundTruth, IouPairs, ragged_arange, load_ground_truth
from detsearch.executor import Executor, LocalExecutor, as_executor
from detsearch.params import ONE_STAGE_THRESHOLDS, PARAM_NAMES, TWO_STAGE_THRESHOLDS, ParamSpec

__all__ = [
    "OBJECTIVES",
    "STRATEGIES",
    "SweepResult",
    "SweepRow",
    "objective_value",
    "select_best",
    "sweep",
    "sweep_reference",
]

logger = logging.getLogger(__name__)

OBJECTIVES = ("map", "ap50", "f1", "map_at_budget")
"""``map``: AP@[.5:.95] (default); ``ap50``: AP@.5; ``f1``: pooled F1 at IoU 0.5 of the
configuration's own detections; ``map_at_budget``: AP@[.5:.95] among configurations with
mean detections per image <= budget."""
STRATEGIES = ("grid", "coordinate")
"""``grid``: every combination; ``coordinate``: one parameter at a time, the others held,
until a full round changes nothing (for large grids)."""

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)`` after each NMS setting; ``total`` is an upper bound for the
coordinate strategy."""


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class SweepRow:
    """One configuration's outcome.

    Attributes:
      params: thresholds by MoXing name (`PARAM_NAMES` order).
      stats: the 12 COCO stats in pycocotools order (`cocoeval.STAT_NAMES`).
      recall: AR@100 (``stats[8]``).
      ap50: AP@.5 (``stats[1]``).
      dets_per_image: mean detections per image after NMS.
      f1: F1 at IoU 0.5 (area all, 100 detections, categories pooled, crowd and ignored boxes
        excluded) of this configuration's detections.
      f1_max: the best F1 over score cuts at or above this configuration's threshold.
      f1_max_score: the lowest score kept at that cut (keep ``score >= f1_max_score``), None
        without detections.
    """

    params: Mapping[str, float]
    stats: tuple[float, ...]
    recall: float
    ap50: float
    dets_per_image: float
    f1: float
    f1_max: float
    f1_max_score: float | None

    @property
    def map(self) -> float:
        return self.stats[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "stats": list(self.stats),
            "recall": self.recall,
            "ap50": self.ap50,
            "dets_per_image": self.dets_per_image,
            "f1": self.f1,
            "f1_max": self.f1_max,
            "f1_max_score": self.f1_max_score,
        }


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep.

    Attributes:
      kind: ``"one_stage"`` or ``"two_stage"``.
      objective: the objective name; ``budget`` its detections-per-image budget (or None).
      strategy: ``"grid"`` or ``"coordinate"``.
      best: the chosen thresholds as a `ParamSpec` (``best_params`` as a dict).
      best_row: the chosen configuration's `SweepRow`.
      table: every evaluated configuration, ordered by parameters.
      num_images: images evaluated.
    """

    kind: str
    objective: str
    budget: float | None
    strategy: str
    best: ParamSpec
    best_row: SweepRow
    table: tuple[SweepRow, ...]
    num_images: int

    @property
    def best_params(self) -> dict[str, float]:
        return self.best.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "objective": self.objective,
            "budget": self.budget,
            "strategy": self.strategy,
            "best": self.best_params,
            "best_row": self.best_row.to_dict(),
            "stat_names": list(STAT_NAMES),
            "num_images": self.num_images,
            "table": [row.to_dict() for row in self.table],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def objective_value(row: SweepRow, objective: str, budget: float | None = None) -> float:
    """The value a configuration scores under ``objective``; -inf when it breaks the budget."""
    if objective == "map":
        return row.stats[0]
    if objective == "ap50":
        return row.stats[1]
    if objective == "f1":
        return row.f1
    if objective == "map_at_budget":
        return row.stats[0] if row.dets_per_image <= budget else -math.inf
    raise ValueError(f"unknown objective {objective!r}; known objectives: {', '.join(OBJECTIVES)}")


def select_best(rows: Sequence[SweepRow], objective: str, budget: float | None = None) -> SweepRow:
    """The best row: highest objective value; ties go to fewer detections per image, then to
    the earlier row.

    Raises:
      ValueError: no row (or, for ``map_at_budget``, no row within the budget).
    """
    _check_objective(objective, budget)
    best, best_key = None, None
    for row in rows:
        value = objective_value(row, objective, budget)
        if value == -math.inf:
            continue
        key = (value, -row.dets_per_image)
        if best is None or key > best_key:
            best, best_key = row, key
    if best is None:
        if objective == "map_at_budget" and rows:
            fewest = min(rows, key=lambda r: r.dets_per_image)
            raise ValueError(
                f"no configuration has <= {budget:g} detections per image; the fewest is "
                f"{fewest.dets_per_image:.2f} at {dict(fewest.params)}"
            )
        raise ValueError("no configurations to choose from")
    return best


def _check_objective(objective: str, budget: float | None) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known objectives: {', '.join(OBJECTIVES)}")
    if objective == "map_at_budget":
        if budget is None or isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
            raise ValueError(f"objective map_at_budget needs a finite budget >= 0 (detections per image), got {budget!r}")


# --------------------------------------------------------------------------------------------
# inputs


def _cache_kind(cache) -> str:
    kind = getattr(cache.meta, "kind", None)
    kind = getattr(kind, "value", kind)  # an enum member or its string
    if kind not in ("one_stage", "two_stage"):
        raise ValueError(f"cache kind must be 'one_stage' or 'two_stage', got {kind!r}")
    return kind


def _grid_axes(spec: ParamSpec, kind: str) -> dict[str, tuple[float, ...]]:
    if not isinstance(spec, ParamSpec):
        raise TypeError(f"param_list_spec must be a ParamSpec, got {type(spec).__name__}")
    names = ONE_STAGE_THRESHOLDS if kind == "one_stage" else TWO_STAGE_THRESHOLDS
    unexpected = [name for name in spec.names() if name not in names]
    if unexpected:
        raise ValueError(f"a {kind} sweep takes {', '.join(names)}; got also {', '.join(unexpected)}")
    missing = [name for name in names if name not in spec]
    if missing:
        raise ValueError(f"a {kind} sweep needs candidates for {', '.join(missing)}")
    return {name: tuple(sorted(set(spec.candidates(name)))) for name in names}


def _check_cache_arrays(cache, kind: str) -> None:
    meta = cache.meta
    num_images = len(meta.image_ids)
    for name in ("row_offsets", "entry_offsets"):
        offsets = np.asarray(getattr(cache, name))
        if offsets.shape != (num_images + 1,):
            raise ValueError(f"cache {name} has shape {offsets.shape}, expected ({num_images + 1},)")
    num_entries = len(cache.entry_score)
    if int(cache.entry_offsets[-1]) != num_entries:
        raise ValueError(f"cache entry_offsets ends at {int(cache.entry_offsets[-1])}, expected {num_entries}")
    if kind == "two_stage" and (cache.row_objectness is None or cache.entry_boxes is None):
        raise ValueError("a two_stage cache needs row_objectness and entry_boxes")
    scores = np.asarray(cache.entry_score)
    bad = ~np.isfinite(scores)
    if bad.any():
        entry = int(np.flatnonzero(bad)[0])
        raise ValueError(f"cache entry {entry}: score {scores[entry]} is not finite")
    if len(meta.category_ids) and num_entries:
        classes = np.asarray(cache.entry_class)
        if int(classes.min()) < 0 or int(classes.max()) >= len(meta.category_ids):
            raise ValueError(f"cache entry_class outside [0, {len(meta.category_ids)})")


# --------------------------------------------------------------------------------------------
# the fast engine


class _PairStore:
    """IoU >= 0.5 pairs per cache entry, computed the first time an entry is evaluated."""

    def __init__(self, matcher: CocoMatcher, num_entries: int, image_pos, class_pos, entry_box):
        self.matcher = matcher
        self.image_pos = image_pos  # per entry
        self.class_pos = class_pos  # per entry
        self.entry_box = entry_box  # callable: entries -> float32 [n, 4] yxyx
        self.start = np.full(num_entries, -1, np.int64)
        self.count = np.zeros(num_entries, np.int64)
        self.total = 0
        self.gt_index = np.zeros(0, np.int64)
        self.iou = np.zeros(0, np.float64)

    def pairs(self, entries: np.ndarray) -> IouPairs:
        unknown = entries[self.start[entries] < 0]  # entries of one call are distinct
        if unknown.size:
            found = self.matcher.iou_pairs(self.image_pos[unknown], self.class_pos[unknown], yxyx_to_xywh(self.entry_box(unknown)))
            self.start[unknown] = self.total + found.offsets[:-1]
            self.count[unknown] = np.diff(found.offsets)
            self.total += len(found.gt_index)
            self.gt_index = np.concatenate([self.gt_index, found.gt_index])
            self.iou = np.concatenate([self.iou, found.iou])
        counts = self.count[entries]
        offsets = np.zeros(len(entries) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = ragged_arange(self.start[entries], counts)
        return IouPairs(offsets, self.gt_index[rows], self.iou[rows])


class _Engine:
    """Evaluates NMS settings on one cache; every score threshold of the grid at once."""

    def __init__(
        self,
        cache,
        ground_truth,
        axes: Mapping[str, tuple[float, ...]],
        kind: str,
        *,
        max_detections_per_class: int,
        max_total_detections: int,
        num_proposals: int,
        per_level: bool,
        nms_backend: str,
    ):
        started = time.perf_counter()
        self.cache = cache
        self.kind = kind
        self.axes = axes
        self.max_per_class = max_detections_per_class
        self.max_total = max_total_detections
        self.num_proposals = num_proposals
        self.per_level = per_level
        self.nms_backend = nms_backend
        meta = cache.meta
        self.matcher = CocoMatcher(ground_truth, image_ids=meta.image_ids)
        self.num_images = len(meta.image_ids)
        self.image_pos = self.matcher.image_positions(meta.image_ids)
        self.class_pos = self.matcher.category_positions(meta.category_ids)
        self.score_thresholds = axes["score_threshold"]
        self.score_thresholds32 = [float(np.float32(s)) for s in self.score_thresholds]
        lowest = np.float32(min(self.score_thresholds))
        entry_offsets = np.asarray(cache.entry_offsets, np.int64)
        entry_score = np.asarray(cache.entry_score, np.float32)
        entry_row = np.asarray(cache.entry_row, np.int64)
        entry_class = np.asarray(cache.entry_class, np.int64)
        entry_image = np.repeat(np.arange(self.num_images), np.diff(entry_offsets))
        # Candidates of every NMS run: score above the lowest threshold, per image by descending
        # score; ties by (row, class), the (box index, class) order of the TF ops.
        candidates = np.flatnonzero(entry_score > lowest)
        self.cand = candidates[_visiting_order(entry_image[candidates], entry_score[candidates], entry_row[candidates], entry_class[candidates])]
        self.cand_image = entry_image[self.cand]
        self.cand_row = entry_row[self.cand]
        self.cand_class = entry_class[self.cand]
        self.cand_score = entry_score[self.cand]
        if kind == "one_stage":
            row_boxes = np.asarray(cache.row_boxes, np.float32)
            self.cand_boxes = row_boxes[self.cand_row]
            entry_box = lambda entries: row_boxes[entry_row[entries]]  # noqa: E731
        else:
            entry_boxes = np.asarray(cache.entry_boxes, np.float32)
            self.cand_boxes = entry_boxes[self.cand]
            entry_box = lambda entries: entry_boxes[entries]  # noqa: E731
        self.cand_offsets = np.searchsorted(self.cand_image, np.arange(self.num_images + 1))
        # Shared by every walk: the boxes' walk data and dense (image, class) group ids.
        self.cand_data = nms_ops.walk_data(self.cand_boxes)
        self.cand_group, self.num_groups = nms_ops.compact_groups(self.cand_image, self.cand_class)
        self.entry_image = entry_image
        self.entry_class = entry_class
        self.entry_score = entry_score
        self.entry_box = entry_box
        self.pairs = _PairStore(self.matcher, len(entry_score), self.image_pos[entry_image], self.class_pos[entry_class], entry_box)
        self._first_stage_memo: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._walk_memo: tuple | None = None
        self._workspace = nms_ops.WalkWorkspace()
        self._rows: dict[tuple, list[SweepRow]] = {}
        logger.info(
            "sweep: %d images, %d candidate entries above %g, prepared in %.2fs",
            self.num_images,
            len(self.cand),
            float(lowest),
            time.perf_counter() - started,
        )

    # -- NMS --------------------------------------------------------------------------------

    def _first_stage(self, nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
        """Kept proposals at the lowest nms_score_threshold, per image by descending objectness
        (ties by row), at most ``num_proposals`` each: (global rows, offsets)."""
        if nms_iou in self._first_stage_memo:
            return self._first_stage_memo[nms_iou]
        cache = self.cache
        levels = np.asarray(cache.row_level) if (self.per_level and cache.row_level is not None) else None
        rows, offsets = nms_ops.class_agnostic_nms_batched(
            np.asarray(cache.row_boxes, np.float32),
            np.asarray(cache.row_objectness, np.float32),
            np.asarray(cache.row_offsets, np.int64),
            iou_threshold=nms_iou,
            score_threshold=min(self.axes["nms_score_threshold"]),
            max_output_size=self.num_proposals,
            levels=levels,
            backend="numpy" if self.nms_backend == "reference" else "tensorflow",
        )
        self._first_stage_memo[nms_iou] = (rows, offsets)
        return rows, offsets

    def _walk_input(self, key: tuple):
        """(positions among the candidates or None for all of them, their `GreedyWalk`,
        per-image offsets) for NMS setting ``key``; the same for every ``iou_threshold`` of one
        first-stage setting, so it is kept for the next key."""
        stage_key = key[:-1]
        if self._walk_memo is not None and self._walk_memo[0] == stage_key:
            return self._walk_memo[1]
        if self.kind == "one_stage":
            picked = None  # every candidate, in the order already prepared
        else:
            nms_score, nms_iou = stage_key
            rows, row_offsets = self._first_stage(nms_iou)
            objectness = np.asarray(self.cache.row_objectness, np.float32)[rows]
            above = objectness > np.float32(nms_score)
            image_of = np.repeat(np.arange(self.num_images), np.diff(row_offsets))
            counts = np.minimum(np.bincount(image_of[above], minlength=self.num_images), self.num_proposals)
            # `above` is a prefix of each image's list (descending objectness): take `counts`.
            positions = ragged_arange(row_offsets[:-1], counts)
            rank_of_row = np.full(len(self.cache.row_boxes), -1, np.int64)
            rank_of_row[rows[positions]] = positions - row_offsets[:-1][image_of[positions]]
            rank = rank_of_row[self.cand_row]
            keep = np.flatnonzero(rank >= 0)
            picked = keep[_break_ties(self.cand_image[keep], self.cand_score[keep], rank[keep], self.cand_class[keep])]
        if picked is None:
            offsets = self.cand_offsets
            data, group = self.cand_data, self.cand_group
        else:
            offsets = np.searchsorted(self.cand_image[picked], np.arange(self.num_images + 1))
            data, group = self.cand_data[:, picked], self.cand_group[picked]
        walk = None if self.nms_backend == "reference" else nms_ops.GreedyWalk.prepared(data, group, self.num_groups, offsets)
        value = (picked, walk, offsets)
        self._walk_memo = (stage_key, value)
        return value

    def _detections(self, key: tuple) -> np.ndarray:
        """Cache entries kept by NMS at the lowest score threshold, image by image in output
        order."""
        picked, walk, offsets = self._walk_input(key)
        cand = self.cand if picked is None else self.cand[picked]
        if self.nms_backend == "reference":
            everything = slice(None)
            boxes = self.cand_boxes[everything if picked is None else picked]
            classes = self.cand_class[everything if picked is None else picked]
            kept = np.zeros(len(cand), bool)
            for i in range(self.num_images):
                lo, hi = offsets[i], offsets[i + 1]
                chosen = nms_ops.per_class_nms_reference(
                    boxes[lo:hi],
                    np.arange(hi - lo, 0, -1, dtype=np.float32),  # already in visiting order
                    classes[lo:hi],
                    iou_threshold=key[-1],
                    max_detections_per_class=self.max_per_class,
                    max_total_detections=self.max_total,
                )
                kept[lo + chosen] = True
        else:
            kept = walk.run(
                iou_threshold=key[-1],
                max_per_group=self.max_per_class,
                max_per_image=self.max_total,
                workspace=self._workspace,
            )
        return cand[kept]

    # -- evaluation -------------------------------------------------------------------------

    def rows(self, key: tuple) -> list[SweepRow]:
        """Rows for every score threshold of the grid at NMS setting ``key``."""
        if key in self._rows:
            return self._rows[key]
        started = time.perf_counter()
        dets = self._detections(key)
        nms_done = time.perf_counter()
        image_pos = self.image_pos[self.entry_image[dets]]
        class_pos = self.class_pos[self.entry_class[dets]]
        boxes = yxyx_to_xywh(self.entry_box(dets))
        scores = self.entry_score[dets].astype(np.float64)
        matches = self.matcher.match(image_pos, class_pos, boxes, scores, self.pairs.pairs(dets))
        evaluations = matches.evaluate(self.score_thresholds32)
        curve = matches.f1_curve()
        ground_truth = matches.num_ground_truth
        rows = []
        for score_threshold, threshold32, evaluation in zip(self.score_thresholds, self.score_thresholds32, evaluations):
            params = _params(self.kind, key, score_threshold)
            f1_max, f1_max_score = _best_f1(curve, threshold32, ground_truth)
            rows.append(
                _make_row(params, evaluation.stats, int(np.count_nonzero(scores > threshold32)), self.num_images, evaluation.f1, f1_max, f1_max_score)
            )
        self._rows[key] = rows
        logger.debug(
            "sweep: %s: %d detections, NMS %.2fs, evaluation %.2fs",
            key,
            len(dets),
            nms_done - started,
            time.perf_counter() - nms_done,
        )
        return rows


def _visiting_order(image: np.ndarray, score: np.ndarray, row: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Permutation sorting entries by (image, descending score, row, class)."""
    n = len(image)
    if n == 0:
        return np.zeros(0, np.int64)
    span = int(classes.max()) + 1
    row_class = row * span + classes
    if (np.diff(image) >= 0).all() and (np.diff(row_class) > 0).all():
        # Already in (row, class) order (the cache's layout): a stable sort on one integer key
        # (image, then the score's bits, which order like the floats) keeps it for ties.
        bits = (score.astype(np.float32) + np.float32(0.0)).view(np.uint32).astype(np.uint64)
        negative = bits >= np.uint64(0x80000000)
        ascending = np.where(negative, np.uint64(0xFFFFFFFF) - bits, bits + np.uint64(0x80000000))
        key = (image.astype(np.uint64) << np.uint64(32)) | (np.uint64(0xFFFFFFFF) - ascending)
        return np.argsort(key, kind="stable")
    return np.lexsort((classes, row, -score, image))


def _break_ties(image: np.ndarray, score: np.ndarray, rank: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Permutation that orders runs of equal (image, score) by (proposal rank, class)."""
    n = len(image)
    order = np.arange(n)
    if n < 2:
        return order
    same = (image[1:] == image[:-1]) & (score[1:] == score[:-1])
    if not same.any():
        return order
    in_run = np.zeros(n, bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    members = np.flatnonzero(in_run)
    starts_run = np.r_[True, ~same][members]
    run_id = np.cumsum(starts_run)
    local = np.lexsort((classes[members], rank[members], run_id))
    order[members] = members[local]
    return order


def _params(kind: str, key: tuple, score_threshold: float) -> dict[str, float]:
    if kind == "one_stage":
        return {"score_threshold": float(score_threshold), "iou_threshold": float(key[0])}
    nms_score, nms_iou, iou = key
    return {
        "nms_score_threshold": float(nms_score),
        "nms_iou_threshold": float(nms_iou),
        "score_threshold": float(score_threshold),
        "iou_threshold": float(iou),
    }


def _best_f1(curve, threshold: float, ground_truth: int) -> tuple[float, float | None]:
    """Best F1 over score cuts with score > threshold; ties go to the higher score."""
    scores, tp, counted = curve
    keep = scores > threshold
    if not keep.any():
        return (0.0, None)
    scores, tp, counted = scores[keep], tp[keep], counted[keep]
    f1 = (2 * tp).astype(np.float64) / (counted + ground_truth).astype(np.float64)
    best = int(np.argmax(f1))
    return float(f1[best]), float(scores[best])


def _make_row(params, stats, num_detections, num_images, f1, f1_max, f1_max_score) -> SweepRow:
    stats = tuple(float(s) for s in stats)
    return SweepRow(
        params=params,
        stats=stats,
        recall=stats[8],
        ap50=stats[1],
        dets_per_image=float(num_detections) / float(num_images) if num_images else 0.0,
        f1=float(f1),
        f1_max=float(f1_max),
        f1_max_score=f1_max_score,
    )


# --------------------------------------------------------------------------------------------
# public entry points


def _check_options(cache, kind, max_detections_per_class, max_total_detections, num_proposals, per_level):
    for name, value in (("max_detections_per_class", max_detections_per_class), ("max_total_detections", max_total_detections)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if num_proposals is None:
        num_proposals = getattr(cache.meta, "num_proposals", None) or nms_ops.DEFAULT_NUM_PROPOSALS
    if isinstance(num_proposals, bool) or not isinstance(num_proposals, (int, np.integer)) or num_proposals < 1:
        raise ValueError(f"num_proposals must be an integer >= 1, got {num_proposals!r}")
    if per_level is None:
        per_level = kind == "two_stage" and getattr(cache, "row_level", None) is not None
    if per_level and getattr(cache, "row_level", None) is None:
        raise ValueError("per_level NMS needs row_level in the cache")
    return int(num_proposals), bool(per_level)


def _check_floor(cache, axes) -> None:
    floor = float(getattr(cache.meta, "score_floor", 0.0))
    lowest = min(axes["score_threshold"])
    if np.float32(lowest) < np.float32(floor):
        raise ValueError(
            f"score_threshold {lowest:g} is below the cache's score floor {floor:g}: entries under the floor were not recorded"
        )


def _check_first_stage(cache, kind, axes, num_proposals: int, per_level: bool) -> None:
    """First-stage settings the cache can answer exactly (two-stage caches)."""
    if kind != "two_stage":
        return
    if 0.0 in axes["nms_iou_threshold"]:
        raise ValueError("nms_iou_threshold 0 is not swept: TF Model Garden skips first-stage NMS altogether at 0 "
                         "(every proposal up to num_proposals, whatever nms_score_threshold); use a value > 0")
    meta = cache.meta
    ious = getattr(meta, "first_stage_iou_thresholds", None)
    if ious is None:
        return
    min_score = meta.first_stage_min_score
    outside = [v for v in axes["nms_iou_threshold"] if v not in ious]
    lowest = min(axes["nms_score_threshold"])
    recorded = (f"the cache's second stage was recorded for the proposals that nms_iou_threshold in "
                f"{list(ious)} with nms_score_threshold >= {min_score:g} keep")
    if outside:
        raise ValueError(f"nms_iou_threshold {outside[0]:g}: {recorded}; record it again with that value")
    if lowest < min_score:
        raise ValueError(f"nms_score_threshold {lowest:g}: {recorded}; record it again with a lower minimum")
    if not per_level or num_proposals > (meta.num_proposals or num_proposals):
        raise ValueError(f"num_proposals {num_proposals} (per_level {per_level}): {recorded}, per FPN level and at "
                         f"most {meta.num_proposals} each")


def _keys(kind: str, axes: Mapping[str, tuple[float, ...]]) -> list[tuple]:
    if kind == "one_stage":
        return [(iou,) for iou in axes["iou_threshold"]]
    # nms_iou outermost: the first stage of one nms_iou is computed once and reused.
    return [
        (nms_score, nms_iou, iou)
        for nms_iou in axes["nms_iou_threshold"]
        for nms_score in axes["nms_score_threshold"]
        for iou in axes["iou_threshold"]
    ]


def _row_sort_key(row: SweepRow) -> tuple:
    return tuple(row.params[name] for name in PARAM_NAMES if name in row.params)


def sweep(
    cache,
    ground_truth,
    param_list_spec: ParamSpec,
    *,
    objective: str = "map",
    budget: float | None = None,
    strategy: str = "grid",
    max_detections_per_class: int = nms_ops.DEFAULT_MAX_DETECTIONS_PER_CLASS,
    max_total_detections: int = nms_ops.DEFAULT_MAX_TOTAL_DETECTIONS,
    num_proposals: int | None = None,
    per_level: bool | None = None,
    nms_backend: str = "fast",
    workers: int = 1,
    executor: Executor | str | None = None,
    progress: ProgressCallback | None = None,
) -> SweepResult:
    """Chooses post-processing thresholds on a cache of raw predictions.

    Args:
      cache: a `detsearch.detection.cache.DetectionCache` (or any object with its attributes).
      ground_truth: COCO instances: path, dict, pycocotools ``COCO`` or `GroundTruth`.
        Evaluation covers the cache's images (each must be in the ground truth) and all
        ground-truth categories (the cache's categories must be among them).
      param_list_spec: candidate lists by MoXing name, e.g.
        ``ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.5, 0.6])`` for one-stage;
        two-stage also needs ``nms_score_threshold`` and ``nms_iou_threshold``.
      objective: one of `OBJECTIVES` (default ``"map"``).
      budget: mean detections per image allowed by ``map_at_budget``.
      strategy: ``"grid"`` (default) or ``"coordinate"`` (see `STRATEGIES`).
      max_detections_per_class, max_total_detections: NMS caps (default 100 and 100).
      num_proposals: first-stage top-N (default: the cache's ``meta.num_proposals``, else 1000).
      per_level: first-stage NMS per FPN level (default: when the cache records levels).
      nms_backend: ``"fast"`` (vectorized greedy walk; the first stage through the TensorFlow
        op) or ``"reference"`` (NumPy reference loops; slow, no TensorFlow).
      workers: processes for the grid strategy (default 1). With more, NMS settings are
        spread over forked worker processes (POSIX ``fork`` only; elsewhere one process is
        used); any TensorFlow work (the first stage) runs in this process before the fork.
        The table is identical for any number of workers.
      executor: where the grid's NMS settings run: None or ``"local"`` (this process, or
        ``workers`` forked processes), ``"ray"`` or an `detsearch.executor.Executor`. Other than
        local, one task per NMS setting (two-stage: per first-stage setting) goes to the
        executor with the cache and the ground truth; any TensorFlow work (the first stage)
        runs here first. The table is identical to the local one.
      progress: optional ``progress(done, total)`` callback.

    Returns:
      `SweepResult`. Ties of the objective go to fewer detections per image, then to lower
      thresholds (`select_best`).

    Raises:
      ValueError / TypeError: bad arguments, a score threshold below the cache's score floor,
        cache images or categories unknown to the ground truth, no configuration within the
        budget.
    """
    kind = _cache_kind(cache)
    axes = _grid_axes(param_list_spec, kind)
    _check_objective(objective, budget)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known strategies: {', '.join(STRATEGIES)}")
    if nms_backend not in ("fast", "reference"):
        raise ValueError(f"nms_backend must be 'fast' or 'reference', got {nms_backend!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    executor = as_executor(executor)
    distributed = not isinstance(executor, LocalExecutor)
    if distributed and (workers > 1 or strategy != "grid"):
        raise ValueError(f"executor {executor.name!r} runs the grid strategy with workers=1 (it spreads the work "
                         f"itself); got strategy {strategy!r}, workers {workers}")
    num_proposals, per_level = _check_options(cache, kind, max_detections_per_class, max_total_detections, num_proposals, per_level)
    _check_floor(cache, axes)
    _check_first_stage(cache, kind, axes, num_proposals, per_level)
    _check_cache_arrays(cache, kind)
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    options = dict(
        max_detections_per_class=int(max_detections_per_class),
        max_total_detections=int(max_total_detections),
        num_proposals=num_proposals,
        per_level=per_level,
        nms_backend=nms_backend,
    )
    engine = _Engine(cache, gt, axes, kind, **options)
    keys = _keys(kind, axes)
    started = time.perf_counter()
    if distributed:
        _rows_on_executor(engine, (cache, gt, axes, kind, options), keys, executor, progress)
    elif strategy == "grid" and workers > 1 and len(keys) > 1 and "fork" in multiprocessing.get_all_start_methods():
        _rows_in_workers(engine, kind, keys, int(workers), progress)
    elif strategy == "grid":
        for done, key in enumerate(keys, 1):
            engine.rows(key)
            if progress is not None:
                progress(done, len(keys))
    else:
        _coordinate_search(engine, kind, axes, keys, objective, budget, progress)
    table = tuple(sorted((row for rows in engine._rows.values() for row in rows), key=_row_sort_key))
    best_row = select_best(table, objective, budget)
    logger.info(
        "sweep: %d configurations (%d NMS settings) in %.2fs; best %s",
        len(table),
        len(engine._rows),
        time.perf_counter() - started,
        dict(best_row.params),
    )
    return SweepResult(
        kind=kind,
        objective=objective,
        budget=budget,
        strategy=strategy,
        best=ParamSpec(**best_row.params),
        best_row=best_row,
        table=table,
        num_images=engine.num_images,
    )


_WORKER_ENGINE: _Engine | None = None
"""The engine a forked worker inherits (set only while a pool runs)."""


def _worker_rows(keys: list[tuple]) -> dict[tuple, list[SweepRow]]:
    return {key: _WORKER_ENGINE.rows(key) for key in keys}


def _rows_in_workers(engine: _Engine, kind: str, keys: list[tuple], workers: int, progress) -> None:
    """Evaluates ``keys`` in forked processes that inherit the prepared engine."""
    global _WORKER_ENGINE
    if kind == "two_stage":
        # TensorFlow runs here, before the fork; workers only use NumPy.
        for nms_iou in sorted({key[1] for key in keys}):
            engine._first_stage(nms_iou)
        # Keys of one first-stage setting share their candidates: keep them in one task.
        tasks = [list(group) for _, group in itertools.groupby(keys, key=lambda key: key[:-1])]
    else:
        engine._walk_input(keys[0])  # shared by every key
        tasks = [[key] for key in keys]
    _WORKER_ENGINE = engine
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(tasks))) as pool:
            done = 0
            for rows in pool.imap_unordered(_worker_rows, tasks):
                engine._rows.update(rows)
                done += len(rows)
                if progress is not None:
                    progress(done, len(keys))
    finally:
        _WORKER_ENGINE = None


_EXECUTOR_ENGINE: dict[str, _Engine] = {}
"""The engine a worker process last built, by sweep token (built once per process and sweep)."""


def _executor_rows(shared: tuple, keys: list[tuple]) -> dict[tuple, list[SweepRow]]:
    """One executor task: rows of ``keys``; ``shared`` is (token, engine arguments, first-stage
    results)."""
    token, (cache, gt, axes, kind, options), first_stage = shared
    engine = _EXECUTOR_ENGINE.get(token)
    if engine is None:
        _EXECUTOR_ENGINE.clear()
        engine = _EXECUTOR_ENGINE[token] = _Engine(cache, gt, axes, kind, **options)
        engine._first_stage_memo.update(first_stage)
    return {key: engine.rows(key) for key in keys}


def _rows_on_executor(engine: _Engine, arguments: tuple, keys: list[tuple], executor: Executor, progress) -> None:
    """Evaluates ``keys`` as executor tasks, each on an engine rebuilt from ``arguments``."""
    kind = arguments[3]
    if kind == "two_stage":
        # TensorFlow runs here; the tasks get its results and only use NumPy.
        for nms_iou in sorted({key[1] for key in keys}):
            engine._first_stage(nms_iou)
        tasks = [list(group) for _, group in itertools.groupby(keys, key=lambda key: key[:-1])]
    else:
        tasks = [[key] for key in keys]
    done = 0

    def arrived(index: int, rows: dict) -> None:
        nonlocal done
        done += len(rows)
        if progress is not None:
            progress(done, len(keys))

    shared = (uuid.uuid4().hex, arguments, dict(engine._first_stage_memo))
    for rows in executor.map(_executor_rows, tasks, shared=shared, on_result=arrived):
        engine._rows.update(rows)


def _coordinate_search(engine: _Engine, kind, axes, keys, objective, budget, progress) -> None:
    names = ONE_STAGE_THRESHOLDS if kind == "one_stage" else TWO_STAGE_THRESHOLDS
    # Start in the middle of every candidate list (lower middle for even lengths).
    current = {name: axes[name][(len(axes[name]) - 1) // 2] for name in names}

    def row_at(point: Mapping[str, float]) -> SweepRow:
        if kind == "one_stage":
            key = (point["iou_threshold"],)
        else:
            key = (point["nms_score_threshold"], point["nms_iou_threshold"], point["iou_threshold"])
        before = len(engine._rows)
        rows = engine.rows(key)
        if progress is not None and len(engine._rows) > before:
            progress(len(engine._rows), len(keys))
        return rows[axes["score_threshold"].index(point["score_threshold"])]

    def rank(point: Mapping[str, float]) -> tuple[float, float]:
        row = row_at(point)
        return (objective_value(row, objective, budget), -row.dets_per_image)

    rounds = 0
    while True:
        rounds += 1
        changed = False
        for name in names:
            # Move only on a strict improvement (so the search ends); ties keep the current point.
            best_point, best_rank = current, rank(current)
            for value in axes[name]:
                point = dict(current, **{name: value})
                point_rank = rank(point)
                if point_rank > best_rank:
                    best_point, best_rank = point, point_rank
            if best_point != current:
                current, changed = best_point, True
        if not changed:
            break
    logger.info("sweep: coordinate search settled after %d rounds at %s", rounds, current)


# --------------------------------------------------------------------------------------------
# the slow reference


def sweep_reference(
    cache,
    ground_truth,
    param_list_spec: ParamSpec,
    *,
    objective: str = "map",
    budget: float | None = None,
    max_detections_per_class: int = nms_ops.DEFAULT_MAX_DETECTIONS_PER_CLASS,
    max_total_detections: int = nms_ops.DEFAULT_MAX_TOTAL_DETECTIONS,
    num_proposals: int | None = None,
    per_level: bool | None = None,
) -> SweepResult:
    """`sweep` (grid strategy) the obvious way: for every configuration, NMS from scratch with
    the NumPy reference, then pycocotools' COCOeval. Slow; the tests' oracle.

    Candidates reach the reference NMS in the fast path's tie order: one-stage entries by
    (row, class); two-stage entries by (proposal rank after the first stage, class).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    kind = _cache_kind(cache)
    axes = _grid_axes(param_list_spec, kind)
    _check_objective(objective, budget)
    num_proposals, per_level = _check_options(cache, kind, max_detections_per_class, max_total_detections, num_proposals, per_level)
    _check_floor(cache, axes)
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    meta = cache.meta
    coco_gt = _coco_from_ground_truth(gt, COCO)
    image_ids = list(meta.image_ids)
    category_ids = list(meta.category_ids)
    names = ONE_STAGE_THRESHOLDS if kind == "one_stage" else TWO_STAGE_THRESHOLDS
    table = []
    for values in itertools.product(*(axes[name] for name in names)):
        params = dict(zip(names, values))
        results = []
        for i, image_id in enumerate(image_ids):
            rows = slice(int(cache.row_offsets[i]), int(cache.row_offsets[i + 1]))
            entries = np.arange(int(cache.entry_offsets[i]), int(cache.entry_offsets[i + 1]))
            entry_row = np.asarray(cache.entry_row)[entries]
            entry_class = np.asarray(cache.entry_class)[entries]
            if kind == "one_stage":
                order = np.lexsort((entry_class, entry_row))
                entries = entries[order]
                boxes = np.asarray(cache.row_boxes)[np.asarray(cache.entry_row)[entries]]
            else:
                row_boxes = np.asarray(cache.row_boxes)[rows]
                objectness = np.asarray(cache.row_objectness)[rows]
                levels = np.asarray(cache.row_level)[rows] if per_level else None
                survivors = nms_ops.class_agnostic_nms_reference(
                    row_boxes,
                    objectness,
                    iou_threshold=params["nms_iou_threshold"],
                    score_threshold=params["nms_score_threshold"],
                    max_output_size=num_proposals,
                    levels=levels,
                )
                rank = np.full(rows.stop - rows.start, -1)
                rank[survivors] = np.arange(len(survivors))
                local_rank = rank[entry_row - rows.start]
                alive = local_rank >= 0
                entries, local_rank, entry_class = entries[alive], local_rank[alive], entry_class[alive]
                order = np.lexsort((entry_class, local_rank))
                entries = entries[order]
                boxes = np.asarray(cache.entry_boxes)[entries]
            scores = np.asarray(cache.entry_score)[entries]
            classes = np.asarray(cache.entry_class)[entries]
            kept = nms_ops.per_class_nms_reference(
                boxes,
                scores,
                classes,
                iou_threshold=params["iou_threshold"],
                score_threshold=params["score_threshold"],
                max_detections_per_class=max_detections_per_class,
                max_total_detections=max_total_detections,
            )
            xywh = yxyx_to_xywh(boxes[kept])
            for k, box in zip(kept, xywh):
                results.append(
                    {
                        "image_id": int(image_id),
                        "category_id": int(category_ids[int(classes[k])]),
                        "bbox": [float(v) for v in box],
                        "score": float(scores[k]),
                    }
                )
        evaluator = _pycocotools_eval(coco_gt, results, image_ids, COCO, COCOeval)
        f1, f1_max, f1_max_score = _pycocotools_f1(evaluator)
        table.append(_make_row(params, evaluator.stats, len(results), len(image_ids), f1, f1_max, f1_max_score))
    table = tuple(sorted(table, key=_row_sort_key))
    best_row = select_best(table, objective, budget)
    return SweepResult(
        kind=kind,
        objective=objective,
        budget=budget,
        strategy="grid",
        best=ParamSpec(**best_row.params),
        best_row=best_row,
        table=table,
        num_images=len(image_ids),
    )


def _coco_from_ground_truth(gt: GroundTruth, COCO):
    dataset = {
        "images": [
            {"id": int(i), "height": int(h), "width": int(w)} for i, (h, w) in zip(gt.image_ids, gt.image_sizes)
        ],
        "categories": [{"id": int(c), "name": n} for c, n in zip(gt.category_ids, gt.category_names)],
        "annotations": [
            {
                "id": int(gt.annotation_ids[a]),
                "image_id": int(gt.image_ids[gt.image_index[a]]),
                "category_id": int(gt.category_ids[gt.category_index[a]]),
                "bbox": [float(v) for v in gt.boxes[a]],
                "area": float(gt.areas[a]),
                "iscrowd": int(gt.crowd[a]),
            }
            for a in range(gt.num_annotations)
        ],
    }
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def pycocotools_stats(ground_truth: dict, results: list[dict], image_ids) -> tuple[float, ...]:
    """pycocotools' 12 bbox stats of COCO ``results`` on ``image_ids``, printing nothing.

    The oracle the tests compare against. ``ground_truth`` is a COCO instances dict (not
    modified); ``results`` may be empty.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()
    coco_gt.dataset = json.loads(json.dumps(ground_truth))  # pycocotools writes into what it is given
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    return tuple(float(v) for v in _pycocotools_eval(coco_gt, results, image_ids, COCO, COCOeval).stats)


def _pycocotools_eval(coco_gt, results, image_ids, COCO, COCOeval):
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot load an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _pycocotools_f1(evaluator) -> tuple[float, float, float | None]:
    """F1 at IoU 0.5, area all, 100 detections, from pycocotools' per-image results."""
    area_all = list(evaluator.params.areaRng[0])
    scores, true_positive = [], []
    ground_truth = 0
    for e in evaluator.evalImgs:
        if e is None or list(e["aRng"]) != area_all:
            continue
        ground_truth += int(np.count_nonzero(e["gtIgnore"] == 0))
        counted = np.logical_not(e["dtIgnore"][0])
        scores.extend(np.asarray(e["dtScores"])[counted].tolist())
        true_positive.extend(np.logical_and(e["dtMatches"][0], counted)[counted].tolist())
    scores = np.asarray(scores, np.float64)
    true_positive = np.asarray(true_positive, bool)
    total_tp = int(np.count_nonzero(true_positive))
    denominator = len(scores) + ground_truth
    f1 = float(2 * total_tp) / float(denominator) if denominator else 0.0
    order = np.argsort(-scores, kind="stable")
    scores, true_positive = scores[order], true_positive[order]
    best, best_score = 0.0, None
    tp = 0
    for i in range(len(scores)):
        tp += int(true_positive[i])
        if i + 1 < len(scores) and scores[i + 1] == scores[i]:
            continue
        value = float(2 * tp) / float(i + 1 + ground_truth)
        if best_score is None or value > best:
            best, best_score = value, float(scores[i])
    return f1, best, best_score
