"""Pure decision rules over curves: smoothing, divergence cut, learning-rate choice, ties.

Every function here takes arrays and returns numbers; none trains, none reads global state.
Curves are compared as *badness* (lower is better): the loss itself, or minus the accuracy, so
that one implementation serves `by_acc=True` and `by_acc=False`. See docs/hyperselector.md.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from detsearch.checks import positive_int

LOSS_EXPLOSION_FACTOR = 4.0
"""A smoothed loss above this multiple of the best smoothed loss so far counts as diverged
(fastai's LR finder stops at the same factor)."""

RISE_MARGIN = 0.1
"""A run of rising points counts as divergence only once it is this fraction above the best
smoothed loss so far (a flat, noisy start drifts up a little without diverging)."""

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
    window = positive_int(window, "window")
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
        one before it) that has risen more than `RISE_MARGIN` x |best so far| above the best:
        the cut is placed where that run began, since every learning rate after it belongs to
        the divergence;
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
    positive_int(max_thres, "max_thres", minimum=0)
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
            if run > max_thres and value - best > RISE_MARGIN * abs(best):
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


def ties(scores: Sequence[float], diff_thres: float, bands: Sequence[float] | None = None) -> list[int]:
    """Indices of candidates that tie with the best.

    A candidate ties when ``score - best <= max(diff_thres * |best|, band)``: scores are badness
    (lower is better); the threshold is relative so that it means the same for a loss and an
    accuracy; ``bands`` (optional, per candidate) is the measured noise of its difference from
    the best (`noise_bands`). A diverged candidate (+inf) never ties.
    """
    if diff_thres < 0:
        raise ValueError(f"diff threshold must be >= 0, got {diff_thres!r}")
    scores = [float(s) for s in scores]
    best = min(scores)
    if not math.isfinite(best):
        return []
    bands = [0.0] * len(scores) if bands is None else [float(b) for b in bands]
    return [i for i, s in enumerate(scores) if math.isfinite(s) and s - best <= max(diff_thres * abs(best), bands[i])]


def choose_weight_decay(candidates: Sequence[float], scores: Sequence[float], diff_thres: float,
                        default: float | None = None, bands: Sequence[float] | None = None) -> int:
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
    return _default_among_ties("weight_decay", candidates, scores, diff_thres, default, bands,
                               lambda v: math.log(v + WEIGHT_DECAY_LOG_FLOOR))


def choose_momentum(candidates: Sequence[float], scores: Sequence[float], default: float | None,
                    bands: Sequence[float] | None = None) -> int:
    """Index of the chosen momentum: among the candidates whose tails tie with the best within
    the measured noise (``bands``), the one nearest ``default`` in ``log(1 - momentum)`` (the
    log of the step-size multiplier); the best score when there is no default.

    Raises:
      ValueError: every candidate diverged.
    """
    return _default_among_ties("momentum", candidates, scores, 0.0, default, bands, lambda v: math.log1p(-v))


def _default_among_ties(name, candidates, scores, diff_thres, default, bands, scale) -> int:
    tied = ties(scores, diff_thres, bands)
    if not tied:
        raise ValueError(f"every {name} candidate diverged: {list(candidates)}")
    if default is None:
        return min(tied, key=lambda i: (scores[i], i))
    return min(tied, key=lambda i: (abs(scale(candidates[i]) - scale(default)), scores[i], i))


def choose_best(candidates: Sequence[float], scores: Sequence[float], name: str) -> int:
    """Index of the best-scoring candidate; equal scores go to the earlier candidate.

    Raises:
      ValueError: every candidate diverged.
    """
    scores = [float(s) for s in scores]
    if not any(math.isfinite(s) for s in scores):
        raise ValueError(f"every {name} candidate diverged: {list(candidates)}")
    return int(np.argmin(scores))  # argmin returns the first of equal minima


# Horizon correction: trials are short, the final training is long, and the best constant
# learning rate falls with the training length (docs/hyperselector.md, "Horizon").

HORIZON_EXPONENTS = {"none": 0.0, "fourth_root": 0.25, "sqrt": 0.5}
"""Fixed horizon rules: the learning rate is scaled by ``(trial / final) ** exponent``. ``sqrt``
is SGD's best constant step on a convex problem (``1 / sqrt(T)`` in the number of steps ``T``);
``fourth_root`` measured best across the benchmark's models (docs/hyperselector.md)."""

HORIZON_RULES = (*HORIZON_EXPONENTS, "fit")
"""``fit``: scaled by ``(trial / final) ** alpha`` with ``alpha`` fitted from the constant
learning-rate trials (`fit_horizon_exponent`), ``fourth_root``'s exponent when the fit has too
few points."""

FIT_FALLBACK_EXPONENT = HORIZON_EXPONENTS["fourth_root"]

HORIZON_FRACTIONS = (0.25, 0.5, 1.0)
"""Horizons, as fractions of a trial's length, at which `fit_horizon_exponent` locates the best
learning rate."""

MAX_HORIZON_EXPONENT = 1.0
"""A fitted exponent is clipped to ``[0, MAX_HORIZON_EXPONENT]``."""

