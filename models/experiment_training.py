"""The selector on a Model Garden experiment: learning_rate, momentum and weight_decay trials run
with the experiment's own ``task.train_step`` on its own training input pipeline.

- `ExperimentTrainer` is the selector's trainer (`detsearch.training.base.Trainer`): every
  trial starts from the same weights (the task's model built once under ``seed``, then
  ``task.initialize``: the config's ``init_checkpoint``), sees the same batches in the same
  order (the first batches of ``task.build_inputs(task.train_data)``, read once), and trains
  with the optimizer Model Garden's factory builds from ``trainer.optimizer_config`` with the
  trial's momentum (``sgd``) and the trial's per-step learning rates, and with the trial's
  weight decay where the task applies it: ``task.losses.l2_weight_decay`` (an L2 regularizer
  of ``weight_decay / 2`` on the kernels, part of the task's loss). Curves hold the task's
  training ``loss``; trials are judged by loss.
- `training_override` writes the choice as a params override (``OUT/training.yaml``) for
  ``official.vision.train``: a constant learning rate, SGD with the momentum, the L2 weight
  decay; the config's warm-up is kept.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from typing import Any, Callable

import numpy as np

from detsearch.selector.curves import Curve, TrialSpec
from detsearch.training.base import CurveRecorder, arrays_fingerprint, run_trial_steps, source_fingerprint

__all__ = ["ExperimentTrainer", "LOSS_NAME", "config_training", "training_override"]

logger = logging.getLogger(__name__)

LOSS_NAME = "loss"
"""The loss of experiment curves: the task's training ``loss`` (its total loss, L2 included)."""


def config_training(config) -> dict[str, float]:
    """The config's own learning rate (its schedule's initial value), momentum and weight decay."""
    optimizer = config.trainer.optimizer_config
    schedule = optimizer.learning_rate.get()
    learning_rate = getattr(schedule, "initial_learning_rate", None) or getattr(schedule, "learning_rate", None)
    momentum = getattr(optimizer.optimizer.get(), "momentum", None)
    values = {"weight_decay": float(config.task.losses.l2_weight_decay)}
    if learning_rate is not None:
        values["learning_rate"] = float(learning_rate)
    if momentum is not None:
        values["momentum"] = float(momentum)
    return values


def training_override(learning_rate: float, momentum: float, weight_decay: float) -> dict[str, Any]:
    """The params override that trains with these values (constant learning rate, SGD)."""
    return {
        "task": {"losses": {"l2_weight_decay": float(weight_decay)}},
        "trainer": {"optimizer_config": {
            "optimizer": {"type": "sgd", "sgd": {"momentum": float(momentum)}},
            "learning_rate": {"type": "constant", "constant": {"learning_rate": float(learning_rate)}},
        }},
    }


def step_learning_rates(values):
    """A tf_keras learning-rate schedule giving the ``k``-th update (the optimizer's
    ``iterations`` = k, from 0) ``values[k]`` (the last value beyond the end).

    A ``PiecewiseConstantDecay`` over boundaries 1..n-1 gives ``values[k - 1]`` from the second
    update on (its intervals are closed on the right), and its ``tf.case`` of n branches exceeds
    Python's recursion limit near 400 steps.
    """
    import tensorflow as tf
    import tf_keras

    class StepLookup(tf_keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, values):
            self.values = [float(v) for v in values]

        def __call__(self, step):
            table = tf.constant(self.values, tf.float32)
            return tf.gather(table, tf.minimum(tf.cast(step, tf.int32), len(self.values) - 1))

        def get_config(self):
            return {"values": self.values}

    return StepLookup(values)


