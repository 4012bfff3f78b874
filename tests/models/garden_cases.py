"""Model Garden experiments trained for the tests: the demo as TFRecords (Model Garden's own
create_coco_tf_record), a shipped demo config with the paths and a short schedule overridden,
and a model_dir written by Model Garden's own trainer (the walkthrough of docs/garden.md, small).
`tests/models/conftest.py` builds them once per session."""

import subprocess
import sys
from pathlib import Path

from detsearch.datasets import demo

NUM_TRAIN = 48
NUM_VAL = 32
"""The shared demo: training and validation images (128 px canvases, seed 3)."""

OVERRIDE = """\
task:
  annotation_file: {data}/instances_val.json
  train_data: {{input_path: '{data}/tfrecords/train*', shuffle_buffer_size: 32}}
  validation_data: {{input_path: '{data}/tfrecords/val*'}}
trainer:
  train_steps: {steps}
  validation_interval: {steps}
  checkpoint_interval: {steps}
  steps_per_loop: 50
  summary_interval: 50
  optimizer_config: {{warmup: {{linear: {{warmup_steps: 10}}}}}}
"""


def convert_records(data: Path, split: str, prefix: Path, num_shards: int = 1, *, image_dir: Path | None = None,
                    include_masks: bool = False) -> None:
    """``data/split`` (images, or ``image_dir``'s, and ``instances_SPLIT.json``) as TFRecords
    ``prefix-*`` by Model Garden's own converter (with the annotations' masks: ``include_masks``)."""
    done = subprocess.run([sys.executable, "-m", "official.vision.data.create_coco_tf_record",
                           f"--image_dir={image_dir or data / split}",
                           f"--object_annotations_file={data / f'instances_{split}.json'}",
                           f"--output_file_prefix={prefix}", f"--num_shards={num_shards}", "--num_processes=0",
                           f"--include_masks={str(include_masks).lower()}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def build_records(root: Path, *, num_train: int = NUM_TRAIN, num_val: int = NUM_VAL) -> Path:
    """Writes ``root/demo``: ``num_train`` training and ``num_val`` validation images, their COCO
    json and TFRecords (``root/demo/tfrecords/{train,val}*``). Returns ``root``."""
    data = root / "demo"
    demo.build_demo(data, num_train=num_train, num_val=num_val, image_size=128, seed=3)
    (data / "tfrecords").mkdir()
    for split in ("train", "val"):
        convert_records(data, split, data / "tfrecords" / split)
    return root


def train_experiment(root: Path, data_root: Path, experiment: str, shipped: str, *, steps: int,
                     extra_config: str | None = None):
    """Writes ``root/override.yaml`` (the records of ``data_root/demo``, `build_records`;
    ``steps`` training steps) and trains the shipped config ``shipped`` with it (then with
    ``extra_config``, YAML, as ``root/extra.yaml``) by ``train_lib.run_experiment`` into
    ``root/model_dir``. Returns ``(data_root, "SHIPPED,override.yaml[,extra.yaml]" for
    --config-file, model_dir)``."""
    import tensorflow as tf
    from official.core import task_factory, train_lib

    from detsearch.models.experiment import load_config

    override = root / "override.yaml"
    override.write_text(OVERRIDE.format(data=data_root / "demo", steps=steps))
    config_files = f"{shipped},{override}"
    if extra_config is not None:
        (root / "extra.yaml").write_text(extra_config)
        config_files += f",{root / 'extra.yaml'}"
    config = load_config(experiment, config_files.split(","))
    model_dir = root / "model_dir"
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        task = task_factory.get_task(config.task, logging_dir=str(model_dir))
    train_lib.run_experiment(distribution_strategy=strategy, task=task, mode="train", params=config, model_dir=str(model_dir))
    return data_root, config_files, model_dir


def search(experiment: str, arguments, capsys):
    """``detsearch search-det --experiment experiment ARGUMENTS``: (exit code, stdout, stderr)."""
    from detsearch import cli

    code = cli.main(["search-det", "--experiment", experiment, *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def trainer_evaluation(experiment: str, config_files: str, model_dir, params_override: str | None = None) -> list[float]:
    """The 12 stats Model Garden's own trainer reports for the latest checkpoint in ``model_dir``
    (``train_utils.create_trainer``, its ``evaluate`` over the whole validation set: the orbit
    loop ``official.vision.train --mode=eval`` runs, under the Keras policy it sets for
    ``runtime.mixed_precision_dtype``), in pycocotools' order, as float32."""
    import contextlib
    import io

    import tensorflow as tf
    import tf_keras
    from official.core import task_factory, train_utils
    from official.modeling import performance

    from detsearch.models.experiment import load_config

    config = load_config(experiment, config_files.split(","), params_override)
    previous = tf_keras.mixed_precision.global_policy()
    try:
        if config.runtime.mixed_precision_dtype:  # as official.vision.train does before building
            performance.set_mixed_precision_policy(config.runtime.mixed_precision_dtype)
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        with strategy.scope():
            task = task_factory.get_task(config.task)
            trainer = train_utils.create_trainer(config, task, train=False, evaluate=True)
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)
    tf.train.Checkpoint(model=trainer.model).read(tf.train.latest_checkpoint(str(model_dir))).expect_partial()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' tables
        logs = trainer.evaluate(tf.constant(-1))
    names = task.coco_metric._metric_names[:12]  # pylint: disable=protected-access
    return [float(logs[name]) for name in names]


def verified(summary: dict, *, rows: int = 6) -> dict:
    """``summary.json``'s ``model_garden_verification``, checked: at least ``rows`` rows (all of
    the table when it has fewer), the chosen and the config's among them, each of the 12 stats
    of every row equal as float32 (a row with a documented tie too), and some row of mAP > 0
    (an empty output equals itself). A stat Model Garden does not report (AP when
    max_num_eval_detections is not 100: it logs -1) is not compared and is named so."""
    import numpy as np

    from detsearch.detection.cocoeval import STAT_NAMES

    verification = summary["model_garden_verification"]
    table = verification["rows"]
    unreported = sum(len(row["not_compared"]) for row in table)
    assert len(table) >= min(rows, summary["configurations"])
    assert verification["stats_compared"] == 12 * len(table) - unreported
    labels = {label for row in table for label in row["labels"]}
    assert {"chosen", "config"} <= labels, labels
    for row in table:
        assert len(row["ours"]) == len(row["theirs"]) == 12
        compared = [i for i in range(12) if STAT_NAMES[i] not in row["not_compared"]]
        assert (np.float32(row["ours"])[compared] == np.float32(row["theirs"])[compared]).all(), row
    assert verification["mismatches"] == []
    assert max(row["ours"][0] for row in table) > 0, "the mAP is 0 at every verified row"
    return verification
