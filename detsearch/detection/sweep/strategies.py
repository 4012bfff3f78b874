"""The sweep's public entry point, `sweep`, and its two strategies: the whole grid (spread over
an `detsearch.executor.Executor`) or a coordinate search (in this process).

Library code logs through `logging` and reports progress through an optional callback; it
never prints.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from detsearch.checks import positive_int
from detsearch.detection.cache import CacheKind, DetectionCache, read_cache
from detsearch.detection.cocoeval import CocoMatcher, GroundTruth, load_ground_truth
from detsearch.detection.sweep.cuts import float32_cut, separating_threshold
from detsearch.detection.diagnostics import calibration, confusion_matrix
from detsearch.detection.sweep.engine import EntryLocator, KeyOutputs, SweepEngine, key_rows
from detsearch.detection.sweep.grid import Grid, NmsKey
from detsearch.detection.sweep.holdout import DEFAULT_REPLICATES, check_fraction, confirm, split_images, subset_cache
from detsearch.detection.sweep.journal import SweepJournal, sweep_digest
from detsearch.detection.sweep.per_class import (
    ChosenDetails,
    PerClassResult,
    PerClassRule,
    ScoreCurve,
    class_curves,
    per_class_thresholds,
)
from detsearch.detection.sweep.result import (
    DEFAULT_TOLERANCE,
    STRATEGIES,
    SweepResult,
    SweepRow,
    check_objective,
    check_tolerance,
    objective_value,
    row_sort_key,
    select_best,
    thresholds_of,
)
from detsearch.detection.sweep.settings import NmsBackend, PostProcessing, cache_kind, member
from detsearch.detection.sweep.shards import ShardedSweep
from detsearch.executor import Executor, LocalExecutor, as_executor
from detsearch.params import ParamSpec

__all__ = ["ProgressCallback", "sweep"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)`` after each NMS setting; ``total`` is an upper bound for the
coordinate strategy."""


