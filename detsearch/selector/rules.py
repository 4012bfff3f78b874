"""Pure decision rules over curves: smoothing, divergence cut, learning-rate choice, ties.

Every function here takes arrays and returns numbers; none trains, none reads global state.
Curves are compared as *badness* (lower is better): the loss itself, or minus the accuracy, so
that one implementation serves `by_acc=True` and `by_acc=False`. See docs/hyperselector.md.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

LOSS_EXPLOSION_FACTOR = 4.0
"""A smoothed loss above this multiple of the best smoothed loss so far counts as diverged
(fastai's LR finder stops at the same factor)."""

LEADING_SKIP_FRACTION = 0.1
"""LR rules ignore this leading fraction of the range test's points."""

WEIGHT_DECAY_LOG_FLOOR = 1e-12
"""Added before taking logs of weight decays, so that a weight decay of 0 has a distance."""

LR_MINIMUM_DIVISOR = 10.0
"""`minimum_over_10` backs off from the best learning rate by this factor."""


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Debiased exponential moving average with ``beta = 1 - 1 / window`` (fastai's LR finder).

    ``window=1`` returns the values unchanged; ``window=50`` is fastai's beta of 0.98. Measured
    on MNIST (docs/hyperselector.md), the steepest-descent rule on this smoothing picked within
    0.6 accuracy points of the grid optimum for every window from 5 to 50, where a centred moving
    average needed a window near 10 and lost 2.6 points at 50. Everything from the first NaN/inf
    on is NaN: the cut rule stops there.

    Args:
      values: float [N].
      window: int >= 1.

    Returns:
      float64 [N].
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window!r}")
    values = np.asarray(values, dtype=np.float64)
    beta = 1.0 - 1.0 / window
    out = np.full(len(values), np.nan)
    average = 0.0
    for i, value in enumerate(values):
        if not math.isfinite(value):
            break
        average = beta * average + (1.0 - beta) * value
        out[i] = average / (1.0 - beta ** (i + 1))
    return out


def badness(values: np.ndarray, by_acc: bool) -> np.ndarray:
    """Lower is better: the loss, or minus the accuracy."""
    values = np.asarray(values, dtype=np.float64)
    return -values if by_acc else values


def cut_index(smoothed_badness: np.ndarray, max_thres: int, loss: np.ndarray | None = None,
              explosion_check: bool = True) -> int:
    """End (exclusive) of the usable part of an LR range curve.

    The curve is cut at the first of:
      - a non-finite smoothed value, or a non-finite raw ``loss`` value;
      - a run of more than ``max_thres`` consecutive worsening points (each point worse than the
        one before it): the cut is placed where that run began, since every learning rate
        after it belongs to the divergence;
      - when ``explosion_check``: a smoothed badness above ``LOSS_EXPLOSION_FACTOR`` times the
        best so far (only meaningful for a positive loss; pass False for accuracy curves).

    Args:
      smoothed_badness: float [N], lower is better.
      max_thres: int >= 0, consecutive worsening points tolerated.
      loss: optional float [N] raw loss, checked for NaN/inf.
      explosion_check: apply the loss explosion test.

    Returns:
      int in [0, N].
    """
    if max_thres < 0:
        raise ValueError(f"max_thres must be >= 0, got {max_thres!r}")
    values = np.asarray(smoothed_badness, dtype=np.float64)
    n = len(values)
    if loss is not None:
        bad = ~np.isfinite(np.asarray(loss, dtype=np.float64))
        if bad.any():
            n = int(np.argmax(bad))
    best = math.inf
    run = 0
    for i in range(n):
        value = values[i]
        if not math.isfinite(value):
            return i
        if explosion_check and best > 0 and math.isfinite(best) and value > LOSS_EXPLOSION_FACTOR * best:
            return i
        if i > 0 and value > values[i - 1]:
            run += 1
            if run > max_thres:
                return i - run + 1
        else:
            run = 0
        best = min(best, value)
    return n


# Learning-rate rules: (learning_rates [N], smoothed badness [N]) -> chosen learning rate.
# Each is given only the points before the cut, and at least one point.


def lr_minimum(lrs: np.ndarray, values: np.ndarray) -> float:
    """The learning rate at the best smoothed point."""
    return float(lrs[int(np.argmin(values))])


def lr_minimum_over_10(lrs: np.ndarray, values: np.ndarray) -> float:
    """fastai's ``minimum``: the learning rate at the best point divided by 10."""
    return lr_minimum(lrs, values) / LR_MINIMUM_DIVISOR


def lr_steep(lrs: np.ndarray, values: np.ndarray) -> float:
    """fastai's ``steep``: where the curve falls fastest per unit of log learning rate.

    The slope between neighbouring points is attributed to the left point, as fastai does.
    """
    if len(values) < 2:
        return float(lrs[0])
    slope = np.diff(values) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(slope))])


