"""A Model Garden Faster R-CNN experiment as the detector, with Model Garden's default
post-processing (``roi_generator.use_batched_nms: false``, ``nms_version: v2``) at
``fasterrcnn_resnetfpn_coco``'s default precisions (bfloat16 validation data, mixed bfloat16): a
short run of its own trainer on its own TFRecords (`conftest.fasterrcnn_trained`), then
``detsearch search-det --experiment``; Model Garden's own evaluation gives the sweep's 12 stats,
each equal as float32, on 6 rows of the table (`garden_cases.verified`), the chosen and the
config's among them, the config's set to IoU thresholds below 0.5 in both stages (where its
tiled NMS is not greedy)."""

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

from tests.models import garden_cases  # noqa: E402
from tests.models.garden_cases import NUM_VAL, verified  # noqa: E402

EXPERIMENT = "fasterrcnn_resnetfpn_coco"


@pytest.fixture
def trained(fasterrcnn_trained):
    """``(data root, --config-file, model_dir)`` of the session's Faster R-CNN."""
    return fasterrcnn_trained


def search(arguments, capsys):
    return garden_cases.search(EXPERIMENT, arguments, capsys)


CONFIG_THRESHOLDS = {"nms_score_threshold": 0.05, "nms_iou_threshold": 0.5, "score_threshold": 0.02, "iou_threshold": 0.3}
OVERRIDE = ("task.model.roi_generator.test_pre_nms_score_threshold=0.05,task.model.roi_generator.test_nms_iou_threshold=0.5,"
            "task.model.detection_generator.pre_nms_score_threshold=0.02,task.model.detection_generator.nms_iou_threshold=0.3")


def test_a_faster_rcnn_at_model_gardens_default_precisions_equals_model_garden(trained, tmp_path, capsys):
    # fasterrcnn_resnetfpn_coco's own validation_data.dtype and runtime.mixed_precision_dtype
    # (bfloat16 both; the shared detector was trained in float32, whose weights mixed precision
    # keeps): the RPN's objectness and the second stage's scores come in bfloat16, and both
    # stages filter them at the thresholds as bfloat16 (0.05 is 0.050048828125 there, 0.3 is
    # 0.30078125). The config's IoU thresholds are below 0.5 in both stages, where the tiled NMS
    # is not greedy.
    import ml_dtypes
    from official.modeling import hyperparams

    from detsearch.detection.cache import read_cache
    from detsearch.detection.sweep.cuts import reduced_threshold
    from detsearch.models.experiment import load_config

    root, config_file, model_dir = trained
    out = tmp_path / "out"
    override = OVERRIDE + ",runtime.mixed_precision_dtype=bfloat16,task.validation_data.dtype=bfloat16"
    code, printed, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                                 "--params-override", override, "--nms-score-thresholds", "0.0,0.3",
                                 "--nms-iou-thresholds", "0.7", "--score-thresholds", "0.05,0.3", "--iou-thresholds", "0.5",
                                 "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["post_processing"] == {
        "nms_version": "v2", "max_detections_per_class": 100, "max_total_detections": 100, "class_agnostic": False,
        "pre_nms_top_k": 5000, "num_proposals": 300, "per_level": True, "proposal_nms": "tiled", "proposal_top_k": 300,
        "max_eval_detections": 100, "score_dtype": "bfloat16"}
    assert summary["config_row"]["params"] == CONFIG_THRESHOLDS
    assert summary["configurations"] == 3 * 2 * 3 * 2 and summary["images"] == NUM_VAL
    rows = verified(summary)["rows"]
    for name in CONFIG_THRESHOLDS:  # the rows spread over every axis
        assert len({row["params"][name] for row in rows}) >= 2, name
    assert summary["config_row"]["map"] > 0 and summary["chosen"]["map"] > 0  # not an empty output
    assert "Model Garden's own evaluation: 6 rows x 12 stats = 72 compared as float32" in printed and "all equal" in printed
    # --verify's Model Garden evaluation is its trainer's: the config's row, from its orbit loop
    # under the policy official.vision.train sets.
    config_row = next(row for row in rows if "config" in row["labels"])
    assert garden_cases.trainer_evaluation(EXPERIMENT, config_file, model_dir, override) == config_row["theirs"]
    cache = read_cache(out / "cache")
    for values in (cache.row_objectness, cache.entry_score):  # the model ran in bfloat16
        values = np.asarray(values, np.float32)
        assert len(values) and (values.astype(ml_dtypes.bfloat16).astype(np.float32) == values).all()
    # thresholds.yaml: the chosen thresholds as Model Garden compares them, read back strictly
    chosen = summary["chosen"]["params"]
    config = hyperparams.override_params_dict(load_config(EXPERIMENT, config_file.split(","), override),
                                              str(out / "thresholds.yaml"), is_strict=True)
    model = config.task.model
    assert (model.roi_generator.test_pre_nms_score_threshold, model.roi_generator.test_nms_iou_threshold,
            model.detection_generator.pre_nms_score_threshold, model.detection_generator.nms_iou_threshold) == (
        reduced_threshold(chosen["nms_score_threshold"], "bfloat16"), chosen["nms_iou_threshold"],
        reduced_threshold(chosen["score_threshold"], "bfloat16"), chosen["iou_threshold"])


@pytest.mark.parametrize("override, message", [
    ("runtime.mixed_precision_dtype=bfloat16,task.model.roi_generator.use_batched_nms=true",
     "runtime.mixed_precision_dtype 'bfloat16' with task.model.roi_generator.use_batched_nms true: Model Garden's first "
     "stage then runs combined_non_max_suppression"),
    ("task.model.detection_generator.nms_version=batched",
     "task.model.detection_generator.nms_version 'batched': a two-stage experiment is reproduced with v2"),
    ("task.model.roi_generator.test_pre_nms_min_size_threshold=2.0",
     "task.model.roi_generator.test_pre_nms_min_size_threshold 2.0: the size filter is not reproduced"),
])
def test_unsupported_faster_rcnn_settings_are_one_line(trained, tmp_path, capsys, override, message):
    root, config_file, model_dir = trained
    code, _, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(tmp_path / "out"),
                           "--params-override", override], capsys)
    assert code == 2 and message in err.strip().splitlines()[-1], err
    assert not (tmp_path / "out").exists()
