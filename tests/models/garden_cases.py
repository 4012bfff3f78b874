"""A Model Garden experiment trained for the tests: the demo as TFRecords (Model Garden's own
create_coco_tf_record), a shipped demo config with the paths and a short schedule overridden,
and a model_dir written by Model Garden's own trainer (the walkthrough of docs/garden.md, small)."""

import subprocess
import sys

from detsearch.datasets import demo

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


def train_experiment(root, experiment: str, shipped: str, *, num_train: int, steps: int):
    """Writes ``root/demo`` (``num_train`` training and 12 validation images, their TFRecords)
    and ``root/override.yaml`` (its paths, ``steps`` training steps), and trains the shipped
    config ``shipped`` with the override by ``train_lib.run_experiment`` into
    ``root/model_dir``. Returns ``(root, "SHIPPED,override.yaml" for --config-file, model_dir)``."""
    import tensorflow as tf
    from official.core import task_factory, train_lib

    from detsearch.models.experiment import load_config

    data = root / "demo"
    demo.build_demo(data, num_train=num_train, num_val=12, image_size=128, seed=3)
    (data / "tfrecords").mkdir()
    for split in ("train", "val"):
        done = subprocess.run([sys.executable, "-m", "official.vision.data.create_coco_tf_record",
                               f"--image_dir={data / split}", f"--object_annotations_file={data / f'instances_{split}.json'}",
                               f"--output_file_prefix={data / 'tfrecords' / split}", "--num_shards=1", "--num_processes=0"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    override = root / "override.yaml"
    override.write_text(OVERRIDE.format(data=data, steps=steps))
    config_files = f"{shipped},{override}"
    config = load_config(experiment, config_files.split(","))
    model_dir = root / "model_dir"
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        task = task_factory.get_task(config.task, logging_dir=str(model_dir))
    train_lib.run_experiment(distribution_strategy=strategy, task=task, mode="train", params=config, model_dir=str(model_dir))
    return root, config_files, model_dir


def search(experiment: str, arguments, capsys):
    """``detsearch search-det --experiment experiment ARGUMENTS``: (exit code, stdout, stderr)."""
    from detsearch import cli

    code = cli.main(["search-det", "--experiment", experiment, *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
