"""The errors the library raises for a user's input, and the one the CLI reports.

- `BadSetting` (a `ValueError`): a setting, a file or a combination the library cannot take;
  its message names the setting (``score_threshold``, ``task.validation_data.dtype``), never a
  command-line flag.
- `MissingExtra` (an `ImportError`): a feature needs an optional extra that is not installed;
  its message is the one line to print (``search-det needs the tf extra: pip install
  'detsearch[tf]'``).

``detsearch`` turns both (and `ValueError`, `OSError`) into one line on stderr and exit
status 2; ``-v`` prints the traceback as well.
"""

from __future__ import annotations

import importlib.util

__all__ = ["BadSetting", "MissingExtra", "EXTRA_MODULES", "require_extra"]


class BadSetting(ValueError):
    """A setting the library cannot take; the message names the setting."""


class MissingExtra(ImportError):
    """A feature needs an optional extra that is not installed."""

    def __init__(self, feature: str, extra: str):
        self.feature, self.extra = feature, extra
        super().__init__(f"{feature} needs the {extra} extra: pip install 'detsearch[{extra}]'")


EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "tf": ("tensorflow", "tf_keras", "official", "cv2", "pycocotools"),
    "plots": ("matplotlib",),
    "coco": ("pycocotools",),
    "ray": ("ray",),
}
"""The modules each extra of pyproject.toml installs (the ones code imports)."""


def require_extra(extra: str, feature: str) -> None:
    """Raises `MissingExtra` when a module of ``extra`` is not importable."""
    if any(importlib.util.find_spec(module) is None for module in EXTRA_MODULES[extra]):
        raise MissingExtra(feature, extra)
