"""The sweep's fast engine: one NMS walk and one COCO matching pass per NMS setting.

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

4. Model Garden's ``max_num_detections`` caps each class and each image at the same ``c``. The
   first ``c`` of an image's output at a larger cap ``C`` are its output at ``c``: a box at
   output position ``>= c`` has ``c`` boxes before it, and within its class too the boxes
   before it are before it in the merge. Within one (image, category) the first ``c`` are a
   prefix of the matching order, so their matches are unchanged (checked; where float64 scores
   that tie in float32 break the prefix, those detections are matched again).
5. Class-agnostic NMS (each box keeps only its best class, then one NMS per image) visits the
   same candidates in the same order, restricted to the first entry of each row.

So for each IoU setting (and, two-stage, each first-stage setting) NMS runs once at the lowest
score threshold of the grid and the largest cap, and all score thresholds and caps are read off
one matching pass. IoUs between cached boxes and ground truth are computed once per cache entry
and reused.

Which code runs NMS: the per-class passes (one-stage, and the two-stage second stage) use
`nms.GreedyWalk`, a vectorized NumPy walk over all images that stops each image at
``max_total_detections`` kept (per-image TF op calls would cost more in call overhead than the
work they do); the two-stage first stage, whose walks keep up to ``num_proposals`` boxes,
batches the TensorFlow op (`nms.class_agnostic_nms_batched`). Both keep exactly the boxes of
TensorFlow's kernels; the tests compare them with the op and with the NumPy reference.

Model Garden's ``nms_version: v2`` (`detsearch.detection.nms_v2`) takes each (image, class)'s
top ``pre_nms_top_k`` candidates (independent of the score threshold), runs its tiled NMS
(suppression at IoU >= the threshold; whether a box is kept depends on the boxes before it
only) and merges the classes by descending score, ties by (class, position): points 1-4 hold
for it as they stand.

Tie order (equal scores): one-stage candidates by (row, class), as the TF ops see anchors
then classes; two-stage second-stage candidates by (rank of the proposal after the first
stage, class); proposals by row.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

import numpy as np

from detsearch.detection import nms as nms_ops
from detsearch.detection import nms_v2
from detsearch.detection.boxes import yxyx_to_xywh
from detsearch.detection.cache import CacheKind, DetectionCache
from detsearch.detection.cocoeval import CocoMatcher, GroundTruth, IouPairs, Matches, ragged_arange
from detsearch.detection.sweep.cuts import float32_cut
from detsearch.detection.sweep.grid import row_params
from detsearch.detection.sweep.result import SweepRow, make_row

__all__ = ["SweepEngine", "break_ties", "visiting_order"]

logger = logging.getLogger(__name__)


class _PairStore:
    """IoU >= 0.5 pairs per cache entry, computed the first time an entry is evaluated."""

    def __init__(self, matcher: CocoMatcher, num_entries: int, image_pos, class_pos, entry_xywh):
        self.matcher = matcher
        self.image_pos = image_pos  # per entry
        self.class_pos = class_pos  # per entry
        self.entry_xywh = entry_xywh  # callable: entries -> COCO [n, 4] boxes for matching
        self.start = np.full(num_entries, -1, np.int64)
        self.count = np.zeros(num_entries, np.int64)
        self.total = 0
        self.gt_index = np.zeros(0, np.int64)
        self.iou = np.zeros(0, np.float64)

    def pairs(self, entries: np.ndarray) -> IouPairs:
        unknown = entries[self.start[entries] < 0]  # entries of one call are distinct
        if unknown.size:
            found = self.matcher.iou_pairs(self.image_pos[unknown], self.class_pos[unknown], self.entry_xywh(unknown))
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


class SweepEngine:
    """Evaluates NMS settings on one cache; every score threshold of the grid at once.

    Built once per sweep (and once per worker process, see `strategies`): it sorts the
    candidates above the lowest score threshold into NMS visiting order, prepares their walk
    data, and computes IoUs with the ground truth as entries are first evaluated.

    Args:
      cache: the validated `DetectionCache`.
      ground_truth: a `GroundTruth` holding the cache's images and categories.
      axes: sorted candidates per threshold (`grid.grid_axes`).
      kind: the cache's `CacheKind`.
      max_detections_per_class, max_total_detections, num_proposals, per_level: NMS settings
        (checked by `grid.check_options`; with ``caps``, both caps are ``max(caps)``).
      caps: the ``max_detections`` axis (sorted), or None when it is not swept.
      swept_agnostic: whether rows name ``class_agnostic`` (the keys carry it either way).
      nms_backend: ``"fast"`` or ``"reference"`` (see `detsearch.detection.sweep.sweep`).
      first_stage: first-stage results another engine computed (`first_stage_results`), so
        that this one runs no TensorFlow.
      nms_version: ``"batched"`` or ``"v2"`` (`grid.check_nms_version`); v2 runs
        `nms_v2.tiled_nms` whatever ``nms_backend`` says.
      pre_nms_top_k: v2's candidates per (image, class).
      proposal_nms, proposal_top_k: two-stage: the first stage's NMS, ``"batched"`` or
        ``"tiled"`` (Model Garden's ``roi_generator.use_batched_nms: false``, its default: the
        top ``proposal_top_k`` per level, then `nms_v2.tiled_nms`).
    """

    def __init__(
        self,
        cache: DetectionCache,
        ground_truth: GroundTruth,
        axes: Mapping[str, tuple[float, ...]],
        kind: CacheKind,
        *,
        max_detections_per_class: int,
        max_total_detections: int,
        num_proposals: int,
        per_level: bool,
        nms_backend: str,
        caps: tuple[int, ...] | None = None,
        swept_agnostic: bool = False,
        first_stage: Mapping[float, tuple[np.ndarray, np.ndarray]] | None = None,
        nms_version: str = "batched",
        pre_nms_top_k: int = 0,
        proposal_nms: str = "batched",
        proposal_top_k: int = 0,
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
        self.caps = caps
        self.swept_agnostic = swept_agnostic
        meta = cache.meta
        self.matcher = CocoMatcher(ground_truth, image_ids=meta.image_ids)
        self.num_images = len(meta.image_ids)
        self.image_pos = self.matcher.image_positions(meta.image_ids)
        self.class_pos = self.matcher.category_positions(meta.category_ids)
        self.score_thresholds = axes["score_threshold"]
        lowest = np.float32(min(self.score_thresholds))
        entry_offsets = np.asarray(cache.entry_offsets, np.int64)
        entry_score = np.asarray(cache.entry_score, np.float32)
        entry_row = np.asarray(cache.entry_row, np.int64)
        entry_class = np.asarray(cache.entry_class, np.int64)
        entry_image = np.repeat(np.arange(self.num_images), np.diff(entry_offsets))
        # Candidates of every NMS run: score above the lowest threshold, per image by descending
        # score; ties by (row, class), the (box index, class) order of the TF ops.
        candidates = np.flatnonzero(entry_score > lowest)
        self.cand = candidates[visiting_order(entry_image[candidates], entry_score[candidates], entry_row[candidates], entry_class[candidates])]
        self.cand_image = entry_image[self.cand]
        self.cand_row = entry_row[self.cand]
        self.cand_class = entry_class[self.cand]
        self.cand_score = entry_score[self.cand]
        if kind == CacheKind.ONE_STAGE:
            row_boxes = np.asarray(cache.row_boxes, np.float32)
            self.cand_boxes = row_boxes[self.cand_row]
            entry_box = lambda entries: row_boxes[entry_row[entries]]  # noqa: E731
        else:
            entry_boxes = np.asarray(cache.entry_boxes, np.float32)
            self.cand_boxes = entry_boxes[self.cand]
            entry_box = lambda entries: entry_boxes[entries]  # noqa: E731
        if kind == CacheKind.ONE_STAGE and cache.row_xywh is not None:
            row_xywh = np.asarray(cache.row_xywh, np.float64)
            entry_xywh = lambda entries: row_xywh[entry_row[entries]]  # noqa: E731 - the boxes as given
        elif kind == CacheKind.TWO_STAGE:
            stored_boxes = np.asarray(cache.entry_boxes)  # float64 when imported so: matched as given
            entry_xywh = lambda entries: yxyx_to_xywh(stored_boxes[entries])  # noqa: E731
        else:
            entry_xywh = lambda entries: yxyx_to_xywh(entry_box(entries))  # noqa: E731
        self.cand_offsets = np.searchsorted(self.cand_image, np.arange(self.num_images + 1))
        # Shared by every walk: the boxes' walk data and dense (image, class) group ids.
        self.cand_data = nms_ops.walk_data(self.cand_boxes)
        self.cand_group, self.num_groups = nms_ops.compact_groups(self.cand_image, self.cand_class)
        self.entry_image = entry_image
        self.entry_class = entry_class
        self.entry_score = entry_score
        # COCO matching orders detections by the scores as stored (float64 when given so), and
        # a score threshold t keeps float32(score) > float32(t): `float32_cut` says it in float64.
        self.entry_score_exact = np.asarray(cache.entry_score, np.float64)
        self.score_cuts = [float32_cut(t) for t in self.score_thresholds]
        self.entry_box = entry_box
        self.entry_xywh = entry_xywh
        self.pairs = _PairStore(self.matcher, len(entry_score), self.image_pos[entry_image], self.class_pos[entry_class], entry_xywh)
        self._first_stage_memo: dict[float, tuple[np.ndarray, np.ndarray]] = dict(first_stage or {})
        self._walk_memo: tuple | None = None
        self._output_memo: tuple | None = None
        self.nms_version = nms_version
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.proposal_nms = proposal_nms
        self.proposal_top_k = int(proposal_top_k)
        self._workspace = nms_ops.WalkWorkspace()
        self._rows: dict[tuple, list[SweepRow]] = {}
        logger.info(
            "sweep: %d images, %d candidate entries above %g, prepared in %.2fs",
            self.num_images,
            len(self.cand),
            float(lowest),
            time.perf_counter() - started,
        )

    def category_names(self) -> tuple[str, ...]:
        """Category names by category position (the ground truth's categories)."""
        return tuple(self.matcher.ground_truth.category_names)

    @property
    def evaluated(self) -> Mapping[tuple, list[SweepRow]]:
        """Rows of every NMS setting evaluated so far (or added), by setting."""
        return self._rows

    def add_rows(self, rows: Mapping[tuple, list[SweepRow]]) -> None:
        """Records rows another engine (a worker's) evaluated on the same cache and grid."""
        self._rows.update(rows)

    def first_stage_results(self) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """The first-stage results computed so far, by ``nms_iou_threshold`` (for ``first_stage``
        of another engine)."""
        return dict(self._first_stage_memo)

    def first_stage(self, nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
        """Kept proposals at the lowest nms_score_threshold, per image by descending objectness
        (ties by row), at most ``num_proposals`` each: (global rows, offsets)."""
        if nms_iou in self._first_stage_memo:
            return self._first_stage_memo[nms_iou]
        if self.proposal_nms == "tiled":
            self._first_stage_memo[nms_iou] = value = self._first_stage_tiled(nms_iou)
            return value
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

    def _first_stage_tiled(self, nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
        """`first_stage` as Model Garden's ``roi_generator`` with ``use_batched_nms: false``: per
        FPN level (in recorded order) the top ``proposal_top_k`` rows by objectness (ties by
        row), objectness above the lowest threshold, `nms_v2.tiled_nms` keeping at most
        ``num_proposals``; the levels merged by descending objectness, ties by (level,
        position), the first ``num_proposals``."""
        cache = self.cache
        boxes = np.asarray(cache.row_boxes, np.float32)
        objectness = np.asarray(cache.row_objectness, np.float32)
        levels = np.asarray(cache.row_level)
        row_offsets = np.asarray(cache.row_offsets, np.int64)
        lowest = np.float32(min(self.axes["nms_score_threshold"]))
        kept, offsets = [], [0]
        for i in range(self.num_images):
            lo, hi = int(row_offsets[i]), int(row_offsets[i + 1])
            merged = []
            for level in dict.fromkeys(levels[lo:hi].tolist()):  # Model Garden records them in its order
                rows = lo + np.flatnonzero(levels[lo:hi] == level)
                rows = rows[np.argsort(-objectness[rows], kind="stable")][:self.proposal_top_k]
                rows = rows[objectness[rows] > lowest]  # a prefix
                merged.append(rows[nms_v2.tiled_nms(boxes[rows], nms_iou, self.num_proposals)])
            merged = np.concatenate(merged) if merged else np.zeros(0, np.int64)
            merged = merged[np.argsort(-objectness[merged], kind="stable")][:self.num_proposals]
            kept.append(merged)
            offsets.append(offsets[-1] + len(merged))
        return (np.concatenate(kept) if kept else np.zeros(0, np.int64)), np.asarray(offsets, np.int64)

    def picked(self, stage_key: tuple) -> np.ndarray | None:
        """Positions among the candidates that reach the (second-stage) NMS at ``stage_key`` (the
        key without its IoU threshold), in visiting order; None for all of them."""
        agnostic = stage_key[-1]
        if self.kind == CacheKind.ONE_STAGE:
            picked = None  # every candidate, in the order already prepared
        else:
            nms_score, nms_iou, _ = stage_key
            rows, row_offsets = self.first_stage(nms_iou)
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
            picked = keep[break_ties(self.cand_image[keep], self.cand_score[keep], rank[keep], self.cand_class[keep])]
        if agnostic:
            # A row's first entry in visiting order is its best class (ties: the lower class).
            everything = np.arange(len(self.cand)) if picked is None else picked
            _, first = np.unique(self.cand_row[everything], return_index=True)
            picked = everything[np.sort(first)]
        return picked

    def walk_input(self, key: tuple):
        """(positions among the candidates or None for all of them, their `GreedyWalk`,
        per-image offsets) for NMS setting ``key``; the same for every ``iou_threshold`` of one
        first-stage setting, so it is kept for the next key."""
        stage_key = key[:-1]
        if self._walk_memo is not None and self._walk_memo[0] == stage_key:
            return self._walk_memo[1]
        agnostic = stage_key[-1]
        picked = self.picked(stage_key)
        if picked is None:
            offsets = self.cand_offsets
            data, group, num_groups = self.cand_data, self.cand_group, self.num_groups
        else:
            offsets = np.searchsorted(self.cand_image[picked], np.arange(self.num_images + 1))
            data, group, num_groups = self.cand_data[:, picked], self.cand_group[picked], self.num_groups
            if agnostic:
                group, num_groups = self.cand_image[picked], self.num_images  # one group per image
        walk = None if self.nms_backend == "reference" else nms_ops.GreedyWalk.prepared(data, group, num_groups, offsets)
        value = (picked, walk, offsets)
        self._walk_memo = (stage_key, value)
        return value

    def _v2_groups(self, picked: np.ndarray | None) -> list[np.ndarray]:
        """Per (image, class) with candidates among ``picked`` (None: all of them): their
        positions among ``cand``, the top ``pre_nms_top_k`` in visiting order (descending score,
        ties by row or proposal rank: Model Garden's ``tf.nn.top_k``; entries under the lowest
        threshold would rank below these)."""
        everything = np.arange(len(self.cand)) if picked is None else picked
        num_classes = len(self.cache.meta.category_ids)
        if not len(everything):
            return []
        group = self.cand_image[everything] * num_classes + self.cand_class[everything]
        by_group = np.argsort(group, kind="stable")  # within a group: the visiting order
        order, group = everything[by_group], group[by_group]
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        return [part[:self.pre_nms_top_k] for part in np.split(order, starts[1:])]

    def _detections_v2(self, key: tuple) -> np.ndarray:
        """Cache entries Model Garden's v2 keeps at the lowest score threshold, image by image
        in output order."""
        stage_key = key[:-1]
        if self._walk_memo is None or self._walk_memo[0] != stage_key:
            groups = self._v2_groups(self.picked(stage_key))
            image_of = np.asarray([self.cand_image[g[0]] for g in groups], np.int64)
            bounds = np.searchsorted(image_of, np.arange(self.num_images + 1))
            self._walk_memo = (stage_key, [groups[bounds[i]:bounds[i + 1]] for i in range(self.num_images)])
        kept = []
        for groups in self._walk_memo[1]:
            kept.extend(self._v2_image(groups, key[-1]))
        picked = np.concatenate([group[chosen] for group, chosen in kept]) if kept else np.zeros(0, np.int64)
        position = np.concatenate([np.arange(len(chosen)) for _, chosen in kept]) if kept else picked
        image = self.cand_image[picked]
        order = np.lexsort((position, self.cand_class[picked], -self.cand_score[picked], image))
        picked, image = picked[order], image[order]
        rank = np.arange(len(picked)) - np.searchsorted(image, image, side="left")
        return self.cand[picked[rank < self.max_total]]

    def _v2_image(self, groups: list[np.ndarray], iou_threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """One image's classes through `nms_v2.tiled_nms`, each only as far down its list as the
        image's output can reach: a class's selection on a prefix of its list is the selection's
        prefix (`nms_v2`, property (b)), so a prefix is extended only while its next candidate
        scores at least the image's ``max_total``-th selected score (then to every candidate that
        does) and the class has fewer than ``max_total`` selected. Returns ``(group, selected
        positions)`` per class."""
        cap = self.max_total
        lengths = [min(len(group), 128) for group in groups]
        chosen = [None] * len(groups)
        todo = range(len(groups))
        while todo:
            for c in todo:
                chosen[c] = nms_v2.tiled_nms(self.cand_boxes[groups[c][:lengths[c]]], iou_threshold, cap)
            scores = np.concatenate([self.cand_score[g[sel]] for g, sel in zip(groups, chosen)])
            cut = np.partition(scores, len(scores) - cap)[len(scores) - cap] if len(scores) >= cap else -np.inf
            todo = [c for c, group in enumerate(groups)
                    if lengths[c] < len(group) and len(chosen[c]) < cap and self.cand_score[group[lengths[c]]] >= cut]
            for c in todo:  # every candidate scoring at least the cut (the cut only rises)
                lengths[c] = int(np.count_nonzero(self.cand_score[groups[c]] >= cut))
        return list(zip(groups, chosen))

    def _detections(self, key: tuple) -> np.ndarray:
        """Cache entries kept by NMS at the lowest score threshold, image by image in output
        order."""
        if self.nms_version == "v2":
            return self._detections_v2(key)
        picked, walk, offsets = self.walk_input(key)
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
                    np.zeros(hi - lo, np.int64) if key[-2] else classes[lo:hi],
                    iou_threshold=key[-1],
                    max_detections_per_class=self.max_total if key[-2] else self.max_per_class,
                    max_total_detections=self.max_total,
                )
                kept[lo + chosen] = True
        else:
            kept = walk.run(
                iou_threshold=key[-1],
                max_per_group=self.max_total if key[-2] else self.max_per_class,  # agnostic: one group
                max_per_image=self.max_total,
                workspace=self._workspace,
            )
        return cand[kept]

    def _match(self, dets: np.ndarray) -> Matches:
        """COCO matching of cache entries ``dets`` (image by image in output order)."""
        return self.matcher.match(self.image_pos[self.entry_image[dets]], self.class_pos[self.entry_class[dets]],
                                  self.entry_xywh(dets), self.entry_score_exact[dets], self.pairs.pairs(dets))

    def _output(self, key: tuple) -> tuple[np.ndarray, np.ndarray, Matches]:
        """NMS output at setting ``key`` (the lowest score threshold, the largest cap): the
        entries image by image in output order, each one's position in its image's output, and
        their matches. The last key's are kept."""
        if self._output_memo is not None and self._output_memo[0] == key:
            return self._output_memo[1]
        dets = self._detections(key)
        image = self.entry_image[dets]
        position = np.arange(len(dets)) - np.searchsorted(image, image, side="left")
        value = (dets, position, self._match(dets))
        self._output_memo = (key, value)
        return value

    def capped(self, key: tuple, cap: int | None) -> tuple[np.ndarray, Matches]:
        """The output entries and their matches at setting ``key`` with ``max_detections`` ``cap``
        (None: the engine's own caps), every score above the lowest threshold."""
        dets, position, matches = self._output(key)
        if cap is None or cap >= max(self.caps):
            return dets, matches
        inside = position < cap
        kept = inside[matches.input_index]
        # Within a group the kept matches must be a prefix of the matching order.
        group = matches.image_pos * self.matcher.num_categories + matches.category_pos
        same = group[1:] == group[:-1]
        if not (same & kept[1:] & ~kept[:-1]).any():
            return dets[inside], matches.select(kept, np.cumsum(inside) - 1)
        return dets[inside], self._match(dets[inside])

    def rows(self, key: tuple) -> list[SweepRow]:
        """Rows at NMS setting ``key``: every ``max_detections`` cap (when swept), and within a
        cap every score threshold of the grid."""
        if key in self._rows:
            return self._rows[key]
        started = time.perf_counter()
        rows = []
        for cap in self.caps or (None,):
            dets, matches = self.capped(key, cap)
            scores = self.entry_score_exact[dets]
            evaluations = matches.evaluate(self.score_cuts)
            curve = matches.f1_curve()
            ground_truth = matches.num_ground_truth
            for score_threshold, cut, evaluation in zip(self.score_thresholds, self.score_cuts, evaluations):
                params = row_params(self.kind, key, score_threshold, cap, self.swept_agnostic)
                f1_max, f1_max_score = _best_f1(curve, cut, ground_truth)
                rows.append(make_row(params, evaluation.stats, int(np.count_nonzero(scores > cut)), self.num_images,
                                     evaluation.f1, f1_max, f1_max_score))
        self._rows[key] = rows
        logger.debug("sweep: %s: %d rows in %.2fs", key, len(rows), time.perf_counter() - started)
        return rows

    def score_cut(self, score_threshold: float) -> float:
        """The float64 cut (`float32_cut`) of one of the grid's score thresholds."""
        return self.score_cuts[self.score_thresholds.index(score_threshold)]

    def row_position(self, params: Mapping[str, float]) -> int:
        """Position of the row with ``params`` within `rows` of its key."""
        cap_index = self.caps.index(params["max_detections"]) if self.caps else 0
        return cap_index * len(self.score_thresholds) + self.score_thresholds.index(params["score_threshold"])


def visiting_order(image: np.ndarray, score: np.ndarray, row: np.ndarray, classes: np.ndarray) -> np.ndarray:
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


def break_ties(image: np.ndarray, score: np.ndarray, rank: np.ndarray, classes: np.ndarray) -> np.ndarray:
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
