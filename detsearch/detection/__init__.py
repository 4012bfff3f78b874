"""Detection post-processing search: box formats, NMS, COCO evaluation and the threshold sweep.

The main path: `sweep_thresholds` (= `detsearch.detection.sweep.sweep`) on a
`detsearch.detection.cache.DetectionCache`, with the experiment's `PostProcessing`. Importing this package does not import TensorFlow
(the TF-op functions import it when called) nor pycocotools (the test oracle,
`detsearch.detection.pycoco`, imports it when called).
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
# The sweep's entry point is exported as `sweep_thresholds`: a function named `sweep` here would
# hide the package `detsearch.detection.sweep`. Its oracle, `sweep.sweep_reference`, is for tests.
from detsearch.detection.sweep import (OBJECTIVES, STRATEGIES, NmsVersion, PostProcessing, ProposalNms, SweepResult,
                                      SweepRow, objective_value, select_best)
from detsearch.detection.sweep import sweep as sweep_thresholds
