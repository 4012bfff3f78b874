"""Checks of single values and of whole arrays, raising `CacheError`.

Every bad input of the cache package is a `CacheError` whose message names what is wrong
(the field, or the array and the first bad index); the checks here are the only copy of each
rule, used by the meta fields, the arrays' validation, the per-image checks of the writers and
the importers.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "CHUNK_ELEMENTS",
    "INT32_MAX",
    "CacheError",
    "as_int",
    "as_items",
    "as_real",
    "check_offsets",
    "chunks",
    "find_bad_box",
    "find_bad_probability",
    "find_out_of_range",
    "image_size",
    "json_copy",
    "optional_positive_int",
    "probability",
    "unique_ints",
]

CHUNK_ELEMENTS = 1 << 22
"""Rows or entries per validation step: bounds the temporary memory of a check."""

INT32_MAX = int(np.iinfo(np.int32).max)


class CacheError(ValueError):
    """A cache (or an importer's input) is missing, corrupt, inconsistent or unsupported.

    The message names the file or array and the first bad index or record.
    """


def as_int(value: Any, what: str) -> int:
    """``value`` as an int (any integral type but bool)."""
    if isinstance(value, (bool, np.bool_)):
        raise CacheError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise CacheError(f"{what} must be an integer, got {value!r} ({type(value).__name__})") from None


def as_real(value: Any, what: str) -> float:
    """``value`` as a float (any real type but bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise CacheError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def as_items(value: Any, what: str) -> tuple:
    """``value`` as a tuple; strings, bytes and mappings are refused."""
    if isinstance(value, (str, bytes, Mapping)):
        raise CacheError(f"{what} must be a sequence, got {type(value).__name__}")
    try:
        return tuple(value)
    except TypeError:
        raise CacheError(f"{what} must be a sequence, got {type(value).__name__}") from None


def unique_ints(values: Any, what: str) -> tuple[int, ...]:
    """``values`` as a tuple of ints without repeats (the message names the first repeat)."""
    items = tuple(as_int(v, f"{what}[{i}]") for i, v in enumerate(as_items(values, what)))
    if len(set(items)) != len(items):
        first: dict[int, int] = {}
        for i, v in enumerate(items):
            if v in first:
                raise CacheError(f"{what}[{i}] = {v} repeats {what}[{first[v]}]")
            first[v] = i
    return items


def optional_positive_int(value: Any, what: str) -> int | None:
    """None, or an int >= 1."""
    if value is None:
        return None
    number = as_int(value, what)
    if number < 1:
        raise CacheError(f"{what} must be >= 1 or None, got {number}")
    return number


def probability(value: Any, what: str = "score_floor") -> float:
    """A finite number in [0, 1], both ends included (score floors, thresholds)."""
    number = as_real(value, what)
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise CacheError(f"{what} must be in [0, 1], got {value!r}")
    return number


def image_size(value: Any, what: str) -> tuple[int, int]:
    """``(height, width)``, both ints >= 1."""
    items = as_items(value, what)
    if len(items) != 2:
        raise CacheError(f"{what} must be (height, width), got {value!r}")
    height, width = (as_int(v, what) for v in items)
    if height < 1 or width < 1:
        raise CacheError(f"{what} = ({height}, {width}): height and width must be >= 1")
    return height, width


def json_copy(value: Any, what: str) -> dict[str, Any]:
    """A JSON-normalised copy of the mapping ``value`` ({} for None)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CacheError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise CacheError(f"{what} must be JSON-serialisable (finite numbers, str keys): {error}") from None


def chunks(length: int, size: int = CHUNK_ELEMENTS) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs that cover ``range(length)`` in steps of ``size``."""
    for start in range(0, length, size):
        yield start, min(length, start + size)


def find_bad_box(boxes: np.ndarray) -> tuple[int, list[float], str] | None:
    """First box (in ``[N, 4]`` yxyx) that is not finite or has ymin > ymax or xmin > xmax."""
    for start, stop in chunks(boxes.shape[0]):
        chunk = np.asarray(boxes[start:stop])
        finite = np.isfinite(chunk).all(axis=1)
        ok = finite & (chunk[:, 0] <= chunk[:, 2]) & (chunk[:, 1] <= chunk[:, 3])
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            box = chunk[i]
            if not finite[i]:
                reason = "is not finite"
            elif box[0] > box[2]:
                reason = "has ymin > ymax"
            else:
                reason = "has xmin > xmax"
            return start + i, [float(v) for v in box], reason
    return None


def find_bad_probability(values: np.ndarray, low: np.floating, low_name: str) -> tuple[int, float, str] | None:
    """First value that is not finite or outside [low, 1]; ``low`` is compared in float32 (a
    float64 score passes the float32 floor when it rounds to at least it)."""
    for start, stop in chunks(values.shape[0]):
        chunk = np.asarray(values[start:stop])
        ok = (chunk.astype(np.float32) >= low) & (chunk <= 1)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            value = float(chunk[i])
            if not math.isfinite(value):
                reason = "is not finite"
            elif value < low:
                reason = f"is below {low_name}"
            else:
                reason = "is above 1"
            return start + i, value, reason
    return None


def find_out_of_range(values: np.ndarray, low: int, high: int | None) -> int | None:
    """First index whose value is < low or >= high (high None: no upper bound)."""
    for start, stop in chunks(values.shape[0]):
        chunk = np.asarray(values[start:stop])
        bad = chunk < low
        if high is not None:
            bad |= chunk >= high
        if bad.any():
            return start + int(np.flatnonzero(bad)[0])
    return None


def check_offsets(where: str, name: str, offsets: np.ndarray, total: int, total_name: str) -> np.ndarray:
    """Offsets start at 0, never decrease and end at ``total`` (the length of ``total_name``)."""
    offsets = np.asarray(offsets)
    if offsets[0] != 0:
        raise CacheError(f"{where}: {name}[0] = {offsets[0]}, expected 0")
    decreasing = np.flatnonzero(np.diff(offsets) < 0)
    if decreasing.size:
        i = int(decreasing[0]) + 1
        raise CacheError(f"{where}: {name}[{i}] = {offsets[i]} is less than {name}[{i - 1}] = {offsets[i - 1]}")
    if offsets[-1] != total:
        raise CacheError(f"{where}: {name}[-1] = {offsets[-1]}, but {total_name} has {total} elements")
    return offsets
