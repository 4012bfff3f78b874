"""The sweep's grid: candidate axes from a `ParamSpec`, the NMS settings they make, and the checks
that a cache can answer them exactly. Shared by the fast sweep and its reference."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from detsearch.detection import nms as nms_ops
from detsearch.detection.cache import CacheKind, DetectionCache
from detsearch.params import ONE_STAGE_THRESHOLDS, TWO_STAGE_THRESHOLDS, ParamSpec

__all__ = [
    "check_cache",
    "check_first_stage",
    "check_floor",
    "check_options",
    "grid_axes",
    "nms_keys",
    "row_params",
    "threshold_names",
]


def check_cache(cache) -> CacheKind:
    """The kind of ``cache``; raises TypeError unless it is a `DetectionCache` (which validated
    its arrays when it was built)."""
    if not isinstance(cache, DetectionCache):
        raise TypeError(f"cache must be a detsearch.detection.cache.DetectionCache, got {type(cache).__name__}")
    return CacheKind(cache.meta.kind)


def threshold_names(kind: CacheKind) -> tuple[str, ...]:
    """The thresholds a sweep of ``kind`` takes, in `detsearch.params.PARAM_NAMES` order."""
    return ONE_STAGE_THRESHOLDS if kind == CacheKind.ONE_STAGE else TWO_STAGE_THRESHOLDS


def grid_axes(spec: ParamSpec, kind: CacheKind) -> dict[str, tuple[float, ...]]:
    """Sorted distinct candidates per threshold of ``kind``.

    Raises:
      TypeError: ``spec`` is not a `ParamSpec`.
      ValueError: a threshold of ``kind`` has no candidates, or ``spec`` names another one.
    """
    if not isinstance(spec, ParamSpec):
        raise TypeError(f"param_list_spec must be a ParamSpec, got {type(spec).__name__}")
    names = threshold_names(kind)
    unexpected = [name for name in spec.names() if name not in names]
    if unexpected:
        raise ValueError(f"a {kind} sweep takes {', '.join(names)}; got also {', '.join(unexpected)}")
    missing = [name for name in names if name not in spec]
    if missing:
        raise ValueError(f"a {kind} sweep needs candidates for {', '.join(missing)}")
    return {name: tuple(sorted(set(spec.candidates(name)))) for name in names}


def check_options(cache: DetectionCache, kind: CacheKind, max_detections_per_class, max_total_detections,
                  num_proposals, per_level) -> tuple[int, bool]:
    """Checks the NMS caps; returns ``(num_proposals, per_level)`` with their defaults filled in
    (the cache's ``num_proposals``, else `nms.DEFAULT_NUM_PROPOSALS`; per level when the cache
    records levels)."""
    for name, value in (("max_detections_per_class", max_detections_per_class), ("max_total_detections", max_total_detections)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if num_proposals is None:
        num_proposals = cache.meta.num_proposals or nms_ops.DEFAULT_NUM_PROPOSALS
    if isinstance(num_proposals, bool) or not isinstance(num_proposals, (int, np.integer)) or num_proposals < 1:
        raise ValueError(f"num_proposals must be an integer >= 1, got {num_proposals!r}")
    if per_level is None:
        per_level = kind == CacheKind.TWO_STAGE and cache.row_level is not None
    if per_level and cache.row_level is None:
        raise ValueError("per_level NMS needs row_level in the cache")
    return int(num_proposals), bool(per_level)


def check_floor(cache: DetectionCache, axes: Mapping[str, tuple[float, ...]]) -> None:
    """Raises ValueError when the lowest score threshold is below the cache's score floor."""
    floor = float(cache.meta.score_floor)
    lowest = min(axes["score_threshold"])
    if np.float32(lowest) < np.float32(floor):
        raise ValueError(
            f"score_threshold {lowest:g} is below the cache's score floor {floor:g}: entries under the floor were not recorded"
        )


def check_first_stage(cache: DetectionCache, kind: CacheKind, axes: Mapping[str, tuple[float, ...]],
                      num_proposals: int, per_level: bool) -> None:
    """Raises ValueError for first-stage settings the cache cannot answer exactly (two-stage)."""
    if kind != CacheKind.TWO_STAGE:
        return
    if 0.0 in axes["nms_iou_threshold"]:
        raise ValueError("nms_iou_threshold 0 is not swept: TF Model Garden skips first-stage NMS altogether at 0 "
                         "(every proposal up to num_proposals, whatever nms_score_threshold); use a value > 0")
    meta = cache.meta
    ious = meta.first_stage_iou_thresholds
    if ious is None:
        return
    min_score = meta.first_stage_min_score
    outside = [v for v in axes["nms_iou_threshold"] if v not in ious]
    lowest = min(axes["nms_score_threshold"])
    recorded = (f"the cache's second stage was recorded for the proposals that nms_iou_threshold in "
                f"{list(ious)} with nms_score_threshold >= {min_score:g} keep")
    if outside:
        raise ValueError(f"nms_iou_threshold {outside[0]:g}: {recorded}; record it again with that value")
    if lowest < min_score:
        raise ValueError(f"nms_score_threshold {lowest:g}: {recorded}; record it again with a lower minimum")
    if not per_level or num_proposals > (meta.num_proposals or num_proposals):
        raise ValueError(f"num_proposals {num_proposals} (per_level {per_level}): {recorded}, per FPN level and at "
                         f"most {meta.num_proposals} each")


def nms_keys(kind: CacheKind, axes: Mapping[str, tuple[float, ...]]) -> list[tuple]:
    """The NMS settings of the grid: ``(iou_threshold,)`` one-stage; ``(nms_score_threshold,
    nms_iou_threshold, iou_threshold)`` two-stage, ``nms_iou_threshold`` outermost (the first
    stage of one ``nms_iou_threshold`` is computed once and reused). Every score threshold is
    read off one NMS setting."""
    if kind == CacheKind.ONE_STAGE:
        return [(iou,) for iou in axes["iou_threshold"]]
    return [
        (nms_score, nms_iou, iou)
        for nms_iou in axes["nms_iou_threshold"]
        for nms_score in axes["nms_score_threshold"]
        for iou in axes["iou_threshold"]
    ]


def row_params(kind: CacheKind, key: tuple, score_threshold: float) -> dict[str, float]:
    """A row's thresholds by MoXing name from its NMS setting ``key`` and score threshold."""
    if kind == CacheKind.ONE_STAGE:
        return {"score_threshold": float(score_threshold), "iou_threshold": float(key[0])}
    nms_score, nms_iou, iou = key
    return {
        "nms_score_threshold": float(nms_score),
        "nms_iou_threshold": float(nms_iou),
        "score_threshold": float(score_threshold),
        "iou_threshold": float(iou),
    }
