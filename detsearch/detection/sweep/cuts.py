"""Score cuts: what a ``score_threshold`` keeps, in float32 and in float64.

The sweep keeps a detection when ``float32(score) > float32(threshold)``: TensorFlow's NMS
kernels, Model Garden's post-processing and a SavedModel compare in float32. A user applying a
written threshold to a COCO results file compares the file's float64 scores, ``score >
threshold``. The two agree on most scores, not on all: ``0.746062 > float32(0.746062)`` is true
in float64, and a float32 score equal to ``float32(0.05)`` passes ``> 0.05`` in float64 only.

Every threshold the project writes (the chosen configuration's, per-class thresholds, hence
thresholds.yaml and the exports) is therefore a *separating* threshold: it lies at or above
the highest dropped score and strictly below the lowest kept one, both as float64 and as
float32, so ``score > t`` selects the same detections whichever precision compares them.

Such a threshold always exists for a float32 cut: every kept score rounds to a float32 above
every dropped score's, so the highest dropped score itself separates (float32 rounding is
monotonic). `separating_threshold` prefers, in order: the threshold as asked, when it already
separates; the shortest decimal strictly between the two scores; the highest dropped score.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["REDUCED_DTYPES", "float32_cut", "next_value", "reduced_threshold", "separates", "separating_threshold", "threshold_between",
           "threshold_keeping"]

REDUCED_DTYPES = ("bfloat16", "float16")
"""Score dtypes of Model Garden's mixed precision (``runtime.mixed_precision_dtype``)."""


def float32_cut(threshold: float) -> float:
    """The float64 ``c`` with ``s > c`` exactly when ``float32(s) > float32(threshold)``, for
    every float64 ``s``: NMS keeps ``score > threshold`` in float32 (TensorFlow's kernels), and
    COCO matching sees the float64 scores, so the sweep cuts them at ``c``.

    ``float32(s) > t`` (t a float32) means ``s`` rounds to the next float32 ``u`` or above:
    ``s`` beyond the midpoint ``m`` of ``t`` and ``u``, or ``s == m`` when round-half-even goes
    to ``u`` (``u``'s last mantissa bit is 0). For float32 scores ``s > c`` is ``s > t``.
    """
    t = np.float32(threshold)
    u = np.nextafter(t, np.float32(np.inf))
    middle = (float(t) + float(u)) / 2  # exact: float32 values have 24-bit mantissas
    if int(np.asarray(u).view(np.uint32)) & 1 == 0:
        return float(np.nextafter(middle, -np.inf))
    return middle


def reduced_threshold(threshold: float, dtype: str) -> float:
    """``threshold`` as TensorFlow makes it a ``dtype`` tensor to compare ``dtype`` scores with
    (``tf.math.greater(scores, threshold)`` under mixed precision): rounded to float32, then to
    ``dtype``, each to nearest, ties to even (TensorFlow converts a Python float through float32:
    ``1 + 2**-8 + 2**-40`` becomes bfloat16 1.0, not 1.0078125). For scores that are ``dtype``
    values, ``score > threshold`` in that dtype is ``score > reduced_threshold`` in any wider
    float."""
    single = np.float32(threshold)
    if dtype == "float16":
        return float(np.float16(single))
    if dtype != "bfloat16":
        raise ValueError(f"dtype must be one of {', '.join(REDUCED_DTYPES)}, got {dtype!r}")
    if not np.isfinite(single):
        return float(single)
    bits = int(np.asarray(single).view(np.uint32))
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped > 0x8000 or (dropped == 0x8000 and kept & 1):  # to nearest, ties to even
        kept += 1
    return float(np.asarray(np.uint32(kept << 16)).view(np.float32))


def next_value(value: float, dtype: str) -> float:
    """The smallest ``dtype`` value above ``value``, a ``dtype`` value (`REDUCED_DTYPES`)."""
    if dtype == "float16":
        return float(np.nextafter(np.float16(value), np.float16(np.inf)))
    single = np.float32(value)
    if not single >= 0:
        raise ValueError(f"next_value takes a value >= 0, got {value!r}")
    bits = int(np.asarray(single).view(np.uint32)) + 0x10000  # bfloat16: the float32's top 16 bits, one up
    return float(np.asarray(np.uint32(bits & 0xFFFF0000)).view(np.float32))


def separates(threshold: float, dropped: float | None, kept: float | None) -> bool:
    """Whether ``score > threshold`` drops ``dropped`` (the highest dropped score) and keeps
    ``kept`` (the lowest kept one) both in float64 and in float32; None: no such score."""
    t32 = np.float32(threshold)
    if dropped is not None and (dropped > threshold or np.float32(dropped) > t32):
        return False
    return kept is None or (kept > threshold and np.float32(kept) > t32)


def separating_threshold(threshold: float, scores: np.ndarray) -> float:
    """A threshold keeping, of ``scores`` (as given, any float dtype), exactly those with
    ``float32(score) > float32(threshold)``, whether compared in float64 or in float32.

    ``threshold`` itself where it does; otherwise the shortest decimal strictly between the
    highest dropped and the lowest kept score that does (the highest dropped score where no
    decimal of up to 17 digits does).
    """
    scores = np.asarray(scores).ravel()
    if scores.dtype not in (np.float16, np.float32, np.float64):
        scores = scores.astype(np.float64)
    # against a float64 scalar NumPy compares in float64, without a float64 copy of the scores
    return threshold_keeping(scores, scores > np.float64(float32_cut(threshold)), float(threshold))


def threshold_keeping(scores: np.ndarray, kept: np.ndarray, preferred: float) -> float:
    """The separating threshold (`threshold_between`) that keeps ``scores[kept]`` (as given; a
    float dtype) and drops the others; ``kept`` must be the scores above some float32 value."""
    dropped = ~kept
    dropped_max = float(np.max(scores, where=dropped, initial=-np.inf)) if dropped.any() else None
    kept_min = float(np.min(scores, where=kept, initial=np.inf)) if kept.any() else None
    return threshold_between(dropped_max, kept_min, preferred)


def threshold_between(dropped: float | None, kept: float | None, preferred: float) -> float:
    """The separating threshold (`separates`) for the highest dropped and the lowest kept score:
    ``preferred`` where it separates, else the shortest decimal that does, else ``dropped``.

    ``dropped`` and ``kept`` must be separable in float32 (``float32(dropped) <
    float32(kept)``); ValueError otherwise. With ``kept`` None every threshold at or above
    ``dropped`` separates; with ``dropped`` None, ``preferred`` must be below ``kept``.
    """
    if separates(preferred, dropped, kept):
        return float(preferred)
    if dropped is None:
        raise ValueError(f"threshold {preferred!r} does not keep the lowest score {kept!r}")
    if kept is not None and not np.float32(dropped) < np.float32(kept):
        raise ValueError(f"scores {dropped!r} and {kept!r} are one float32 value: no threshold separates them")
    target = dropped if kept is None else (dropped + kept) / 2
    for digits in range(1, 18):
        scale = 10.0 ** digits
        for candidate in (round(target, digits), math.ceil(target * scale) / scale, math.floor(target * scale) / scale):
            if candidate != dropped and separates(candidate, dropped, kept):
                return candidate
    return dropped
