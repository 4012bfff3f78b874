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
   same candidates in the same order, restricted to the first entry of each row. With
   ``nms_version: v2`` (Model Garden's ``use_class_agnostic_nms``) an image's first
   ``pre_nms_top_k`` of them go through TensorFlow's padded NMS (`nms_v2.padded_nms`): greedy at
   IoU >= the threshold (at 0: the first 512 positions), a box decided by the boxes before it,
   one cap per image; points 1-4 hold for it as they stand.

So for each IoU setting (and, two-stage, each first-stage setting) NMS runs once at the lowest
score threshold of the grid and the largest cap, and all score thresholds and caps are read off
one matching pass. IoUs between cached boxes and ground truth are computed once per cache entry
and reused.

Which code runs NMS: a `detsearch.detection.sweep.suppressors.Suppressor` the engine's
`PostProcessing` chooses. The per-class passes (one-stage, and the two-stage second stage) use
`nms.GreedyWalk`, a compiled walk over all images that stops each image at
``max_total_detections`` kept (per-image TF op calls would cost more in call overhead than the
work they do); the two-stage first stage, whose walks keep up to ``num_proposals`` boxes, is
the same walk (`nms.class_agnostic_nms_batched`). Both keep exactly the boxes of TensorFlow's
kernels; the tests compare them with the op and with the NumPy reference.

Model Garden's ``nms_version: v2`` (`detsearch.detection.nms_v2`) takes each (image, class)'s
top ``pre_nms_top_k`` candidates (independent of the score threshold), runs its tiled NMS
(suppression at IoU >= the threshold; whether a box is kept depends on the boxes before it
only) and merges the classes by descending score, ties by (class, position): points 1-4 hold
for it as they stand.

Model Garden's ``nms_version: v1`` (`detsearch.detection.nms_v1`) is the same per class with
TensorFlow's NMS: points 1-4 hold for its padded NMS except where a tile holds an IoU exactly at
the threshold (then each score threshold runs NMS on its own, `SweepEngine.exact_prefixes`), and
for its soft NMS over the *decayed* scores, which are its output: matching, the score cuts and
the detections counted use them (`SweepEngine.capped`).

Tie order (equal scores): one-stage candidates by (row, class), as the TF ops see anchors
then classes; two-stage second-stage candidates by (rank of the proposal after the first
stage, class); proposals by row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from detsearch.detection.boxes import yxyx_to_xywh
from detsearch.detection.cache import CacheKind, DetectionCache
from detsearch.detection.cocoeval import CocoMatcher, GroundTruth, IouPairs, Matches, ragged_arange
from detsearch.detection.sweep.grid import Grid, NmsKey
from detsearch.detection.sweep.result import SweepRow, make_row
from detsearch.detection.sweep.settings import NmsBackend, PostProcessing
from detsearch.detection.sweep.suppressors import (Candidates, Selection, Suppressor, V1Nms, first_stage_nms,
                                                   second_stage_nms)
from detsearch.detection.tide import Evidence, TideErrors, evidence, tide_errors_at

__all__ = ["EntryLocator", "KeyOutputs", "Output", "SweepEngine", "break_ties", "coco_boxes", "key_rows",
           "visiting_order"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    """NMS output at one setting, cap and score threshold: cache entries image by image in
    output order, their output scores (float64) and their COCO matches."""

    dets: np.ndarray
    scores: np.ndarray
    matches: Matches
    evidence: Evidence | None = None  # TIDE's, aligned with dets (a sweep with errors)

    def above(self, cut: float) -> "Output":
        """The detections with ``score > cut`` (a prefix of every image's output and of every
        matching order, so their matches stay as they are)."""
        keep = self.scores > cut
        return Output(self.dets[keep], self.scores[keep],
                      self.matches.select(self.matches.scores > cut, np.cumsum(keep) - 1),
                      None if self.evidence is None else self.evidence.take(keep))

    def errors(self, cuts: Sequence[float]) -> list[TideErrors]:
        """TIDE of the detections with ``score > cut``, for each cut (`detsearch.detection.tide`)."""
        return tide_errors_at(self.matches, self.evidence.take(self.matches.input_index), cuts)


@dataclass(frozen=True)
class KeyOutputs:
    """Everything the rows of one NMS setting are read from (`SweepEngine.outputs`, or the merge
    of image shards': `shards`).

    ``runs[cap, run_at]``: the `Output` at ``max_detections`` ``cap`` (None: the engine's own
    caps) of one NMS run: at the grid's lowest score threshold (``run_at`` None) when ``exact``
    (one pass answers every score threshold), else one run at each score threshold ``run_at``.
    A run may hold scores at or below its threshold: readers cut it there (`Output.above`,
    `Matches.evaluate`).
    """

    exact: bool
    runs: Mapping[tuple[int | None, float | None], Output] = field(repr=False)

    def at(self, cap: int | None, score_threshold: float) -> Output:
        """The run that holds the output at ``cap`` and ``score_threshold`` (every score above the
        run's threshold: cut it with `Output.above`)."""
        return self.runs[cap, None if self.exact else score_threshold]


def key_rows(grid: Grid, key: NmsKey, outputs: KeyOutputs, score_cuts: Sequence[float], num_images: int
             ) -> list[SweepRow]:
    """The rows of NMS setting ``key``: every ``max_detections`` cap (when swept), and within a cap
    every score threshold of the grid (`Grid.row_position`); ``score_cuts`` are the thresholds'
    float64 cuts. Outputs with `Evidence` give each row its TIDE errors."""
    rows = []
    for cap in grid.caps or (None,):
        runs = ([(None, grid.score_thresholds, score_cuts)] if outputs.exact else
                [(t, [t], [cut]) for t, cut in zip(grid.score_thresholds, score_cuts)])
        for run_at, thresholds, cuts in runs:
            output = outputs.runs[cap, run_at]
            matches = output.matches
            evaluations = matches.evaluate(cuts, precision=False)
            curve = matches.f1_curve()
            ground_truth = matches.num_ground_truth
            errors_at = [None] * len(cuts) if output.evidence is None else output.errors(cuts)
            for score_threshold, cut, evaluation, errors in zip(thresholds, cuts, evaluations, errors_at):
                params = grid.row_params(key, score_threshold, cap)
                f1_max, f1_max_score = _best_f1(curve, cut, ground_truth)
                rows.append(make_row(params, evaluation.stats, int(np.count_nonzero(output.scores > cut)), num_images,
                                     evaluation.f1, f1_max, f1_max_score, errors))
    return rows


class _PairStore:
    """IoU >= 0.5 pairs per candidate, computed the first time a candidate is evaluated. Its
    memory is per candidate (``entries``: the candidates' cache entries, by candidate
    position), not per cache entry."""

    def __init__(self, matcher: CocoMatcher, entries: np.ndarray, locate: "EntryLocator"):
        self.matcher = matcher
        self.entries = entries
        self.locate = locate
        self.start = np.full(len(entries), -1, np.int64)
        self.count = np.zeros(len(entries), np.int64)
        self.total = 0
        self.gt_index = np.zeros(0, np.int64)
        self.iou = np.zeros(0, np.float64)

    def pairs(self, positions: np.ndarray) -> IouPairs:
        """The pairs of the candidates at ``positions`` (distinct), in that order."""
        unknown = positions[self.start[positions] < 0]
        if unknown.size:
            found = self.matcher.iou_pairs(*self.locate(self.entries[unknown]))
            self.start[unknown] = self.total + found.offsets[:-1]
            self.count[unknown] = np.diff(found.offsets)
            self.total += len(found.gt_index)
            self.gt_index = np.concatenate([self.gt_index, found.gt_index])
            self.iou = np.concatenate([self.iou, found.iou])
        counts = self.count[positions]
        offsets = np.zeros(len(positions) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = ragged_arange(self.start[positions], counts)
        return IouPairs(offsets, self.gt_index[rows], self.iou[rows])


class _EvidenceStore:
    """TIDE's `Evidence` per candidate, computed the first time a candidate is evaluated (like
    `_PairStore`: the IoUs with every ground truth box of its image, once per cache entry). Its
    memory is 4 bytes per candidate and the evidence of those evaluated."""

    def __init__(self, matcher: CocoMatcher, entries: np.ndarray, locate: "EntryLocator"):
        self.matcher = matcher
        self.entries = entries
        self.locate = locate
        self.slot = np.full(len(entries), -1, np.int32 if len(entries) < 2**31 else np.int64)
        self.found = Evidence.empty(0)

    def of(self, positions: np.ndarray) -> Evidence:
        """The evidence of the candidates at ``positions``, in that order."""
        unknown = np.unique(positions[self.slot[positions] < 0])
        if unknown.size:
            self.slot[unknown] = len(self.found) + np.arange(len(unknown))
            found = evidence(self.matcher, *self.locate(self.entries[unknown]))
            self.found = Evidence.concatenate([self.found, found])
        return self.found.take(self.slot[positions])


class SweepEngine:
    """Evaluates NMS settings on one cache; every score threshold of the grid at once.

    Built once per image shard of a sweep (`shards`; the coordinate strategy: once for the
    whole cache): it sorts the candidates above the lowest score threshold into NMS visiting
    order, chooses the NMS implementations (`suppressors`), and computes IoUs with the ground
    truth as entries are first evaluated.

    Args:
      cache: the validated `DetectionCache`.
      ground_truth: a `GroundTruth` holding the cache's images and categories.
      grid: the configurations (`grid.Grid`).
      post_processing: what NMS runs, checked against ``cache``
        (`PostProcessing.checked`) and, with a ``max_detections`` axis, at its largest cap
        (`Grid.nms_post_processing`).
      nms_backend: `NmsBackend` of the batched NMS (v2 runs `nms_v2.tiled_nms` whatever it
        says).
      errors: give every row its TIDE errors (`detsearch.detection.tide`).
    """

    def __init__(
        self,
        cache: DetectionCache,
        ground_truth: GroundTruth,
        grid: Grid,
        post_processing: PostProcessing,
        *,
        nms_backend: NmsBackend = NmsBackend.FAST,
        errors: bool = False,
    ):
        started = time.perf_counter()
        self.cache = cache
        self.grid = grid
        self.kind = grid.kind
        self.post_processing = post_processing
        meta = cache.meta
        self.matcher = CocoMatcher(ground_truth, image_ids=meta.image_ids,
                                   max_detections=post_processing.max_eval_detections)
        self.num_images = len(meta.image_ids)
        self.locate = EntryLocator(cache, self.matcher)
        self.score_thresholds = grid.score_thresholds
        lowest = min(self.score_thresholds)
        lowest_cut = post_processing.threshold_cut(lowest)
        # Per cache entry nothing is copied (memory is per candidate): the entries' images,
        # classes and scores are read off the cache where asked (`EntryLocator`,
        # `exact_scores`).
        # Candidates of every NMS run: score above the lowest threshold, per image by descending
        # score; ties by (row, class), the (box index, class) order of the TF ops.
        # COCO matching orders detections by the scores as stored (float64 when given so), and
        # a score threshold t keeps float32(score) > float32(t) (`float32_cut` says it in
        # float64, compared in float64 against a float64 scalar; `PostProcessing.threshold_cut`
        # where v2 compares in a reduced dtype).
        candidates = np.flatnonzero(cache.entry_score > np.float64(lowest_cut))
        image = self.locate.image_of(candidates)
        score = np.asarray(cache.entry_score[candidates], np.float32)
        row = np.asarray(cache.entry_row[candidates], np.int64)
        classes = self.locate.class_of(candidates)
        order = visiting_order(image, score, row, classes)
        cand, image, score, row, classes = candidates[order], image[order], score[order], row[order], classes[order]
        del candidates, order
        if self.kind == CacheKind.ONE_STAGE:
            cand_boxes = np.asarray(cache.row_boxes, np.float32)[row]
        else:
            cand_boxes = np.asarray(cache.entry_boxes, np.float32)[cand]
        self.candidates = Candidates(
            entries=cand,
            image=image,
            row=row,
            classes=classes,
            score=score,
            boxes=cand_boxes,
            offsets=np.searchsorted(image, np.arange(self.num_images + 1)),
            num_classes=len(meta.category_ids),
        )
        self.score_cuts = [post_processing.threshold_cut(t) for t in self.score_thresholds]
        self.pairs = _PairStore(self.matcher, cand, self.locate)
        self.evidence = _EvidenceStore(self.matcher, cand, self.locate) if errors else None
        # One second-stage NMS per soft_nms_sigma of the grid (v1's axis; otherwise one).
        self._nms: dict[float | None, Suppressor] = {
            sigma: second_stage_nms(replace(post_processing, soft_nms_sigma=sigma) if grid.swept_sigma else post_processing,
                                    nms_backend, self.candidates, float(lowest))
            for sigma in grid.sigmas}
        if self.kind == CacheKind.TWO_STAGE:
            self.proposal_nms: Suppressor = first_stage_nms(post_processing, cache,
                                                            min(grid.axes["nms_score_threshold"]))
            self._proposals = Selection("proposals", None, np.asarray(cache.row_offsets, np.int64), True)
        self._selection: Selection | None = None
        self._reached_memo: tuple | None = None
        self._output_memo: tuple | None = None
        self._rows: dict[NmsKey, list[SweepRow]] = {}
        logger.info(
            "sweep: %d images, %d candidate entries above %r, prepared in %.2fs",
            self.num_images,
            len(cand),
            lowest_cut,
            time.perf_counter() - started,
        )

    def exact_scores(self, entries: np.ndarray) -> np.ndarray:
        """The cached scores of ``entries`` as given (float64: what COCO matching orders by)."""
        return np.asarray(self.cache.entry_score[entries], np.float64)

    @property
    def evaluated(self) -> Mapping[NmsKey, list[SweepRow]]:
        """Rows of every NMS setting evaluated so far, by setting."""
        return self._rows

    def first_stage(self, nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
        """Kept proposals at the lowest nms_score_threshold, per image by descending objectness
        (ties by row), at most ``num_proposals`` each: (global rows, per-image offsets)."""
        rows = self.proposal_nms.kept(self._proposals, nms_iou)
        image_of = np.searchsorted(self._proposals.offsets, rows, side="right") - 1
        return rows, np.searchsorted(image_of, np.arange(self.num_images + 1))

    def selection(self, key: NmsKey) -> Selection:
        """The candidates that reach the (second-stage) NMS at ``key``, in visiting order: the
        same for every ``iou_threshold`` of one `NmsKey.selection`, so it is kept for the next
        key."""
        if self._selection is not None and self._selection.key == key.selection:
            return self._selection
        c = self.candidates
        if self.kind == CacheKind.ONE_STAGE:
            picked = None  # every candidate, in the order already prepared
        else:
            reached, rank, row_image, objectness = self._reached(key.nms_iou_threshold)
            # An image's proposals above this nms_score_threshold are a prefix of its list
            # (descending objectness), and of those the lowest threshold keeps: the first
            # `counts`, by rank. Restricting the tie-broken order keeps it tie-broken.
            above = objectness > self.post_processing.proposal_cut(key.nms_score_threshold)
            counts = np.minimum(np.bincount(row_image[above], minlength=self.num_images),
                                self.post_processing.num_proposals)
            picked = reached[rank < counts[c.image[reached]]]
        if key.class_agnostic:
            # A row's first entry in visiting order is its best class (ties: the lower class).
            everything = np.arange(len(c.entries)) if picked is None else picked
            _, first = np.unique(c.row[everything], return_index=True)
            picked = everything[np.sort(first)]
        offsets = c.offsets if picked is None else np.searchsorted(c.image[picked], np.arange(self.num_images + 1))
        self._selection = Selection(key.selection, picked, offsets, key.class_agnostic)
        return self._selection

    def _reached(self, nms_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The second-stage candidates whose proposal the first stage keeps at ``nms_iou`` and the
        grid's lowest nms_score_threshold (at most ``num_proposals`` per image), in visiting
        order with equal (image, score) ordered by (proposal rank, class); each one's proposal
        rank; and the first stage's kept proposals' images and float64 objectness. The last
        ``nms_iou``'s are kept (keys of one ``nms_iou`` are adjacent, `Grid.nms_keys`)."""
        if self._reached_memo is not None and self._reached_memo[0] == nms_iou:
            return self._reached_memo[1]
        self._reached_memo = None
        c = self.candidates
        rows, row_offsets = self.first_stage(nms_iou)
        objectness = np.asarray(self.cache.row_objectness, np.float32)[rows].astype(np.float64)
        row_image = np.repeat(np.arange(self.num_images, dtype=np.int32), np.diff(row_offsets))
        lowest = self.post_processing.proposal_cut(min(self.grid.axes["nms_score_threshold"]))
        counts = np.minimum(np.bincount(row_image[objectness > lowest], minlength=self.num_images),
                            self.post_processing.num_proposals)
        positions = ragged_arange(row_offsets[:-1], counts)
        rank_of_row = np.full(len(self.cache.row_boxes), -1, np.int32)
        rank_of_row[rows[positions]] = positions - row_offsets[:-1][row_image[positions]]
        rank = rank_of_row[c.row]
        del rank_of_row
        keep = np.flatnonzero(rank >= 0)
        reached = keep[break_ties(c.image[keep], c.score[keep], rank[keep], c.classes[keep])]
        value = (reached, rank[reached], row_image, objectness)
        self._reached_memo = (nms_iou, value)
        return value

    def nms_of(self, key: NmsKey) -> Suppressor:
        """The second-stage NMS of setting ``key`` (its ``soft_nms_sigma``)."""
        return self._nms[key.soft_nms_sigma]

    def _match(self, positions: np.ndarray, scores: np.ndarray) -> Matches:
        """COCO matching of the candidates at ``positions`` (image by image in output order)
        scored ``scores`` (float64: the cached scores as given, or soft NMS's decayed ones)."""
        image_pos, category_pos, boxes = self.locate(self.candidates.entries[positions])
        return self.matcher.match(image_pos, category_pos, boxes, scores, self.pairs.pairs(positions))

    def _run_nms(self, key: NmsKey, score_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """NMS output at setting ``key`` (at the grid's lowest score threshold, or, where the NMS
        answers no higher one by restriction, at ``score_threshold``; the largest cap): the
        candidate positions image by image in output order and their output scores (float64)."""
        nms, selection = self.nms_of(key), self.selection(key)
        if score_threshold is not None:
            positions = nms.kept_above(selection, key.iou_threshold, score_threshold)
            return positions, self.exact_scores(self.candidates.entries[positions])
        positions = nms.kept(selection, key.iou_threshold)
        rescored = nms.output_scores(selection, key.iou_threshold) if isinstance(nms, V1Nms) else None
        return positions, (self.exact_scores(self.candidates.entries[positions]) if rescored is None
                           else rescored.astype(np.float64))

    def _output(self, key: NmsKey, score_threshold: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Matches]:
        """`_run_nms`'s output (candidate positions, their cache entries), each one's position in
        its image's output, their scores and matches. The last one's are kept."""
        memo = (key, score_threshold)
        if self._output_memo is not None and self._output_memo[0] == memo:
            return self._output_memo[1]
        positions, scores = self._run_nms(key, score_threshold)
        image = self.candidates.image[positions]
        rank = np.arange(len(positions)) - np.searchsorted(image, image, side="left")
        value = (positions, self.candidates.entries[positions], rank, scores, self._match(positions, scores))
        self._output_memo = (memo, value)
        return value

    def exact_prefixes(self, key: NmsKey) -> bool:
        """Whether one NMS pass at the lowest score threshold answers every score threshold of
        ``key`` (False only for v1's padded NMS with an IoU exactly at the threshold,
        `V1Nms.exact_prefixes`; then each threshold runs NMS on its own)."""
        nms = self.nms_of(key)
        return not isinstance(nms, V1Nms) or nms.exact_prefixes(self.selection(key), key.iou_threshold)

    def output(self, key: NmsKey, cap: int | None, score_threshold: float | None = None) -> Output:
        """The `Output` (entries, output scores (float64), matches, and TIDE's evidence when the
        engine gives errors) at setting ``key`` with ``max_detections`` ``cap`` (None: the
        engine's own caps), every score above the lowest threshold (or, with
        ``score_threshold``, NMS run at that threshold: see `exact_prefixes`)."""
        positions, dets, rank, scores, matches = self._output(key, score_threshold)
        if cap is not None and cap < max(self.grid.caps):
            inside = rank < cap
            kept = inside[matches.input_index]
            # Within a group the kept matches must be a prefix of the matching order.
            group = matches.image_pos * self.matcher.num_categories + matches.category_pos
            same = group[1:] == group[:-1]
            if not (same & kept[1:] & ~kept[:-1]).any():
                matches = matches.select(kept, np.cumsum(inside) - 1)
            else:
                matches = self._match(positions[inside], scores[inside])
            positions, dets, scores = positions[inside], dets[inside], scores[inside]
        return Output(dets, scores, matches, None if self.evidence is None else self.evidence.of(positions))

    def outputs(self, key: NmsKey) -> KeyOutputs:
        """What the rows of NMS setting ``key`` are read from: its output at every cap, from one NMS
        run or, where that does not answer every score threshold (`exact_prefixes`), from one run
        per score threshold."""
        exact = self.exact_prefixes(key)
        runs = {(cap, run_at): self.output(key, cap, run_at)
                for cap in self.grid.caps or (None,)
                for run_at in ((None,) if exact else self.score_thresholds)}
        return KeyOutputs(exact, runs)

    def restore(self, rows: Mapping[NmsKey, list[SweepRow]]) -> None:
        """Takes ``rows`` (of settings a journal recorded) as evaluated."""
        self._rows.update(rows)

    def rows(self, key: NmsKey) -> list[SweepRow]:
        """Rows at NMS setting ``key`` (`key_rows`)."""
        if key not in self._rows:
            started = time.perf_counter()
            self._rows[key] = key_rows(self.grid, key, self.outputs(key), self.score_cuts, self.num_images)
            logger.debug("sweep: %s: %d rows in %.2fs", key, len(self._rows[key]), time.perf_counter() - started)
        return self._rows[key]

    def row(self, params: Mapping[str, float]) -> SweepRow:
        """The row with ``params`` (evaluated now if its NMS setting was not yet)."""
        return self.rows(self.grid.key_of(params))[self.grid.row_position(params)]

    def score_cut(self, score_threshold: float) -> float:
        """The float64 cut (`float32_cut`) of one of the grid's score thresholds."""
        return self.score_cuts[self.score_thresholds.index(score_threshold)]


class EntryLocator:
    """What COCO matching against ``matcher`` needs of a cache's entries: called with entries,
    their image positions (the matcher's), category positions (the ground truth's) and COCO
    boxes (`coco_boxes`). It holds the cache and two small position maps, no engine."""

    def __init__(self, cache: DetectionCache, matcher: CocoMatcher):
        self.cache = cache
        self.entry_offsets = np.asarray(cache.entry_offsets, np.int64)
        self.image_pos = matcher.image_positions(cache.meta.image_ids)
        self.class_pos = matcher.category_positions(cache.meta.category_ids)

    def image_of(self, entries: np.ndarray) -> np.ndarray:
        """The image index (into the cache's images) of each entry of ``entries``."""
        return np.searchsorted(self.entry_offsets, entries, side="right") - 1

    def class_of(self, entries: np.ndarray) -> np.ndarray:
        """The class index (into the cache's categories) of each entry of ``entries``."""
        return np.asarray(self.cache.entry_class[entries], np.int64)

    def __call__(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.image_pos[self.image_of(entries)], self.class_pos[self.class_of(entries)], coco_boxes(self.cache, entries)


def coco_boxes(cache: DetectionCache, entries: np.ndarray) -> np.ndarray:
    """The COCO ``[x, y, w, h]`` (float64) boxes COCO matching sees for cache ``entries``: a
    one-stage cache's rows as given (``row_xywh``, imported from a results file) or its float32
    ``[y1, x1, y2, x2]`` rows; a two-stage cache's entry boxes as stored (float64 when imported
    so)."""
    if cache.meta.kind == CacheKind.TWO_STAGE:
        return yxyx_to_xywh(np.asarray(cache.entry_boxes)[entries])
    rows = np.asarray(cache.entry_row)[entries]
    if cache.row_xywh is not None:
        return np.asarray(cache.row_xywh, np.float64)[rows]
    return yxyx_to_xywh(np.asarray(cache.row_boxes, np.float32)[rows])


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
