"""`read_cache`: opening a cache directory, checking every file, memory-mapping its arrays.

A cache replaced while it is being read is read again: files are opened relative to the
directory's inode and ``meta.json`` is checked to be the same before and after, so a read
never mixes two caches.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import io
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from detsearch.atomic import sibling_pattern
from detsearch.detection.cache.arrays import DetectionCache, image_range
from detsearch.detection.cache.format import (
    ARRAY_NAMES,
    META_FILE,
    SHARD_NAME_DIGITS,
    SHARDS_DIR,
    ArraySpec,
    CacheError,
    ShardSpec,
    spec_of,
)
from detsearch.detection.cache.meta import parse_meta

__all__ = ["IO_CHUNK_BYTES", "SHARD_NAME", "open_cache", "read_cache", "read_npy_header"]

logger = logging.getLogger(__name__)

IO_CHUNK_BYTES = 8 << 20
"""Bytes per read or write step of an array file (checksums are streamed)."""

SHARD_NAME = re.compile(r"\d{%d,}" % SHARD_NAME_DIGITS)
"""Names of shard directories under ``shards/``."""

_MAX_NPY_HEADER_BYTES = 4096  # ours are 128 bytes; a larger one is corrupt
_MAX_READ_ATTEMPTS = 5
_TEMPORARY_NAME = re.compile(r".+\.(tmp|old)-\d+")
class _ChangedWhileReading(Exception):
    pass


class _Directory:
    """Opens files relative to one directory inode, so a concurrent rename of the path cannot
    make a read mix files of two caches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        if os.open in os.supports_dir_fd:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        elif not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))

    def open(self, name: str) -> io.BufferedReader:
        if self.fd is None:
            return open(self.path / name, "rb")
        fd = self.fd
        return open(name, "rb", opener=lambda file, flags: os.open(file, flags, dir_fd=fd))

    def stat(self, name: str) -> os.stat_result:
        if self.fd is None:
            return os.stat(self.path / name)
        return os.stat(name, dir_fd=self.fd)

    def still_at_path(self) -> bool:
        if self.fd is None:
            return True
        opened, now = os.fstat(self.fd), os.stat(self.path)
        return (opened.st_ino, opened.st_dev) == (now.st_ino, now.st_dev)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_npy_header(handle: io.BufferedReader, where: str) -> tuple[dict[str, Any], int]:
    """Reads a ``.npy`` header without trusting it; returns (header dict, data offset)."""
    magic = handle.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise CacheError(f"{where}: not a .npy file (bad magic bytes or truncated)")
    major, minor = magic[6], magic[7]
    if (major, minor) == (1, 0):
        length_bytes, encoding = 2, "latin1"
    elif (major, minor) in ((2, 0), (3, 0)):
        length_bytes, encoding = 4, "latin1" if major == 2 else "utf8"
    else:
        raise CacheError(f"{where}: unsupported .npy format version {major}.{minor}")
    raw_length = handle.read(length_bytes)
    if len(raw_length) < length_bytes:
        raise CacheError(f"{where}: truncated .npy header")
    header_length = int.from_bytes(raw_length, "little")
    if header_length > _MAX_NPY_HEADER_BYTES:
        raise CacheError(f"{where}: .npy header of {header_length} bytes is implausibly long (corrupt)")
    raw_header = handle.read(header_length)
    if len(raw_header) < header_length:
        raise CacheError(f"{where}: truncated .npy header")
    try:
        header = ast.literal_eval(raw_header.decode(encoding))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise CacheError(f"{where}: unreadable .npy header {raw_header[:80]!r}") from None
    if not isinstance(header, dict) or sorted(header) != ["descr", "fortran_order", "shape"]:
        raise CacheError(f"{where}: .npy header {raw_header[:80]!r} lacks descr/fortran_order/shape")
    return header, 8 + length_bytes + header_length


def _open_array(directory: _Directory, spec: ArraySpec, info: Mapping[str, Any], verify: bool) -> np.ndarray:
    where = str(directory.path / spec.file_name)
    shape = tuple(info["shape"])
    try:
        handle = directory.open(spec.file_name)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise CacheError(f"{where}: cannot open: {error}") from None
    with handle:
        header, data_offset = read_npy_header(handle, where)
        dtype = np.dtype(info["dtype"])  # one of the spec's (checked with meta.json)
        if header["descr"] != dtype.str or header["fortran_order"] is not False or header["shape"] != shape:
            raise CacheError(
                f"{where}: header says dtype {header['descr']!r}, shape {header['shape']!r}, fortran_order "
                f"{header['fortran_order']!r}; meta.json says dtype {dtype.str!r}, shape {shape}, C order"
            )
        num_bytes = dtype.itemsize * math.prod(shape)
        file_size = os.fstat(handle.fileno()).st_size
        if file_size != data_offset + num_bytes:
            state = "truncated" if file_size < data_offset + num_bytes else "too long"
            raise CacheError(
                f"{where}: file is {state}: {file_size} bytes, expected {data_offset + num_bytes} for shape {shape}"
            )
        if verify:
            digest = hashlib.sha256()
            buffer = bytearray(IO_CHUNK_BYTES)
            view = memoryview(buffer)
            handle.seek(data_offset)
            while True:
                count = handle.readinto(buffer)
                if not count:
                    break
                digest.update(view[:count])
            if digest.hexdigest() != info["sha256"]:
                raise CacheError(f"{where}: SHA-256 checksum mismatch: the array data is corrupt")
        try:
            # Memory-maps the already validated file through this handle (np.load(mmap_mode="r")
            # would reopen it by name, which a concurrent rename could swap).
            return np.memmap(handle, dtype=dtype, mode="r", offset=data_offset, shape=shape)
        except (OSError, ValueError) as error:
            raise CacheError(f"{where}: cannot memory-map: {error}") from None


