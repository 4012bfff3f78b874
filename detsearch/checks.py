"""Argument checks shared by the library: one spelling of each rule and of its message.

The library names settings (``images_per_shard``), never command-line flags; the CLI reports
what the library raises (`detsearch.errors`).
"""

from __future__ import annotations

import numbers
from typing import Any

from detsearch.errors import BadSetting

__all__ = ["positive_int", "optional_positive_int"]


def positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int when it is an integer (not a bool) >= ``minimum``; else `BadSetting`
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise BadSetting(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def optional_positive_int(value: Any, name: str, *, minimum: int = 1) -> int | None:
    """`positive_int`, with None passing through."""
    return None if value is None else positive_int(value, name, minimum=minimum)
