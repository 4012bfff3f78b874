"""Mask R-CNN's boxes: Model Garden's ``maskrcnn_resnetfpn_coco`` with ``include_mask: true``,
trained by its own trainer on its converter's TFRecords with masks (each demo box as a polygon),
then ``detsearch search-det --experiment``: the box thresholds swept, Model Garden's own
evaluation (its task's validation_step and COCOEvaluator, masks included) giving the sweep's box
stats over every area (AP, AP50, AP75, AR1, AR10, AR100), each equal as float32; the six of an
area range are not compared, since Model Garden's Mask R-CNN evaluator sizes each detection by
its mask. The masks are not evaluated, and the run says so."""

import json

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

from tests.models import garden_cases  # noqa: E402
from tests.models.garden_cases import verified  # noqa: E402

EXPERIMENT = "maskrcnn_resnetfpn_coco"
MASKS = """\
task:
  model:
    include_mask: true
    mask_head: {num_convs: 1, num_filters: 16, upsample_factor: 2}
    mask_sampler: {num_sampled_masks: 32}
    mask_roi_aligner: {crop_size: 14}
"""


@pytest.fixture(scope="module")
def mask_trained(tmp_path_factory, garden_data):
    """The shared demo's images and boxes, each box also its polygon mask, as Model Garden's
    TFRecords with masks; Model Garden's Mask R-CNN trained 100 steps on them."""
    root = tmp_path_factory.mktemp("maskrcnn")
    data = root / "demo"
    (data / "tfrecords").mkdir(parents=True)
    for split in ("train", "val"):
        coco = json.loads((garden_data / "demo" / f"instances_{split}.json").read_text())
        for annotation in coco["annotations"]:
            x, y, w, h = annotation["bbox"]
            annotation["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        (data / f"instances_{split}.json").write_text(json.dumps(coco))
        garden_cases.convert_records(data, split, data / "tfrecords" / split, image_dir=garden_data / "demo" / split,
                                     include_masks=True)
    return garden_cases.train_experiment(root, root, EXPERIMENT, "fasterrcnn_resnet18_demo", steps=100,
                                         extra_config=MASKS)


def test_mask_rcnn_boxes_equal_model_garden(mask_trained, tmp_path, capsys):
    root, config_file, model_dir = mask_trained
    out = tmp_path / "out"
    code, printed, err = garden_cases.search(EXPERIMENT, [
        "--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
        "--nms-score-thresholds", "0.0", "--nms-iou-thresholds", "0.7", "--score-thresholds", "0.05,0.3",
        "--iou-thresholds", "0.5,0.6", "--verify-rows", "4", "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rows = verified(summary, rows=4)["rows"]
    # Model Garden's Mask R-CNN evaluator sizes each detection by its mask: the six stats of an
    # area range are not compared; AP, AP50, AP75 and the three ARs over every area are.
    assert all(row["not_compared"] == ["APs", "APm", "APl", "ARs", "ARm", "ARl"] for row in rows)
    assert "not compared: APs, APm, APl, ARs, ARm, ARl: Model Garden's Mask R-CNN evaluator sizes" in printed
    assert summary["masks"] == "not evaluated" and "masks: not evaluated" in printed