def sweep(
    cache: DetectionCache | str | os.PathLike,
    ground_truth,
    grid: ParamSpec,
    post_processing: PostProcessing | None = None,
    *,
    max_detections: int | Sequence[int] | None = None,
    class_agnostic: bool | Sequence[bool] | None = None,
    soft_nms_sigma: float | Sequence[float] | None = None,
    objective: str = "map",
    budget: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    strategy: str = "grid",
    per_class: str | PerClassRule | None = None,
    holdout: float | None = None,
    seed: int = 0,
    replicates: int = DEFAULT_REPLICATES,
    nms_backend: NmsBackend | str = NmsBackend.FAST,
    executor: Executor | str | None = None,
    shards: int | None = None,
    progress: ProgressCallback | None = None,
    journal: str | os.PathLike | None = None,
    errors: bool = False,
) -> SweepResult:
    """Chooses post-processing thresholds on a cache of raw predictions.

    A configuration is, by MoXing names:

    - one-stage (SSD, RetinaNet): ``(score_threshold, iou_threshold)``;
    - two-stage (Faster R-CNN): ``(nms_score_threshold, nms_iou_threshold, score_threshold,
      iou_threshold)``: the first two drive the first stage (class-agnostic NMS of the RPN
      proposals: objectness ``> nms_score_threshold``, IoU ``> nms_iou_threshold`` suppressed,
      the best ``num_proposals`` kept, per FPN level when levels were recorded, then merged),
      the last two the second stage (per-class NMS of the cached second-stage boxes and
      scores of the surviving proposals).

    The rest of the post-processing (NMS version, caps, top-k, the first stage's NMS) is
    ``post_processing``'s. NMS semantics are those of `detsearch.detection.nms` (TensorFlow's
    kernels) and `detsearch.detection.nms_v2` (Model Garden's v2); evaluation is
    `detsearch.detection.cocoeval` (pycocotools' numbers, bit for bit). How one NMS pass answers
    a whole score axis: `detsearch.detection.sweep.engine`.

    Args:
      cache: a `detsearch.detection.cache.DetectionCache` (validated when it was built), or a
        cache directory (`read_cache`). The grid's tasks read their images from the directory
        of a cache `read_cache` gave (``cache.path``); others travel to them through the
        executor.
      ground_truth: COCO instances: path, dict, pycocotools ``COCO`` or `GroundTruth`.
        Evaluation covers the cache's images (each must be in the ground truth) and all
        ground-truth categories (the cache's categories must be among them).
      grid: candidate lists by MoXing name, e.g.
        ``ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.5, 0.6])`` for one-stage;
        two-stage also needs ``nms_score_threshold`` and ``nms_iou_threshold``.
      post_processing: the experiment's `PostProcessing` (default ``PostProcessing()``: batched
        NMS, caps 100 and 100), checked against the cache here (`PostProcessing.checked`).
      max_detections: an axis of Model Garden's ``max_num_detections`` (the cap per class and
        per image): an integer or a list; rows then name it. One NMS pass at the largest cap
        serves them all. ``post_processing``'s caps must then be left unset.
      class_agnostic: an axis of class-agnostic NMS (True: each box keeps only its
        best-scoring class, then one NMS over all classes of the image, capped at
        ``max_total_detections``); a bool or a list; rows then name it.
        ``post_processing.class_agnostic`` must then be left False.
      soft_nms_sigma: an axis of v1's ``soft_nms_sigma`` (numbers >= 0; 0 is the kernel's hard
        NMS); a number or a list; rows then name it. ``post_processing.soft_nms_sigma`` must
        then be left None.
      objective: one of `OBJECTIVES` (default ``"map"``).
      budget: mean detections per image allowed by ``map_at_budget``.
      tolerance: the choice is the configuration with the fewest detections per image among
        those whose objective is within ``tolerance`` of the best (`select_best`; default
        `DEFAULT_TOLERANCE`, 0 takes the best).
      strategy: ``"grid"`` (default) or ``"coordinate"`` (see `STRATEGIES`).
      per_class: a per-category score threshold rule on top of the chosen configuration
        (``"f1"``, ``"precision:P"``, ``"recall:R"``, or a `PerClassRule`, e.g.
        ``PerClassRule.parse("precision:0.9", confidence=0.95)`` for a target the lower
        confidence bound must reach; see `detsearch.detection.sweep.per_class`), or None.
      holdout: a fraction in (0, 1) of the images to hold out: everything is chosen on the
        others and the choice is scored on these (``result.holdout``; with ``per_class``, each
        category's threshold too: `PerClassResult.held_out`); None: no holdout.
      seed: the holdout split's and the bootstrap's seed.
      replicates: bootstrap replicates of the held-out intervals.
      nms_backend: `NmsBackend`: ``"fast"`` (the compiled greedy walk, the first stage
        included) or ``"reference"`` (NumPy reference loops for the second stage; slow). The
        figures do not depend on it.
      executor: where the grid's tasks run: None or ``"local"`` (this process), ``"ray"``, or
        an `detsearch.executor.Executor`, e.g. ``ProcessExecutor(4)`` (four forked
        processes). A task runs NMS settings (both stages) on one range of images and
        matches their output; this process merges the ranges and accumulates
        (`detsearch.detection.sweep.shards`). The table does not depend on the executor or
        on ``shards``. The coordinate strategy runs in this process only.
      shards: the number of image ranges the grid is split into (at most one per image);
        default: one for the local executor (the whole cache at once), else twice the
        executor's `detsearch.executor.Executor.slots`. More ranges bound a task's memory
        by its range.
      progress: optional ``progress(done, total)`` callback.
      journal: a file where the sweep records each finished NMS setting's rows
        (`detsearch.detection.sweep.journal`): a sweep killed and started again with the same
        journal, inputs and settings computes only the settings it had not finished, and its
        table is the uninterrupted one bit for bit. A journal of other inputs or settings is
        dropped. None (default): no journal.
      errors: give every row of the table TIDE's error anatomy of its detections
        (``row.errors``, `detsearch.detection.tide`: hotcoco's ``tide_errors``), and the chosen
        configuration's confusion matrix and calibration (``result.diagnostics``).

    Returns:
      `SweepResult`. Ties of the objective go to fewer detections per image, then to lower
      thresholds (`select_best`).

    Raises:
      ValueError / TypeError: bad arguments, a cache that is not a `DetectionCache`, settings
        the cache cannot answer (a score threshold below its score floor, ...: `BadSetting`,
        a `ValueError`), cache images or categories unknown to the ground truth, no
        configuration within the budget.
    """
    if isinstance(cache, (str, os.PathLike)):
        cache = read_cache(cache)
    if post_processing is None:
        post_processing = PostProcessing()
    if not isinstance(post_processing, PostProcessing):
        raise TypeError(f"post_processing must be a PostProcessing, got {type(post_processing).__name__}")
    configurations = Grid.build(cache_kind(cache), grid, post_processing, max_detections, class_agnostic,
                                soft_nms_sigma)
    check_objective(objective, budget)
    check_tolerance(tolerance)
    rule = None if per_class is None else PerClassRule.parse(per_class)
    if holdout is not None:
        check_fraction(holdout)
        replicates = positive_int(replicates, "replicates")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known strategies: {', '.join(STRATEGIES)}")
    nms_backend = member(NmsBackend, nms_backend, "nms_backend")
    executor = as_executor(executor)
    if strategy == "coordinate" and not isinstance(executor, LocalExecutor):
        raise ValueError(f"the coordinate strategy runs in this process (each step depends on the last); "
                         f"got executor {executor!r}: use the grid strategy or the local executor")
    if shards is not None:
        shards = positive_int(shards, "shards")
    post = configurations.nms_post_processing(post_processing).checked(cache, grid)
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    if not isinstance(errors, bool):
        raise TypeError(f"errors must be a bool, got {errors!r}")
    run = _Run(configurations, post, nms_backend, strategy, objective, budget, tolerance, rule, executor, shards,
               progress, journal, errors)
    if holdout is None:
        return run.on(cache, gt)
    chosen_positions, held_positions = split_images(cache.meta.image_ids, holdout, seed, gt)
    result = run.on(subset_cache(cache, chosen_positions), gt)
    chosen = result.best_row.params
    # The held-out engine's grid is the chosen configuration alone, its cap included.
    held_post = post
    if configurations.swept_sigma:
        held_post = replace(held_post, soft_nms_sigma=chosen["soft_nms_sigma"])
    if configurations.caps is not None:
        held_post = replace(held_post, max_detections_per_class=chosen["max_detections"],
                            max_total_detections=chosen["max_detections"])
    held = SweepEngine(subset_cache(cache, held_positions), gt, configurations.at(chosen), held_post,
                       nms_backend=nms_backend)
    confirmed = confirm(held, result.best_row, objective, budget, fraction=holdout, seed=seed,
                        chosen_num_images=result.num_images, replicates=replicates)
    per_class = result.per_class
    if per_class is not None:  # each category's threshold on the held-out images too
        held_matches = held.output(held.grid.key_of(chosen), chosen.get("max_detections")).matches
        per_class = per_class.held_out(held_matches, held.score_cut(chosen["score_threshold"]))
    return replace(result, holdout=confirmed, per_class=per_class)


