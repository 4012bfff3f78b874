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
  training ``loss`` (`LOSS_NAME`), the mean of the last ``evaluation_total_steps`` batches.
- With ``eval_images``, each curve point also holds ``AP`` (`ACC_NAME`): COCO AP@[.5:.95] of
  the current weights on the first ``eval_images`` images of
  ``task.build_inputs(task.validation_data)`` (read once). The detections are those the task's
  ``validation_step`` scores (the model called with ``training=False``: Model Garden's own
  post-processing at the config's thresholds, traced as its evaluation traces it), taken to the
  original image and to COCO boxes as its ``COCOEvaluator`` takes them (divided by
  ``image_info``'s scale in float32, every one of the ``max_num_detections`` rows of an image),
  and scored by `detsearch.detection.cocoeval` (pycocotools' numbers) against
  ``task.annotation_file``, or, when that is empty, the ground truth of the records (as
  `detsearch.models.experiment` builds it), on those images. Trials can then be judged by
  validation AP (``SelectorConfig(by_acc=True, acc_name="AP")``, MoXing's default); the LR range
  test reads the loss either way. One-stage (RetinaNet) and two-stage (Faster R-CNN)
  experiments alike.
- `search_training` runs the selector (by loss, or by AP on ``eval_images`` validation images)
  and then Model Garden's own trainer with the choice.
- `training_override` writes the choice as a params override (``OUT/training.yaml``) for
  ``official.vision.train``: a constant learning rate, SGD with the momentum, the L2 weight
  decay; the config's warm-up is kept.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from typing import Any, Callable

import numpy as np

from detsearch.selector.curves import Curve, TrialSpec
from detsearch.training.base import CurveRecorder, arrays_fingerprint, run_trial_steps, source_fingerprint

__all__ = ["ACC_NAME", "ExperimentTrainer", "LOSS_NAME", "check_judged", "config_training", "search_training",
           "training_override"]

logger = logging.getLogger(__name__)

LOSS_NAME = "loss"
"""The loss of experiment curves: the task's training ``loss`` (its total loss, L2 included)."""

ACC_NAME = "AP"
"""The accuracy of experiment curves (`ExperimentTrainer` with ``eval_images``): COCO AP@[.5:.95]
of the current weights on the validation images; 0 where pycocotools reports -1 (no ground truth
box among the images to score)."""


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
      evaluation_total_steps: training batches averaged into a curve point's loss.
      log_every_n_steps: a log line every this many steps (0: none).
      eval_images: None: curves hold the loss only. An integer >= 1: every curve point also
        holds `ACC_NAME` (`evaluate`) on the first ``eval_images`` images of the validation
        data (all of them when it holds fewer).

    Raises:
      ValueError: a count below 1, training data shorter than ``num_batches``, validation data
        without images.
    """

    def __init__(self, experiment, *, num_batches: int, seed: int = 0, evaluation_total_steps: int = 10,
                 log_every_n_steps: int = 0, eval_images: int | None = None):
        import tensorflow as tf
        from official.core import task_factory

        from detsearch.checks import optional_positive_int
        from detsearch.models.experiment import model_garden_seed
        from detsearch.models.experiment import create_variables

        if num_batches < 1 or evaluation_total_steps < 1:
            raise ValueError(f"num_batches and evaluation_total_steps must be >= 1, got {num_batches}, "
                             f"{evaluation_total_steps}")
        self.eval_images = optional_positive_int(eval_images, "eval_images")
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
        self._detectors: dict[float, Callable] = {}
        self._eval_batches: list[tuple[Any, int]] = []
        if self.eval_images is not None:
            self._read_validation()

    def _read_validation(self) -> None:
        """Reads the first ``eval_images`` validation images once: whole batches (the model runs
        on the batches Model Garden's evaluation runs on) and how many images of each are scored,
        their ground truth (`detsearch.detection.cocoeval.GroundTruth`) and image ids."""
        from detsearch.detection.cocoeval import load_ground_truth
        from detsearch.models.experiment import _ground_truth

        groundtruths, image_ids = [], []
        for images, labels in self.task.build_inputs(self.config.task.validation_data):
            scored = min(int(labels["image_info"].shape[0]), self.eval_images - len(image_ids))
            self._eval_batches.append(((images, labels), scored))
            groundtruths.append({k: v.numpy()[:scored] for k, v in labels["groundtruths"].items()})
            image_ids.extend(int(i) for i in groundtruths[-1]["source_id"])
            if len(image_ids) >= self.eval_images:
                break
        if not image_ids:
            raise ValueError(f"task.validation_data ({self.config.task.validation_data.input_path}) yields no "
                             "images to evaluate")
        if len(image_ids) < self.eval_images:
            logger.info("task.validation_data holds %d images: AP is measured on all of them (eval_images %d)",
                        len(image_ids), self.eval_images)
        # The annotation file, else the records' ground truth of the scored images, as the sweep
        # builds it (`detsearch.models.experiment.record`).
        experiment = dataclasses.replace(self.experiment, config=self.config)
        self._ground_truth = load_ground_truth(_ground_truth(experiment, groundtruths))
        self._eval_image_ids = np.asarray(image_ids, np.int64)

    def _model(self, weight_decay: float, *, reset: bool = True):
        """The task's model with ``weight_decay`` as its L2 (built once per value), at the initial
        weights (``reset`` False: a model built before keeps its weights), and its task."""
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
            reset = True
        task, model, variables = self._models[key]
        if len(variables) != len(self._initial):
            raise ValueError("the model's variables differ between weight decays")
        if reset:
            for variable, value in zip(variables, self._initial):
                variable.assign(value)
        return task, model

    def _detector(self, weight_decay: float, model) -> Callable:
        """The model's detections as the task's ``validation_step`` computes them (``training``
        False), one traced function per model."""
        key = float(weight_decay)
        if key not in self._detectors:
            tf = self._tf

            @tf.function(autograph=False, reduce_retracing=True)
            def detect(images, anchor_boxes, image_shape):
                outputs = model(images, anchor_boxes=anchor_boxes, image_shape=image_shape, training=False)
                return outputs["detection_boxes"], outputs["detection_scores"], outputs["detection_classes"]

            self._detectors[key] = detect
        return self._detectors[key]

    def evaluate(self, weight_decay: float) -> dict[str, float]:
        """``{ACC_NAME: AP}`` of the current weights of the model at ``weight_decay`` (the last
        trial's, or the initial weights before any) on the ``eval_images`` validation images.

        Raises:
          ValueError: the trainer was built without ``eval_images``.
        """
        from official.vision.ops import box_ops

        from detsearch.detection.cocoeval import evaluate_bbox
        from detsearch.models.experiment import call_traced

        if self.eval_images is None:
            raise ValueError("this ExperimentTrainer has no eval_images: build it with eval_images to measure AP")
        _, model = self._model(float(weight_decay), reset=False)
        detect = self._detector(weight_decay, model)
        image_ids, classes, boxes, scores = [], [], [], []
        for (images, labels), scored in self._eval_batches:
            found = call_traced(detect, images, labels["anchor_boxes"], labels["image_info"][:, 1, :],
                                batch_size=self.experiment.traced_batch_size)
            detection_boxes, detection_scores, detection_classes = (t.numpy()[:scored] for t in found)
            info = labels["image_info"].numpy()[:scored]
            # COCOEvaluator's arithmetic: divided by the (y, x) scale and made [x, y, w, h] in
            # float32 (Model Garden's box_ops.yxyx_to_xywh), every row of every image.
            detection_boxes = detection_boxes.astype(np.float32) / np.tile(info[:, 2:3, :], (1, 1, 2))
            boxes.append(box_ops.yxyx_to_xywh(detection_boxes).reshape(-1, 4))
            per_image = detection_scores.shape[1]
            source_ids = labels["groundtruths"]["source_id"].numpy()[:scored].astype(np.int64)
            image_ids.append(np.repeat(source_ids, per_image))
            classes.append(detection_classes.reshape(-1).astype(np.int64))
            scores.append(detection_scores.reshape(-1))
        classes = np.concatenate(classes)
        # pycocotools scores the ground truth's categories only: the padding rows of class 0
        # (background) and any class the ground truth does not name are not evaluated.
        known = np.isin(classes, self._ground_truth.category_ids)
        evaluation = evaluate_bbox(self._ground_truth, np.concatenate(image_ids)[known], classes[known],
                                   np.concatenate(boxes)[known].astype(np.float64),
                                   np.concatenate(scores)[known].astype(np.float64),
                                   eval_image_ids=self._eval_image_ids)
        return {ACC_NAME: max(0.0, float(evaluation.stats[0]))}

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
            digest.update(f"eval_images={self.eval_images}".encode())
            if self.eval_images is not None:
                (images, labels), _ = self._eval_batches[0]
                first = [self._eval_image_ids, images.numpy(), labels["image_info"].numpy()]
                digest.update(arrays_fingerprint(first).encode())
                truth = self._ground_truth
                digest.update(arrays_fingerprint([truth.image_ids, truth.category_ids, truth.image_index,
                                                  truth.category_index, truth.boxes, truth.areas,
                                                  truth.crowd]).encode())
                digest.update(source_fingerprint(ExperimentTrainer.evaluate, ExperimentTrainer._detector).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def num_parameters(self) -> int:
        return int(sum(np.prod(v.shape) for v in self._initial))

    def metric_names(self) -> tuple[str, ...]:
        return (LOSS_NAME,) if self.eval_images is None else (LOSS_NAME, ACC_NAME)

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
        evaluate = None if self.eval_images is None else (lambda: self.evaluate(weight_decay))
        recorder = CurveRecorder(trial, LOSS_NAME, self.evaluation_total_steps, evaluate)

        def step(index: int, learning_rate: float) -> dict[str, float]:
            logs = train_step(self.batches[index])
            return {LOSS_NAME: float(logs["loss"])}

        return run_trial_steps(trial, recorder, step, len(self.batches), on_step, self.log_every_n_steps, logger)


def check_judged(config, eval_images: int | None) -> None:
    """Raises ValueError unless the selector ``config`` judges experiment trials by the task's
    `LOSS_NAME` (``by_acc`` false) or by validation `ACC_NAME` on ``eval_images`` >= 1 images."""
    from detsearch.checks import positive_int

    if config.loss_name != LOSS_NAME or (config.by_acc and config.acc_name != ACC_NAME):
        raise ValueError(f"experiment trials are judged by the task's {LOSS_NAME!r} (by_acc false) or by validation "
                         f"{ACC_NAME!r} (by_acc true); got by_acc {config.by_acc}, acc_name {config.acc_name!r}, "
                         f"loss_name {config.loss_name!r}")
    if config.by_acc:
        positive_int(eval_images, "eval_images")


def search_training(experiment, out_dir, *, param_spec, param_list_spec, config, seed: int = 0,
                    eval_images: int = 100, on_trial: Callable | None = None,
                    on_step: Callable[[int], None] | None = None, on_train: Callable[[], None] | None = None):
    """The selector on ``experiment``, then Model Garden's own trainer with the choice.

    Trials (`ExperimentTrainer`) are judged by the task's loss (``config.by_acc`` false,
    ``loss_name`` `LOSS_NAME`) or by validation AP (``by_acc`` true, ``acc_name`` `ACC_NAME`: AP
    of each curve point on the first ``eval_images`` validation images). They go to
    ``out_dir/selector/journal.jsonl``: a rerun reuses the finished ones. The choice is written
    as ``out_dir/training.yaml`` (`training_override`, a strict params override), and
    Model Garden's trainer (`detsearch.models.pipeline.train`, seeded by ``seed``) trains the config
    with it into ``out_dir/train``, resuming from its latest checkpoint there.

    Returns ``(selection or None, chosen training values, training.yaml path, the trained
    Experiment)``.

    Raises:
      ValueError: bad specs, metric names other than `LOSS_NAME` and `ACC_NAME`, or
        ``eval_images`` below 1 when judged by AP, before any training.
    """
    from pathlib import Path

    import yaml
    from official.modeling import hyperparams

    from detsearch.atomic import write_bytes_atomic
    from detsearch.models import pipeline
    from detsearch.models.experiment import Experiment
    from detsearch.params import TRAINING_PARAMS
    from detsearch.selector import HyperSelector, Journal
    from detsearch.selector.hyperselector import check_search_specs

    check_judged(config, eval_images)
    out_dir = Path(out_dir)
    training_spec, training_list = param_spec.subset(TRAINING_PARAMS), param_list_spec.subset(TRAINING_PARAMS)
    check_search_specs(training_spec, training_list, config.search_learning_rate)
    selection = None
    chosen = training_spec.to_dict()
    if config.search_learning_rate or training_list.names():
        trainer = ExperimentTrainer(experiment, num_batches=config.total_steps + config.warmup_steps, seed=seed,
                                    evaluation_total_steps=config.evaluate_every_n_steps,
                                    eval_images=eval_images if config.by_acc else None)
        selection = HyperSelector(trainer, config, Journal(out_dir / "selector"), on_trial=on_trial,
                                  on_step=on_step).select(training_spec, training_list)
        chosen = selection.param_spec.subset(TRAINING_PARAMS).to_dict()
    override = training_override(chosen["learning_rate"], chosen.get("momentum") or 0.0, chosen.get("weight_decay") or 0.0)
    path = out_dir / "training.yaml"
    write_bytes_atomic(path, ("# detsearch: the chosen training parameters, a Model Garden params override\n"
                              + yaml.safe_dump(override, default_flow_style=False, sort_keys=False)).encode("utf-8"))
    trained_config = hyperparams.override_params_dict(copy.deepcopy(experiment.config), str(path), is_strict=True)
    checkpoint = pipeline.train(trained_config, out_dir / "train", seed=seed, on_start=on_train)
    trained = Experiment(name=experiment.name, config=trained_config, kind=experiment.kind, checkpoint=checkpoint)
    return selection, chosen, path, trained
