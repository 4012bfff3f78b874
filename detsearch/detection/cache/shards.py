"""Sharded caches: shards written independently (`CacheWriter(..., shard=...)`), then merged.

`plan_shards` and `ShardSpec` (in `detsearch.detection.cache.format`) say which images a
shard holds; `completed_shards` lists the committed ones, so an interrupted recording resumes;
`merge_shards` checks that they tile the images and writes the merged cache beside them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from detsearch.atomic import fresh_directory
from detsearch.detection.cache.arrays import DetectionCache
from detsearch.detection.cache.format import (
    META_FILE,
    SETTING_NAMES,
    SHARD_NAME_DIGITS,
    SHARDS_DIR,
    CacheError,
    ShardSpec,
    shard_dir,
)
from detsearch.detection.cache.reader import SHARD_NAME, open_cache, read_cache
from detsearch.detection.cache.values import INT32_MAX, chunks
from detsearch.detection.cache.writer import DirectoryWriter, commit_files

__all__ = ["completed_shards", "merge_shards"]


def completed_shards(path: str | os.PathLike) -> tuple[int, ...]:
    """Indices of the shards committed under ``path/shards/`` (not verified), ascending."""
    shards = Path(path) / SHARDS_DIR
    if not shards.is_dir():
        return ()
    return tuple(
        sorted(
            int(entry.name)
            for entry in os.scandir(shards)
            if SHARD_NAME.fullmatch(entry.name) and (Path(entry.path) / META_FILE).is_file()
        )
    )


def merge_shards(path: str | os.PathLike, *, verify: bool = True) -> DetectionCache:
    """Merges ``path/shards/NNNNN/`` into one cache at ``path``; returns it (memory-mapped).

    The shards must be ``0 .. K-1``, their image ranges in index order must tile
    ``[0, num_images)`` with no gap or overlap, and they must agree on kind, categories, score
    floor, top_k, num_proposals, source and on recording row_level. Shards are kept (so a merge
    can be repeated); the merged files are written beside ``shards/``.

    Atomicity: the merged arrays are written to ``path.tmp-<pid>/`` first; then ``meta.json``
    of ``path`` is removed (from here on ``path`` does not read as a cache), the array files are
    renamed into ``path`` one by one, and the new ``meta.json`` is renamed in last: that rename
    is the commit. A merge killed at any point leaves either a complete cache or none.

    Raises:
      CacheError: no shards, missing or overlapping shards, a gap, inconsistent shards, a
        corrupt shard (naming it), or the same image id in two shards.
    """
    root = Path(path)
    shards_dir = root / SHARDS_DIR
    if not shards_dir.is_dir():
        raise CacheError(f"{root}: has no {SHARDS_DIR}/ directory to merge")
    indices = sorted(int(entry.name) for entry in os.scandir(shards_dir) if SHARD_NAME.fullmatch(entry.name))
    if not indices:
        raise CacheError(f"{shards_dir}: holds no committed shard")
    missing = sorted(set(range(indices[-1] + 1)) - set(indices))
    if missing:
        names = ", ".join(f"{i:0{SHARD_NAME_DIGITS}d}" for i in missing)
        raise CacheError(
            f"{shards_dir}: missing shard(s) {names} (have {len(indices)}, up to "
            f"{indices[-1]:0{SHARD_NAME_DIGITS}d})"
        )
    caches: list[DetectionCache] = []
    specs: list[ShardSpec] = []
    for index in indices:
        directory = shard_dir(root, index)
        cache, shard = open_cache(directory, verify)
        if shard is None:
            raise CacheError(f"{directory}: is a whole cache, not a shard (its meta.json has no shard record)")
        if shard.index != index:
            raise CacheError(f"{directory}: records shard index {shard.index}, not {index}")
        caches.append(cache)
        specs.append(shard)
    _check_shard_ranges(shards_dir, specs)
    first = caches[0].meta
    owner: dict[int, int] = {}
    for spec, cache in zip(specs, caches):
        for name in SETTING_NAMES:
            if getattr(cache.meta, name) != getattr(first, name):
                raise CacheError(
                    f"{shards_dir}: shard {spec.name} has {name} = {getattr(cache.meta, name)!r}, shard "
                    f"{specs[0].name} has {getattr(first, name)!r}"
                )
        if (cache.row_level is None) != (caches[0].row_level is None):
            raise CacheError(
                f"{shards_dir}: shard {spec.name} and shard {specs[0].name} disagree on recording row_level"
            )
        for image_id in cache.meta.image_ids:
            if image_id in owner:
                raise CacheError(
                    f"{shards_dir}: image_id {image_id} is in shard {owner[image_id]:0{SHARD_NAME_DIGITS}d} "
                    f"and shard {spec.name}"
                )
            owner[image_id] = spec.index
    total_rows = sum(cache.num_rows() for cache in caches)
    if total_rows > INT32_MAX:
        raise CacheError(
            f"{shards_dir}: the merged cache would have {total_rows} rows, more than int32 entry_row allows"
        )

    meta = first.with_images(
        [i for cache in caches for i in cache.meta.image_ids],
        [s for cache in caches for s in cache.meta.image_sizes],
    )
    dtypes = {name: array.dtype for name, array in caches[0].arrays().items()}
    for spec, cache in zip(specs, caches):
        other = {name: array.dtype for name, array in cache.arrays().items()}
        if other != dtypes:
            raise CacheError(f"{shards_dir}: shard {spec.name} holds arrays {other}, the first shard {dtypes}")
    names = tuple(dtypes)
    tmp = fresh_directory(root)
    files = DirectoryWriter(tmp, names, dtypes)
    try:
        row_base = entry_base = 0
        files.append("row_offsets", np.zeros(1, dtype="<i8"))
        files.append("entry_offsets", np.zeros(1, dtype="<i8"))
        for cache in caches:
            files.append("row_offsets", (np.asarray(cache.row_offsets[1:]) + row_base).astype("<i8"))
            files.append("entry_offsets", (np.asarray(cache.entry_offsets[1:]) + entry_base).astype("<i8"))
            for name, array in cache.arrays().items():
                if name in ("row_offsets", "entry_offsets"):
                    continue
                if name == "entry_row":
                    for start, stop in chunks(array.shape[0]):
                        shifted = np.asarray(array[start:stop]).astype(np.int64) + row_base
                        files.append(name, shifted.astype("<i4"))
                else:
                    files.append(name, array)
            row_base += cache.num_rows()
            entry_base += cache.num_entries()
        files.finish(meta, None)
        commit_files(tmp, root)
    except BaseException:
        files.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_cache(root, verify=False)


def _check_shard_ranges(shards_dir: Path, specs: list[ShardSpec]) -> None:
    totals = {spec.num_images for spec in specs}
    if len(totals) != 1:
        raise CacheError(f"{shards_dir}: shards disagree on num_images: {sorted(totals)}")
    total = totals.pop()
    previous: ShardSpec | None = None
    for spec in specs:
        expected_start = 0 if previous is None else previous.image_stop
        if spec.image_start < expected_start:
            raise CacheError(
                f"{shards_dir}: shard {spec.name} [{spec.image_start}, {spec.image_stop}) overlaps shard "
                f"{previous.name} [{previous.image_start}, {previous.image_stop})"
            )
        if spec.image_start > expected_start:
            after = "the start" if previous is None else f"shard {previous.name}"
            raise CacheError(
                f"{shards_dir}: images [{expected_start}, {spec.image_start}) between {after} and shard "
                f"{spec.name} are in no shard"
            )
        previous = spec
    if previous.image_stop != total:
        raise CacheError(
            f"{shards_dir}: images [{previous.image_stop}, {total}) are in no shard (missing shard(s) after "
            f"{previous.name})"
        )
