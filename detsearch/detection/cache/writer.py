"""Writing caches to disk: `CacheWriter` (streamed, one image at a time) and `write_cache`.

Every write builds the complete cache in ``<target>.tmp-<pid>/`` and commits it with one
rename (`detsearch.atomic.replace_directory`); a merge of shards commits by renaming its
``meta.json`` in last (`commit_files`). Both commits live here.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from detsearch.atomic import fresh_directory, fsync_directory, replace_directory
from detsearch.detection.cache.arrays import DetectionCache, ImageStream
from detsearch.detection.cache.builder import ADD_IMAGE_DOC
from detsearch.detection.cache.format import (
    ARRAY_SPECS,
    META_FILE,
    SHARDS_DIR,
    ArraySpec,
    CacheError,
    CacheMeta,
    CacheSettings,
    ShardSpec,
    shard_dir,
    spec_of,
)
from detsearch.detection.cache.meta import meta_document, render_meta
from detsearch.detection.cache.reader import IO_CHUNK_BYTES

__all__ = ["CacheWriter", "DirectoryWriter", "commit_files", "prepare_target", "write_cache"]


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    )
    return buffer.getvalue()


def _is_committed(path: Path) -> bool:
    return (path / META_FILE).is_file()


def _check_replaceable(target: Path) -> None:
    if not os.path.lexists(target):
        return
    if not target.is_dir():
        raise CacheError(f"{target}: exists and is not a directory; refusing to replace it")
    if (target / SHARDS_DIR).exists():
        raise CacheError(
            f"{target}: holds {SHARDS_DIR}/ (a sharded cache); writing a whole cache here would delete "
            f"the shards. Use merge_shards({str(target)!r}), or remove the directory first"
        )
    if not _is_committed(target) and any(os.scandir(target)):
        raise CacheError(f"{target}: exists and is not a detection cache (no {META_FILE}); refusing to replace it")


def prepare_target(target: Path) -> Path:
    """Checks that ``target`` may be replaced by a cache; returns an empty temporary directory
    beside it to write the cache in."""
    _check_replaceable(target)
    return fresh_directory(target)


def _commit_directory(tmp: Path, target: Path) -> None:
    """Renames the complete directory ``tmp`` onto ``target``: the commit of a write."""
    _check_replaceable(target)
    replace_directory(tmp, target)


def commit_files(tmp: Path, root: Path) -> None:
    """Moves the cache files of ``tmp`` into the existing directory ``root`` (which keeps its
    other content, e.g. ``shards/``); the rename of ``meta.json``, last, is the commit.

    ``root``'s old ``meta.json`` is removed first, so from then on ``root`` does not read as a
    cache until the new one lands; array files of the old cache that the new one lacks are
    removed.
    """
    meta = root / META_FILE
    if os.path.lexists(meta):
        os.remove(meta)
        fsync_directory(root)
    new_files = {entry.name for entry in os.scandir(tmp)} - {META_FILE}
    for name in sorted(new_files):
        os.replace(tmp / name, root / name)
    for spec in ARRAY_SPECS:
        if spec.file_name not in new_files and os.path.lexists(root / spec.file_name):
            os.remove(root / spec.file_name)
    fsync_directory(root)
    os.replace(tmp / META_FILE, meta)
    fsync_directory(root)
    os.rmdir(tmp)


class _NpyAppender:
    """Writes one ``.npy`` file by appending rows; the header is completed on `finish`.

    numpy pads a header with room for the first axis to grow to 21 digits, so the header of
    shape ``(0, ...)`` and of the final shape have the same length and can be swapped in place.
    """

    def __init__(self, directory: Path, spec: ArraySpec, dtype: np.dtype | None = None) -> None:
        self.spec = spec
        self.dtype = spec.dtype if dtype is None else np.dtype(dtype)
        if self.dtype not in spec.dtypes:
            raise ValueError(f"internal: {spec.name} cannot hold {self.dtype}")
        self.path = directory / spec.file_name
        self.length = 0
        self._hash = hashlib.sha256()
        self._file = open(self.path, "xb")
        header = _npy_header(self.dtype, (0, *spec.item_shape))
        self._header_length = len(header)
        self._file.write(header)

    def append(self, array: np.ndarray) -> None:
        spec = self.spec
        if array.dtype != self.dtype or array.shape[1:] != spec.item_shape:
            raise ValueError(f"internal: {spec.name} got {array.dtype} {array.shape}")
        row_bytes = max(1, self.dtype.itemsize * int(np.prod(spec.item_shape, dtype=np.int64)))
        step = max(1, IO_CHUNK_BYTES // row_bytes)
        for start in range(0, array.shape[0], step):
            chunk = np.ascontiguousarray(array[start : start + step])
            data = memoryview(chunk).cast("B")
            self._file.write(data)
            self._hash.update(data)
        self.length += array.shape[0]

    def finish(self) -> dict[str, Any]:
        shape = (self.length, *self.spec.item_shape)
        header = _npy_header(self.dtype, shape)
        if len(header) != self._header_length:
            raise RuntimeError(f"numpy wrote a {len(header)}-byte header for {shape}; expected {self._header_length}")
        self._file.seek(0)
        self._file.write(header)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {
            "file": self.spec.file_name,
            "dtype": self.dtype.str,
            "shape": list(shape),
            "sha256": self._hash.hexdigest(),
        }

    def close(self) -> None:
        self._file.close()


class DirectoryWriter:
    """The files of one cache directory under construction."""

    def __init__(self, directory: Path, names: tuple[str, ...], dtypes: Mapping[str, np.dtype] | None = None) -> None:
        self.directory = directory
        self.files: dict[str, _NpyAppender] = {}
        try:
            for name in names:
                self.files[name] = _NpyAppender(directory, spec_of(name), (dtypes or {}).get(name))
        except BaseException:
            self.close()
            raise

    def append(self, name: str, array: np.ndarray) -> None:
        self.files[name].append(array)

    def finish(self, meta: CacheMeta, shard: ShardSpec | None) -> None:
        infos = {name: appender.finish() for name, appender in self.files.items()}
        document = meta_document(meta, infos, shard)
        with open(self.directory / META_FILE, "xb") as handle:
            handle.write(render_meta(document).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        fsync_directory(self.directory)

    def close(self) -> None:
        for appender in self.files.values():
            appender.close()


class CacheWriter:
    """Streams images into an on-disk cache; `close` commits it atomically.

    Arrays are appended to ``.npy`` files in ``<target>.tmp-<pid>/``; `close` completes their
    headers, writes ``meta.json``, fsyncs, and renames the directory onto the target. Until then
    the target is untouched (a previous cache there stays readable); a writer killed at any
    point leaves either the previous complete cache or none. Stale ``.tmp-<pid>`` directories
    of dead writers of the same target are removed when a new write starts.

    Use it as a context manager: an exception inside the block removes the temporary directory.

    Args:
      path: the cache directory. With ``shard``, the shard root: the shard goes to
        ``path/shards/NNNNN/``.
      settings: the `CacheSettings` (the image ids and sizes come from `add_image`); or,
        instead, their fields as keywords (``kind``, ``category_ids``, ``score_floor``, ...).
      shard: write one shard of a sharded cache (see `ShardSpec`, `merge_shards`): exactly
        ``image_stop - image_start`` images must be added. Writing a shard again replaces it.

    Raises:
      TypeError: both ``settings`` and keywords, or an unknown keyword.
      CacheError: bad settings fields, or the target exists and is not a cache (it is never
        replaced then), or holds shards (for a whole-cache write).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        settings: CacheSettings | None = None,
        /,
        *,
        shard: ShardSpec | None = None,
        **fields: Any,
    ) -> None:
        self._stream = ImageStream(CacheSettings.resolve(settings, fields, "CacheWriter"))
        if shard is not None and not isinstance(shard, ShardSpec):
            raise TypeError(f"shard must be a ShardSpec or None, got {type(shard).__name__}")
        self._shard = shard
        root = Path(path)
        self._target = shard_dir(root, shard.index) if shard is not None else root
        self._tmp = prepare_target(self._target)
        self._files: DirectoryWriter | None = None
        self._done = False

    @property
    def settings(self) -> CacheSettings:
        return self._stream.settings

    @property
    def path(self) -> Path:
        """Where the cache (or shard) will be once committed."""
        return self._target

    def num_images(self) -> int:
        return len(self._stream.image_ids)

    def add_image(
        self,
        image_id: int,
        size: tuple[int, int],
        row_boxes: Any,
        entry_row: Any,
        entry_class: Any,
        entry_score: Any,
        entry_boxes: Any = None,
        row_objectness: Any = None,
        row_level: Any = None,
    ) -> None:
        self._check_open()
        shard = self._shard
        if shard is not None and self.num_images() >= shard.size:
            raise CacheError(
                f"{self._target}: shard {shard.name} covers images [{shard.image_start}, {shard.image_stop}), "
                f"all {shard.size} already added"
            )
        image_id, size, arrays = self._stream.prepare(
            image_id, size, row_boxes=row_boxes, entry_row=entry_row, entry_class=entry_class,
            entry_score=entry_score, entry_boxes=entry_boxes, row_objectness=row_objectness, row_level=row_level,
        )
        self._stream.record(image_id, size, arrays)
        if self._files is None:
            self._files = DirectoryWriter(self._tmp, self._stream.names())
        for name, array in arrays.items():
            self._files.append(name, array)

    add_image.__doc__ = "Appends one image to the cache files." + ADD_IMAGE_DOC

    def close(self) -> Path:
        """Completes and commits the cache; returns its path.

        Raises:
          CacheError: a shard writer got fewer images than its range (the writer stays open:
            add the rest and close again).
        """
        self._check_open()
        shard = self._shard
        if shard is not None and self.num_images() != shard.size:
            raise CacheError(
                f"{self._target}: shard {shard.name} covers images [{shard.image_start}, {shard.image_stop}) "
                f"but {self.num_images()} were added"
            )
        stream = self._stream
        if self._files is None:
            self._files = DirectoryWriter(self._tmp, stream.names())
        try:
            for name, offsets in stream.offsets().items():
                self._files.append(name, offsets)
            self._files.finish(stream.meta(), shard)
            _commit_directory(self._tmp, self._target)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self._target

    def abort(self) -> None:
        """Discards everything written; the target is left as it was."""
        if self._files is not None:
            self._files.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._done = True

    def _check_open(self) -> None:
        if self._done:
            raise CacheError(f"{self._target}: this CacheWriter is already closed")

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if self._done:
            return
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_cache(path: str | os.PathLike, cache: DetectionCache, *, shard: ShardSpec | None = None) -> Path:
    """Writes ``cache`` to ``path`` atomically (see `CacheWriter`); returns the path.

    ``cache`` was validated when it was made. With ``shard``, writes it as that shard of
    ``path`` (the cache must hold exactly the shard's images).
    """
    if not isinstance(cache, DetectionCache):
        raise TypeError(f"cache must be a DetectionCache, got {type(cache).__name__}")
    if shard is not None:
        if not isinstance(shard, ShardSpec):
            raise TypeError(f"shard must be a ShardSpec or None, got {type(shard).__name__}")
        if cache.num_images() != shard.size:
            raise CacheError(f"shard {shard.name} covers {shard.size} images, the cache has {cache.num_images()}")
    root = Path(path)
    target = shard_dir(root, shard.index) if shard is not None else root
    tmp = prepare_target(target)
    arrays = cache.arrays()
    files = DirectoryWriter(tmp, tuple(arrays), {name: array.dtype for name, array in arrays.items()})
    try:
        for name, array in arrays.items():
            files.append(name, array)
        files.finish(cache.meta, shard)
        _commit_directory(tmp, target)
    except BaseException:
        files.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
