"""The errors the library raises for a user's input, and the one the CLI reports.

- `BadSetting` (a `ValueError`): a setting, a file or a combination the library cannot take;
  its message names the setting (``score_threshold``, ``task.validation_data.dtype``), never a
  command-line flag.
- `MissingExtra` (an `ImportError`): a feature needs an optional extra that is not installed;
  its message is the one line to print (``search-det needs the tf extra: pip install
  'detsearch[tf]'``).

``detsearch`` turns both (and `ValueError`, `OSError`, and a `ModuleNotFoundError` of a module
in `EXTRA_MODULES`) into one line on stderr and exit status 2; ``-v`` prints the traceback as
well.
"""

from __future__ import annotations

import importlib.util

__all__ = ["BadSetting", "MissingExtra", "EXTRA_MODULES", "extra_of", "require_extra"]


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


def require_extra(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> None:
    """Raises `MissingExtra` when a module of ``extra`` is not importable.

    Args:
      extra: a key of `EXTRA_MODULES`.
      feature: what needs it, the start of the message (``search-det``, ``the ray executor``).
      modules: the modules of the extra that ``feature`` imports (default: all of them), for a
        feature that needs only a part of it (``prepare-demo`` draws with OpenCV alone).

    Only `importlib.util.find_spec` runs: nothing is imported.
    """
    for module in EXTRA_MODULES[extra] if modules is None else modules:
        if module not in EXTRA_MODULES[extra]:
            raise ValueError(f"{module!r} is not a module of the {extra} extra")
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(feature, extra)


def extra_of(module: str, preferred: tuple[str, ...] = ()) -> str | None:
    """The extra that installs ``module`` (a dotted name: its top-level package counts), or None.

    A module that several extras install (pycocotools: ``coco`` and ``tf``) is named by the first
    of ``preferred`` that has it, else by the extra with the fewest modules.
    """
    top = module.partition(".")[0]
    having = [extra for extra, modules in EXTRA_MODULES.items() if top in modules]
    if not having:
        return None
    return next((extra for extra in preferred if extra in having), min(having, key=lambda e: len(EXTRA_MODULES[e])))
