"""The grid sweep's progress journal: a killed sweep, started again, reuses the NMS settings it
finished and computes only the rest.

One JSON line per finished NMS setting: its rows, as `key_rows` made them, each number as its
exact ``repr``, so that the resumed table is the uninterrupted one bit for bit. Each line is
durable before the sweep goes on (`atomic.append_line`); a line cut short by a kill is ignored
(that setting runs again). Every line names the sweep it belongs to: a digest of everything the
rows depend on (the cache's content, the ground truth, the grid, the post-processing). A
journal of another sweep is dropped, with a warning, and this one starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from detsearch.atomic import append_line
from detsearch.detection.cache import DetectionCache
from detsearch.detection.cocoeval import GroundTruth
from detsearch.detection.sweep.grid import Grid, NmsKey
from detsearch.detection.sweep.result import SweepRow
from detsearch.detection.sweep.settings import PostProcessing
from detsearch.detection.tide import TideErrors

__all__ = ["SweepJournal", "sweep_digest"]

logger = logging.getLogger(__name__)

_VERSION = 1


def _hash_arrays(digest, arrays: Iterable[Any]) -> None:
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        if array.size:  # (memoryview cannot cast a shape with a zero)
            digest.update(memoryview(array).cast("B"))


def sweep_digest(cache: DetectionCache, ground_truth: GroundTruth, grid: Grid, post_processing: PostProcessing,
                 errors: bool = False) -> str:
    """SHA-256 (hex) of what a sweep's rows depend on (``errors``: whether they hold TIDE's). A
    cache read whole from a directory is named by its ``meta.json`` (which checksums every
    array; `read_cache` checked them), any other by its arrays."""
    digest = hashlib.sha256(f"detsearch sweep journal {_VERSION}\n{grid!r}\n{post_processing!r}\n".encode())
    if errors:
        digest.update(b"errors\n")
    if cache.path is not None:
        digest.update((Path(cache.path) / "meta.json").read_bytes())
    else:
        digest.update(repr(cache.meta).encode())
        for name, array in sorted(cache.arrays().items()):
            digest.update(name.encode())
            _hash_arrays(digest, [array])
    _hash_arrays(digest, (ground_truth.image_ids, ground_truth.category_ids, ground_truth.image_index,
                          ground_truth.category_index, ground_truth.boxes, ground_truth.areas, ground_truth.crowd,
                          ground_truth.annotation_ids))
    return digest.hexdigest()


def _row(record: Mapping[str, Any]) -> SweepRow:
    return SweepRow(params=dict(record["params"]), stats=tuple(float(v) for v in record["stats"]),
                    recall=float(record["recall"]), ap50=float(record["ap50"]),
                    dets_per_image=float(record["dets_per_image"]), f1=float(record["f1"]),
                    f1_max=float(record["f1_max"]),
                    f1_max_score=None if record["f1_max_score"] is None else float(record["f1_max_score"]),
                    errors=None if record.get("errors") is None else TideErrors.from_dict(record["errors"]))


class SweepJournal:
    """The finished NMS settings of one sweep (``digest``, `sweep_digest`), kept in ``path``.

    Opening it reads the settings finished before (`finished`); a file whose lines belong to
    another sweep is deleted."""

    def __init__(self, path: str | os.PathLike, digest: str):
        self.path = Path(path)
        self.digest = digest
        self.finished: dict[NmsKey, list[SweepRow]] = {}
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _load(self) -> None:
        other = 0
        with open(self.path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    record = json.loads(line)
                    if record["sweep"] != self.digest:
                        other += 1
                        continue
                    key = NmsKey(*record["key"])
                    self.finished[key] = [_row(row) for row in record["rows"]]
                except (ValueError, KeyError, TypeError):
                    logger.warning("%s:%d: unreadable journal line ignored (an interrupted write)", self.path, number)
        if other:
            logger.warning("%s: dropping %d finished NMS settings of another sweep (other inputs or settings); "
                           "this sweep starts afresh", self.path, other)
            self.finished = {}
            self.path.unlink()

    def put(self, key: NmsKey, rows: list[SweepRow]) -> None:
        """Records ``key``'s rows; durable when this returns."""
        # A row as result.json writes it, less its objective (the sweep's, not the row's).
        record = {"sweep": self.digest, "key": list(key),
                  "rows": [{k: v for k, v in row.to_dict().items() if k != "objective"} for row in rows]}
        append_line(self.path, (json.dumps(record) + "\n").encode())
        self.finished[key] = rows