@dataclass(frozen=True)
class _Run:
    """A sweep's checked arguments (`sweep`), run on a cache by `on`."""

    grid: Grid
    post_processing: PostProcessing
    nms_backend: NmsBackend
    strategy: str
    objective: str
    budget: float | None
    tolerance: float
    rule: PerClassRule | None
    executor: Executor
    shards: int | None
    progress: ProgressCallback | None
    journal: str | os.PathLike | None
    errors: bool

    def on(self, cache: DetectionCache, gt: GroundTruth) -> SweepResult:
        keys = self.grid.nms_keys()
        started = time.perf_counter()
        if self.strategy == "grid":
            sharded = ShardedSweep(cache, gt, self.grid, self.post_processing, self.nms_backend, self.shards,
                                   self.executor, uuid.uuid4().hex, self.errors)
            journal, evaluated = self._journal(cache, gt, keys)

            def add_rows(key: NmsKey, outputs: KeyOutputs) -> None:
                evaluated[key] = key_rows(self.grid, key, outputs, sharded.score_cuts, cache.num_images())
                if journal is not None:
                    journal.put(key, evaluated[key])
                if self.progress is not None:
                    self.progress(len(evaluated), len(keys))

            try:
                sharded.run([key for key in keys if key not in evaluated], add_rows)
                table, best_row, top_row = self._choose(evaluated, started)
                key = self.grid.key_of(best_row.params)
                outputs = sharded.outputs(key)
            finally:
                sharded.close()
            matcher = sharded.matcher
        else:
            engine = SweepEngine(cache, gt, self.grid, self.post_processing, nms_backend=self.nms_backend,
                                 errors=self.errors)
            journal, finished = self._journal(cache, gt, keys)
            engine.restore(finished)
            _coordinate_search(engine, keys, self.objective, self.budget, self.progress, journal)
            table, best_row, top_row = self._choose(engine.evaluated, started)
            key = self.grid.key_of(best_row.params)
            outputs, matcher = engine.outputs(key), engine.matcher
        # Soft NMS outputs decayed scores: the written threshold separates those (all of them).
        lowest = min(self.grid.score_thresholds)
        output = (outputs.at(max(self.grid.caps) if self.grid.caps else None, lowest).scores if key.soft_nms_sigma
                  else None)
        written = written_thresholds(cache, self.grid.kind, best_row.params, output, self.post_processing)
        locate = EntryLocator(cache, matcher)
        chosen, per_class = chosen_details(outputs, best_row, self.rule, written["score_threshold"], matcher,
                                           lambda dets: locate.class_pos[locate.class_of(dets)],
                                           self.post_processing, cache.num_images(), lowest,
                                           locate if self.errors else None)
        return SweepResult(
            kind=self.grid.kind,
            objective=self.objective,
            budget=self.budget,
            strategy=self.strategy,
            best=thresholds_of(written),
            best_row=best_row,
            table=table,
            num_images=cache.num_images(),
            tolerance=float(self.tolerance),
            top_row=top_row,
            per_class=per_class,
            max_eval_detections=self.post_processing.max_eval_detections,
            chosen=chosen,
        )

    def _journal(self, cache: DetectionCache, gt: GroundTruth, keys: Sequence[NmsKey]
                 ) -> tuple[SweepJournal | None, dict[NmsKey, list[SweepRow]]]:
        """The sweep's journal (None without one) and the rows of the settings it finished."""
        if self.journal is None:
            return None, {}
        journal = SweepJournal(self.journal, sweep_digest(cache, gt, self.grid, self.post_processing, self.errors))
        finished = {key: journal.finished[key] for key in keys if key in journal.finished}
        if finished:
            logger.info("sweep: %d of %d NMS settings finished before (%s)", len(finished), len(keys), self.journal)
            if self.progress is not None:
                self.progress(len(finished), len(keys))
        return journal, finished

    def _choose(self, evaluated: Mapping[NmsKey, list[SweepRow]], started: float
                ) -> tuple[tuple[SweepRow, ...], SweepRow, SweepRow]:
        """The table of ``evaluated``'s rows, the chosen row and the top row."""
        table = tuple(sorted((row for rows in evaluated.values() for row in rows), key=row_sort_key))
        best_row = select_best(table, self.objective, self.budget, self.tolerance)
        logger.info("sweep: %d configurations (%d NMS settings) in %.2fs; chosen %s", len(table), len(evaluated),
                    time.perf_counter() - started, dict(best_row.params))
        return table, best_row, select_best(table, self.objective, self.budget)


