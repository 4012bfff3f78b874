"""Choose on some images, confirm on the others.

A threshold tuned on the images it is scored on is optimistic. `split_images` sets a seeded
fraction of the images aside; the sweep chooses on the rest, and `confirm` scores the chosen
configuration on the held-out images: pycocotools' 12 stats on those images, and percentile
bootstrap intervals over them (`detsearch.detection.bootstrap`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from detsearch.detection.cache import DetectionCache
from detsearch.detection.cocoeval import STAT_NAMES, GroundTruth, ragged_arange

__all__ = ["DEFAULT_REPLICATES", "Holdout", "OBJECTIVE_STAT", "check_fraction", "confirm", "split_images", "subset_cache"]

DEFAULT_REPLICATES = 1000
"""Bootstrap replicates of the held-out intervals."""

OBJECTIVE_STAT = {"map": "AP", "ap50": "AP50", "f1": "F1", "map_at_budget": "AP"}
"""The bootstrap figure of each objective."""


@dataclass(frozen=True)
class Holdout:
    """The chosen configuration on held-out images.

    Attributes:
      fraction, seed: how the images were split (`split_images`).
      image_ids: the held-out images, ascending.
      stats: the 12 COCO stats there (`STAT_NAMES` order), pycocotools' numbers.
      objective: the objective's value there.
      chosen_stats, chosen_objective, chosen_num_images: the same figures on the images the
        choice was made on, and their number.
      ci95: percentile-bootstrap 95 % intervals over the held-out images, ``[low, high]`` by
        stat name (AP, AP50, AP75, AR100, F1) and ``objective``.
      replicates: bootstrap replicates.
    """

    fraction: float
    seed: int
    image_ids: tuple[int, ...]
    stats: tuple[float, ...]
    objective: float
    chosen_stats: tuple[float, ...]
    chosen_objective: float
    chosen_num_images: int
    ci95: Mapping[str, tuple[float, float]]
    replicates: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "image_ids": list(self.image_ids),
            "stats": list(self.stats),
            "objective": self.objective,
            "chosen_on": {"num_images": self.chosen_num_images, "stats": list(self.chosen_stats), "objective": self.chosen_objective},
            "ci95": {name: list(interval) for name, interval in self.ci95.items()},
            "replicates": self.replicates,
            "stat_names": list(STAT_NAMES),
        }


def check_fraction(fraction: float) -> float:
    """``fraction`` as a float; ValueError unless it is in (0, 1)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (0.0 < fraction < 1.0):
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction!r}")
    return float(fraction)


