"""Training a detector: `TrainLoop` (one traced momentum-SGD step with weight decay as
``weight_decay * sum(l2_loss(kernel))`` over kernels only, as `detsearch.training` does),
`training_batches` (a deterministic data order that a resumed run continues) and
`train_detector` around them (checkpoints, resume)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from detsearch.datasets.detection import DetectionDataset, make_tf_dataset, write_json_atomic
from detsearch.models.data import dataset_categories, dataset_max_boxes
from detsearch.models.detector import Detector, model_garden_seed, pinned_box_arithmetic
from detsearch.models.restore import CHECKPOINT_DIR, DETECTOR_FILE, restore_checkpoint
from detsearch.training.base import is_decayed

__all__ = ["TrainLoop", "train_detector", "training_batches"]

logger = logging.getLogger(__name__)


class TrainLoop:
    """One traced momentum-SGD step with weight decay, for a fixed batch shape.

    Update (the same as `detsearch.training.keras.KerasTrainer`)::

        total = model_loss + weight_decay * sum(l2_loss(kernel) for kernels)   # rank >= 2
        slot = momentum * slot + gradient
        variable -= learning_rate * slot

    ``learning_rate``, ``momentum`` and ``weight_decay`` are variables: changing them (even at
    every step, for a learning-rate schedule) never retraces. The step is traced here, under
    `model_garden_seed` with the detector's seed (Model Garden's anchor and ROI samplers are
    seeded from it when traced), and runs under `pinned_box_arithmetic`, as every traced
    function of a detector does.

    Args:
      detector: the detector to train.
      batch_size: images per step (static).
      max_boxes: padded boxes per image (static).
    """

    def __init__(self, detector: Detector, batch_size: int, max_boxes: int) -> None:
        self.detector = detector
        self.batch_size = int(batch_size)
        self.max_boxes = int(max_boxes)
        model = detector.model
        self._variables = list(model.trainable_variables)
        self._decayed = [v for v in self._variables if is_decayed(v.name, v.shape)]
        self.slots = [tf.Variable(tf.zeros_like(v), trainable=False, name="momentum") for v in self._variables]
        self.learning_rate = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="learning_rate")
        self.momentum = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="momentum_value")
        self.weight_decay = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="weight_decay")
        self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        step = tf.function(self._step_fn, input_signature=[detector.batch_signature(batch_size, max_boxes)])
        with model_garden_seed(detector.seed):
            step.get_concrete_function()
        self._step = step

    def trackables(self) -> dict[str, Any]:
        """Optimizer state for a checkpoint (besides the model)."""
        return {"slots": self.slots, "step": self.step_count}

    def _step_fn(self, batch):
        with tf.GradientTape() as tape:
            losses = self.detector.losses(batch)
            model_loss = losses["model_loss"]
            l2 = tf.add_n([tf.nn.l2_loss(v) for v in self._decayed]) if self._decayed else tf.constant(0.0)
            total = model_loss + self.weight_decay * l2
        gradients = tape.gradient(total, self._variables)
        for variable, slot, gradient in zip(self._variables, self.slots, gradients):
            if gradient is None:
                continue
            slot.assign(self.momentum * slot + gradient)
            variable.assign_sub(self.learning_rate * slot)
        self.step_count.assign_add(1)
        metrics = {name: value for name, value in losses.items() if name != "model_loss"}
        metrics.update({"loss": model_loss, "l2_loss": l2, "total_loss": total})
        return metrics

    def set_hyperparameters(self, *, learning_rate: float | None = None, momentum: float | None = None,
                            weight_decay: float | None = None) -> None:
        if learning_rate is not None:
            self.learning_rate.assign(float(learning_rate))
        if momentum is not None:
            self.momentum.assign(float(momentum))
        if weight_decay is not None:
            self.weight_decay.assign(float(weight_decay))

    def step(self, batch: Mapping[str, Any], learning_rate: float | None = None) -> dict[str, float]:
        """Runs one step on a `make_tf_dataset` batch; returns its metrics as floats."""
        if learning_rate is not None:
            self.learning_rate.assign(float(learning_rate))
        inputs = self.detector.model_batch(batch)
        with pinned_box_arithmetic():
            metrics = self._step(inputs)
        return {name: float(value) for name, value in metrics.items()}



def training_batches(
    dataset: DetectionDataset,
    image_size: int,
    batch_size: int,
    *,
    seed: int = 0,
    start_step: int = 0,
    max_boxes: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches in a deterministic order that a resumed run continues exactly.

    Epoch ``e`` visits the images in the order ``numpy.random.default_rng([seed, e])
    .permutation(N)`` and yields ``N // batch_size`` full batches (the rest is dropped). Batch
    ``s`` (0-based over all epochs) is the same whatever ``start_step`` the iteration began at.

    Raises:
      ValueError: fewer images than ``batch_size``.
    """
    examples = dataset.examples
    steps_per_epoch = len(examples) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(examples)} images cannot fill one batch of {batch_size}")
    max_boxes = dataset_max_boxes(dataset) if max_boxes is None else int(max_boxes)
    epoch, offset = divmod(int(start_step), steps_per_epoch)
    while True:
        order = np.random.default_rng([int(seed), epoch]).permutation(len(examples))
        chosen = order[offset * batch_size: steps_per_epoch * batch_size]
        part = DetectionDataset(tuple(examples[i] for i in chosen), dataset.categories, dataset.image_dir)
        data = make_tf_dataset(part, image_size, batch_size, training=True, shuffle=False, max_boxes=max_boxes)
        for batch in data.as_numpy_iterator():
            yield batch
        epoch, offset = epoch + 1, 0


