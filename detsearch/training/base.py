"""The trainer protocol and the curve bookkeeping that every trainer shares. No TensorFlow here."""

from __future__ import annotations

import collections
import hashlib
import inspect
import math
from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from detsearch.selector.curves import Curve, TrialSpec


@runtime_checkable
class Trainer(Protocol):
    """Trains for a trial's steps and returns its curve.

    Contract (tested over every implementation in tests/training/test_trainer_contract.py):
      - every trial starts from the same initial weights and sees the same batches in the same
        order, so two runs of the same `TrialSpec` give the same curve;
      - the learning rate of step i is ``trial.schedule.values()[i]``;
      - ``fingerprint()`` changes when the data, the initial weights or the model change, and
        only then.
    """

    def fingerprint(self) -> str: ...

    def num_parameters(self) -> int: ...

    def metric_names(self) -> tuple[str, ...]: ...

    def run(self, trial: TrialSpec, on_step: Callable[[int], None] | None = None) -> Curve: ...


EXPLODED_FACTOR = 100.0
"""A loss above this many times a trial's first loss has exploded: the trial ends as diverged.
Training that works never climbs that far above where it started; one that diverges passes it
within a few steps, possibly while its loss is still finite (a NaN check alone would let it run
on), so stopping there saves the rest of its steps."""


class CurveRecorder:
    """Turns per-step training metrics into a `Curve`.

    A point is recorded after every ``trial.evaluate_every_n_steps`` steps past warm-up. Its
    values are the means of the last ``evaluation_total_steps`` training batches' metrics (free:
    measured by the training steps), overridden by ``evaluate()`` where given (a pass over
    evaluation batches; a metric only the evaluation measures, such as a detector's mAP, is
    added to the training means).

    A trial diverges, and ends at that step, when its loss is NaN or infinite, or explodes: more
    than `EXPLODED_FACTOR` times the loss of its first step. Its last point holds that loss.

    Args:
      trial: the trial being run.
      loss_name: metric whose non-finite or exploded value ends the trial as diverged.
      evaluation_total_steps: batches averaged into a point when there is no ``evaluate``.
      evaluate: optional ``() -> {metric: value}``.
    """

    def __init__(self, trial: TrialSpec, loss_name: str, evaluation_total_steps: int,
                 evaluate: Callable[[], Mapping[str, float]] | None = None):
        self.trial = trial
        self.loss_name = loss_name
        self.evaluate = evaluate
        self.learning_rates = trial.schedule.values()
        self._recent: collections.deque = collections.deque(maxlen=evaluation_total_steps)
        self._steps: list[int] = []
        self._lrs: list[float] = []
        self._points: dict[str, list[float]] = collections.defaultdict(list)
        self.diverged = False
        self.steps_run = 0
        self._first_loss: float | None = None

    def after_step(self, index: int, metrics: Mapping[str, float]) -> bool:
        """Records step ``index`` (0-based, warm-up included). Returns False to stop the trial."""
        self.steps_run = index + 1
        loss = float(metrics[self.loss_name])
        warmup = self.trial.schedule.warmup_steps
        if index >= warmup:
            self._recent.append({k: float(v) for k, v in metrics.items()})
        step = index - warmup + 1
        if self._first_loss is None and math.isfinite(loss):
            self._first_loss = loss
        first = self._first_loss
        healthy = math.isfinite(loss) and not (first is not None and first > 0 and loss > EXPLODED_FACTOR * first)
        if step >= 1 and (step % self.trial.evaluate_every_n_steps == 0 or not healthy):
            names = self._recent[-1].keys()
            point = {k: float(np.mean([m[k] for m in self._recent])) for k in names}
            if self.evaluate is not None and healthy:
                point.update(self.evaluate())
            if not healthy:
                point[self.loss_name] = loss
                for name in self._points:  # what only evaluate() measures is not measured here
                    point.setdefault(name, math.nan)
            self._steps.append(step)
            self._lrs.append(float(self.learning_rates[index]))
            for k, v in point.items():
                self._points[k].append(v)
        if not healthy:
            self.diverged = True
            return False
        return True

    def curve(self) -> Curve:
        metrics = {k: np.array(v, dtype=np.float64) for k, v in self._points.items()}
        return Curve(np.array(self._steps, dtype=np.int64), np.array(self._lrs, dtype=np.float64), metrics,
                     diverged=self.diverged, steps_run=self.steps_run)


def run_trial_steps(trial: TrialSpec, recorder: CurveRecorder, step: Callable[[int, float], Mapping[str, float]],
                    num_batches: int, on_step: Callable[[int], None] | None = None, log_every_n_steps: int = 0,
                    logger=None) -> Curve:
    """The step loop every trainer shares.

    Calls ``step(index, learning_rate) -> metrics`` for each step of the trial's schedule, reports
    progress, logs every ``log_every_n_steps`` steps, and stops at the first non-finite loss.

    Raises:
      ValueError: the trial has more steps than the ``num_batches`` recorded batches.
    """
    learning_rates = trial.schedule.values()
    if len(learning_rates) > num_batches:
        raise ValueError(f"trial needs {len(learning_rates)} steps but {num_batches} batches were recorded")
    for index, lr in enumerate(learning_rates):
        metrics = {k: float(v) for k, v in step(index, float(lr)).items()}
        if on_step is not None:
            on_step(index + 1)
        if logger is not None and log_every_n_steps and (index + 1) % log_every_n_steps == 0:
            logger.info("%s step %d/%d lr %.4g %s", trial.name, index + 1, len(learning_rates), lr,
                        " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if not recorder.after_step(index, metrics):
            if logger is not None:
                logger.info("%s diverged at step %d (lr %.4g)", trial.name, index + 1, lr)
            break
    return recorder.curve()


def source_fingerprint(*functions: Callable) -> str:
    """Hash of functions' source code (qualified name where the source is unavailable)."""
    digest = hashlib.sha256()
    for function in functions:
        try:
            text = inspect.getsource(function)
        except (OSError, TypeError):
            text = getattr(function, "__qualname__", repr(type(function)))
        digest.update(text.encode())
    return digest.hexdigest()


def arrays_fingerprint(arrays: Sequence[np.ndarray]) -> str:
    """Hash of arrays' dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def is_decayed(name: str, shape: Sequence[int]) -> bool:
    """Which trainable variables weight_decay applies to: kernels (rank >= 2), not biases or
    normalisation scales and offsets (rank <= 1)."""
    return len(shape) >= 2
