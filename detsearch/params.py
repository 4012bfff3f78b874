"""`ParamSpec`: the hyperparameters a search reads and chooses, by their MoXing names.

One class serves both roles of the seed's API:

- ``param_spec``: one value per parameter (``ParamSpec(learning_rate=0.1, momentum=0.9)``), the
  defaults of a search and, afterwards, its result.
- ``param_list_spec``: a candidate list per parameter
  (``ParamSpec(weight_decay=[1e-2, 1e-3, 1e-4], momentum=[0.99, 0.95, 0.9])``).

Values are checked on construction, so a typo or an impossible value fails before any training.
This module imports no TensorFlow.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

TRAINING_PARAMS = ("learning_rate", "momentum", "weight_decay")
"""Parameters chosen from pre-training curves."""

TWO_STAGE_THRESHOLDS = ("nms_score_threshold", "nms_iou_threshold", "score_threshold", "iou_threshold")
"""Faster R-CNN post-processing: first stage (RPN) then second stage."""

ONE_STAGE_THRESHOLDS = ("score_threshold", "iou_threshold")
"""SSD post-processing."""

THRESHOLD_PARAMS = TWO_STAGE_THRESHOLDS
PARAM_NAMES = TRAINING_PARAMS + THRESHOLD_PARAMS


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_symbolic(value: Any) -> bool:
    # A framework tensor or variable (for example the learning-rate schedule that the trainer
    # hands to a user's optimizer_fn) carries a dtype; it is checked where it is made.
    return hasattr(value, "dtype") and not isinstance(value, numbers.Number)


def check_value(name: str, value: Any) -> float:
    """Returns ``value`` as a float after checking it is allowed for parameter ``name``.

    Raises:
      TypeError: the value is not a real number.
      ValueError: the value is NaN or infinite, or outside the parameter's range:
        learning_rate > 0; 0 <= momentum < 1; weight_decay >= 0; thresholds in [0, 1].
    """
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if name == "learning_rate" and not value > 0:
        raise ValueError(f"learning_rate must be > 0, got {value!r}")
    if name == "momentum" and not 0 <= value < 1:
        raise ValueError(f"momentum must be in [0, 1), got {value!r}")
    if name == "weight_decay" and value < 0:
        raise ValueError(f"weight_decay must be >= 0, got {value!r}")
    if name in THRESHOLD_PARAMS and not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value


def _check_candidate(name: str, index: int, value: Any) -> float:
    """`check_value` for item ``index`` of a candidate list; the message names the item."""
    try:
        return check_value(name, value)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{name}[{index}]: {error}") from None


class ParamSpec:
    """Hyperparameter values (or candidate lists) by name.

    Args:
      **params: any of `PARAM_NAMES`. Each value is a number, or a non-empty list/tuple of
        numbers (a candidate list); a 0-d or 1-d NumPy array counts as the number or list it
        holds. Unknown names raise `ValueError`; a bad item of a list is named by its index.

    Attributes are read by name (``spec.learning_rate``); a parameter that was not given reads
    as None. A `ParamSpec` is immutable: `replace` returns a changed copy.
    """

    __slots__ = ("_values",)

    def __init__(self, **params: Any):
        values: dict[str, Any] = {}
        for name, value in params.items():
            if name not in PARAM_NAMES:
                raise ValueError(f"unknown parameter {name!r}; known parameters: {', '.join(PARAM_NAMES)}")
            if value is None:
                continue
            if isinstance(value, np.ndarray):
                # Checked like the list or number it holds (it also has a dtype, but it is no tensor).
                if value.ndim > 1:
                    raise TypeError(f"{name} must be a number or a list of numbers, got an array of shape {value.shape}")
                value = value.tolist()
            if isinstance(value, (list, tuple)):
                if not value:
                    raise ValueError(f"candidate list for {name} is empty")
                values[name] = tuple(_check_candidate(name, index, v) for index, v in enumerate(value))
            elif _is_symbolic(value):
                values[name] = value
            else:
                values[name] = check_value(name, value)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        if name in PARAM_NAMES:
            return self._values.get(name)
        raise AttributeError(f"ParamSpec has no parameter {name!r}; known parameters: {', '.join(PARAM_NAMES)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ParamSpec is immutable; use spec.replace(name=value)")

    def replace(self, **params: Any) -> "ParamSpec":
        """Returns a copy with ``params`` set (a value of None removes a parameter)."""
        merged = dict(self._values)
        merged.update(params)
        return ParamSpec(**merged)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in `PARAM_NAMES` order; candidate lists become lists."""
        return {
            name: list(self._values[name]) if isinstance(self._values[name], tuple) else self._values[name]
            for name in PARAM_NAMES
            if name in self._values
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ParamSpec":
        if not isinstance(values, Mapping):
            raise TypeError(f"ParamSpec.from_dict needs a mapping, got {type(values).__name__}")
        return cls(**dict(values))

    def subset(self, names: Iterable[str]) -> "ParamSpec":
        """The parameters among ``names`` that are set (for example ``spec.subset(TRAINING_PARAMS)``:
        what the selector searches; ``spec.subset(THRESHOLD_PARAMS)``: what the sweep searches)."""
        wanted = set(names)
        unknown = wanted - set(PARAM_NAMES)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; known parameters: {', '.join(PARAM_NAMES)}")
        return ParamSpec(**{name: value for name, value in self._values.items() if name in wanted})

    def names(self) -> tuple[str, ...]:
        """Names of the parameters that are set, in `PARAM_NAMES` order."""
        return tuple(name for name in PARAM_NAMES if name in self._values)

    def candidates(self, name: str) -> tuple[float, ...] | None:
        """The candidate list for ``name`` (a single value counts as a one-item list)."""
        value = self._values.get(name)
        if value is None:
            return None
        return value if isinstance(value, tuple) else (value,)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.to_dict().items())

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamSpec) and self._values == other._values

    def __reduce__(self):
        # Pickled through the constructor: the default would set `_values` through the
        # immutable __setattr__ (trainers travel to Ray workers with their ParamSpec).
        return (self.__class__.from_dict, (self.to_dict(),))

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, v) for k, v in self._values.items() if not _is_symbolic(v))))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"ParamSpec({inner})"
