"""The HyperSelector: decides hyperparameters from curves. Imports no TensorFlow."""

from detsearch.selector.curves import Curve, LrSchedule, TrialSpec
from detsearch.selector.hyperselector import (
    DEFAULT_LR_RANGE,
    LARGE_MODEL_PARAMETERS,
    HyperSelector,
    LrTest,
    ModelSize,
    SearchResult,
    SelectorConfig,
    Stage,
    check_search_specs,
    model_size_from_parameters,
)
from detsearch.selector.journal import Journal
from detsearch.selector import rules

__all__ = [
    "Curve", "LrSchedule", "TrialSpec", "DEFAULT_LR_RANGE", "LARGE_MODEL_PARAMETERS", "HyperSelector", "LrTest",
    "ModelSize", "SearchResult", "SelectorConfig", "Stage", "check_search_specs", "model_size_from_parameters",
    "Journal", "rules",
]
