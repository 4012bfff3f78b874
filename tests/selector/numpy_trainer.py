"""A real, tiny trainer in NumPy (softmax regression with momentum SGD) that honours the
`Trainer` contract; lets the selector be tested end to end without TensorFlow."""

from __future__ import annotations

import hashlib

import numpy as np

from detsearch.selector.curves import Curve, TrialSpec
from detsearch.training.base import CurveRecorder


class NumpyTrainer:
    def __init__(self, steps: int = 200, batch_size: int = 32, classes: int = 4, features: int = 8, seed: int = 0,
                 evaluation_total_steps: int = 5):
        rng = np.random.default_rng(seed)
        centers = rng.normal(0, 1.5, size=(classes, features))
        labels = rng.integers(0, classes, size=steps * batch_size)
        inputs = centers[labels] + rng.normal(0, 1.0, size=(labels.size, features))
        self.batches = [(inputs[i * batch_size:(i + 1) * batch_size], labels[i * batch_size:(i + 1) * batch_size])
                        for i in range(steps)]
        self.initial = rng.normal(0, 0.01, size=(features, classes))
        self.evaluation_total_steps = evaluation_total_steps
        self.runs = 0

    def fingerprint(self) -> str:
        return hashlib.sha256(self.initial.tobytes() + self.batches[0][0].tobytes()).hexdigest()

    def num_parameters(self) -> int:
        return self.initial.size

    def metric_names(self):
        return ("loss", "accuracy")

    def run(self, trial: TrialSpec, on_step=None) -> Curve:
        self.runs += 1
        weights = self.initial.copy()
        velocity = np.zeros_like(weights)
        recorder = CurveRecorder(trial, "loss", self.evaluation_total_steps)
        momentum = 0.0 if trial.momentum is None else trial.momentum
        for index, lr in enumerate(trial.schedule.values()):
            x, y = self.batches[index]
            with np.errstate(all="ignore"):
                # Unstabilised softmax: large weights overflow to inf/NaN, a real divergence.
                logits = x @ weights
                probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
                accuracy = np.mean(np.argmax(logits, axis=1) == y)
                grad = x.T @ (probs - np.eye(weights.shape[1])[y]) / len(y) + trial.weight_decay * weights
                velocity = momentum * velocity + grad
                weights = weights - lr * velocity
            if on_step:
                on_step(index + 1)
            if not recorder.after_step(index, {"loss": loss, "accuracy": accuracy}):
                break
        return recorder.curve()
