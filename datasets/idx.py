"""The four MNIST IDX gz files: their names and the public facts about them, reading
(`read_images`, `read_labels`, `read_pair`) and encoding (`encode_idx`).

An IDX file is a big-endian header (magic ``0x0000080N``: unsigned bytes, N dimensions; then N
uint32 sizes) followed by the bytes; MNIST ships each gzip-compressed. NumPy and the standard
library only.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "FILE_NAMES", "IMAGES_MAGIC", "IMAGE_SIZE", "LABELS_MAGIC", "MnistError", "NUM_CLASSES", "NUM_TEST_EXAMPLES",
    "NUM_TRAIN_EXAMPLES", "TEST_IMAGES", "TEST_LABELS", "TEST_LABEL_COUNTS", "TRAIN_IMAGES", "TRAIN_LABELS",
    "TRAIN_LABEL_COUNTS", "encode_idx", "has_idx_header", "parse_idx", "read_gz", "read_images", "read_labels",
    "read_pair",
]

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


class MnistError(ValueError):
    """A missing, corrupt or inconsistent MNIST file, or a failed preparation."""



def read_gz(path: Path) -> bytes:
    """Returns the decompressed content of ``path``; MnistError when unreadable."""
    if not path.is_file():
        raise MnistError(f"MNIST file {path}: missing (no such file)")
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise MnistError(f"MNIST file {path}: not a readable gzip file ({exc})") from exc


def parse_idx(payload: bytes, path: Path, expected_magic: int) -> np.ndarray:
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
    return parse_idx(read_gz(path), path, IMAGES_MAGIC)


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
    labels = parse_idx(read_gz(path), path, LABELS_MAGIC)
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise MnistError(
            f"MNIST file {path}: label {int(labels.max())} out of range [0, {NUM_CLASSES - 1}]"
        )
    return labels


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads an images/labels pair and checks that their counts agree."""
    images = read_images(images_path)
    labels = read_labels(labels_path)
    if images.shape[0] != labels.shape[0]:
        raise MnistError(
            f"MNIST files {images_path} and {labels_path}: count mismatch, "
            f"{images.shape[0]} images but {labels.shape[0]} labels"
        )
    return images, labels



def encode_idx(array: np.ndarray, magic: int) -> bytes:
    """Encodes a uint8 array as an uncompressed IDX payload (header + data)."""
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def has_idx_header(path: Path, magic: int) -> bool:
    """True when ``path`` is a gzip file whose IDX header carries ``magic``."""
    try:
        with gzip.open(path, "rb") as stream:
            header = stream.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return len(header) == 4 and struct.unpack(">I", header)[0] == magic

