"""The grid sweep over image ranges: a task evaluates NMS settings on a range of images, and
this process merges the ranges' matches and accumulates once.

Why merging is exact: NMS (both stages) and COCO matching look at one image at a time, so a
range's NMS output and matches are the whole cache's restricted to those images. COCO
accumulation is global (per category over all images, by descending score, ties in image
order): the merge puts the ranges' matches back in (image, category, rank) order under a
matcher of all images (`cocoeval.concatenate_matches`) and accumulates them as one. Where a
range needs one NMS run per score threshold (`SweepEngine.exact_prefixes`), the other ranges'
single run stands for each threshold's: cut at the threshold (as every reader of a run cuts
it), it is what their own run at that threshold would give.

A task reads only its images: in this process (and in forked ones) from the sweep's cache
object; on Ray from the cache's directory when the cache was read from one
(`read_cache(path, images=...)`, memory-mapped, that range checked: no copy of the whole cache
through the object store), else from the cache object Ray sends once. Its engine is kept for the
process's next task on the same range (`detsearch.executor.worker_cache`), so tasks go range
by range; where tasks run side by side (Ray, forked processes) one task holds every NMS setting
of a range, so that each range's engine is built once. The first stage of two-stage caches
runs in the tasks too. A setting's rows are made once all ranges answered it, and its arrays
are dropped; the settings go in waves, so that those waiting for ranges fit `_HELD_BYTES`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from detsearch.detection.cache import DetectionCache, read_cache
from detsearch.detection.cocoeval import CocoMatcher, GroundTruth, Matches, concatenate_matches
from detsearch.detection.sweep.engine import KeyOutputs, Output, SweepEngine
from detsearch.detection.sweep.grid import Grid, NmsKey
from detsearch.detection.sweep.settings import NmsBackend, PostProcessing
from detsearch.detection.tide import Evidence
from detsearch.executor import Executor, release_worker_cache, worker_cache

__all__ = ["ShardedSweep", "image_shards"]

logger = logging.getLogger(__name__)

_ENGINE_SLOT = __name__
"""The `worker_cache` slot of the engine a process holds for its current image range."""

_HELD_BYTES = 1 << 30
"""About what the matched detections of the NMS settings still waiting for ranges may take in
this process: `ShardedSweep.run` evaluates the settings in waves that stay under it."""

_BYTES_PER_DETECTION = 150
"""A matched detection in a range's answer: its entry, scores, match flags (`engine.Output`)."""


