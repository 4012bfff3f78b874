"""The sweep's public entry point, `sweep`, and its two strategies: the whole grid (spread over
an `detsearch.executor.Executor`) or a coordinate search (in this process).

Library code logs through `logging` and reports progress through an optional callback; it
never prints.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from detsearch.detection.cache import CacheKind, DetectionCache
from detsearch.detection.cocoeval import GroundTruth, load_ground_truth
from detsearch.detection.sweep.cuts import separating_threshold
from detsearch.detection.sweep.engine import SweepEngine
from detsearch.detection.sweep.grid import (
    check_cache,
    check_first_stage,
    check_floor,
    check_nms_version,
    check_axes,
    check_options,
    grid_axes,
    key_of,
    nms_keys,
    threshold_names,
)
from detsearch.detection.sweep.holdout import DEFAULT_REPLICATES, check_fraction, confirm, split_images, subset_cache
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
from detsearch.executor import Executor, LocalExecutor, ProcessExecutor, as_executor, release_worker_cache, worker_cache
from detsearch.params import ParamSpec

__all__ = ["NMS_BACKENDS", "ProgressCallback", "sweep"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)`` after each NMS setting; ``total`` is an upper bound for the
coordinate strategy."""

NMS_BACKENDS = ("fast", "reference")

_ENGINE_SLOT = __name__
"""The `worker_cache` slot of the engine a worker process evaluates with."""


