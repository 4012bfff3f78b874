"""COCO results JSON (``[{image_id, category_id, bbox, score}, ...]``) read by columns.

`read_results` reads a file of the common shape (the four keys and nothing else) with a compiled
scanner straight into columns (`results_scan`), any other file with msgspec's typed JSON decoder
into records of four typed fields; then it checks every rule on NumPy columns at once; the values are the file's own
(float64, correctly rounded, as Python's ``json`` gives them) and the order is the file's order.
Only when a rule fails is the file parsed again record by record, to name the first offending
record in the same words as always (`describe_bad_record`).
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import msgspec
import numpy as np

from detsearch.detection.results_scan import scan_results

FLOAT32_MAX = float(np.finfo(np.float32).max)
DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


class ResultsError(ValueError):
    """A results file or list that breaks a rule: ``"WHERE: record I: WHAT"``, one line."""


class _Record(msgspec.Struct, gc=False):
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    score: float


_DECODER = msgspec.json.Decoder(list[_Record])


@dataclass(frozen=True)
class ResultColumns:
    """Detections in file order: ``image_id`` / ``category_id`` int64 [n], ``bbox`` float64
    [n, 4] (x, y, w, h as given), ``score`` float64 [n] as given."""

    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    where: str

    def __len__(self) -> int:
        return len(self.score)


def brief(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened when long (a 400-digit JSON integer, say)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _strict_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe_bad_record(i: int, record: Any, known_image: Callable[[int], bool],
                        known_category: Callable[[int], bool], annotations_where: str) -> str | None:
    """What is wrong with record ``i`` (a parsed JSON value), or None: the rules, in the order
    they are told."""
    if not isinstance(record, Mapping):
        return f"record {i} is not an object: {brief(record)}"
    for key in DETECTION_KEYS:
        if key not in record:
            return f"record {i} lacks {key!r}"
    image_id, category_id, bbox, score = (record[key] for key in DETECTION_KEYS)
    if not _strict_int(image_id):
        return f"record {i}: image_id must be an integer, got {image_id!r}"
    if not _strict_int(category_id):
        return f"record {i}: category_id must be an integer, got {category_id!r}"
    if not _is_real(score):
        return f"record {i}: score must be a number, got {brief(score)}"
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_real(v) for v in bbox)):
        return f"record {i}: bbox must be 4 numbers [x, y, w, h], got {brief(bbox)}"
    if not known_image(image_id):
        return f"record {i}: image_id {image_id} is not in the annotations ({annotations_where})"
    if not known_category(category_id):
        return f"record {i}: category_id {category_id} is not in the annotations ({annotations_where})"
    if isinstance(score, float) and not math.isfinite(score):
        return f"record {i}: score {score!r} is not finite"
    if not 0.0 <= score <= 1.0:  # exact for ints of any size: no float conversion
        return f"record {i}: score {brief(score)} is outside [0, 1]"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except OverflowError:  # an int beyond float64
        return f"record {i}: bbox {brief(bbox)} is not finite"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return f"record {i}: bbox {bbox!r} is not finite"
    if w < 0 or h < 0:
        return f"record {i}: bbox {bbox!r} has negative width or height"
    if max(abs(x), abs(y), abs(x + w), abs(y + h)) > FLOAT32_MAX:
        # NMS runs in float32 (TensorFlow's kernels): such a box would become inf there.
        return f"record {i}: bbox {bbox!r} lies beyond the float32 range"
    return None


def _bad_rows(columns: ResultColumns, image_ids: np.ndarray, category_ids: np.ndarray) -> np.ndarray:
    """Indices of records breaking a value rule (vectorized twin of `describe_bad_record`)."""
    x, y, w, h = columns.bbox.T
    with np.errstate(invalid="ignore", over="ignore"):
        corners = np.abs(np.stack([x, y, x + w, y + h]))
        bad = ~np.isin(columns.image_id, image_ids) | ~np.isin(columns.category_id, category_ids)
        bad |= ~np.isfinite(columns.score) | (columns.score < 0) | (columns.score > 1)
        bad |= ~np.isfinite(columns.bbox).all(axis=1) | (w < 0) | (h < 0) | (corners.max(axis=0) > FLOAT32_MAX)
    return np.flatnonzero(bad)


def _read_bytes(source: str | os.PathLike) -> bytes:
    try:
        with open(source, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ResultsError(f"{source}: cannot read detections: {error}") from None


def read_results(source: str | os.PathLike | Sequence[Mapping[str, Any]], *, image_ids: Sequence[int],
                 category_ids: Sequence[int], annotations_where: str = "<annotations>") -> ResultColumns:
    """Reads and checks COCO results: a JSON file's path or a loaded list of records.

    Every record needs an integer ``image_id`` in ``image_ids`` and ``category_id`` in
    ``category_ids``, a finite ``score`` in [0, 1] and a ``bbox`` of four finite numbers with
    w, h >= 0 within float32's range; other keys are ignored.

    Raises:
      ResultsError: naming the file, the first bad record's index and what is wrong with it.
    """
    image_array = np.asarray(sorted(image_ids), dtype=np.int64)
    category_array = np.asarray(sorted(category_ids), dtype=np.int64)
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        data = _read_bytes(source)
        scanned = scan_results(data)
        if scanned is not None:
            columns = ResultColumns(*scanned, where=where)
            if not len(_bad_rows(columns, image_array, category_array)):
                return columns
            records = None  # explained below from a plain parse
        else:
            try:
                records = _DECODER.decode(data)
            except (msgspec.DecodeError, OverflowError, RecursionError):
                records = None  # explained below from a plain parse
    else:
        where, data = "<detections>", None
        records = None if not isinstance(source, list) else _structs(source)
    if records is not None:
        try:
            columns = _columns(records, where)
        except OverflowError:  # an id beyond int64 (msgspec decodes up to uint64): explained below
            columns = None
        if columns is not None and not len(_bad_rows(columns, image_array, category_array)):
            return columns
    raise _explain(source if data is None else data, where, set(image_array.tolist()),
                   set(category_array.tolist()), annotations_where)


def _structs(records: list) -> list[_Record] | None:
    """Loaded records as `_Record`s, or None when one breaks a type rule (explained later)."""
    try:
        return msgspec.convert(records, list[_Record], strict=True)
    except (msgspec.ValidationError, OverflowError):
        return None


def _columns(records: list[_Record], where: str) -> ResultColumns:
    n = len(records)

    def column(name: str, dtype) -> np.ndarray:  # map + attrgetter: the loop runs in C
        return np.fromiter(map(operator.attrgetter(name), records), dtype, n)

    boxes = itertools.chain.from_iterable(map(operator.attrgetter("bbox"), records))
    return ResultColumns(
        image_id=column("image_id", np.int64),
        category_id=column("category_id", np.int64),
        bbox=np.fromiter(boxes, np.float64, 4 * n).reshape(n, 4),
        score=column("score", np.float64),
        where=where,
    )


def _explain(source: bytes | Any, where: str, image_ids: set[int], category_ids: set[int],
             annotations_where: str) -> ResultsError:
    if isinstance(source, bytes):
        try:
            records = json.loads(source.decode("utf-8"))
        except (ValueError, RecursionError) as error:
            return ResultsError(f"{where}: malformed JSON: {error}")
    else:
        records = source
    if not isinstance(records, list):
        return ResultsError(f"{where}: detections must be a JSON list of records, got {type(records).__name__}")
    for i, record in enumerate(records):
        message = describe_bad_record(i, record, image_ids.__contains__, category_ids.__contains__, annotations_where)
        if message is not None:
            return ResultsError(f"{where}: {message}")
    # The fast decoder refused what the plain rules accept (an integer beyond 64 bits, say).
    return ResultsError(f"{where}: detections could not be decoded as COCO results")
