"""Post-processing threshold sweep on cached raw predictions: NMS + COCO mAP per configuration.

- `result`: `SweepRow`, `SweepResult`, the objectives (`OBJECTIVES`, `objective_value`) and the
  choice (`select_best`: the fewest detections within `DEFAULT_TOLERANCE` of the best);
- `grid`: candidate axes, NMS settings and the checks that a cache can answer them;
- `engine`: `SweepEngine`, one NMS walk and one matching pass per NMS setting (the argument
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
from detsearch.detection.sweep.strategies import NMS_BACKENDS, ProgressCallback, sweep

__all__ = [
    "DEFAULT_TOLERANCE",
    "NMS_BACKENDS",
    "OBJECTIVES",
    "PER_CLASS_RULES",
    "ClassThreshold",
    "Holdout",
    "PerClassResult",
    "PerClassRule",
    "STRATEGIES",
    "ProgressCallback",
    "SweepResult",
    "SweepRow",
    "objective_value",
    "pycocotools_stats",
    "select_best",
    "split_images",
    "sweep",
    "sweep_reference",
]
