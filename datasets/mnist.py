"""Real MNIST, offline, through the old ``input_data`` API (`read_data_sets`).

This module replaces the removed ``tensorflow.examples.tutorials.mnist.input_data``
module for code written against MoXing-era examples::

    from detsearch.datasets.mnist import ensure, input_data

    mnist = input_data.read_data_sets(ensure(data_dir), one_hot=True)
    images, labels = mnist.train.next_batch(100)   # [100, 784] f32, [100, 10] f32

It needs numpy and the standard library only (no TensorFlow import).

The files (`detsearch.datasets.idx`): a data directory holds the four classic files
``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``
and ``t10k-labels-idx1-ubyte.gz``. `ensure` (from `detsearch.datasets.mnist_prepare`, which
also has the CLI) returns a directory holding them, writing them offline first when missing;
its default is `default_data_dir`, ``$DETSEARCH_DATA_DIR/mnist``, else ``./data/mnist``.
"""

from __future__ import annotations

import logging
import os
import types
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from detsearch.datasets.idx import (
    NUM_CLASSES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, MnistError, read_pair,
)
from detsearch.datasets.mnist_prepare import default_data_dir, ensure

__all__ = ["DataSet", "Datasets", "MnistError", "default_data_dir", "dense_to_one_hot", "ensure", "input_data",
           "read_data_sets"]

logger = logging.getLogger(__name__)


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
    train_images, train_labels = read_pair(train_dir / TRAIN_IMAGES, train_dir / TRAIN_LABELS)
    test_images, test_labels = read_pair(train_dir / TEST_IMAGES, train_dir / TEST_LABELS)
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

