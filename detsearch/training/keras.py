"""TF2 trainer for Keras models and `tf.data` datasets (Keras 3 or tf_keras models alike).

The training step is one `tf.function` traced once per trainer; learning rate, momentum and
weight decay are variables assigned before each step, so trials never retrace. The optimizer is
SGD with momentum in the form of TensorFlow's ``MomentumOptimizer``
(``accumulator = momentum * accumulator + gradient; variable -= learning_rate * accumulator``),
written out here so that both Keras generations give the same update.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator, Mapping

import numpy as np

from detsearch.params import ParamSpec
from detsearch.selector.curves import Curve, TrialSpec
from detsearch.training.base import (CurveRecorder, arrays_fingerprint, is_decayed, run_trial_steps,
                                     source_fingerprint)

logger = logging.getLogger(__name__)


def classification_accuracy(labels, logits):
    """Mean of ``argmax(logits) == label``; labels may be class ids [B] or one-hot [B, C]."""
    import tensorflow as tf

    predicted = tf.argmax(logits, axis=-1)
    if labels.shape.rank == logits.shape.rank:
        labels = tf.argmax(labels, axis=-1)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, tf.cast(labels, predicted.dtype)), tf.float32))


def _take(dataset, count: int, name: str) -> list[tuple[np.ndarray, ...]]:
    batches = []
    for batch in dataset.take(count):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"{name} must yield (inputs, labels) batches")
        batches.append(tuple(np.asarray(part) for part in batch))
    if len(batches) < count:
        raise ValueError(f"{name} has {len(batches)} batches; the search needs {count} (repeat() it)")
    return batches


@contextlib.contextmanager
def keras_seed(seed: int) -> Iterator[None]:
    """Within the block, Keras draws its random numbers from ``seed`` (``keras.utils.set_random_seed``:
    Python's, NumPy's and TensorFlow's global seeds and Keras's seed generator); on exit every one
    of them is put back (TensorFlow's global seed to its previous value, from the start of its
    sequence)."""
    import random

    import keras
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils
    from tensorflow.python.eager import context

    python_state, numpy_state, tf_seed = random.getstate(), np.random.get_state(), context.global_seed()
    keras_state = {name: global_state.get_global_attribute(name)
                   for name in (rng_utils.GLOBAL_RANDOM_SEED, seed_generator.GLOBAL_SEED_GENERATOR)}
    keras.utils.set_random_seed(int(seed))
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        import tensorflow as tf

        tf.random.set_seed(tf_seed)
        for name, value in keras_state.items():
            global_state.set_global_attribute(name, value)


class KerasTrainer:
    """`Trainer` for ``build_model(param_spec) -> keras model`` (see `detsearch.training.base.Trainer`).

    Args:
      build_model: returns an uncompiled Keras model whose call gives logits/predictions. Called
        once; every trial starts from the weights it was built with. It should not add weight
        decay itself: the trainer adds ``weight_decay * sum(l2_loss(kernel))``.
      train_dataset: `tf.data.Dataset` of ``(inputs, labels)`` batches; the first ``num_batches``
        are recorded and replayed by every trial.
      loss_fn: ``loss_fn(labels, predictions) -> scalar``.
      num_batches: training batches per trial.
      param_spec: passed to build_model.
      metrics: name -> ``fn(labels, predictions) -> scalar``; default accuracy.
      eval_dataset: evaluation batches (for ``select_by_eval``), or None.
      evaluation_total_steps: batches per curve point.
      loss_name: name of the loss metric.
      seed: Keras/TensorFlow seed for building the model.
    """

    def __init__(self, build_model: Callable, train_dataset, loss_fn: Callable, *, num_batches: int,
                 param_spec: ParamSpec, metrics: Mapping[str, Callable] | None = None, eval_dataset=None,
                 evaluation_total_steps: int = 10, loss_name: str = "loss", seed: int = 0,
                 log_every_n_steps: int = 0):
        import tensorflow as tf

        self.loss_name = loss_name
        self.evaluation_total_steps = evaluation_total_steps
        self.log_every_n_steps = log_every_n_steps
        self.batches = _take(train_dataset, num_batches, "train_dataset")
        self.eval_batches = None if eval_dataset is None else _take(eval_dataset, evaluation_total_steps, "eval_dataset")
        with keras_seed(seed):  # the initial weights come from seed; the process's seeds stay as they were
            self.model = build_model(param_spec)
            self.model(self.batches[0][0], training=False)  # creates the variables
        self.initial_weights = [np.array(w) for w in self.model.get_weights()]
        self.metric_fns = {"accuracy": classification_accuracy} if metrics is None else dict(metrics)
        self._source = source_fingerprint(build_model, loss_fn, *self.metric_fns.values())
        variables = self.model.trainable_variables
        self._decayed = [v for v in variables if is_decayed(v.name, v.shape)]
        self._slots = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self._lr = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        self._momentum = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        self._weight_decay = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        model, metric_fns = self.model, self.metric_fns

        def measure(labels, predictions):
            values = {name: fn(labels, predictions) for name, fn in metric_fns.items()}
            values[loss_name] = loss_fn(labels, predictions)
            return values

        @tf.function(reduce_retracing=True)
        def train_step(inputs, labels):
            with tf.GradientTape() as tape:
                predictions = model(inputs, training=True)
                values = measure(labels, predictions)
                total = values[loss_name]
                if self._decayed:
                    total = total + self._weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in self._decayed])
            gradients = tape.gradient(total, variables)
            for variable, slot, gradient in zip(variables, self._slots, gradients):
                slot.assign(self._momentum * slot + gradient)
                variable.assign_sub(self._lr * slot)
            return values

        @tf.function(reduce_retracing=True)
        def eval_step(inputs, labels):
            return measure(labels, model(inputs, training=False))

        self._train_step = train_step
        self._eval_step = eval_step

    def fingerprint(self) -> str:
        arrays = [a for batch in self.batches for a in batch]
        if self.eval_batches is not None:
            arrays += [a for batch in self.eval_batches for a in batch]
        parts = [arrays_fingerprint(arrays), arrays_fingerprint(self.initial_weights), self._source, self.loss_name,
                 str(self.evaluation_total_steps)]
        return arrays_fingerprint([np.frombuffer("|".join(parts).encode(), dtype=np.uint8)])

    def num_parameters(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.model.trainable_variables))

    def metric_names(self) -> tuple[str, ...]:
        return (*self.metric_fns, self.loss_name)

    def _evaluate(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for inputs, labels in self.eval_batches:
            for k, v in self._eval_step(inputs, labels).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        return {k: v / len(self.eval_batches) for k, v in totals.items()}

    def run(self, trial: TrialSpec, on_step: Callable[[int], None] | None = None) -> Curve:
        self.model.set_weights(self.initial_weights)
        for slot in self._slots:
            slot.assign(np.zeros(slot.shape, dtype=slot.dtype.as_numpy_dtype))
        self._momentum.assign(0.0 if trial.momentum is None else trial.momentum)
        self._weight_decay.assign(trial.weight_decay)
        recorder = CurveRecorder(trial, self.loss_name, self.evaluation_total_steps,
                                 self._evaluate if self.eval_batches is not None else None)

        def step(index, lr):
            self._lr.assign(lr)
            inputs, labels = self.batches[index]
            return self._train_step(inputs, labels)

        return run_trial_steps(trial, recorder, step, len(self.batches), on_step, self.log_every_n_steps, logger)