NOISE_BLOCKS = 5
"""`paired_noise` splits a tail into this many consecutive blocks."""

NOISE_SIGMAS = 2.0
"""Two candidates tie when their tails differ by less than this many standard errors."""


def horizon_score(steps: np.ndarray, values: np.ndarray, horizon: float) -> float:
    """Badness of a constant learning-rate trial had it stopped at ``horizon`` steps: the mean
    of its points in the second half of that horizon, ``horizon / 2 < step <= horizon`` (for the
    whole trial and ``window`` = half its points, the same points as `tail_score`). +inf when
    no such point, or a non-finite one."""
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    inside = (steps > horizon / 2) & (steps <= horizon)
    if not inside.any() or not np.all(np.isfinite(values[steps <= horizon])):
        return math.inf
    return float(np.mean(values[inside]))


def best_log_lr(log_lrs: Sequence[float], scores: Sequence[float]) -> tuple[float, bool]:
    """The log learning rate of the lowest score, refined by the vertex of the parabola through
    the best candidate and its two neighbours (clipped to their span).

    ``log_lrs`` must be increasing. Returns (log learning rate, interior): interior is False when
    the best is the first or last candidate (the optimum may lie beyond) or every score is +inf.
    """
    x = np.asarray(log_lrs, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(y).any():
        return math.nan, False
    i = int(np.argmin(y))
    if i == 0 or i == len(y) - 1 or not np.isfinite(y[i - 1:i + 2]).all():
        return float(x[i]), False
    x0, x1, x2 = x[i - 1:i + 2]
    y0, y1, y2 = y[i - 1:i + 2]
    denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denominator
    if not a > 0:  # flat or concave: no vertex to trust
        return float(x1), True
    return float(np.clip(-b / (2 * a), x0, x2)), True


def fit_horizon_exponent(learning_rates: Sequence[float], curves: Sequence[tuple[np.ndarray, np.ndarray]],
                         total_steps: int) -> tuple[float | None, list[tuple[float, float, bool]]]:
    """Fits ``alpha`` in ``best_lr(T) ~ T ** -alpha`` from constant learning-rate trials.

    For every horizon ``h`` in `HORIZON_FRACTIONS` of ``total_steps``, each trial is scored as if
    it had stopped at ``h`` (`horizon_score`) and the best learning rate is located
    (`best_log_lr`). ``alpha`` is minus the least-squares slope of log best learning rate on log
    horizon over the horizons whose best is interior, clipped to ``[0, MAX_HORIZON_EXPONENT]``.

    Args:
      learning_rates: the trials' constant learning rates (any order).
      curves: per trial, (steps [P], badness [P]).
      total_steps: the trials' length.

    Returns:
      (alpha, or None with fewer than two interior horizons; per horizon (h, best learning rate,
      interior)).
    """
    order = np.argsort(learning_rates)
    log_lrs = np.log(np.asarray(learning_rates, dtype=np.float64)[order])
    found = []
    for fraction in HORIZON_FRACTIONS:
        horizon = fraction * total_steps
        scores = [horizon_score(*curves[i], horizon) for i in order]
        log_lr, interior = best_log_lr(log_lrs, scores)
        found.append((horizon, math.exp(log_lr) if math.isfinite(log_lr) else math.nan, interior))
    points = [(math.log(h), math.log(lr)) for h, lr, interior in found if interior]
    if len(points) < 2:
        return None, found
    x, y = np.array(points).T
    slope = float(np.polyfit(x, y, 1)[0])
    return float(np.clip(-slope, 0.0, MAX_HORIZON_EXPONENT)), found


def horizon_factor(exponent: float, trial_steps: int, final_steps: int) -> float:
    """The factor from the trials' best learning rate to the final run's:
    ``(trial_steps / final_steps) ** exponent``."""
    return (trial_steps / final_steps) ** exponent


def paired_noise(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of the mean difference between two tails measured on the same batches.

    The difference is cut into `NOISE_BLOCKS` consecutive blocks (neighbouring points share
    batches, so single points are not independent) and the standard error of the block means
    is returned; 0 when the tails are too short to block (fewer than `NOISE_BLOCKS` points),
    +inf when either is not finite.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        return math.inf
    if len(d) < NOISE_BLOCKS:
        return 0.0
    size = len(d) // NOISE_BLOCKS
    means = d[len(d) - size * NOISE_BLOCKS:].reshape(NOISE_BLOCKS, size).mean(axis=1)
    return float(np.std(means, ddof=1) / math.sqrt(NOISE_BLOCKS))


def noise_bands(scores: Sequence[float], tails: Sequence[np.ndarray]) -> list[float]:
    """Per candidate, `NOISE_SIGMAS` standard errors of its tail's difference from the best
    candidate's (`paired_noise`); 0 for the best itself and +inf for a diverged candidate."""
    scores = [float(s) for s in scores]
    if not any(math.isfinite(s) for s in scores):
        return [math.inf] * len(scores)
    best = int(np.argmin(scores))
    return [0.0 if i == best else (NOISE_SIGMAS * paired_noise(tails[i], tails[best]) if math.isfinite(s) else math.inf)
            for i, s in enumerate(scores)]
