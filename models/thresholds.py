"""The MoXing threshold names of a detector and the Model Garden config fields they set.

`THRESHOLD_FIELDS` maps each name to its (config section, field); `apply_thresholds` returns a
config with thresholds set, `read_thresholds` reads them back.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
from detsearch.detection.cache import CacheKind

__all__ = ["MAX_NUM_DETECTIONS", "THRESHOLD_FIELDS", "apply_thresholds", "read_thresholds"]

MAX_NUM_DETECTIONS = 100
"""Model Garden ``detection_generator.max_num_detections``: the per-class and the total cap of
the batched NMS (``combined_non_max_suppression(max_output_size_per_class=100,
max_total_size=100)``), the same caps as the sweep's defaults."""

THRESHOLD_FIELDS: Mapping[str, Mapping[str, tuple[str, str]]] = {
    CacheKind.ONE_STAGE: {
        "score_threshold": ("detection_generator", "pre_nms_score_threshold"),
        "iou_threshold": ("detection_generator", "nms_iou_threshold"),
    },
    CacheKind.TWO_STAGE: {
        "nms_score_threshold": ("roi_generator", "test_pre_nms_score_threshold"),
        "nms_iou_threshold": ("roi_generator", "test_nms_iou_threshold"),
        "score_threshold": ("detection_generator", "pre_nms_score_threshold"),
        "iou_threshold": ("detection_generator", "nms_iou_threshold"),
    },
}
"""MoXing threshold name -> (Model Garden model config section, field), per detector kind.

The semantics are Model Garden's with ``nms_version='batched'`` / ``use_batched_nms=True``
(``tf.image.combined_non_max_suppression``): a candidate is kept when its score is
``> score_threshold`` (objectness ``> nms_score_threshold`` in the first stage), and suppressed
when its IoU with a kept box of its class (first stage: of its FPN level) is ``> iou_threshold``,
both compared in float32; exactly `detsearch.detection.nms`'s semantics. One exception: Model
Garden skips first-stage NMS altogether when ``nms_iou_threshold`` is 0 (docs/models.md)."""




def apply_thresholds(model_config, kind: str, thresholds: Mapping[str, float] | None):
    """A copy of a Model Garden model config with MoXing-named thresholds set.

    Args:
      model_config: ``official.vision.configs.retinanet.RetinaNet`` (kind ``"one_stage"``) or
        ``official.vision.configs.maskrcnn.MaskRCNN`` (``"two_stage"``); not modified.
      kind: ``"one_stage"`` or ``"two_stage"``.
      thresholds: MoXing name -> value in [0, 1] (see `THRESHOLD_FIELDS`); None or missing names
        keep the config's values.

    Raises:
      ValueError: an unknown kind, a name that is not a threshold of that kind, a value outside
        [0, 1].
    """
    if kind not in THRESHOLD_FIELDS:
        raise ValueError(f"kind must be one of {sorted(THRESHOLD_FIELDS)}, got {kind!r}")
    fields = THRESHOLD_FIELDS[kind]
    config = copy.deepcopy(model_config)
    for name, value in (thresholds or {}).items():
        if name not in fields:
            raise ValueError(f"{name!r} is not a {kind} threshold; known: {', '.join(fields)}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        section, field = fields[name]
        setattr(getattr(config, section), field, value)
    return config


def read_thresholds(model_config, kind: str) -> dict[str, float]:
    """The MoXing-named thresholds a Model Garden model config holds (`THRESHOLD_FIELDS`)."""
    if kind not in THRESHOLD_FIELDS:
        raise ValueError(f"kind must be one of {sorted(THRESHOLD_FIELDS)}, got {kind!r}")
    return {
        name: float(getattr(getattr(model_config, section), field))
        for name, (section, field) in THRESHOLD_FIELDS[kind].items()
    }