def written_thresholds(cache: DetectionCache, kind: CacheKind, params: Mapping[str, Any],
                       output_scores: np.ndarray | None = None, post_processing: PostProcessing | None = None
                       ) -> dict[str, Any]:
    """``params`` with each score threshold made separating on the cache's scores
    (`cuts.separating_threshold`): ``score_threshold`` on the candidates' scores (or on
    ``output_scores``, soft NMS's decayed ones), ``nms_score_threshold`` on the proposals'
    objectness. Where Model Garden compares scores in a reduced dtype (mixed precision: v2's
    class-aware path, the tiled first stage), the threshold as that dtype
    (`PostProcessing.threshold_cut`, `PostProcessing.proposal_cut`): Model Garden rounds it to
    itself, and every score being that dtype's value, ``score > t`` keeps the same in any
    precision."""
    written = dict(params)
    reduced_names = set()

    def write(name: str, reduced_cut, values) -> None:
        # Where the reduced dtype's cut is not the float32 one, write it; else separate.
        cut = None if post_processing is None else reduced_cut(params[name])
        if cut is not None and cut != float32_cut(params[name]):
            written[name] = cut
            reduced_names.add(name)
        else:
            written[name] = separating_threshold(params[name], values)

    write("score_threshold", post_processing and post_processing.threshold_cut,
          cache.entry_score if output_scores is None else output_scores)
    if kind == CacheKind.TWO_STAGE:
        write("nms_score_threshold", post_processing and post_processing.proposal_cut, cache.row_objectness)
    for name in ("score_threshold", "nms_score_threshold"):
        if name in params and written[name] != params[name]:
            why = (f"Model Garden compares it as {post_processing.score_dtype}" if name in reduced_names
                   else f"a cached score lies where float32 and float64 disagree about {params[name]!r}")
            logger.warning("sweep: %s %r is written as %r: %s", name, params[name], written[name], why)
    return written


