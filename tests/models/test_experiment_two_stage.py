"""A Model Garden Faster R-CNN experiment as the detector, with Model Garden's default
post-processing (``roi_generator.use_batched_nms: false``, ``nms_version: v2``): a short run of
its own trainer on its own TFRecords, then ``detsearch search-det --experiment``; Model Garden's
own evaluation gives the sweep's 12 stats at the chosen thresholds and at the config's, set to
IoU thresholds below 0.5 in both stages (where its tiled NMS is not greedy)."""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

tf = pytest.importorskip("tensorflow")

from detsearch import cli  # noqa: E402
from detsearch.datasets import demo  # noqa: E402

EXPERIMENT = "fasterrcnn_resnetfpn_coco"

CONFIG = """\
runtime: {{distribution_strategy: one_device, mixed_precision_dtype: float32}}
task:
  init_checkpoint: ''
  annotation_file: {root}/instances_val.json
  model:
    num_classes: 11
    input_size: [128, 128, 3]
    min_level: 2
    max_level: 5
    include_mask: false
    anchor: {{num_scales: 1, aspect_ratios: [0.5, 1.0, 2.0], anchor_size: 4.0}}
    backbone: {{type: resnet, resnet: {{model_id: 18, depth_multiplier: 0.25}}}}
    decoder: {{type: fpn, fpn: {{num_filters: 32}}}}
    rpn_head: {{num_convs: 1, num_filters: 32}}
    detection_head: {{num_convs: 0, num_filters: 32, num_fcs: 1, fc_dims: 128}}
    roi_sampler: {{num_sampled_rois: 128}}
    roi_generator: {{test_pre_nms_top_k: 300, test_num_proposals: 300}}
    norm_activation: {{norm_momentum: 0.99}}
  train_data:
    input_path: {root}/tfrecords/train*
    global_batch_size: 8
    dtype: float32
    shuffle_buffer_size: 32
    parser: {{aug_rand_hflip: false, aug_scale_min: 1.0, aug_scale_max: 1.0, rpn_match_threshold: 0.5}}
  validation_data: {{input_path: '{root}/tfrecords/val*', global_batch_size: 8, dtype: float32, drop_remainder: false}}
trainer:
  train_steps: 100
  validation_steps: -1
  validation_interval: 100
  steps_per_loop: 50
  summary_interval: 50
  checkpoint_interval: 100
  optimizer_config:
    learning_rate: {{type: constant, constant: {{learning_rate: 0.02}}}}
    warmup: {{type: linear, linear: {{warmup_steps: 10, warmup_learning_rate: 0.001}}}}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo as TFRecords (Model Garden's create_coco_tf_record), a Faster R-CNN config and a
    model_dir trained by Model Garden's own train_lib.run_experiment."""
    from official.core import task_factory, train_lib

    from detsearch.models.experiment import load_config

    root = tmp_path_factory.mktemp("garden_frcnn")
    data = root / "demo"
    demo.build_demo(data, num_train=48, num_val=12, image_size=128, seed=3)
    (data / "tfrecords").mkdir()
    for split in ("train", "val"):
        done = subprocess.run([sys.executable, "-m", "official.vision.data.create_coco_tf_record",
                               f"--image_dir={data / split}", f"--object_annotations_file={data / f'instances_{split}.json'}",
                               f"--output_file_prefix={data / 'tfrecords' / split}", "--num_shards=1", "--num_processes=0"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    config_file = root / "experiment.yaml"
    config_file.write_text(CONFIG.format(root=data))
    config = load_config(EXPERIMENT, [config_file])
    model_dir = root / "model_dir"
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        task = task_factory.get_task(config.task, logging_dir=str(model_dir))
    train_lib.run_experiment(distribution_strategy=strategy, task=task, mode="train", params=config, model_dir=str(model_dir))
    return root, config_file, model_dir


def search(arguments, capsys):
    code = cli.main(["search-det", "--experiment", EXPERIMENT, *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


CONFIG_THRESHOLDS = {"nms_score_threshold": 0.05, "nms_iou_threshold": 0.5, "score_threshold": 0.02, "iou_threshold": 0.3}
OVERRIDE = ("task.model.roi_generator.test_pre_nms_score_threshold=0.05,task.model.roi_generator.test_nms_iou_threshold=0.5,"
            "task.model.detection_generator.pre_nms_score_threshold=0.02,task.model.detection_generator.nms_iou_threshold=0.3")


def test_a_faster_rcnn_experiment_equals_model_garden(trained, tmp_path, capsys):
    from official.modeling import hyperparams

    from detsearch.models.experiment import load_config

    root, config_file, model_dir = trained
    out = tmp_path / "out"
    code, printed, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                                 "--params-override", OVERRIDE, "--nms-score-thresholds", "0.0", "--nms-iou-thresholds",
                                 "0.7", "--score-thresholds", "0.05", "--iou-thresholds", "0.5,0.6", "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nms"] == {"nms_version": "v2", "pre_nms_top_k": 5000, "num_proposals": 300, "per_level": True,
                              "proposal_nms": "tiled", "proposal_top_k": 300}
    assert summary["model_garden_default"]["params"] == CONFIG_THRESHOLDS
    assert summary["configurations"] == 2 * 2 * 2 * 3
    assert summary["model_garden_max_abs_diff"]["chosen"] <= 1e-6
    assert summary["model_garden_max_abs_diff"]["config"] <= 1e-6
    assert summary["model_garden_default"]["map"] > 0  # the proof is not about an empty output
    chosen = summary["chosen"]["params"]
    config = hyperparams.override_params_dict(load_config(EXPERIMENT, [config_file]), str(out / "thresholds.yaml"),
                                              is_strict=True)
    model = config.task.model
    assert (model.roi_generator.test_pre_nms_score_threshold, model.roi_generator.test_nms_iou_threshold,
            model.detection_generator.pre_nms_score_threshold, model.detection_generator.nms_iou_threshold) == (
        chosen["nms_score_threshold"], chosen["nms_iou_threshold"], chosen["score_threshold"], chosen["iou_threshold"])
    assert "Model Garden's own evaluation: 12 stats max |diff|" in printed


@pytest.mark.parametrize("override, message", [
    ("task.model.include_mask=true", "task.model.include_mask true: Mask R-CNN's masks are not reproduced"),
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