def _describe_missing(path: Path) -> str:
    hints = []
    parent = path.parent
    if parent.is_dir():
        for tag, text in (
            ("old", "a previous cache, moved aside by an interrupted replace"),
            ("tmp", "an unfinished write"),
        ):
            pattern = sibling_pattern(path, tag)
            found = sorted(entry.name for entry in os.scandir(parent) if pattern.fullmatch(entry.name))
            if found:
                hints.append(f"{found[0]} is {text}")
    return f"{path}: no cache here" + (f" ({'; '.join(hints)})" if hints else "")


def _moved(directory: _Directory) -> bool:
    """The opened directory is no longer the one at its path (or nothing is there now)."""
    try:
        return not directory.still_at_path()
    except FileNotFoundError:
        return True


def _open_cache_once(path: Path, verify: bool, images: tuple[int, int] | None) -> tuple[DetectionCache, ShardSpec | None]:
    try:
        directory = _Directory(path)
    except FileNotFoundError:
        raise CacheError(_describe_missing(path)) from None
    except NotADirectoryError:
        raise CacheError(f"{path}: is not a directory") from None
    except OSError as error:
        raise CacheError(f"{path}: cannot open: {error}") from None
    try:
        meta_where = str(path / META_FILE)
        try:
            with directory.open(META_FILE) as handle:
                meta_stat = os.fstat(handle.fileno())
                data = handle.read()
        except FileNotFoundError:
            if _moved(directory):  # a replace moved this directory aside (and is removing it)
                raise _ChangedWhileReading from None
            if (path / SHARDS_DIR).is_dir():
                count = sum(1 for entry in os.scandir(path / SHARDS_DIR) if SHARD_NAME.fullmatch(entry.name))
                raise CacheError(
                    f"{path}: not a merged cache: no {META_FILE}, {count} shard(s) in {SHARDS_DIR}/; "
                    f"call merge_shards({str(path)!r})"
                ) from None
            raise CacheError(
                f"{meta_where}: missing; {path} is not a cache (or a write to it never finished)"
            ) from None
        except OSError as error:
            raise CacheError(f"{meta_where}: cannot read: {error}") from None
        meta, infos, shard = parse_meta(data, meta_where)

        def unchanged() -> bool:
            # Same meta.json in the same directory, still at `path`: no replace or merge began
            # since meta.json was read (both remove or move meta.json before touching arrays).
            try:
                now = directory.stat(META_FILE)
                if not directory.still_at_path():
                    return False
            except FileNotFoundError:
                return False
            return (now.st_ino, now.st_dev) == (meta_stat.st_ino, meta_stat.st_dev)

        arrays: dict[str, np.ndarray | None] = {name: None for name in ARRAY_NAMES}
        for name, info in infos.items():
            try:
                arrays[name] = _open_array(directory, spec_of(name), info, verify)
            except FileNotFoundError:
                if not unchanged():
                    raise _ChangedWhileReading from None
                raise CacheError(f"{path / spec_of(name).file_name}: missing (listed in {META_FILE})") from None
            except CacheError:
                if not unchanged():
                    raise _ChangedWhileReading from None
                raise
        if not unchanged():
            raise _ChangedWhileReading
    finally:
        directory.close()
    if images is not None:
        return image_range(meta, arrays, *images, str(path)), shard
    cache = DetectionCache.from_arrays(meta, where=str(path), **arrays)
    object.__setattr__(cache, "path", path)  # read whole: the sweep's tasks may read parts of it from here
    return cache, shard


def open_cache(path: Path, verify: bool, images: tuple[int, int] | None = None
               ) -> tuple[DetectionCache, ShardSpec | None]:
    """`read_cache` that also returns the shard record of ``meta.json`` (None for a whole cache)."""
    if _TEMPORARY_NAME.fullmatch(path.name):
        raise CacheError(f"{path}: is the temporary directory of an unfinished or replaced write, not a cache")
    for _ in range(_MAX_READ_ATTEMPTS):
        try:
            return _open_cache_once(path, verify, images)
        except _ChangedWhileReading:
            logger.info("%s changed while being read; reading it again", path)
    raise CacheError(f"{path}: kept changing while being read ({_MAX_READ_ATTEMPTS} attempts)")


def read_cache(path: str | os.PathLike, verify: bool = True, *, images: tuple[int, int] | None = None
               ) -> DetectionCache:
    """Opens a cache directory; its arrays are read-only ``np.memmap``s.

    Checks, in order: ``meta.json`` (JSON, format name, version, its own checksum, fields);
    each listed array's file (present, ``.npy`` header agrees with the recorded dtype and shape,
    exact file size); with ``verify``, each array's SHA-256 (streamed, 8 MiB at a time); then
    every invariant of `DetectionCache.validate`. A cache replaced while it is being read is
    read again (never a mix of two caches).

    Args:
      path: the cache directory (or a shard directory ``root/shards/NNNNN``).
      verify: check the SHA-256 of every array. Without it, a flipped bit inside the data may go
        unnoticed (truncation and header damage are still caught).
      images: ``(start, stop)``: only the images at positions ``start:stop`` (`image_range`):
        the invariants are checked on that range only, and the checksums, which cover whole
        files, only with ``verify``. A worker reads its part of a cache that way.

    Raises:
      CacheError: one message naming the file and what is wrong (including a version other
        than `CACHE_VERSION`: "found vs supported").
    """
    cache, _ = open_cache(Path(path), verify, images)
    return cache
