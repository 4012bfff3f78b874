"""One-sided lower confidence bounds of a proportion: the exact (Clopper-Pearson) bound.

Of ``n`` trials with ``k`` successes (true positives of ``n`` kept detections: precision; of
``n`` ground truth boxes: recall), the lower bound at confidence ``C`` is

    L(k, n, C) = 0                                       if k == 0
               = the (1 - C) quantile of Beta(k, n - k + 1)   otherwise.

Why it is a bound: for ``X ~ Binomial(n, p)``, ``P(X >= k) = I_p(k, n - k + 1)`` (the
regularized incomplete beta function, increasing in ``p``), so ``L`` is the ``p`` at which
seeing ``k`` or more successes has probability exactly ``alpha = 1 - C``. Whatever the true
``p``, ``L(X, n, C) > p`` only when ``X`` lies in the upper tail of probability at most
``alpha``: ``P(L <= p) >= C``. For the same reason ``L >= t`` exactly when
``I_t(k, n - k + 1) <= alpha`` (`lower_bound_reaches` decides a target this way, one
evaluation per cut instead of a quantile).

Nothing here needs SciPy (the core install has none): ``I_x(a, b)`` is Numerical Recipes'
continued fraction (modified Lentz, float64), its prefactor ``x^a (1 - x)^b / B(a, b)`` from
``math.lgamma`` and Stirling's series; the quantile is bisection on ``[0, 1]`` down to adjacent float64 values, with
the closed forms of ``k == n`` (``alpha^(1/n)``) and ``k == 1`` (``1 - (1 - alpha)^(1/n)``), and
the median 1/2 of a symmetric Beta (``C = 0.5``, ``n = 2k - 1``).
Against ``scipy.stats.beta.ppf(1 - C, k, n - k + 1)`` it agrees to 1e-12 absolute for ``n`` up
to 1e6 and ``C`` in [0.5, 0.9999] (tests/detection/test_per_class_confidence.py).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["beta_quantile", "clopper_pearson_lower", "lower_bound_reaches", "regularized_beta"]

_TINY = 1e-300
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SCREEN = 1e-6
"""`lower_bound_reaches` compares ``I_t`` with ``alpha`` directly outside ``alpha * (1 +- _SCREEN)``
and computes the bound itself inside (where the comparison is too close to call)."""


@numba.njit(cache=True, nogil=True)
def _continued_fraction(x: float, a: float, b: float) -> float:
    """Numerical Recipes' ``betacf``: the continued fraction of ``I_x(a, b)``, converging fast
    for ``x < (a + 1) / (a + b + 2)`` (about ``sqrt(max(a, b))`` terms)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _TINY:
        d = _TINY
    d = 1.0 / d
    h = d
    for m in range(1, 10_000_000):
        m2 = 2.0 * m
        c, d = _lentz_step(m * (b - m) * x / ((qam + m2) * (a + m2)), c, d)  # the even term
        h *= d * c
        c, d = _lentz_step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)), c, d)  # the odd term
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return h


@numba.njit(cache=True, nogil=True, inline="always")
def _lentz_step(aa: float, c: float, d: float) -> tuple[float, float]:
    """One step of the modified Lentz method with coefficient ``aa``: the new ``(c, 1 / d)``."""
    d = 1.0 + aa * d
    if abs(d) < _TINY:
        d = _TINY
    c = 1.0 + aa / c
    if abs(c) < _TINY:
        c = _TINY
    return c, 1.0 / d


@numba.njit(cache=True, nogil=True)
def _stirling_rest(z: float) -> float:
    """``lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2)``: the Stirling series from 10 on
    (first term left out: 691 / (360360 z^11) < 2e-14), else from ``math.lgamma``."""
    if z >= 10.0:
        w = 1.0 / (z * z)
        return (1.0 / 12.0 - w * (1.0 / 360.0 - w * (1.0 / 1260.0 - w * (1.0 / 1680.0 - w / 1188.0)))) / z
    return math.lgamma(z) - ((z - 0.5) * math.log(z) - z + _HALF_LOG_2PI)


@numba.njit(cache=True, nogil=True)
def _log_front(x: float, a: float, b: float) -> float:
    """``log(x^a (1 - x)^b / B(a, b))`` with the large terms of ``log B`` (Stirling) cancelled
    by hand: ``lgamma`` of ``a, b ~ 1e6`` is ~1e7, whose last bits would cost ~1e-9 of ``I``."""
    s = a + b
    return (a * math.log(x * s / a) + b * (math.log1p(-x) + math.log1p(a / b)) + 0.5 * math.log(a * b / s)
            - _HALF_LOG_2PI - _stirling_rest(a) - _stirling_rest(b) + _stirling_rest(s))


