"""Detection post-processing search: box formats, NMS, COCO evaluation and the threshold sweep.

Importing this package does not import TensorFlow (the TF-op functions import it when called)
nor pycocotools (the test oracle, used by `sweep_reference` only).
"""

from detsearch.detection.boxes import area_yxyx, check_yxyx, iou_xywh, iou_yxyx, xywh_to_yxyx, yxyx_to_xywh
from detsearch.detection.cocoeval import (
    STAT_NAMES,
    CocoEvaluation,
    CocoMatcher,
    GroundTruth,
    evaluate_bbox,
    evaluate_results,
    load_ground_truth,
)
from detsearch.detection.nms import (
    class_agnostic_nms_batched,
    class_agnostic_nms_reference,
    class_agnostic_nms_tf,
    nms_reference,
    nms_tf,
    per_class_nms_batched,
    per_class_nms_reference,
    per_class_nms_tf,
)
# The function `sweep.sweep` is not re-exported: the name would hide the module
# `detsearch.detection.sweep` (``import detsearch.detection.sweep as m`` would bind the function).
from detsearch.detection.sweep import OBJECTIVES, STRATEGIES, SweepResult, SweepRow, sweep_reference
