"""Recording a detector's raw predictions as a `detsearch.detection.cache` cache, shard by
shard and resumable (`record_cache`, or `record_cache_sharded` with one task per shard on an
executor), and its final detections as COCO results (`predict_results`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detsearch.datasets.detection import DetectionDataset, make_tf_dataset
from detsearch.detection import cache as cache_lib
from detsearch.executor import release_worker_cache, worker_cache
from detsearch.models.data import dataset_categories, dataset_max_boxes
from detsearch.models.detector import Detector
from detsearch.models.restore import CHECKPOINT_DIR, latest_checkpoint, load_detector

__all__ = ["padded_batch", "predict_results", "record_cache", "record_cache_sharded"]


def record_cache(
    detector: Detector,
    dataset: DetectionDataset,
    path: str | os.PathLike,
    *,
    score_floor: float,
    batch_size: int = 8,
    images_per_shard: int = 500,
    source: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    first_stage: tuple[Sequence[float], float] | None = None,
) -> cache_lib.DetectionCache:
    """Records ``detector``'s raw predictions on ``dataset`` as a cache at ``path``.

    Writes shard by shard (`detsearch.detection.cache.plan_shards`); shards already committed
    with the same settings are kept, so an interrupted run resumes where it stopped; then merges.
    What each row and entry holds is the model's `cache_records` (see docs/models.md).

    Args:
      detector: the (trained) detector.
      dataset: the images, in cache order.
      path: cache directory.
      score_floor: entries with ``score >= float32(score_floor)`` are recorded.
      batch_size: images per forward pass.
      images_per_shard: images per shard.
      source: provenance stored in the cache meta (besides the model's description).
      progress: ``progress(images_done)`` after each batch (images of skipped shards count).
      first_stage: two-stage detectors: ``(nms_iou_thresholds, min_nms_score_threshold)`` of
        the sweep to come; the second stage then runs only on the proposals those settings can
        keep (`detsearch.models.faster_rcnn.FasterRcnnDetector.set_first_stage`), and the sweep accepts
        only such settings. None: the second stage of every proposal.

    Raises:
      ValueError: a committed shard was written with other settings (another checkpoint,
        floor, model, first stage): remove ``path`` or write elsewhere.
    """
    floor = float(score_floor)
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"score_floor must be in [0, 1], got {score_floor!r}")
    _set_first_stage(detector, first_stage)
    infos = [_write_shard(detector, dataset, path, spec, floor, batch_size, source, progress)
             for spec in cache_lib.plan_shards(len(dataset), images_per_shard)]
    if hasattr(detector, "max_padding_score"):  # over the shards recorded now
        detector.max_padding_score = max((i["max_padding_score"] for i in infos if i["recorded"]), default=0.0)
    return cache_lib.merge_shards(path)


def _set_first_stage(detector: Detector, first_stage) -> None:
    if first_stage is None:
        if hasattr(detector, "set_first_stage"):
            detector.set_first_stage(None)
        return
    if not hasattr(detector, "set_first_stage"):
        raise ValueError(f"first_stage applies to two-stage detectors; {detector.name} has no first stage")
    iou_thresholds, min_score = first_stage
    detector.set_first_stage(iou_thresholds, min_score)


def _write_shard(detector: Detector, dataset: DetectionDataset, path, spec, floor: float, batch_size: int,
                 source: Mapping[str, Any] | None, progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Records shard ``spec`` of ``dataset`` unless it is committed with the same settings (then
    kept); returns ``{"images", "recorded", "max_padding_score"}`` (the last for detectors that
    track it, Faster R-CNN: the shard's largest padding-ROI score; None otherwise).

    Raises:
      ValueError: other categories, or a committed shard recorded with other settings.
    """
    ids, _ = dataset_categories(dataset)
    if tuple(sorted(ids)) != detector.category_ids:
        raise ValueError(f"dataset categories {sorted(ids)} differ from the detector's {list(detector.category_ids)}")
    info = detector.describe()
    info.pop("num_parameters", None)
    writer_args = dict(
        kind=detector.kind,
        category_ids=list(detector.category_ids),
        score_floor=floor,
        category_names=None if detector.category_names is None else list(detector.category_names),
        source={**info, **dict(source or {})},
        **detector.cache_meta(),
    )
    images = spec.image_stop - spec.image_start
    shard_dir = Path(path) / "shards" / f"{spec.index:05d}"
    if spec.index in set(cache_lib.completed_shards(path)):
        meta = cache_lib.read_cache(shard_dir, verify=False).meta
        expected = cache_lib.CacheMeta(
            version=cache_lib.CACHE_VERSION, image_ids=tuple(e.image_id for e in dataset.examples[spec.image_start:spec.image_stop]),
            image_sizes=meta.image_sizes, **writer_args)
        fields = ("kind", "category_ids", "score_floor", "top_k", "num_proposals", "first_stage_iou_thresholds",
                  "first_stage_min_score", "image_ids")
        if dict(meta.source) != dict(expected.source) or any(getattr(meta, f) != getattr(expected, f) for f in fields):
            raise ValueError(f"{shard_dir} was recorded with other settings or images (source {dict(meta.source)}, "
                             f"floor {meta.score_floor}); remove {path} or choose another path")
        if progress is not None:
            progress(images)
        return {"images": images, "recorded": False, "max_padding_score": None}
    tracks_padding = hasattr(detector, "max_padding_score")
    if tracks_padding:
        detector.max_padding_score = 0.0  # this shard's
    part = DetectionDataset(dataset.examples[spec.image_start:spec.image_stop], dataset.categories, dataset.image_dir)
    data = make_tf_dataset(part, detector.image_size, batch_size, training=False, shuffle=False,
                           max_boxes=dataset_max_boxes(dataset))
    with cache_lib.CacheWriter(path, shard=spec, **writer_args) as writer:
        for batch in data.as_numpy_iterator():
            for record in detector.cache_records(batch, floor):
                writer.add_image(**record)
            if progress is not None:
                progress(len(batch["image_id"]))
    return {"images": images, "recorded": True,
            "max_padding_score": float(detector.max_padding_score) if tracks_padding else None}


def record_cache_sharded(
    run_dir: str | os.PathLike,
    dataset: DetectionDataset,
    path: str | os.PathLike,
    *,
    score_floor: float,
    executor: Any = None,
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 8,
    images_per_shard: int = 500,
    source: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    on_shard: Callable[[int, dict[str, Any]], None] | None = None,
    first_stage: tuple[Sequence[float], float] | None = None,
) -> cache_lib.DetectionCache:
    """`record_cache` with one task per shard on ``executor`` (`detsearch.executor`).

    Each task's process rebuilds the detector from ``run_dir`` with `load_detector` (once per
    process) and records its shard as `record_cache` does; committed shards with the same
    settings are kept (resume), and the shards are merged here at the end. The cache is the one
    ``record_cache(load_detector(run_dir, checkpoint)[0], dataset, path, ...)`` writes: same
    arrays, same bytes.

    Args:
      run_dir: `detsearch.models.train.train_detector`'s output directory.
      executor: None or ``"local"`` (this process), ``"ray"`` or a ``detsearch.executor.Executor``.
        On a cluster every worker must reach ``run_dir``, ``path`` and the images (a shared
        file system).
      checkpoint: a checkpoint prefix; None means the latest in ``run_dir`` (chosen here, once).
      dataset, path, score_floor, batch_size, images_per_shard, source, first_stage: as in
        `record_cache`.
      progress: ``progress(images)`` after each shard (committed shards count).
      on_shard: ``on_shard(index, info)`` after each shard; ``info`` holds ``images``,
        ``recorded`` (False for a committed shard that was kept) and, for detectors that track
        it (Faster R-CNN), ``max_padding_score`` of the shard's padding ROIs (None otherwise).

    Raises:
      FileNotFoundError: no checkpoint. ValueError: as `record_cache`.
    """
    from detsearch.executor import LocalExecutor, as_executor

    executor = as_executor(executor)
    floor = float(score_floor)
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"score_floor must be in [0, 1], got {score_floor!r}")
    if checkpoint is None:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint in {Path(run_dir) / CHECKPOINT_DIR}")
    plan = cache_lib.plan_shards(len(dataset), images_per_shard)
    shared = dict(run_dir=str(run_dir), checkpoint=str(checkpoint), dataset=dataset, path=str(path), floor=floor,
                  batch_size=batch_size, images_per_shard=images_per_shard, source=dict(source or {}),
                  first_stage=first_stage)

    def shard_done(position: int, info: dict[str, Any]) -> None:
        if progress is not None:
            progress(info["images"])
        if on_shard is not None:
            on_shard(plan[position].index, info)

    try:
        executor.map(_record_shard, [spec.index for spec in plan], shared=shared, on_result=shard_done)
    finally:
        if isinstance(executor, LocalExecutor):
            release_worker_cache(__name__)  # the in-process copy is not needed any more
    return cache_lib.merge_shards(path)


