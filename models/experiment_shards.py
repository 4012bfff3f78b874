"""Caching an experiment's validation set in shards: one per TFRecord file, each recorded by a
task of an executor (this process, or Ray workers on a cluster), committed on its own, so a
killed recording resumes where it stopped; then merged into one cache.

Every task rebuilds the experiment's model from its config and checkpoint and records its
files with `detsearch.models.experiment.Recorder`, exactly as the one-pass `record` does; the
merged cache holds the same images, rows and entries (its images in file order, each file's by
image id). Needs ``task.annotation_file``: every shard then names the same categories.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["record_sharded"]


def _count_records(path: str) -> int:
    import tensorflow as tf

    return int(tf.data.TFRecordDataset(path).reduce(0, lambda count, _: count + 1))


def record_sharded(experiment, path: str | os.PathLike, score_floor: float, *, executor: Any = None,
                   progress: Callable[[int], None] | None = None):
    """The cache of ``experiment``'s validation records at ``path``, one shard per record file.

    Returns ``(cache, ground_truth)`` as `detsearch.models.experiment.record` does.

    Raises:
      ValueError: no ``task.annotation_file``; a committed shard of other settings.
    """
    import json

    from detsearch.detection.cache import ShardSpec, merge_shards
    from detsearch.executor import LocalExecutor, as_executor
    from detsearch.models.experiment import check_records, with_categories

    annotation_file = experiment.config.task.annotation_file
    if not annotation_file:
        raise ValueError("sharded caching needs task.annotation_file (each shard's ground truth built from its own "
                         "records would name its own categories)")
    files = check_records(experiment.config)
    counts = [_count_records(f) for f in files]
    total = sum(counts)
    specs, start = [], 0
    for index, count in enumerate(c for c in counts if c):
        specs.append(ShardSpec(index=index, image_start=start, image_stop=start + count, num_images=total))
        start += count
    groups = [[f] for f, c in zip(files, counts) if c]
    shared = {"experiment": dataclasses.replace(experiment, task=None, model=None), "path": str(path),
              "floor": float(score_floor), "groups": groups, "specs": specs}
    executor = as_executor(executor)
    if not isinstance(executor, LocalExecutor) and executor.name != "ray":
        raise ValueError(f"experiment shards run in this process or on Ray (TensorFlow does not survive a fork); "
                         f"got {executor!r}")
    executor.map(_record_shard, list(range(len(specs))), shared=shared,
                 on_result=lambda _, images: progress(images) if progress is not None else None)
    with open(annotation_file, encoding="utf-8") as handle:
        ground_truth = json.load(handle)
    cache = merge_shards(path)
    return cache, with_categories(ground_truth, cache.meta.category_ids)


def _record_shard(shared: Mapping[str, Any], index: int) -> int:
    """One task: records shard ``index`` (its record files) unless it is committed; returns its
    number of images."""
    from detsearch.detection.cache import completed_shards, read_cache, write_cache
    from detsearch.detection.cache.format import shard_dir
    from detsearch.models.experiment import cache_source, record

    spec = shared["specs"][index]
    experiment = shared["experiment"]
    if index in completed_shards(shared["path"]):
        where = shard_dir(Path(shared["path"]), index)
        meta = read_cache(where, verify=False).meta
        if dict(meta.source) != cache_source(experiment) or len(meta.image_ids) != spec.size or (
                meta.score_floor != shared["floor"]):
            raise ValueError(f"{where} was recorded with other settings (source {dict(meta.source)}, floor "
                             f"{meta.score_floor}); remove {shared['path']} or choose another --out")
        return spec.size
    config = copy.deepcopy(experiment.config)
    config.task.validation_data.input_path = ",".join(shared["groups"][index])
    cache, _ = record(dataclasses.replace(experiment, config=config), shared["floor"])
    write_cache(shared["path"], cache, shard=spec)
    return spec.size