def lr_valley(lrs: np.ndarray, values: np.ndarray) -> float:
    """fastai's ``valley``: two thirds of the way down the longest descending stretch.

    A line-for-line port of fastai's O(N^2) search for the longest strictly decreasing
    subsequence (including where it records the start of the valley); the chosen index is
    ``start + int(length / 3) + int(length / 6)``.
    """
    n = len(values)
    longest = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if values[i] < values[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[max_end] < longest[i]:
                max_end = i
                max_start = max_end - longest[max_end]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])


LR_RULES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "minimum": lr_minimum,
    "minimum_over_10": lr_minimum_over_10,
    "steep": lr_steep,
    "valley": lr_valley,
}

DEFAULT_LR_RULE = "steep"
"""The rule `HyperSelector` ships with; `tools/bench_selector.py` measures all of `LR_RULES`."""


def choose_lr(lrs: np.ndarray, smoothed_badness: np.ndarray, end: int, rule: str = DEFAULT_LR_RULE) -> float:
    """Applies an LR rule to the points in ``[skip, end)``.

    ``skip`` is the first `LEADING_SKIP_FRACTION` of the whole curve (as fastai drops the first
    tenth of its recording), where the smallest learning rates have barely moved the weights.
    When the cut leaves nothing after the skip, every point before the cut is used.

    Raises:
      ValueError: unknown rule, or no usable point (the curve diverged at its first point: the
        range test should start from a smaller init_learning_rate).
    """
    if rule not in LR_RULES:
        raise ValueError(f"unknown lr rule {rule!r}; known rules: {', '.join(LR_RULES)}")
    if end < 1:
        raise ValueError("the learning-rate range test diverged at its first point; "
                         "lower init_learning_rate (or warmup_lr)")
    skip = int(len(lrs) * LEADING_SKIP_FRACTION)
    if skip >= end:
        skip = 0
    lrs = np.asarray(lrs, dtype=np.float64)[skip:end]
    values = np.asarray(smoothed_badness, dtype=np.float64)[skip:end]
    return LR_RULES[rule](lrs, values)


def tail_score(values: np.ndarray, window: int, loss: np.ndarray | None = None) -> float:
    """Badness of a candidate trial: mean of its last ``window`` points (lower is better).

    A trial whose loss went non-finite, or whose tail holds a non-finite point, scores +inf.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.inf
    if loss is not None and not np.all(np.isfinite(np.asarray(loss, dtype=np.float64))):
        return math.inf
    tail = values[-window:]
    if not np.all(np.isfinite(tail)):
        return math.inf
    return float(np.mean(tail))


def ties(scores: Sequence[float], diff_thres: float) -> list[int]:
    """Indices of candidates that tie with the best.

    A candidate ties when ``score - best <= diff_thres * |best|`` (scores are badness, lower is
    better; the threshold is relative so that it means the same for a loss and an accuracy).
    No candidate ties when every score is +inf.
    """
    if diff_thres < 0:
        raise ValueError(f"diff threshold must be >= 0, got {diff_thres!r}")
    scores = [float(s) for s in scores]
    best = min(scores)
    if not math.isfinite(best):
        return []
    return [i for i, s in enumerate(scores) if s - best <= diff_thres * abs(best)]


def choose_weight_decay(candidates: Sequence[float], scores: Sequence[float], diff_thres: float,
                        default: float | None = None) -> int:
    """Index of the chosen weight_decay.

    Among the candidates that tie with the best (`ties`), the one closest to ``default`` (the
    param_spec value) on a log scale wins; further ties go to the better score, then the earlier
    candidate. Short pre-training separates weight decays poorly (their effect shows late in
    training), so when the curves cannot tell candidates apart the user's default stands; a
    candidate is chosen over it only when it is clearly better. With no default, the best score
    wins.

    Raises:
      ValueError: every candidate diverged.
    """
    tied = ties(scores, diff_thres)
    if not tied:
        raise ValueError(f"every weight_decay candidate diverged: {list(candidates)}")
    if default is None:
        return min(tied, key=lambda i: (scores[i], i))

    def distance(value: float) -> float:
        return abs(math.log(value + WEIGHT_DECAY_LOG_FLOOR) - math.log(default + WEIGHT_DECAY_LOG_FLOOR))

    return min(tied, key=lambda i: (distance(candidates[i]), scores[i], i))


def choose_best(candidates: Sequence[float], scores: Sequence[float], name: str) -> int:
    """Index of the best-scoring candidate; equal scores go to the earlier candidate.

    Raises:
      ValueError: every candidate diverged.
    """
    scores = [float(s) for s in scores]
    if not any(math.isfinite(s) for s in scores):
        raise ValueError(f"every {name} candidate diverged: {list(candidates)}")
    return int(np.argmin(scores))  # argmin returns the first of equal minima