def _record_shard(shared: Mapping[str, Any], index: int) -> dict[str, Any]:
    """One `record_cache_sharded` task: records shard ``index`` unless committed (then checks
    its settings, as `record_cache`); returns the ``info`` of ``on_shard``."""
    key = (shared["run_dir"], shared["checkpoint"])
    detector = worker_cache(__name__, key, lambda: load_detector(*key)[0])  # rebuilt once per worker
    _set_first_stage(detector, shared["first_stage"])
    spec = cache_lib.plan_shards(len(shared["dataset"]), shared["images_per_shard"])[index]
    return _write_shard(detector, shared["dataset"], shared["path"], spec, shared["floor"], shared["batch_size"],
                        shared["source"], None)



def predict_results(detector: Detector, dataset: DetectionDataset, batch_size: int = 8) -> list[dict[str, Any]]:
    """COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``) of
    `Detector.predict` (Model Garden's own post-processing at the detector's thresholds) on
    ``dataset``, image by image in dataset order."""
    from detsearch.detection.boxes import yxyx_to_xywh

    results = []
    data = make_tf_dataset(dataset, detector.image_size, batch_size, training=False, shuffle=False)
    for batch in data.as_numpy_iterator():
        batch, count = padded_batch(batch, batch_size)
        for image_id, found in zip(batch["image_id"][:count].tolist(), detector.predict(batch)[:count]):
            for box, score, category in zip(yxyx_to_xywh(found["boxes"]), found["scores"], found["category_ids"]):
                results.append({"image_id": int(image_id), "category_id": int(category),
                                "bbox": [float(v) for v in box], "score": float(score)})
    return results


def padded_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> tuple[dict[str, np.ndarray], int]:
    """Pads a (last, short) batch to ``batch_size`` images by repeating its last image.

    Returns ``(padded, n)`` with ``n`` the number of real images (keep outputs ``[:n]``).
    """
    n = len(batch["image_id"])
    if n == batch_size:
        return dict(batch), n
    if n > batch_size:
        raise ValueError(f"batch of {n} images is larger than {batch_size}")
    padded = {key: np.concatenate([value, np.repeat(value[-1:], batch_size - n, axis=0)]) for key, value in batch.items()}
    return padded, n