def split_images(image_ids, fraction: float, seed: int, ground_truth: GroundTruth | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the images to choose on and of the held-out ones (each ascending).

    ``round(fraction * n)`` images are held out, drawn by ``np.random.default_rng(seed)``.

    Raises:
      ValueError: ``fraction`` outside (0, 1); a split without images, or (with
        ``ground_truth``) without a ground truth box that is not a crowd region.
    """
    fraction = check_fraction(fraction)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    ids = np.asarray(image_ids, np.int64)
    n = len(ids)
    held_count = int(round(fraction * n))
    if held_count == 0 or held_count == n:
        raise ValueError(f"holdout {fraction:g} of {n} images leaves {'no image held out' if held_count == 0 else 'no image to choose on'}")
    order = np.random.default_rng(int(seed)).permutation(n)
    held = np.sort(order[:held_count])
    chosen = np.sort(order[held_count:])
    if ground_truth is not None:
        boxed = np.zeros(len(ground_truth.image_ids), bool)
        boxed[ground_truth.image_index[~ground_truth.crowd]] = True
        has_box = boxed[np.searchsorted(ground_truth.image_ids, ids)]
        for name, positions in (("held-out", held), ("choosing", chosen)):
            if not has_box[positions].any():
                raise ValueError(f"holdout {fraction:g} (seed {seed}): the {name} images ({len(positions)}) have no "
                                 "ground truth box; use another fraction or seed")
    return chosen, held


def subset_cache(cache: DetectionCache, positions: np.ndarray) -> DetectionCache:
    """The cache of the images at ``positions`` (ascending), in that order."""
    positions = np.asarray(positions, np.int64)
    row_offsets = np.asarray(cache.row_offsets, np.int64)
    entry_offsets = np.asarray(cache.entry_offsets, np.int64)
    row_counts = np.diff(row_offsets)[positions]
    entry_counts = np.diff(entry_offsets)[positions]
    rows = ragged_arange(row_offsets[positions], row_counts)
    entries = ragged_arange(entry_offsets[positions], entry_counts)
    new_rows = np.r_[0, np.cumsum(row_counts)]
    shift = np.repeat(row_offsets[positions] - new_rows[:-1], entry_counts)
    meta = dataclasses.replace(cache.meta, image_ids=tuple(cache.meta.image_ids[i] for i in positions),
                               image_sizes=tuple(cache.meta.image_sizes[i] for i in positions))

    def take(array, index):
        return None if array is None else np.asarray(array)[index]

    return DetectionCache.from_arrays(
        meta,
        row_offsets=new_rows,
        row_boxes=take(cache.row_boxes, rows),
        row_objectness=take(cache.row_objectness, rows),
        row_level=take(cache.row_level, rows),
        row_xywh=take(cache.row_xywh, rows),
        entry_offsets=np.r_[0, np.cumsum(entry_counts)],
        entry_row=np.asarray(cache.entry_row, np.int64)[entries] - shift,
        entry_class=take(cache.entry_class, entries),
        entry_score=take(cache.entry_score, entries),
        entry_boxes=take(cache.entry_boxes, entries),
    )


def interval_or_none(values: np.ndarray, level: float) -> tuple[float, float] | None:
    """The percentile interval of the defined (not -1, finite) replicate values, or None."""
    from detsearch.detection.bootstrap import percentile_interval

    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values) & (values != -1)]
    if values.size == 0:
        return None
    low, high = percentile_interval(values, level)
    return (float(low), float(high)) if math.isfinite(low) else None


def confirm(engine, row, objective: str, budget: float | None, *, fraction: float, seed: int, chosen_num_images: int,
            replicates: int = DEFAULT_REPLICATES, level: float = 0.95) -> Holdout:
    """Scores the configuration of ``row`` (chosen on ``chosen_num_images`` other images) with
    ``engine`` (a `SweepEngine` on the held-out images, whose grid is that one configuration)
    and bootstraps it over those images."""
    from detsearch.detection.bootstrap import bootstrap_weights, replicate_stats
    from detsearch.detection.sweep.result import objective_value

    held_row = engine.row(row.params)
    matches = engine.output(engine.grid.key_of(row.params), row.params.get("max_detections")).matches
    cut = engine.score_cut(row.params["score_threshold"])
    weights = bootstrap_weights(engine.num_images, replicates, seed)
    figures = replicate_stats(matches, weights, cut)
    ci95 = {}
    for name, values in figures.items():
        interval = interval_or_none(values, level)
        if interval is not None:
            ci95[name] = interval
    objective_interval = ci95.get(OBJECTIVE_STAT[objective])
    if objective_interval is not None:
        ci95["objective"] = objective_interval
    held_value = objective_value(held_row, objective, budget)
    chosen_value = objective_value(row, objective, budget)
    return Holdout(
        fraction=float(fraction),
        seed=int(seed),
        image_ids=tuple(sorted(int(i) for i in engine.cache.meta.image_ids)),
        stats=held_row.stats,
        objective=None if held_value == -math.inf else held_value,
        chosen_stats=row.stats,
        chosen_objective=None if chosen_value == -math.inf else chosen_value,
        chosen_num_images=int(chosen_num_images),
        ci95=ci95,
        replicates=int(replicates),
    )
