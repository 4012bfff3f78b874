"""The seed's program, verbatim but for its imports, on real MNIST; then its SavedModel serves."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detsearch.datasets import mnist

ROOT = Path(__file__).resolve().parents[2]


def test_seed_program_differs_only_in_imports():
    program = (ROOT / "examples" / "train_mnist.py").read_text().splitlines()
    assert "from detsearch.datasets.mnist import input_data" in program
    assert "import tensorflow.compat.v1 as tf; tf.disable_v2_behavior()" in program
    assert "import detsearch.moxing as mox" in program
    assert not any("tensorflow.examples" in line or "moxing.tensorflow" in line for line in program)


@pytest.mark.tf
@pytest.mark.slow
def test_seed_program_searches_trains_and_exports(tmp_path, real_mnist_dir):
    data_dir = real_mnist_dir
    out = tmp_path / "train_url"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "examples.train_mnist", f"--data_url={data_dir}",
                           f"--train_url={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = re.search(r"Best lr ([0-9.]+), Best weight_decay ([0-9.]+), Best momentum ([0-9.]+), searchtime ([0-9.]+) s",
                     proc.stderr)
    assert line, proc.stderr[-3000:]
    lr, weight_decay, momentum, _ = map(float, line.groups())
    assert lr > 0 and weight_decay in (0.01, 0.001, 0.0001) and momentum in (0.99, 0.95, 0.9)
    assert list(out.glob("events.out.tfevents.*")) and (out / "checkpoint").exists()

    import tensorflow as tf

    serving = tf.saved_model.load(str(out / "model")).signatures["serving_default"]
    test = mnist.input_data.read_data_sets(str(data_dir), one_hot=True).test
    logits = serving(images=tf.constant(test.images[:2000]))["logits"].numpy()
    accuracy = np.mean(np.argmax(logits, 1) == np.argmax(test.labels[:2000], 1))
    assert accuracy > 0.85, accuracy
