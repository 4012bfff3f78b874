"""Test tiers: a test marked ``tf`` is skipped where TensorFlow is not installed, so
``pytest -m "not tf"`` (or the whole suite) runs on a NumPy-only install."""

import importlib.util

import pytest

HAVE_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None


def pytest_runtest_setup(item):
    if item.get_closest_marker("tf") is not None and not HAVE_TENSORFLOW:
        pytest.skip("needs TensorFlow (pip install 'detsearch[tf]')")
