"""``detsearch.__version__`` is the installed distribution's version, which is pyproject.toml's."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import detsearch

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_package_metadata():
    assert detsearch.__version__ == metadata.version("detsearch")


def test_version_is_pyprojects():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert detsearch.__version__ == project["version"]
