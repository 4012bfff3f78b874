"""The `Trainer` contract (detsearch.training.base.Trainer), checked over every trainer:
the NumPy test trainer, the graph-mode (MoXing) trainer, the Keras trainer and the detection
trainer. Each factory builds a trainer from a weight seed, a data seed and a scratch directory
(pytest's); the TensorFlow ones import it when called, so that the module is collected without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detsearch.selector.curves import LrSchedule, TrialSpec
from detsearch.training.base import Trainer

STEPS = 6
WARMUP = 2


def numpy_trainer(weights_seed: int, data_seed: int, scratch: Path):
    from tests.selector.numpy_trainer import NumpyTrainer

    trainer = NumpyTrainer(steps=WARMUP + STEPS, evaluation_total_steps=1, seed=data_seed)
    trainer.initial = np.random.default_rng(1000 + weights_seed).normal(0, 0.01, size=trainer.initial.shape)
    return trainer


def _features(data_seed: int):
    rng = np.random.default_rng(data_seed)
    inputs = rng.normal(size=(64, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=64)
    return inputs, labels


def graph_trainer(weights_seed: int, data_seed: int, scratch: Path):
    import tensorflow as tf

    import detsearch.moxing as mox
    from detsearch.params import ParamSpec
    from detsearch.training.graph import GraphTrainer

    inputs, labels = _features(data_seed)
    v1 = tf.compat.v1

    def input_fn(run_mode, **kwargs):
        dataset = v1.data.Dataset.from_tensor_slices((inputs, np.eye(3, dtype=np.float32)[labels])).batch(8).repeat()
        return v1.data.make_one_shot_iterator(dataset).get_next()

    def model_fn(batch, run_mode, **kwargs):
        x, y = batch
        weights = v1.get_variable("weights", [5, 3], initializer=v1.glorot_uniform_initializer())
        logits = v1.matmul(x, weights) + v1.get_variable("bias", [3], initializer=v1.zeros_initializer())
        loss = v1.reduce_mean(v1.nn.softmax_cross_entropy_with_logits_v2(labels=y, logits=logits))
        accuracy = v1.reduce_mean(v1.cast(v1.equal(v1.argmax(logits, 1), v1.argmax(y, 1)), v1.float32))
        return mox.ModelSpec(loss=loss, log_info={"loss": loss, "accuracy": accuracy})

    def optimizer_fn(**kwargs):
        spec = kwargs["param_spec"]
        return mox.get_optimizer_fn("momentum", learning_rate=spec.learning_rate, momentum=spec.momentum)()

    return GraphTrainer(input_fn, model_fn, optimizer_fn, ParamSpec(learning_rate=0.1, momentum=0.9), batch_size=8,
                        auto_batch=False, num_batches=WARMUP + STEPS, metric_names=["accuracy"], loss_name="loss",
                        select_by_eval=False, evaluation_total_steps=1, log_every_n_steps=0, seed=weights_seed)


def keras_trainer(weights_seed: int, data_seed: int, scratch: Path):
    import keras
    import tensorflow as tf

    from detsearch.params import ParamSpec
    from detsearch.training.keras import KerasTrainer

    inputs, labels = _features(data_seed)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels.astype(np.int64))).batch(8).repeat()

    def build_model(param_spec):
        return keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])

    def loss_fn(labels, logits):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))

    return KerasTrainer(build_model, dataset, loss_fn, num_batches=WARMUP + STEPS, param_spec=ParamSpec(momentum=0.9),
                        evaluation_total_steps=1, seed=weights_seed)


def detection_trainer(weights_seed: int, data_seed: int, scratch: Path):
    """The demo RetinaNet experiment's trainer (Model Garden's own train step)."""
    from detsearch.datasets import demo
    from detsearch.models.experiment import Experiment, check_supported
    from detsearch.models.experiment_training import ExperimentTrainer
    from detsearch.models.pipeline import demo_config

    directory = scratch / f"demo-{data_seed}"  # reused by the factory's later calls with this data seed
    demo.build_demo(directory, num_train=8, num_val=4, image_size=128, seed=data_seed)
    name, config = demo_config("retinanet", train_set=demo.load_demo(directory, "train"),
                               validation_set=demo.load_demo(directory, "val"), records_dir=directory / "records",
                               params_override="task.train_data.global_batch_size=4")
    experiment = Experiment(name=name, config=config, kind=check_supported(config), checkpoint="")
    return ExperimentTrainer(experiment, num_batches=WARMUP + STEPS, seed=weights_seed, evaluation_total_steps=1)


FACTORIES = [
    pytest.param(numpy_trainer, id="numpy"),
    pytest.param(graph_trainer, id="graph", marks=pytest.mark.tf),
    pytest.param(keras_trainer, id="keras", marks=pytest.mark.tf),
    pytest.param(detection_trainer, id="detection", marks=[pytest.mark.tf, pytest.mark.slow]),
]


def _trial(start: float, end: float | None, momentum: float, weight_decay: float) -> TrialSpec:
    return TrialSpec(LrSchedule(start=start, end=end, steps=STEPS, warmup_steps=WARMUP, warmup_lr=1e-3),
                     momentum, weight_decay, evaluate_every_n_steps=1)


@pytest.mark.parametrize("factory", FACTORIES)
def test_trainer_contract(factory, tmp_path):
    trainer = factory(0, 0, tmp_path)
    assert isinstance(trainer, Trainer)
    assert trainer.num_parameters() > 0
    names = trainer.metric_names()
    assert "loss" in names

    ramp = _trial(1e-3, 0.1, 0.9, 1e-4)
    first = trainer.run(ramp)
    other = trainer.run(_trial(0.05, None, 0.5, 0.0))
    again = trainer.run(ramp)

    # the same trial gives the same curve, whatever ran in between
    np.testing.assert_array_equal(first.steps, again.steps)
    for name in names:
        np.testing.assert_array_equal(first.metric(name), again.metric(name))
    assert not np.array_equal(first.metric("loss"), other.metric("loss"))
    # one point per step after warm-up, each at the schedule's learning rate of that step
    assert list(first.steps) == list(range(1, STEPS + 1)) and first.steps_run == WARMUP + STEPS
    np.testing.assert_array_equal(first.learning_rates, ramp.schedule.values()[WARMUP + first.steps - 1])
    assert set(names) <= set(first.metrics)

    # the fingerprint names the data, the initial weights and the model, and only those
    assert trainer.fingerprint() == factory(0, 0, tmp_path).fingerprint()
    assert trainer.fingerprint() != factory(1, 0, tmp_path).fingerprint()
    assert trainer.fingerprint() != factory(0, 1, tmp_path).fingerprint()


@pytest.mark.tf
def test_the_keras_trainer_leaves_the_process_seeds_as_they_were(tmp_path):
    import random

    import tensorflow as tf
    from tensorflow.python.eager import context

    random.seed(7)
    np.random.seed(7)
    tf.random.set_seed(7)
    before = (random.getstate(), np.random.get_state()[1].copy(), context.global_seed())
    first = keras_trainer(3, 0, tmp_path)
    after = (random.getstate(), np.random.get_state()[1].copy(), context.global_seed())
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2] == after[2]
    # the weights still come from the trainer's seed alone
    np.random.seed(123)
    again = keras_trainer(3, 0, tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(first.initial_weights, again.initial_weights))