def sweep(
    cache: DetectionCache,
    ground_truth,
    param_list_spec: ParamSpec,
    *,
    objective: str = "map",
    budget: float | None = None,
    strategy: str = "grid",
    tolerance: float = DEFAULT_TOLERANCE,
    max_detections: int | Sequence[int] | None = None,
    class_agnostic: bool | Sequence[bool] | None = None,
    max_detections_per_class: int | None = None,
    max_total_detections: int | None = None,
    num_proposals: int | None = None,
    per_level: bool | None = None,
    per_class: str | PerClassRule | None = None,
    holdout: float | None = None,
    seed: int = 0,
    replicates: int = DEFAULT_REPLICATES,
    nms_backend: str = "fast",
    nms_version: str = "batched",
    pre_nms_top_k: int | None = None,
    proposal_nms: str = "batched",
    proposal_top_k: int | None = None,
    executor: Executor | str | None = None,
    progress: ProgressCallback | None = None,
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

    NMS semantics are those of `detsearch.detection.nms` (TensorFlow's kernels); evaluation is
    `detsearch.detection.cocoeval` (pycocotools' numbers, bit for bit). How one NMS pass
    answers a whole score axis: `detsearch.detection.sweep.engine`.

    Args:
      cache: a `detsearch.detection.cache.DetectionCache` (validated when it was built).
      ground_truth: COCO instances: path, dict, pycocotools ``COCO`` or `GroundTruth`.
        Evaluation covers the cache's images (each must be in the ground truth) and all
        ground-truth categories (the cache's categories must be among them).
      param_list_spec: candidate lists by MoXing name, e.g.
        ``ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.5, 0.6])`` for one-stage;
        two-stage also needs ``nms_score_threshold`` and ``nms_iou_threshold``.
      objective: one of `OBJECTIVES` (default ``"map"``).
      budget: mean detections per image allowed by ``map_at_budget``.
      strategy: ``"grid"`` (default) or ``"coordinate"`` (see `STRATEGIES`).
      tolerance: the choice is the configuration with the fewest detections per image among
        those whose objective is within ``tolerance`` of the best (`select_best`; default
        `DEFAULT_TOLERANCE`, 0 takes the best).
      max_detections: an axis of Model Garden's ``max_num_detections`` (the cap per class and
        per image): an integer or a list; rows then name it. One NMS pass at the largest cap
        serves them all.
      class_agnostic: an axis of class-agnostic NMS (True: each box keeps only its
        best-scoring class, then one NMS over all classes of the image, capped at
        ``max_total_detections``); a bool or a list; rows then name it.
      max_detections_per_class, max_total_detections: fixed NMS caps (default 100 and 100), when
        ``max_detections`` is not given.
      num_proposals: first-stage top-N (default: the cache's ``meta.num_proposals``, else 1000).
      per_level: first-stage NMS per FPN level (default: when the cache records levels).
      per_class: a per-category score threshold rule on top of the chosen configuration
        (``"f1"``, ``"precision:P"``, ``"recall:R"``, see
        `detsearch.detection.sweep.per_class`), or None.
      holdout: a fraction in (0, 1) of the images to hold out: everything is chosen on the
        others and the choice is scored on these (``result.holdout``); None: no holdout.
      seed: the holdout split's and the bootstrap's seed.
      replicates: bootstrap replicates of the held-out intervals.
      nms_backend: ``"fast"`` (vectorized greedy walk; the first stage through the TensorFlow
        op) or ``"reference"`` (NumPy reference loops; slow, no TensorFlow).
      nms_version: the Model Garden post-processing to reproduce (`grid.NMS_VERSIONS`):
        ``"batched"`` (the semantics above) or ``"v2"`` (one-stage; Model Garden's default:
        per-class top ``pre_nms_top_k``, then its tiled NMS, which suppresses at IoU >= the
        threshold, see `detsearch.detection.nms_v2`). v2 needs one cap for classes and images.
      pre_nms_top_k: v2's candidates per image and class (default 5000, Model Garden's).
      proposal_nms: two-stage: the first stage's NMS (`grid.PROPOSAL_NMS`): ``"batched"`` (the
        semantics above) or ``"tiled"`` (Model Garden's ``roi_generator.use_batched_nms: false``,
        its default: per level the top ``proposal_top_k`` by objectness, then v2's tiled NMS).
      proposal_top_k: with ``"tiled"``: proposals per level before NMS (default 1000, Model
        Garden's ``test_pre_nms_top_k``); the cache must hold at least these per level.
      executor: where the grid's NMS settings run: None or ``"local"`` (this process),
        ``"ray"``, or an `detsearch.executor.Executor`, e.g. ``ProcessExecutor(4)`` (four
        forked processes that inherit the prepared engine). One task per NMS setting
        (two-stage: per first-stage setting); any TensorFlow work (the first stage) runs in
        this process first, so the tasks only use NumPy. The table does not depend on the
        executor. The coordinate strategy runs in this process only.
      progress: optional ``progress(done, total)`` callback.

    Returns:
      `SweepResult`. Ties of the objective go to fewer detections per image, then to lower
      thresholds (`select_best`).

    Raises:
      ValueError / TypeError: bad arguments, a cache that is not a `DetectionCache`, a score
        threshold below the cache's score floor, cache images or categories unknown to the
        ground truth, no configuration within the budget.
    """
    kind = check_cache(cache)
    axes = grid_axes(param_list_spec, kind)
    check_objective(objective, budget)
    check_tolerance(tolerance)
    caps, agnostic = check_axes(max_detections, class_agnostic)
    rule = None if per_class is None else PerClassRule.parse(per_class)
    if holdout is not None:
        check_fraction(holdout)
        if isinstance(replicates, bool) or not isinstance(replicates, (int, np.integer)) or replicates < 1:
            raise ValueError(f"replicates must be an integer >= 1, got {replicates!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known strategies: {', '.join(STRATEGIES)}")
    if nms_backend not in NMS_BACKENDS:
        raise ValueError(f"nms_backend must be 'fast' or 'reference', got {nms_backend!r}")
    executor = as_executor(executor)
    if strategy == "coordinate" and not isinstance(executor, LocalExecutor):
        raise ValueError(f"the coordinate strategy runs in this process (each step depends on the last); "
                         f"got executor {executor!r}: use the grid strategy or the local executor")
    per_class_cap, total_cap, num_proposals, per_level = check_options(
        cache, kind, max_detections_per_class, max_total_detections, num_proposals, per_level, caps)
    pre_nms_top_k, proposal_top_k = check_nms_version(nms_version, kind, agnostic, per_class_cap, total_cap,
                                                      pre_nms_top_k, proposal_nms, proposal_top_k, num_proposals,
                                                      per_level)
    check_floor(cache, axes)
    check_first_stage(cache, kind, axes, num_proposals, per_level)
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    options = dict(
        max_detections_per_class=per_class_cap,
        max_total_detections=total_cap,
        num_proposals=num_proposals,
        per_level=per_level,
        nms_backend=nms_backend,
        caps=caps,
        swept_agnostic=class_agnostic is not None,
        nms_version=nms_version,
        pre_nms_top_k=pre_nms_top_k,
        proposal_nms=proposal_nms,
        proposal_top_k=proposal_top_k,
    )
    if holdout is not None:
        chosen_positions, held_positions = split_images(cache.meta.image_ids, holdout, seed, gt)
        result = _sweep_on(subset_cache(cache, chosen_positions), gt, axes, kind, options, agnostic, strategy, objective,
                           budget, tolerance, rule, executor, progress)
        chosen = result.best_row.params
        # The held-out engine's grid is the chosen configuration alone, its cap included.
        held_options = dict(options)
        if caps is not None:
            cap = chosen["max_detections"]
            held_options.update(caps=(cap,), max_detections_per_class=cap, max_total_detections=cap)
        held = SweepEngine(subset_cache(cache, held_positions), gt, _axes_of(kind, chosen), kind, **held_options)
        confirmed = confirm(held, result.best_row, objective, budget, fraction=holdout, seed=seed,
                            chosen_num_images=result.num_images, replicates=int(replicates))
        return replace(result, holdout=confirmed)
    return _sweep_on(cache, gt, axes, kind, options, agnostic, strategy, objective, budget, tolerance, rule, executor, progress)


def _axes_of(kind: CacheKind, params: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    """The one-configuration grid of a row's ``params``."""
    return {name: (params[name],) for name in threshold_names(kind)}


def _sweep_on(cache, gt, axes, kind, options, agnostic, strategy, objective, budget, tolerance, rule, executor,
              progress) -> SweepResult:
    """The sweep of ``cache`` once the arguments are checked (see `sweep`)."""
    engine = SweepEngine(cache, gt, axes, kind, **options)
    keys = nms_keys(kind, axes, agnostic)
    started = time.perf_counter()
    if strategy == "grid":
        _grid_on_executor(engine, _EngineSource(uuid.uuid4().hex, cache, gt, axes, kind, options), keys, executor, progress)
    else:
        _coordinate_search(engine, kind, axes, keys, objective, budget, progress)
    table = tuple(sorted((row for rows in engine.evaluated.values() for row in rows), key=row_sort_key))
    best_row = select_best(table, objective, budget, tolerance)
    top_row = select_best(table, objective, budget)
    logger.info(
        "sweep: %d configurations (%d NMS settings) in %.2fs; chosen %s",
        len(table),
        len(engine.evaluated),
        time.perf_counter() - started,
        dict(best_row.params),
    )
    written = written_thresholds(cache, kind, best_row.params)
    chosen, per_class = chosen_details(engine, best_row, rule, written["score_threshold"])
    return SweepResult(
        kind=kind,
        objective=objective,
        budget=budget,
        strategy=strategy,
        best=thresholds_of(written),
        best_row=best_row,
        table=table,
        num_images=engine.num_images,
        tolerance=float(tolerance),
        top_row=top_row,
        per_class=per_class,
        chosen=chosen,
    )


def written_thresholds(cache: DetectionCache, kind: CacheKind, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with each score threshold made separating on the cache's scores
    (`cuts.separating_threshold`): ``score_threshold`` on the candidates' scores,
    ``nms_score_threshold`` on the proposals' objectness."""
    written = dict(params)
    written["score_threshold"] = separating_threshold(params["score_threshold"], cache.entry_score)
    if kind == CacheKind.TWO_STAGE:
        written["nms_score_threshold"] = separating_threshold(params["nms_score_threshold"], cache.row_objectness)
    for name in ("score_threshold", "nms_score_threshold"):
        if name in params and written[name] != params[name]:
            logger.warning("sweep: %s %r is written as %r: a cached score lies where float32 and float64 disagree "
                           "about %r", name, params[name], written[name], params[name])
    return written


def chosen_details(engine: SweepEngine, row: SweepRow, rule: PerClassRule | None,
                   written_threshold: float | None = None) -> tuple[ChosenDetails, PerClassResult | None]:
    """The chosen configuration's evaluation and score curves, and its per-category thresholds
    under ``rule`` (None: not asked) on top of its score threshold as written (default: the
    row's)."""
    started = time.perf_counter()
    key = key_of(engine.kind, row.params)
    dets, matches = engine.capped(key, row.params.get("max_detections"))
    threshold = row.params["score_threshold"]
    cut = engine.score_cut(threshold)
    above = matches.select(matches.scores > cut, np.arange(len(dets)))
    scores = engine.entry_score_exact[dets]
    kept = scores > cut
    names = engine.category_names()
    counted = above.counted[:, 0, 0]
    details = ChosenDetails(
        evaluation=above.evaluate()[0],
        pooled=ScoreCurve.from_detections(above.scores[counted], above.true_positive[counted, 0, 0], above.num_ground_truth),
        curves=tuple(class_curves(above)),
        category_ids=tuple(int(c) for c in engine.matcher.category_ids),
        names=names,
    )
    per_class = None
    if rule is not None:
        category = engine.class_pos[engine.entry_class[dets[kept]]]
        base = threshold if written_threshold is None else written_threshold
        per_class = per_class_thresholds(above, category, scores[kept], rule, base, names, engine.num_images)
    logger.info("sweep: chosen configuration's curves%s in %.2fs", " and per-class thresholds" if rule else "",
                time.perf_counter() - started)
    return details, per_class


@dataclass(frozen=True)
class _EngineSource:
    """What a worker process needs to build the sweep's engine (sent once per executor call)."""

    token: str  # names this sweep in `worker_cache`
    cache: DetectionCache
    ground_truth: GroundTruth
    axes: Mapping[str, tuple[float, ...]]
    kind: CacheKind
    options: Mapping[str, Any]
    first_stage: Mapping[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def build(self) -> SweepEngine:
        return SweepEngine(self.cache, self.ground_truth, self.axes, self.kind, **self.options, first_stage=self.first_stage)


def _engine_rows(source: _EngineSource, keys: list[tuple]) -> dict[tuple, list[SweepRow]]:
    """One executor task: the rows of NMS settings ``keys``, on the engine this process holds for
    the sweep (built from ``source`` on the process's first task of the sweep)."""
    engine = worker_cache(_ENGINE_SLOT, source.token, source.build)
    return {key: engine.rows(key) for key in keys}


def _grid_on_executor(engine: SweepEngine, source: _EngineSource, keys: list[tuple], executor: Executor, progress) -> None:
    """Evaluates every NMS setting of ``keys`` as executor tasks; the rows land in ``engine``."""
    if engine.kind == CacheKind.TWO_STAGE:
        # TensorFlow runs here; the tasks get its results and only use NumPy.
        for nms_iou in sorted({key[1] for key in keys}):
            engine.first_stage(nms_iou)
        # Keys of one first-stage setting share their candidates: keep them in one task.
        tasks = [list(group) for _, group in itertools.groupby(keys, key=lambda key: key[:-1])]
        source = replace(source, first_stage=engine.first_stage_results())
    else:
        if isinstance(executor, ProcessExecutor) and engine.nms_version == "batched":
            engine.walk_input(keys[0])  # shared by every key: prepared once, before the fork
        tasks = [[key] for key in keys]
    done = 0

    def arrived(index: int, rows: dict) -> None:
        nonlocal done
        engine.add_rows(rows)
        done += len(rows)
        if progress is not None:
            progress(done, len(keys))

    # This process, and the processes a `ProcessExecutor` forks, find the prepared engine.
    worker_cache(_ENGINE_SLOT, source.token, lambda: engine)
    try:
        executor.map(_engine_rows, tasks, shared=source, on_result=arrived)
    finally:
        release_worker_cache(_ENGINE_SLOT)


def _coordinate_search(engine: SweepEngine, kind: CacheKind, axes, keys, objective, budget, progress) -> None:
    axes = dict(axes)
    if engine.caps:
        axes["max_detections"] = engine.caps
    if engine.swept_agnostic:
        axes["class_agnostic"] = tuple(sorted({key[-2] for key in keys}))
    names = tuple(axes)
    # Start in the middle of every candidate list (lower middle for even lengths).
    current = {name: axes[name][(len(axes[name]) - 1) // 2] for name in names}

    def row_at(point: Mapping[str, Any]) -> SweepRow:
        key = key_of(kind, point)
        before = len(engine.evaluated)
        rows = engine.rows(key)
        if progress is not None and len(engine.evaluated) > before:
            progress(len(engine.evaluated), len(keys))
        return rows[engine.row_position(point)]

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
