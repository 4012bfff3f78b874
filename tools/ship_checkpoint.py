"""Writes the shipped demo checkpoint: a trained demo model directory's weights alone (no
optimizer state), as ``models/checkpoints/retinanet_demo`` holds them.

    detsearch train --model-dir runs/retinanet_demo --steps 1500          # Model Garden's trainer
    python tools/ship_checkpoint.py runs/retinanet_demo models/checkpoints/retinanet_demo

The copy is a ``tf.train.Checkpoint(model=...)`` with its ``checkpoint`` state file (what
`detsearch.models.experiment.Experiment.restore` reads), about half the size of the trainer's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="the trained demo model directory")
    parser.add_argument("out", help="the shipped copy's directory (replaced)")
    parser.add_argument("--model", default="retinanet", help="the demo detector trained (default retinanet)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import shutil

    import tensorflow as tf

    from detsearch.models.experiment import Experiment, check_supported, create_variables, load_config
    from detsearch.models.pipeline import demo_model

    chosen = demo_model(args.model)
    config = load_config(chosen.experiment, [chosen.config])
    latest = tf.train.latest_checkpoint(args.model_dir)
    if latest is None:
        sys.exit(f"{args.model_dir}: no checkpoint in it")
    experiment = Experiment(name=chosen.experiment, config=config, kind=check_supported(config), checkpoint=latest)
    _, model = experiment.build(restore=False)
    create_variables(model, config.task.model)
    experiment.restore(model)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    step = int(latest.rsplit("-", 1)[-1])
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(out), max_to_keep=1)
    print(manager.save(checkpoint_number=step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