def image_shards(num_images: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` (at most ``num_images``) contiguous image ranges ``(start, stop)`` of near-equal
    size, in order."""
    count = max(1, min(int(shards), num_images))
    bounds = np.linspace(0, num_images, count + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class _ShardSource:
    """What a task needs to build the engine of an image range (sent once per executor call).

    In this process and in forked ones, ``cache`` is the sweep's cache object. Pickled (to reach
    a Ray worker), a cache read from a directory travels as its ``path`` alone, and the task reads
    its range from there."""

    token: str  # names this sweep in `worker_cache`
    path: str | None  # the cache's directory, or None: a cache made in memory, sent whole
    cache: DetectionCache | None
    ground_truth: GroundTruth
    grid: Grid
    post_processing: PostProcessing
    nms_backend: NmsBackend
    errors: bool

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state["path"] is not None:
            state["cache"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def engine(self, images: tuple[int, int]) -> tuple[SweepEngine, float]:
        """The engine of ``images`` this process holds, and the seconds it took to build now (0 when
        held)."""
        started = time.perf_counter()

        def build() -> SweepEngine:
            part = (self.cache.images(*images) if self.cache is not None
                    else read_cache(self.path, verify=False, images=images))
            return SweepEngine(part, self.ground_truth, self.grid, self.post_processing, nms_backend=self.nms_backend,
                               errors=self.errors)

        engine = worker_cache(_ENGINE_SLOT, (self.token, images), build)
        return engine, time.perf_counter() - started


@dataclass(frozen=True)
class _Part:
    """One task's answer: a range's `KeyOutputs` (entries of the range, matches without their
    matcher), the range's image ids in its matcher's order, and the task's seconds building the
    range's engine (reading the range included) and evaluating."""

    images: tuple[int, int]
    image_ids: np.ndarray
    outputs: KeyOutputs
    build_seconds: float
    work_seconds: float


def _shard_outputs(source: _ShardSource, task: tuple[tuple[int, int], tuple[NmsKey, ...]]) -> list[_Part]:
    images, keys = task
    engine, build_seconds = source.engine(images)
    parts = []
    for key in keys:
        started = time.perf_counter()
        outputs = engine.outputs(key)
        runs = {at: Output(output.dets, output.scores, output.matches.detached(), output.evidence)
                for at, output in outputs.runs.items()}
        parts.append(_Part(images, engine.matcher.image_ids, KeyOutputs(outputs.exact, runs), build_seconds,
                           time.perf_counter() - started))
        build_seconds = 0.0
    return parts


class ShardedSweep:
    """Evaluates NMS settings of a grid on a cache, image range by image range, on an executor.

    Args:
      cache: the cache: tasks read their ranges from ``cache.path`` where it has one, else get
        ``cache`` through the executor.
      ground_truth, grid, post_processing, nms_backend: as `SweepEngine`'s.
      shards: the number of image ranges (at most one per image); None: one where tasks run one
        after the other, else twice the executor's slots.
      executor: where the tasks run.
      token: names this sweep in the workers' `worker_cache`.
      errors: the tasks' engines give TIDE's evidence (`SweepEngine`'s ``errors``).
    """

    def __init__(self, cache: DetectionCache, ground_truth: GroundTruth, grid: Grid,
                 post_processing: PostProcessing, nms_backend: NmsBackend, shards: int | None, executor: Executor,
                 token: str, errors: bool = False):
        self.grid = grid
        self.executor = executor
        slots = executor.slots()
        self.side_by_side = slots > 1  # tasks run at once: a range's settings share a task
        path = None if cache.path is None else os.fspath(cache.path)
        self.source = _ShardSource(token, path, cache, ground_truth, grid, post_processing, nms_backend, errors)
        self.shards = image_shards(cache.num_images(), shards or (2 * slots if self.side_by_side else 1))
        self.matcher = CocoMatcher(ground_truth, image_ids=cache.meta.image_ids,
                                   max_detections=post_processing.max_eval_detections)
        self.entry_offsets = np.asarray(cache.entry_offsets, np.int64)
        # At most this many detections per setting: every image at its cap.
        self.max_detections = cache.num_images() * post_processing.max_total_detections
        self.score_cuts = [post_processing.threshold_cut(t) for t in grid.score_thresholds]

    def run(self, keys: Sequence[NmsKey], on_key: Callable[[NmsKey, KeyOutputs], None]) -> None:
        """Evaluates ``keys``; ``on_key(key, outputs)`` in this process as each key's ranges have all
        answered, with the merged `KeyOutputs` (cache entries, matches under all images)."""
        started = time.perf_counter()
        keys = list(keys)
        if not keys:
            return
        # A setting's answers wait here until its last range answers: in waves of settings whose
        # detections fit `_HELD_BYTES` (one range: each is merged as it answers).
        held = max(self.max_detections, 1) * _BYTES_PER_DETECTION
        size = len(keys) if len(self.shards) == 1 else max(1, _HELD_BYTES // held)
        waves = [keys[i:i + size] for i in range(0, len(keys), size)]
        waiting: dict[NmsKey, list[_Part]] = {key: [] for key in keys}
        seconds = {"build": 0.0, "work": 0.0, "merge": 0.0}
        num_tasks = 0
        for wave in waves:
            # In this process one setting a task (the range's engine is held from task to task,
            # and every setting reports as it is done); where tasks run side by side, every
            # setting of the wave on a range in one task, so that the range's engine is built once.
            per_task = [tuple(wave)] if self.side_by_side else [(key,) for key in wave]
            tasks = [(images, group) for images in self.shards for group in per_task]
            num_tasks += len(tasks)

            def arrived(index: int, parts: list[_Part], tasks=tasks) -> None:
                for key, part in zip(tasks[index][1], parts):
                    waiting[key].append(part)
                    seconds["build"] += part.build_seconds
                    seconds["work"] += part.work_seconds
                    if len(waiting[key]) == len(self.shards):
                        merge_started = time.perf_counter()
                        on_key(key, self.merge(waiting.pop(key)))
                        seconds["merge"] += time.perf_counter() - merge_started

            self.executor.map(_shard_outputs, tasks, shared=self.source, on_result=arrived, keep=False)
        logger.info("sweep: %d tasks (%d NMS settings x %d image ranges, %d waves) in %.2fs: in the tasks %.2fs "
                    "building engines and %.2fs evaluating; here %.2fs merging and accumulating",
                    num_tasks, len(keys), len(self.shards), len(waves), time.perf_counter() - started, seconds["build"],
                    seconds["work"], seconds["merge"])

    def outputs(self, key: NmsKey) -> KeyOutputs:
        """The merged `KeyOutputs` of one NMS setting, evaluated again (`run` keeps none; the
        engine of the range a process evaluated last is still held, see `close`)."""
        found = []
        self.run([key], lambda _, outputs: found.append(outputs))
        return found[0]

    def close(self) -> None:
        """Drops the engine this process holds (worker processes drop theirs on their next
        sweep's first task)."""
        release_worker_cache(_ENGINE_SLOT)

    def merge(self, parts: Sequence[_Part]) -> KeyOutputs:
        """One `KeyOutputs` of every range's (`shards` module docstring)."""
        parts = sorted(parts, key=lambda part: part.images)
        positions = [self.matcher.image_positions(part.image_ids) for part in parts]
        exact = all(part.outputs.exact for part in parts)
        runs = {}
        for cap in self.grid.caps or (None,):
            if exact:
                runs[cap, None] = self._concatenate(parts, positions, [part.outputs.runs[cap, None] for part in parts])
                continue
            # Some range ran NMS at each threshold; the others' single run holds every threshold's
            # output once cut there (`KeyOutputs.at`: the rows and the chosen details cut it).
            for run_at in self.grid.score_thresholds:
                outputs = [part.outputs.runs[cap, None if part.outputs.exact else run_at] for part in parts]
                runs[cap, run_at] = self._concatenate(parts, positions, outputs)
        return KeyOutputs(exact, runs)

    def _concatenate(self, parts: Sequence[_Part], positions: Sequence[np.ndarray], outputs: Sequence[Output]) -> Output:
        starts = np.cumsum([0] + [len(output.dets) for output in outputs])
        dets = np.concatenate([output.dets + self.entry_offsets[part.images[0]] for part, output in zip(parts, outputs)])
        scores = np.concatenate([output.scores for output in outputs])
        matches: Matches = concatenate_matches(
            self.matcher, [(output.matches, where, int(start)) for output, where, start in zip(outputs, positions, starts)])
        evidence = (None if outputs[0].evidence is None
                    else Evidence.concatenate([output.evidence for output in outputs]))
        return Output(dets, scores, matches, evidence)
