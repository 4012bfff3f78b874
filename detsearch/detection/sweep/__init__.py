"""Post-processing threshold sweep on cached raw predictions: NMS + COCO mAP per configuration.

- `result`: `SweepRow`, `SweepResult`, the objectives (`OBJECTIVES`, `objective_value`) and the
  choice (`select_best`: the fewest detections within `DEFAULT_TOLERANCE` of the best);
- `settings`: `PostProcessing`, what one experiment's post-processing runs (`NmsVersion`,
  `ProposalNms`, caps, top-k, proposals), checked once against a cache (`PostProcessing.checked`;
  the score floor's relation to the grid: `check_score_floor`);
- `grid`: the configurations (`Grid`: the thresholds of a `ParamSpec` and the
  ``max_detections`` / ``class_agnostic`` axes) and their NMS settings (`NmsKey`);
- `suppressors`: the NMS implementations behind one protocol, `Suppressor` (greedy walk, its
  reference, Model Garden's v2, the first stages);
- `engine`: `SweepEngine`, one NMS pass and one matching pass per NMS setting (the argument
  why a whole score axis costs one pass is in its docstring);
- `strategies`: `sweep`, the entry point (grid over an executor, or coordinate search);
- `per_class`: per-category score thresholds on top of the choice (`PerClassRule`);
- `holdout`: choose on some images, confirm on the others (`Holdout`, `split_images`);
- `_reference`: `sweep_reference`, the slow, obviously correct oracle the tests compare with.

``import detsearch.detection.sweep as m; m.sweep(...)`` is the main path;
`detsearch.detection.sweep_thresholds` is the same function. `pycocotools_stats` is
`detsearch.detection.pycoco.pycocotools_stats`, here for the tests that compare with it.
"""

from detsearch.detection.pycoco import pycocotools_stats
from detsearch.detection.sweep._reference import sweep_reference
from detsearch.detection.sweep.holdout import Holdout, split_images
from detsearch.detection.sweep.per_class import PER_CLASS_RULES, ClassThreshold, PerClassResult, PerClassRule
from detsearch.detection.sweep.result import (
    DEFAULT_TOLERANCE,
    OBJECTIVES,
    STRATEGIES,
    SweepResult,
    SweepRow,
    objective_value,
    select_best,
)
from detsearch.detection.sweep.settings import NmsBackend, NmsVersion, PostProcessing, ProposalNms, check_score_floor
from detsearch.detection.sweep.strategies import ProgressCallback, sweep
from detsearch.detection.sweep.suppressors import Suppressor

__all__ = [
    "DEFAULT_TOLERANCE",
    "OBJECTIVES",
    "PER_CLASS_RULES",
    "ClassThreshold",
    "Holdout",
    "NmsBackend",
    "NmsVersion",
    "PerClassResult",
    "PerClassRule",
    "PostProcessing",
    "ProposalNms",
    "STRATEGIES",
    "ProgressCallback",
    "Suppressor",
    "SweepResult",
    "SweepRow",
    "check_score_floor",
    "objective_value",
    "pycocotools_stats",
    "select_best",
    "split_images",
    "sweep",
    "sweep_reference",
]
