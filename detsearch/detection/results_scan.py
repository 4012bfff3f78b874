"""A compiled reader for the common shape of a COCO results file, equal to a JSON parser.

`scan_results` reads ``[{"image_id": I, "category_id": C, "bbox": [x, y, w, h], "score": S},
...]`` straight into columns, with any JSON whitespace and the four keys in any order, and
nothing else: a file of any other shape (another key, a duplicate key, a string escape, a
number where an integer is due, an integer beyond 18 digits, malformed JSON) returns None and
is read by the general decoder instead (`results.read_results`), which also explains errors.

Numbers are the values a JSON parser gives (Python's ``float(text)``, correctly rounded):

- an integer is parsed exactly;
- a decimal whose significant digits make an integer ``w <= 2**53`` and whose decimal exponent
  ``e`` lies in ``[-22, 22]`` is ``w * 10**e`` or ``w / 10**-e``: both operands are exact
  float64 values, so the one IEEE operation rounds correctly (Clinger's fast path);
- one of 17 or 18 significant digits (``w < 2**60``; the ``repr`` of many float64 and
  float32 values) with ``e`` in ``[-22, -1]`` is ``w / 10**-e`` in double-double arithmetic
  with a rigorous error bound (`_divide`), unless it lies too near a rounding tie to tell;
- any other number's text is handed back and converted with ``float()``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_KEYS = (b"image_id", b"category_id", b"bbox", b"score")
_POWERS = np.array([10.0**e for e in range(23)])  # exact float64 values
_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's split of a float64 into two halves


@numba.njit(cache=True, nogil=True)
def _skip_space(data, i):
    while i < len(data) and (data[i] == 32 or data[i] == 10 or data[i] == 13 or data[i] == 9):
        i += 1
    return i


@numba.njit(cache=True, nogil=True)
def _number(data, i, powers):
    """Parses the JSON number at ``i``. Returns ``(end, integer, value, kind)``: kind 0 is not
    a number, 1 an integer of at most 18 digits (``integer``), 2 a number whose ``value`` is
    exact, 3 a number to convert from its text."""
    n = len(data)
    start = i
    negative = False
    if i < n and data[i] == 45:  # -
        negative = True
        i += 1
    if i >= n or not (48 <= data[i] <= 57):
        return start, 0, 0.0, 0
    mantissa = 0
    digits = 0  # significant digits in mantissa (at most 18: an int64)
    dropped = False  # a nonzero digit did not fit
    exponent = 0
    if data[i] == 48:  # a leading 0 stands alone
        i += 1
        integer_digits = 1
    else:
        integer_digits = 0
        while i < n and 48 <= data[i] <= 57:
            if digits < 18:
                mantissa = mantissa * 10 + (data[i] - 48)
                digits += 1
            else:
                exponent += 1
                if data[i] != 48:
                    dropped = True
            integer_digits += 1
            i += 1
    is_integer = True
    if i < n and data[i] == 46:  # .
        is_integer = False
        i += 1
        if i >= n or not (48 <= data[i] <= 57):
            return start, 0, 0.0, 0
        while i < n and 48 <= data[i] <= 57:
            if digits < 18:
                if mantissa > 0 or data[i] != 48:
                    mantissa = mantissa * 10 + (data[i] - 48)
                    digits += 1
                exponent -= 1
            elif data[i] != 48:
                dropped = True
            i += 1
    if i < n and (data[i] == 101 or data[i] == 69):  # e E
        is_integer = False
        i += 1
        sign = 1
        if i < n and (data[i] == 43 or data[i] == 45):
            if data[i] == 45:
                sign = -1
            i += 1
        if i >= n or not (48 <= data[i] <= 57):
            return start, 0, 0.0, 0
        written = 0
        exponent_digits = 0
        while i < n and 48 <= data[i] <= 57:
            if exponent_digits < 6:
                written = written * 10 + (data[i] - 48)
            exponent_digits += 1
            i += 1
        if exponent_digits >= 6:
            return i, 0, 0.0, 3
        exponent += sign * written
    if is_integer and integer_digits <= 18:
        return i, -mantissa if negative else mantissa, 0.0, 1
    if dropped:
        return i, 0, 0.0, 3
    if mantissa == 0:
        return i, 0, -0.0 if negative else 0.0, 2
    if mantissa <= (1 << 53) and 0 <= exponent <= 22:
        value = np.float64(mantissa) * powers[exponent]
    elif mantissa <= (1 << 53) and -22 <= exponent < 0:
        value = np.float64(mantissa) / powers[-exponent]
    elif -22 <= exponent < 0:  # 17 or 18 digits, as float64 and float32 values' repr often are
        value = _divide(mantissa, powers[-exponent])
        if math.isnan(value):
            return i, 0, 0.0, 3
    else:
        return i, 0, 0.0, 3
    return i, 0, -value if negative else value, 2


@numba.njit(cache=True, nogil=True)
def _two_product(a, b):
    """``(p, e)`` with ``p = fl(a * b)`` and ``a * b = p + e`` exactly (Dekker's product)."""
    p = a * b
    t = _SPLIT * a
    a_hi = t - (t - a)
    a_lo = a - a_hi
    t = _SPLIT * b
    b_hi = t - (t - b)
    b_lo = b - b_hi
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


@numba.njit(cache=True, nogil=True)
def _divide(mantissa, power):
    """``mantissa / power`` rounded correctly, for an integer ``2**53 < mantissa < 2**60`` and an
    exact ``power = 10**k`` (``k <= 22``); NaN when the quotient lies too near a rounding tie
    to tell (then the text is converted instead).

    The quotient ``q1 + q2`` carries ``mantissa = hi + lo`` (exact) through one division and
    the exact remainder ``mantissa - q1 * power`` (Dekker's product; ``hi - ph`` is exact by
    Sterbenz's lemma): its error is below ``2**-96`` of the quotient. ``s = fl(q1 + q2)`` with
    the exact ``q1 + q2 - s`` (Knuth's sum) is the correctly rounded quotient whenever that
    difference, widened by ``2**-90 |s|``, stays under half an ulp of ``s``; at a power of two
    (a smaller ulp below) the answer is NaN too."""
    hi = np.float64(mantissa)
    lo = np.float64(mantissa - np.int64(hi))
    q1 = hi / power
    ph, pl = _two_product(q1, power)
    q2 = (((hi - ph) - pl) + lo) / power
    s = q1 + q2
    back = s - q1
    error = (q1 - (s - back)) + (q2 - back)
    fraction, exponent = math.frexp(s)
    if fraction == 0.5 or abs(error) + math.ldexp(abs(s), -90) >= math.ldexp(1.0, exponent - 54):
        return np.nan
    return s


@numba.njit(cache=True, nogil=True)
def _key(data, i, keys, key_bounds):
    """The key whose quoted name starts at ``i`` (its number, or -1) and the position after
    its closing quote."""
    for k in range(len(key_bounds) - 1):
        length = key_bounds[k + 1] - key_bounds[k]
        if i + 1 + length < len(data) and data[i + 1 + length] == 34:
            same = True
            for j in range(length):
                if data[i + 1 + j] != keys[key_bounds[k] + j]:
                    same = False
                    break
            if same:
                return k, i + 2 + length
    return -1, i


@numba.njit(cache=True, nogil=True)
def _scan(data, keys, key_bounds, powers, integers, reals, slow):
    """Reads the records into ``integers [N, 2]`` (image_id, category_id) and ``reals [N, 5]``
    (x, y, w, h, score); ``slow [M, 3]`` gets (start, stop, flat index into reals) of each
    number to convert from its text. Returns ``(records, slow numbers)``, or ``(-1, 0)`` for a
    file of another shape, ``(-2, 0)`` when ``slow`` is too small."""
    n = len(data)
    records = 0
    slow_count = 0
    i = _skip_space(data, 0)
    if i >= n or data[i] != 91:  # [
        return -1, 0
    i = _skip_space(data, i + 1)
    if i < n and data[i] == 93:  # ]
        i = _skip_space(data, i + 1)
        return (0, 0) if i == n else (-1, 0)
    while True:
        if i >= n or data[i] != 123 or records >= len(integers):  # {
            return -1, 0
        seen = 0
        i = _skip_space(data, i + 1)
        while True:
            if i >= n or data[i] != 34:  # "
                return -1, 0
            key, i = _key(data, i, keys, key_bounds)
            if key < 0 or seen & (1 << key):
                return -1, 0
            seen |= 1 << key
            i = _skip_space(data, i)
            if i >= n or data[i] != 58:  # :
                return -1, 0
            i = _skip_space(data, i + 1)
            if key < 2:  # image_id, category_id
                i, integer, _, kind = _number(data, i, powers)
                if kind != 1:
                    return -1, 0
                integers[records, key] = integer
            else:
                count = 1
                column = 4
                if key == 2:  # bbox
                    if i >= n or data[i] != 91:
                        return -1, 0
                    i = _skip_space(data, i + 1)
                    count = 4
                    column = 0
                for c in range(count):
                    if c > 0:
                        i = _skip_space(data, i)
                        if i >= n or data[i] != 44:  # ,
                            return -1, 0
                        i = _skip_space(data, i + 1)
                    start = i
                    i, integer, value, kind = _number(data, i, powers)
                    if kind == 0:
                        return -1, 0
                    if kind == 1:
                        reals[records, column + c] = np.float64(integer)  # |integer| < 10**18: exact
                        if integer >= (1 << 53) or integer <= -(1 << 53):
                            kind = 3  # float(int) rounds: leave it to the text
                    elif kind == 2:
                        reals[records, column + c] = value
                    if kind == 3:
                        if slow_count >= len(slow):
                            return -2, 0
                        slow[slow_count, 0] = start
                        slow[slow_count, 1] = i
                        slow[slow_count, 2] = records * 5 + column + c
                        slow_count += 1
                if key == 2:
                    i = _skip_space(data, i)
                    if i >= n or data[i] != 93:  # ]
                        return -1, 0
                    i += 1
            i = _skip_space(data, i)
            if i < n and data[i] == 44:  # , another key
                i = _skip_space(data, i + 1)
                continue
            if i < n and data[i] == 125 and seen == 15:  # } with all four keys
                break
            return -1, 0
        records += 1
        i = _skip_space(data, i + 1)
        if i < n and data[i] == 44:
            i = _skip_space(data, i + 1)
            continue
        if i < n and data[i] == 93:
            i = _skip_space(data, i + 1)
            return (records, slow_count) if i == n else (-1, 0)
        return -1, 0


_KEY_BYTES = np.frombuffer(b"".join(_KEYS), np.uint8)
_KEY_BOUNDS = np.cumsum([0] + [len(k) for k in _KEYS]).astype(np.int64)


def scan_results(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``(image_id int64 [n], category_id int64 [n], bbox float64 [n, 4], score float64 [n])``
    of a results file's bytes in the common shape (see the module doc), or None."""
    array = np.frombuffer(data, np.uint8)
    capacity = data.count(b"{")  # at least one per record
    integers = np.empty((capacity, 2), np.int64)
    reals = np.empty((capacity, 5), np.float64)
    slow_capacity = max(1024, capacity // 4)
    while True:
        slow = np.empty((slow_capacity, 3), np.int64)
        records, slow_count = _scan(array, _KEY_BYTES, _KEY_BOUNDS, _POWERS, integers, reals, slow)
        if records != -2:
            break
        slow_capacity = 5 * capacity
    if records < 0:
        return None
    flat = reals.reshape(-1)
    for start, stop, index in slow[:slow_count].tolist():
        flat[index] = float(data[start:stop])
    return (integers[:records, 0].copy(), integers[:records, 1].copy(), reals[:records, :4].copy(),
            reals[:records, 4].copy())
