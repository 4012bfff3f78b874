"""What a sweep returns: one `SweepRow` per configuration, the `SweepResult`, and the objectives
that choose among rows (pure functions of the rows)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from detsearch.detection.cache import CacheKind
from detsearch.detection.cocoeval import STAT_NAMES
from detsearch.params import PARAM_NAMES, ParamSpec

__all__ = [
    "DEFAULT_TOLERANCE",
    "OBJECTIVES",
    "STRATEGIES",
    "SweepResult",
    "SweepRow",
    "check_objective",
    "check_tolerance",
    "make_row",
    "objective_value",
    "row_sort_key",
    "select_best",
    "thresholds_of",
]

OBJECTIVES = ("map", "ap50", "f1", "map_at_budget")
"""``map``: AP@[.5:.95] (default); ``ap50``: AP@.5; ``f1``: pooled F1 at IoU 0.5 of the
configuration's own detections; ``map_at_budget``: AP@[.5:.95] among configurations with
mean detections per image <= budget."""
DEFAULT_TOLERANCE = 0.001
"""How far below the best objective value the chosen configuration may be: among the
configurations within it, the one with the fewest detections per image is chosen. 0.001 is
the last digit pycocotools prints (AP 0.505); measured in docs/operating_points.md
(``tools/bench_operating_points.py --only tolerance``)."""
STRATEGIES = ("grid", "coordinate")
"""``grid``: every combination; ``coordinate``: one parameter at a time, the others held,
until a full round changes nothing (for large grids)."""


@dataclass(frozen=True)
class SweepRow:
    """One configuration's outcome.

    Attributes:
      params: thresholds by MoXing name (`PARAM_NAMES` order), then ``max_detections`` and
        ``class_agnostic`` when they were swept (`grid.EXTRA_AXES`).
      stats: the 12 COCO stats in pycocotools order (`cocoeval.STAT_NAMES`).
      recall: AR@100 (``stats[8]``).
      ap50: AP@.5 (``stats[1]``).
      dets_per_image: mean detections per image after NMS.
      f1: F1 at IoU 0.5 (area all, 100 detections, categories pooled, crowd and ignored boxes
        excluded) of this configuration's detections.
      f1_max: the best F1 over score cuts at or above this configuration's threshold.
      f1_max_score: the lowest score kept at that cut (keep ``score >= f1_max_score``), None
        without detections.
      errors: TIDE's error anatomy of this configuration's detections
        (`detsearch.detection.tide.TideErrors`), or None (a sweep without errors).
    """

    params: Mapping[str, float]
    stats: tuple[float, ...]
    recall: float
    ap50: float
    dets_per_image: float
    f1: float
    f1_max: float
    f1_max_score: float | None
    errors: Any = None

    @property
    def map(self) -> float:
        return self.stats[0]

    def to_dict(self, objective: float | None = None) -> dict[str, Any]:
        """The row as JSON types; ``objective``: its value under the sweep's objective (None:
        over the budget)."""
        return {
            "params": dict(self.params),
            "objective": objective,
            "stats": list(self.stats),
            "recall": self.recall,
            "ap50": self.ap50,
            "dets_per_image": self.dets_per_image,
            "f1": self.f1,
            "f1_max": self.f1_max,
            "f1_max_score": self.f1_max_score,
            **({} if self.errors is None else {"errors": self.errors.to_dict()}),
        }


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep.

    Attributes:
      kind: the cache's `CacheKind` (a ``str``: ``"one_stage"`` or ``"two_stage"``).
      objective: the objective name; ``budget`` its detections-per-image budget (or None).
      strategy: ``"grid"`` or ``"coordinate"``.
      best: the chosen thresholds as written (thresholds.yaml, exports) as a `ParamSpec`
        (``best_params`` as a dict, with ``max_detections`` / ``class_agnostic`` when swept).
        Score thresholds are separating (`cuts.separating_threshold` on the cache's scores):
        ``score > t`` keeps the chosen row's candidates in float32 and in float64. That is the
        grid's value unless a cached score lies where the two precisions disagree about it.
      best_row: the chosen configuration's `SweepRow` (`select_best` with ``tolerance``).
      table: every evaluated configuration, ordered by parameters.
      num_images: images evaluated (the images it chose on, with a holdout).
      tolerance: the objective the choice may give up for fewer detections (`select_best`).
      top_row: the configuration with the highest objective value (tolerance 0).
      per_class: per-category score thresholds on top of ``best_row``
        (`detsearch.detection.sweep.per_class.PerClassResult`), or None.
      holdout: the choice confirmed on held-out images
        (`detsearch.detection.sweep.holdout.Holdout`), or None.
      max_eval_detections: COCO's ``maxDets[2]`` the rows were evaluated at (``stats[8]`` is AR
        at it; `PostProcessing.max_eval_detections`).
      chosen: the chosen configuration's evaluation and score curves, for plots
        (`detsearch.detection.sweep.per_class.ChosenDetails`); not written to JSON.
    """

    kind: CacheKind
    objective: str
    budget: float | None
    strategy: str
    best: ParamSpec
    best_row: SweepRow
    table: tuple[SweepRow, ...]
    num_images: int
    tolerance: float = 0.0
    top_row: SweepRow | None = None
    per_class: Any = None
    holdout: Any = None
    max_eval_detections: int = 100
    chosen: Any = field(default=None, repr=False, compare=False)

    @property
    def best_params(self) -> dict[str, Any]:
        """The chosen row's parameters with the thresholds as written (`best`)."""
        return {**self.best_row.params, **self.best.to_dict()}

    def objective_of(self, row: SweepRow) -> float | None:
        """``row``'s objective value; None when it breaks the budget."""
        value = objective_value(row, self.objective, self.budget)
        return None if value == -math.inf else value

    def to_dict(self) -> dict[str, Any]:
        top = self.top_row or self.best_row
        return {
            "kind": str(self.kind),
            "objective": self.objective,
            "budget": self.budget,
            "tolerance": self.tolerance,
            "strategy": self.strategy,
            "best": self.best_params,
            "best_row": self.best_row.to_dict(self.objective_of(self.best_row)),
            "top_row": top.to_dict(self.objective_of(top)),
            "stat_names": list(STAT_NAMES),
            "max_eval_detections": self.max_eval_detections,
            "num_images": self.num_images,
            "table": [row.to_dict(self.objective_of(row)) for row in self.table],
            **({} if self.per_class is None else self.per_class.to_dict()),
            **({} if self.holdout is None else {"holdout": self.holdout.to_dict()}),
            **self._diagnostics(),
        }

    def _diagnostics(self) -> dict[str, Any]:
        """The chosen configuration's confusion matrix and calibration (a sweep with errors)."""
        if self.chosen is None or self.chosen.confusion is None:
            return {}
        calibration = self.chosen.calibration
        return {"confusion": self.chosen.confusion.to_dict(),
                "calibration": None if calibration is None else calibration.to_dict()}

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