def chosen_details(outputs: KeyOutputs, row: SweepRow, rule: PerClassRule | None, written_threshold: float,
                   matcher: CocoMatcher, category_of: Callable[[np.ndarray], np.ndarray],
                   post_processing: PostProcessing, num_images: int, lowest_threshold: float,
                   located: Callable[[np.ndarray], tuple] | None = None
                   ) -> tuple[ChosenDetails, PerClassResult | None]:
    """The chosen configuration's evaluation and score curves, and its per-category thresholds
    under ``rule`` (None: not asked) on top of its score threshold as written, from its NMS
    setting's ``outputs``; ``category_of(entries)`` gives cache entries' category positions.
    ``lowest_threshold``: the grid's lowest score threshold (the leaderboard's evaluation). With
    ``located(entries)`` (their image and category positions and COCO boxes: a sweep with
    errors) also the confusion matrix and the calibration."""
    started = time.perf_counter()
    threshold = row.params["score_threshold"]
    cap = row.params.get("max_detections")
    output = outputs.at(cap, threshold).above(post_processing.threshold_cut(threshold))
    above = output.matches
    names = tuple(matcher.ground_truth.category_names)
    counted = above.counted[:, 0, 0]
    # What a leaderboard reports: the same NMS setting at the grid's lowest score threshold.
    leaderboard = outputs.at(cap, lowest_threshold).above(post_processing.threshold_cut(lowest_threshold))
    confusion = calibrated = None
    if located is not None:
        confusion = confusion_matrix(matcher, *located(output.dets), output.scores)
        calibrated = calibration(above)
    details = ChosenDetails(
        evaluation=above.evaluate()[0],
        pooled=ScoreCurve.from_detections(above.scores[counted], above.true_positive[counted, 0, 0], above.num_ground_truth),
        curves=tuple(class_curves(above)),
        category_ids=tuple(int(c) for c in matcher.category_ids),
        names=names,
        leaderboard=leaderboard.matches.evaluate()[0],
        leaderboard_threshold=float(lowest_threshold),
        leaderboard_dets_per_image=len(leaderboard.dets) / num_images if num_images else 0.0,
        confusion=confusion,
        calibration=calibrated,
    )
    per_class = None
    if rule is not None:
        per_class = per_class_thresholds(above, category_of(output.dets), output.scores, rule, written_threshold, names,
                                         num_images)
    logger.info("sweep: chosen configuration's curves%s in %.2fs", " and per-class thresholds" if rule else "",
                time.perf_counter() - started)
    return details, per_class


def _coordinate_search(engine: SweepEngine, keys: list[NmsKey], objective, budget, progress,
                       journal: SweepJournal | None) -> None:
    axes = engine.grid.row_axes
    names = tuple(axes)
    # Start in the middle of every candidate list (lower middle for even lengths).
    current = {name: axes[name][(len(axes[name]) - 1) // 2] for name in names}

    def row_at(point: Mapping[str, Any]) -> SweepRow:
        key = engine.grid.key_of(point)
        new = key not in engine.evaluated
        row = engine.row(point)
        if new and journal is not None:
            journal.put(key, engine.evaluated[key])
        if new and progress is not None:
            progress(len(engine.evaluated), len(keys))
        return row

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