class ExperimentTrainer:
    """Short training runs of an experiment for `detsearch.selector.HyperSelector`.

    Args:
      experiment: a loaded `detsearch.models.experiment.Experiment` (its checkpoint is not used:
        trials train from the config's initial weights).
      num_batches: training batches read once and replayed by every trial (>= a trial's steps).
      seed: the initial weights of the model build.
      evaluation_total_steps: training batches averaged into a curve point.
      log_every_n_steps: a log line every this many steps (0: none).
    """

    def __init__(self, experiment, *, num_batches: int, seed: int = 0, evaluation_total_steps: int = 10,
                 log_every_n_steps: int = 0):
        import tensorflow as tf
        from official.core import task_factory

        from detsearch.models.detector import model_garden_seed
        from detsearch.models.experiment import create_variables

        if num_batches < 1 or evaluation_total_steps < 1:
            raise ValueError(f"num_batches and evaluation_total_steps must be >= 1, got {num_batches}, "
                             f"{evaluation_total_steps}")
        self.experiment = experiment
        self.config = copy.deepcopy(experiment.config)
        self.seed = int(seed)
        data = self.config.task.train_data
        if data.seed is None:  # the same batches in the same order in every run, so trials resume
            data.seed = self.seed
            data.deterministic = True
        self.evaluation_total_steps = int(evaluation_total_steps)
        self.log_every_n_steps = int(log_every_n_steps)
        self.task = task_factory.get_task(self.config.task)
        self.batches = list(self.task.build_inputs(self.config.task.train_data).take(int(num_batches)))
        if len(self.batches) < num_batches:
            raise ValueError(f"task.train_data yields {len(self.batches)} batches; the trials need {num_batches}")
        self._models: dict[float, tuple[Any, Any, list]] = {}
        with model_garden_seed(self.seed):
            model = self.task.build_model()
            create_variables(model, self.config.task.model)
            self.task.initialize(model)
        self._initial = [v.numpy() for v in model.variables]
        self._tf = tf
        self._fingerprint: str | None = None

    def _model(self, weight_decay: float):
        """The task's model with ``weight_decay`` as its L2 (built once per value), at the initial
        weights, and its task."""
        from official.core import task_factory
        from official.modeling import hyperparams

        from detsearch.models.experiment import create_variables

        key = float(weight_decay)
        if key not in self._models:
            config = hyperparams.override_params_dict(copy.deepcopy(self.config),
                                                      {"task": {"losses": {"l2_weight_decay": key}}}, is_strict=True)
            task = task_factory.get_task(config.task)
            model = task.build_model()
            create_variables(model, config.task.model)
            self._models[key] = (task, model, list(model.variables))
        task, model, variables = self._models[key]
        if len(variables) != len(self._initial):
            raise ValueError("the model's variables differ between weight decays")
        for variable, value in zip(variables, self._initial):
            variable.assign(value)
        return task, model

    def save(self, weight_decay: float, prefix: str) -> str:
        """Writes the weights the last trial at ``weight_decay`` ended with as a checkpoint
        (``tf.train.Checkpoint(model=...)``, what `detsearch.models.experiment.Experiment`
        restores); returns its path."""
        _, model, _ = self._models[float(weight_decay)]
        return self._tf.train.Checkpoint(model=model).write(prefix)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(json.dumps(self.config.as_dict(), sort_keys=True, default=str).encode())
            digest.update(str(self.seed).encode())
            digest.update(str(self.evaluation_total_steps).encode())
            digest.update(arrays_fingerprint(self._initial).encode())
            first = self._tf.nest.flatten(self.batches[0]) + self._tf.nest.flatten(self.batches[-1])
            digest.update(arrays_fingerprint([np.asarray(t) for t in first]).encode())
            digest.update(str(len(self.batches)).encode())
            digest.update(source_fingerprint(ExperimentTrainer.run, training_override, step_learning_rates).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def num_parameters(self) -> int:
        return int(sum(np.prod(v.shape) for v in self._initial))

    def metric_names(self) -> tuple[str, ...]:
        return (LOSS_NAME,)

    def run(self, trial: TrialSpec, on_step: Callable[[int], None] | None = None) -> Curve:
        from official.modeling import optimization

        tf = self._tf
        weight_decay = trial.weight_decay if trial.weight_decay is not None else self.config.task.losses.l2_weight_decay
        task, model = self._model(weight_decay)
        learning_rates = [float(v) for v in trial.schedule.values()]
        schedule = step_learning_rates(learning_rates)
        override = training_override(learning_rates[0], trial.momentum or 0.0, weight_decay)
        optimizer_config = copy.deepcopy(self.config.trainer.optimizer_config)
        optimizer_config.override(override["trainer"]["optimizer_config"], is_strict=False)
        optimizer = optimization.OptimizerFactory(optimizer_config).build_optimizer(schedule)
        train_step = tf.function(lambda inputs: task.train_step(inputs, model, optimizer, metrics=None),
                                 autograph=False, reduce_retracing=True)
        recorder = CurveRecorder(trial, LOSS_NAME, self.evaluation_total_steps)

        def step(index: int, learning_rate: float) -> dict[str, float]:
            logs = train_step(self.batches[index])
            return {LOSS_NAME: float(logs["loss"])}

        return run_trial_steps(trial, recorder, step, len(self.batches), on_step, self.log_every_n_steps, logger)


def search_training(experiment, out_dir, *, param_spec, param_list_spec, config, seed: int = 0,
                    on_trial: Callable | None = None, on_step: Callable[[int], None] | None = None,
                    on_train: Callable[[], None] | None = None):
    """The selector on ``experiment``, then Model Garden's own trainer with the choice.

    Trials (`ExperimentTrainer`) go to ``out_dir/selector/journal.jsonl``: a rerun reuses the
    finished ones. The choice is written as ``out_dir/training.yaml`` (`training_override`, a
    strict params override), and ``train_lib.run_experiment`` trains the config with it into
    ``out_dir/train`` (Model Garden resumes from its latest checkpoint there).

    Returns ``(selection or None, chosen training values, training.yaml path, the trained
    Experiment)``.

    Raises:
      ValueError: bad specs or a config that is not judged by loss, before any training.
    """
    from pathlib import Path

    import tensorflow as tf
    import yaml
    from official.core import task_factory, train_lib
    from official.modeling import hyperparams

    from detsearch.atomic import write_bytes_atomic
    from detsearch.models.experiment import Experiment, resolve_checkpoint
    from detsearch.params import TRAINING_PARAMS
    from detsearch.selector import HyperSelector, Journal
    from detsearch.selector.hyperselector import check_search_specs

    if config.by_acc or config.loss_name != LOSS_NAME:
        raise ValueError(f"experiment trials are judged by the task's {LOSS_NAME!r} (by_acc false)")
    out_dir = Path(out_dir)
    training_spec, training_list = param_spec.subset(TRAINING_PARAMS), param_list_spec.subset(TRAINING_PARAMS)
    check_search_specs(training_spec, training_list, config.search_learning_rate)
    selection = None
    chosen = training_spec.to_dict()
    if config.search_learning_rate or training_list.names():
        trainer = ExperimentTrainer(experiment, num_batches=config.total_steps + config.warmup_steps, seed=seed,
                                    evaluation_total_steps=config.evaluate_every_n_steps)
        selection = HyperSelector(trainer, config, Journal(out_dir / "selector"), on_trial=on_trial,
                                  on_step=on_step).select(training_spec, training_list)
        chosen = selection.param_spec.subset(TRAINING_PARAMS).to_dict()
    override = training_override(chosen["learning_rate"], chosen.get("momentum") or 0.0, chosen.get("weight_decay") or 0.0)
    path = out_dir / "training.yaml"
    write_bytes_atomic(path, ("# detsearch: the chosen training parameters, a Model Garden params override\n"
                              + yaml.safe_dump(override, default_flow_style=False, sort_keys=False)).encode("utf-8"))
    trained_config = hyperparams.override_params_dict(copy.deepcopy(experiment.config), str(path), is_strict=True)
    model_dir = out_dir / "train"
    if on_train is not None:
        on_train()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0" if not tf.config.list_logical_devices("GPU") else "/gpu:0")
    with strategy.scope():
        task = task_factory.get_task(trained_config.task, logging_dir=str(model_dir))
    train_lib.run_experiment(distribution_strategy=strategy, task=task, mode="train", params=trained_config,
                             model_dir=str(model_dir))
    trained = Experiment(name=experiment.name, config=trained_config, kind=experiment.kind,
                         checkpoint=resolve_checkpoint(str(model_dir), None))
    return selection, chosen, path, trained
