"""What a trial is and what it returns: `LrSchedule`, `TrialSpec`, `Curve`. NumPy only."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Mapping

import numpy as np

from detsearch.checks import positive_int


@dataclasses.dataclass(frozen=True)
class LrSchedule:
    """Learning rate per training step of one trial.

    Steps ``0 .. warmup_steps - 1`` run at ``warmup_lr``. The next ``steps`` steps either hold
    ``start`` (``end`` None: a constant schedule) or ramp exponentially from ``start`` to
    ``end``, both endpoints included:
    ``lr(warmup_steps + k) = start * (end / start) ** (k / (steps - 1))``, ``k = 0 .. steps - 1``.
    """

    start: float
    steps: int
    end: float | None = None
    warmup_steps: int = 0
    warmup_lr: float = 0.0

    def __post_init__(self):
        if not (self.start > 0 and math.isfinite(self.start)):
            raise ValueError(f"learning rate must be a positive finite number, got {self.start!r}")
        if self.end is not None and not (self.end > 0 and math.isfinite(self.end)):
            raise ValueError(f"end learning rate must be a positive finite number, got {self.end!r}")
        positive_int(self.steps, "steps")  # a schedule needs at least one step
        positive_int(self.warmup_steps, "warmup_steps", minimum=0)
        if self.warmup_steps and not self.warmup_lr > 0:
            raise ValueError(f"warmup_lr must be > 0 when warmup_steps > 0, got {self.warmup_lr!r}")

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.steps

    def values(self) -> np.ndarray:
        """float64 [total_steps]: the learning rate of every step."""
        if self.end is None or self.steps == 1:
            ramp = np.full(self.steps, self.start, dtype=np.float64)
        else:
            ramp = self.start * (self.end / self.start) ** (np.arange(self.steps) / (self.steps - 1))
        return np.concatenate([np.full(self.warmup_steps, self.warmup_lr, dtype=np.float64), ramp])


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """One short training run: everything a trainer needs, nothing it may choose itself.

    Attributes:
      schedule: learning rate of every step.
      momentum: optimizer momentum (passed to the user's optimizer through `ParamSpec`).
      weight_decay: L2 coefficient the framework adds to the loss.
      evaluate_every_n_steps: a curve point is recorded after every this many training steps
        (counted from the first step after warm-up; warm-up steps record no points).
      name: a label for logs and reports (not part of the identity of the trial).
    """

    schedule: LrSchedule
    momentum: float | None
    weight_decay: float
    evaluate_every_n_steps: int = 1
    name: str = ""

    def key_fields(self) -> dict[str, Any]:
        return {
            "schedule": dataclasses.asdict(self.schedule),
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "evaluate_every_n_steps": self.evaluate_every_n_steps,
        }

    def key(self, fingerprint: str) -> str:
        """Identity of this trial under a trainer/data fingerprint, for the journal."""
        payload = json.dumps({"fingerprint": fingerprint, **self.key_fields()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Curve:
    """Metrics recorded during one trial.

    Attributes:
      steps: int64 [P], the training step (1-based, counted after warm-up) after which each
        point was measured.
      learning_rates: float64 [P], learning rate of that step.
      metrics: name -> float64 [P] (for example ``loss`` and ``accuracy``). A value may be NaN
        or inf when training diverged.
      diverged: the trainer stopped early because the loss became NaN or infinite; the points
        up to and including the first bad one are kept.
      steps_run: training steps actually run, warm-up included (the cost of the trial).
    """

    steps: np.ndarray
    learning_rates: np.ndarray
    metrics: Mapping[str, np.ndarray]
    diverged: bool = False
    steps_run: int = 0

    def __post_init__(self):
        n = len(self.steps)
        if len(self.learning_rates) != n:
            raise ValueError(f"curve has {n} steps but {len(self.learning_rates)} learning rates")
        for name, values in self.metrics.items():
            if len(values) != n:
                raise ValueError(f"curve has {n} steps but metric {name!r} has {len(values)} values")

    def __len__(self) -> int:
        return len(self.steps)

    def metric(self, name: str) -> np.ndarray:
        if name not in self.metrics:
            raise KeyError(f"curve has no metric {name!r}; it has: {', '.join(sorted(self.metrics))}")
        return np.asarray(self.metrics[name], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        def plain(values):
            return [float(v) if math.isfinite(v) else repr(float(v)) for v in np.asarray(values, dtype=np.float64)]

        return {
            "steps": [int(s) for s in self.steps],
            "learning_rates": [float(v) for v in self.learning_rates],
            "metrics": {k: plain(v) for k, v in self.metrics.items()},
            "diverged": bool(self.diverged),
            "steps_run": int(self.steps_run),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Curve":
        def array(values):
            return np.array([float(v) for v in values], dtype=np.float64)  # float('nan'/'inf') parse repr

        return cls(
            steps=np.array(data["steps"], dtype=np.int64),
            learning_rates=np.array(data["learning_rates"], dtype=np.float64),
            metrics={k: array(v) for k, v in data["metrics"].items()},
            diverged=bool(data["diverged"]),
            steps_run=int(data["steps_run"]),
        )