@numba.njit(cache=True, nogil=True)
def _regularized_beta(x: float, a: float, b: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(_log_front(x, a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _continued_fraction(x, a, b) / a
    return 1.0 - front * _continued_fraction(1.0 - x, b, a) / b


@numba.njit(cache=True, nogil=True)
def _beta_quantile(p: float, a: float, b: float) -> float:
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if b == 1.0:  # I_x(a, 1) = x^a
        return math.exp(math.log(p) / a)
    if a == 1.0:  # I_x(1, b) = 1 - (1 - x)^b
        return -math.expm1(math.log1p(-p) / b)
    if a == b and p == 0.5:  # the median of a symmetric Beta: exactly 1/2 (a target it may tie)
        return 0.5
    low, high = 0.0, 1.0
    for _ in range(2000):
        middle = 0.5 * (low + high)
        if middle <= low or middle >= high:
            break
        if _regularized_beta(middle, a, b) < p:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@numba.njit(cache=True, nogil=True)
def _lower(k: int, n: int, alpha: float) -> float:
    if k <= 0:
        return 0.0
    return _beta_quantile(alpha, float(k), float(n - k + 1))


@numba.njit(cache=True, nogil=True)
def _reaches(successes: np.ndarray, trials: np.ndarray, target: float, alpha: float) -> np.ndarray:
    out = np.zeros(len(successes), np.bool_)
    for i in range(len(successes)):
        k, n = successes[i], trials[i]
        if k <= 0 or n <= 0:
            continue  # the bound is 0 (or undefined): below any target > 0
        tail = _regularized_beta(target, float(k), float(n - k + 1))  # P(X >= k | n, target)
        if tail < alpha * (1.0 - _SCREEN):
            out[i] = True
        elif tail <= alpha * (1.0 + _SCREEN):  # too close to call: the bound itself
            out[i] = _lower(k, n, alpha) >= target
    return out


def _confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)) \
            or not (0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    return float(confidence)


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def regularized_beta(x: float, a: float, b: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function (the Beta(a, b) distribution
    function at ``x``), for ``a, b > 0``; 0 at ``x <= 0``, 1 at ``x >= 1``."""
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"a and b must be finite numbers > 0, got {a!r}, {b!r}")
    return float(_regularized_beta(float(x), float(a), float(b)))


def beta_quantile(p: float, a: float, b: float) -> float:
    """The ``p`` quantile of Beta(a, b) (``a, b >= 1``): the ``x`` with ``I_x(a, b) = p``."""
    if not (a >= 1 and b >= 1 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"a and b must be finite numbers >= 1, got {a!r}, {b!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    return float(_beta_quantile(float(p), float(a), float(b)))


def clopper_pearson_lower(successes: int, trials: int, confidence: float) -> float:
    """The one-sided lower Clopper-Pearson bound at ``confidence`` of a proportion seen as
    ``successes`` of ``trials`` (``trials >= 1``): 0 for no success, else the ``1 - confidence``
    quantile of Beta(successes, trials - successes + 1)."""
    k, n = _count(successes, "successes"), _count(trials, "trials")
    if n == 0 or k > n:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {k} of {n}")
    return float(_lower(k, n, 1.0 - _confidence(confidence)))


def lower_bound_reaches(successes, trials, target: float, confidence: float) -> np.ndarray:
    """bool ``[m]``: whether ``clopper_pearson_lower(successes[i], trials[i], confidence) >=
    target`` (``target`` in (0, 1]), for aligned int arrays; False where ``trials[i]`` is 0.

    Decided by ``I_target(k, n - k + 1) <= 1 - confidence`` (equivalent, see the module
    docstring), one continued fraction per entry; where the two sides are within a relative
    1e-6 of each other, by the bound itself."""
    successes = np.ascontiguousarray(successes, np.int64).reshape(-1)
    trials = np.ascontiguousarray(trials, np.int64).reshape(-1)
    if successes.shape != trials.shape:
        raise ValueError(f"successes and trials must be aligned, got {successes.shape} and {trials.shape}")
    if len(successes) and ((successes < 0).any() or (successes > trials).any()):
        raise ValueError("need 0 <= successes <= trials")
    if not (0.0 < target <= 1.0):
        raise ValueError(f"target must be in (0, 1], got {target!r}")
    return _reaches(successes, trials, float(target), 1.0 - _confidence(confidence))