def train_detector(
    detector: Detector,
    dataset: DetectionDataset,
    out_dir: str | os.PathLike,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    warmup_steps: int = 0,
    warmup_lr: float | None = None,
    seed: int = 0,
    checkpoint_every: int = 500,
    keep_checkpoints: int = 3,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains ``detector`` to ``steps`` steps, checkpointing into ``out_dir``; resumes there.

    The learning rate is ``learning_rate`` after ``warmup_steps`` of warm-up: linear from 0, or
    constant at ``warmup_lr`` when given (the selector's trials warm up that way).
    A directory holding a run of the same model, preset and categories resumes from its latest
    checkpoint (weights, momentum slots, step; the data order continues exactly, see
    `training_batches`; random ROI/anchor sampling restarts its sequence). ``out_dir`` gets
    ``detector.json`` (what `load_detector` rebuilds, plus the hyperparameters and the last
    metrics) and ``checkpoints/ckpt-<step>``.

    Returns:
      ``{"step", "checkpoint", "metrics", "seconds_per_step", "resumed_from"}``.

    Raises:
      ValueError: bad hyperparameters, or ``out_dir`` holds a run of another detector.
      CheckpointMismatchError: its checkpoint does not fit.
    """
    for name, value, low in (("learning_rate", learning_rate, 0.0), ("weight_decay", weight_decay, 0.0)):
        if not (math.isfinite(value) and value >= low):
            raise ValueError(f"{name} must be finite and >= {low}, got {value!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if warmup_lr is not None and not (math.isfinite(warmup_lr) and warmup_lr > 0):
        raise ValueError(f"warmup_lr must be finite and > 0, got {warmup_lr!r}")
    if steps < 0 or batch_size < 1 or checkpoint_every < 1:
        raise ValueError(f"steps >= 0, batch_size >= 1 and checkpoint_every >= 1 needed; got "
                         f"{steps}, {batch_size}, {checkpoint_every}")
    ids, _ = dataset_categories(dataset)
    if tuple(sorted(ids)) != detector.category_ids:
        raise ValueError(f"dataset categories {sorted(ids)} differ from the detector's {list(detector.category_ids)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / DETECTOR_FILE
    description = detector.describe()
    if meta_path.is_file():
        previous = json.loads(meta_path.read_text())
        for key in ("model", "preset", "category_ids"):
            if previous.get(key) != description[key]:
                raise ValueError(
                    f"{out_dir} holds a run of {previous.get('model')}/{previous.get('preset')} with categories "
                    f"{previous.get('category_ids')}; this is {description['model']}/{description['preset']} with "
                    f"{description['category_ids']}: choose another --out"
                )
        # The data order a resumed run continues depends on these two.
        recorded = previous.get("hyperparameters", {})
        for key, value in (("batch_size", batch_size), ("seed", seed)):
            if key in recorded and recorded[key] != value:
                raise ValueError(f"{out_dir} was trained with {key} {recorded[key]}; resuming needs the same, "
                                 f"got {value}")
    max_boxes = dataset_max_boxes(dataset)
    loop = TrainLoop(detector, batch_size, max_boxes)
    loop.set_hyperparameters(momentum=momentum, weight_decay=weight_decay)
    checkpoint = tf.train.Checkpoint(model=detector.model, **loop.trackables())
    manager = tf.train.CheckpointManager(checkpoint, str(out_dir / CHECKPOINT_DIR), max_to_keep=keep_checkpoints,
                                         checkpoint_name="ckpt")
    resumed_from = None
    if manager.latest_checkpoint:
        restore_checkpoint(detector, manager.latest_checkpoint, **loop.trackables())
        resumed_from = manager.latest_checkpoint
        logger.info("resuming from %s at step %d", resumed_from, int(loop.step_count))
    start = int(loop.step_count)

    def write_meta(metrics: Mapping[str, float], path: str | None) -> None:
        payload = dict(description)
        payload.update({
            "hyperparameters": {"learning_rate": learning_rate, "momentum": momentum, "weight_decay": weight_decay,
                                "warmup_steps": warmup_steps, "warmup_lr": warmup_lr, "batch_size": batch_size,
                                "seed": seed},
            "step": int(loop.step_count),
            "checkpoint": None if path is None else Path(path).name,
            "metrics": dict(metrics),
            **dict(extra_meta or {}),
        })
        write_json_atomic(meta_path, payload)

    if not meta_path.is_file():
        write_meta({}, None)
    batches = training_batches(dataset, detector.image_size, batch_size, seed=seed, start_step=start,
                               max_boxes=max_boxes)
    metrics: dict[str, float] = {}
    path = manager.latest_checkpoint
    started = time.perf_counter()
    timed_from, timed_steps = None, 0
    for step in range(start, steps):
        if step < warmup_steps:
            lr = warmup_lr if warmup_lr is not None else learning_rate * (step + 1) / warmup_steps
        else:
            lr = learning_rate
        metrics = loop.step(next(batches), lr)
        if step == start:
            timed_from = time.perf_counter()  # the first step includes tracing
        else:
            timed_steps += 1
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"loss became {metrics['loss']} at step {step + 1} (learning_rate {lr:g})")
        if on_step is not None:
            on_step(step + 1, metrics)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            path = manager.save(checkpoint_number=step + 1)
            write_meta(metrics, path)
    if path is None or int(loop.step_count) != int(Path(path).name.split("-")[-1]):
        path = manager.save(checkpoint_number=int(loop.step_count))
        write_meta(metrics, path)
    seconds = (time.perf_counter() - timed_from) / timed_steps if timed_steps else None
    logger.info("trained %d steps in %.1f s", steps - start, time.perf_counter() - started)
    return {"step": int(loop.step_count), "checkpoint": path, "metrics": metrics, "seconds_per_step": seconds,
            "resumed_from": resumed_from}

