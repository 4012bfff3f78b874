"""Per-category score thresholds applied on top of a detector's NMS configuration.

``detsearch sweep`` and ``detsearch search-det`` write them as ``per_class_thresholds.json``::

    {"keep": "score > score_threshold", "rule": "f1",
     "configuration": {"score_threshold": 0.05, "iou_threshold": 0.5},
     "classes": [{"category_id": 1, "name": "one", "score_threshold": 0.31}, ...]}

A detection of category ``c`` is kept when ``float32(score) > float32(threshold_c)``; a
category absent from ``"classes"`` keeps every detection the configuration's NMS keeps.
`read_per_class_thresholds` and `read_per_class_configuration` read the file,
`check_class_score_thresholds` checks a category id -> threshold mapping. NumPy and the standard
library only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["KEEP_RULE", "check_class_score_thresholds", "read_per_class_configuration", "read_per_class_thresholds"]

KEEP_RULE = "score > score_threshold"
"""The file's ``"keep"``: the comparison its thresholds are meant for (strict, in float32)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_threshold(value: Any) -> bool:
    """A number (not a bool) in [0, 1], both ends included; NaN is not."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return 0.0 <= float(value) <= 1.0


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def check_class_score_thresholds(
    thresholds: Mapping[int, float], category_ids: Sequence[int] | None = None
) -> dict[int, float]:
    """Checks a category id -> score threshold mapping.

    Args:
      thresholds: COCO category id (int) -> score threshold in [0, 1] (both ends included; a
        detection is kept when its score is > the threshold, so 1 removes every detection of
        the category and 0 only those of score 0). Not modified.
      category_ids: the categories the thresholds may name (a detector's `category_ids`); None:
        any non-negative id.

    Returns:
      A new dict, ``int`` id -> ``float`` threshold, in increasing id order.

    Raises:
      ValueError: an id that is not a non-negative int or is not among ``category_ids`` (the
        message names it and the known ids), a threshold that is not a number in [0, 1].
    """
    if not isinstance(thresholds, Mapping):
        raise ValueError(f"class score thresholds must be a mapping of category id -> threshold, got {thresholds!r}")
    checked: dict[int, float] = {}
    for category_id, value in thresholds.items():
        if not _is_int(category_id) or int(category_id) < 0:
            raise ValueError(f"class score thresholds: category id {category_id!r} is not a non-negative int")
        if not _is_threshold(value):
            raise ValueError(f"class score thresholds: category {int(category_id)}'s threshold must be a number in "
                             f"[0, 1], got {value!r}")
        checked[int(category_id)] = float(value)
    if category_ids is not None:
        known = sorted(int(i) for i in category_ids)
        unknown = sorted(set(checked) - set(known))
        if unknown:
            raise ValueError(f"class score thresholds: category ids {unknown} are not among the detector's "
                             f"categories {known}")
    return dict(sorted(checked.items()))


def _read_document(path: str | os.PathLike) -> dict[str, Any]:
    """The file's JSON object with a ``"keep"`` this module applies; one-line ValueErrors."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{os.fspath(path)}: per-class thresholds file not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{os.fspath(path)}: malformed JSON ({error.msg} at line {error.lineno} "
                         f"column {error.colno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{os.fspath(path)}: cannot read per-class thresholds: {error}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{os.fspath(path)}: per-class thresholds must be a JSON object, got a JSON "
                         f"{_json_type(document)}")
    # A file written for another comparison would be applied with the wrong one: refuse it.
    if "keep" in document and document["keep"] != KEEP_RULE:
        raise ValueError(f"{os.fspath(path)}: \"keep\" is {document['keep']!r}; the thresholds are applied as "
                         f"{KEEP_RULE!r}")
    return document


def read_per_class_thresholds(path: str | os.PathLike) -> dict[int, float]:
    """The per-category score thresholds of a ``per_class_thresholds.json``.

    Args:
      path: the file (format in the module docstring). Each ``"classes"`` entry needs an int
        ``"category_id"`` (>= 0, each at most once) and a ``"score_threshold"`` in [0, 1];
        ``"name"`` and the other keys are not read. ``"keep"``, when present, must be
        ``"score > score_threshold"``.

    Returns:
      Category id -> threshold, in increasing id order (categories absent from the file are
      absent here: only the configuration's NMS applies to them).

    Raises:
      ValueError: one line naming the file: missing or unreadable, malformed JSON, not an
        object, another ``"keep"``, no ``"classes"`` list, or an entry (named by its index and
        field) that is not an object, lacks a field, repeats a category or has a threshold that
        is not a number in [0, 1].
    """
    document = _read_document(path)
    where = os.fspath(path)
    classes = document.get("classes")
    if "classes" not in document:
        raise ValueError(f"{where}: no \"classes\" list of per-category entries")
    if not isinstance(classes, list):
        raise ValueError(f"{where}: \"classes\" must be a list of per-category entries, got a JSON "
                         f"{_json_type(classes)}")
    thresholds: dict[int, float] = {}
    first_index: dict[int, int] = {}
    for index, entry in enumerate(classes):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: classes[{index}] must be an object, got a JSON {_json_type(entry)}")
        for field in ("category_id", "score_threshold"):
            if field not in entry:
                raise ValueError(f"{where}: classes[{index}] has no {field}")
        category_id = entry["category_id"]
        if not _is_int(category_id) or category_id < 0:
            raise ValueError(f"{where}: classes[{index}].category_id must be a non-negative integer, "
                             f"got {category_id!r}")
        if category_id in first_index:
            raise ValueError(f"{where}: classes[{index}].category_id {category_id} repeats "
                             f"classes[{first_index[category_id]}]")
        value = entry["score_threshold"]
        if not _is_threshold(value):
            raise ValueError(f"{where}: classes[{index}].score_threshold must be a number in [0, 1], got {value!r}")
        first_index[category_id] = index
        thresholds[int(category_id)] = float(value)
    return dict(sorted(thresholds.items()))


def read_per_class_configuration(path: str | os.PathLike) -> dict[str, float]:
    """The NMS configuration a ``per_class_thresholds.json`` was chosen on top of.

    Returns:
      ``"configuration"``'s name -> number (``score_threshold``, ``iou_threshold``, and for a
      two-stage detector ``nms_score_threshold``, ``nms_iou_threshold``; ``max_detections``)
      or bool (``class_agnostic``); empty when the file has none.

    Raises:
      ValueError: one line naming the file: the errors of reading it (`read_per_class_thresholds`),
        a ``"configuration"`` that is not an object of finite numbers.
    """
    document = _read_document(path)
    where = os.fspath(path)
    configuration = document.get("configuration", {})
    if not isinstance(configuration, dict):
        raise ValueError(f"{where}: \"configuration\" must be an object, got a JSON {_json_type(configuration)}")
    out: dict[str, float | bool] = {}
    for name, value in configuration.items():
        if name == "class_agnostic":
            if not isinstance(value, bool):
                raise ValueError(f"{where}: configuration.class_agnostic must be true or false, got {value!r}")
            out[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: configuration.{name} must be a finite number, got {value!r}")
        out[name] = float(value)
    return out
