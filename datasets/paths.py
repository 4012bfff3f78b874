"""Where the datasets' files live by default."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_DIR_VARIABLE", "data_root"]

DATA_DIR_VARIABLE = "DETSEARCH_DATA_DIR"


def data_root() -> Path:
    """The root of the prepared data (MNIST, the detection demo, the VOC sample).

    ``$DETSEARCH_DATA_DIR`` when set (and not empty), else ``data`` under the current working
    directory, as an absolute path. Never a directory inside the installed package.
    """
    root = os.environ.get(DATA_DIR_VARIABLE)
    return Path(root) if root else Path.cwd() / "data"