def select_best(rows: Sequence[SweepRow], objective: str, budget: float | None = None, tolerance: float = 0.0) -> SweepRow:
    """The chosen row: among the rows whose objective value is ``>= top - tolerance`` (``top``
    the highest value), the one with the fewest detections per image; ties go to the higher
    value, then to the earlier row. With ``tolerance`` 0 that is the highest value, ties to
    fewer detections per image.

    Raises:
      ValueError: no row (or, for ``map_at_budget``, no row within the budget); a tolerance that
        is not a finite number >= 0.
    """
    check_objective(objective, budget)
    check_tolerance(tolerance)
    values = [objective_value(row, objective, budget) for row in rows]
    feasible = [(value, row) for value, row in zip(values, rows) if value != -math.inf]
    best, best_key = None, None
    if feasible:
        top = max(value for value, _ in feasible)
        for value, row in feasible:
            if value < top - tolerance:
                continue
            key = (-row.dets_per_image, value)
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


def check_tolerance(tolerance: float) -> None:
    """Raises ValueError unless ``tolerance`` is a finite number >= 0."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0 (objective units, e.g. 0.001 AP), got {tolerance!r}")


def check_objective(objective: str, budget: float | None) -> None:
    """Raises ValueError unless ``objective`` is one of `OBJECTIVES` with the budget it needs."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known objectives: {', '.join(OBJECTIVES)}")
    if objective == "map_at_budget":
        if budget is None or isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
            raise ValueError(f"objective map_at_budget needs a finite budget >= 0 (detections per image), got {budget!r}")


def make_row(params, stats, num_detections: int, num_images: int, f1, f1_max, f1_max_score, errors=None) -> SweepRow:
    """A `SweepRow` from one configuration's evaluation (``stats``: the 12 COCO stats)."""
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
        errors=errors,
    )


def row_sort_key(row: SweepRow) -> tuple:
    """Orders a table by its thresholds in `PARAM_NAMES` order, then the extra axes."""
    return tuple(row.params[name] for name in PARAM_NAMES + ("max_detections", "class_agnostic", "soft_nms_sigma") if name in row.params)


def thresholds_of(params: Mapping[str, Any]) -> ParamSpec:
    """The MoXing thresholds of a row's ``params`` as a `ParamSpec`."""
    return ParamSpec(**{name: value for name, value in params.items() if name in PARAM_NAMES})
