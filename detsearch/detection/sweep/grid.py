"""The sweep's grid: candidate axes from a `ParamSpec`, the NMS settings they make, and the checks
that a cache can answer them exactly. Shared by the fast sweep and its reference."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from detsearch.detection import nms as nms_ops
from detsearch.detection.cache import CacheKind, DetectionCache
from detsearch.params import ONE_STAGE_THRESHOLDS, TWO_STAGE_THRESHOLDS, ParamSpec

__all__ = [
    "EXTRA_AXES",
    "NMS_VERSIONS",
    "PROPOSAL_NMS",
    "check_axes",
    "check_cache",
    "check_first_stage",
    "check_floor",
    "check_nms_version",
    "check_options",
    "grid_axes",
    "key_of",
    "nms_keys",
    "row_params",
    "threshold_names",
]


EXTRA_AXES = ("max_detections", "class_agnostic")
"""Post-processing axes beyond the MoXing thresholds, in a row's ``params`` after them (only
when swept): ``max_detections``, Model Garden's ``max_num_detections`` (the cap per class and
per image); ``class_agnostic``, one NMS over all classes of an image, each box taking only its
highest-scoring class (Model Garden's ``use_class_agnostic_nms``)."""


def check_axes(max_detections, class_agnostic) -> tuple[tuple[int, ...] | None, tuple[bool, ...]]:
    """The ``max_detections`` and ``class_agnostic`` axes, sorted and distinct.

    Args:
      max_detections: None (not swept), an integer >= 1, or a non-empty list of them.
      class_agnostic: None (not swept: class-aware NMS), a bool, or a non-empty list of bools.

    Returns:
      ``(caps or None, agnostic values)``; ``(False,)`` when ``class_agnostic`` is None.
    """
    caps = None
    if max_detections is not None:
        values = list(max_detections) if isinstance(max_detections, (list, tuple, np.ndarray)) else [max_detections]
        if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values):
            raise ValueError(f"max_detections must be an integer >= 1 or a non-empty list of them, got {max_detections!r}")
        caps = tuple(sorted({int(v) for v in values}))
    if class_agnostic is None:
        return caps, (False,)
    values = list(class_agnostic) if isinstance(class_agnostic, (list, tuple, np.ndarray)) else [class_agnostic]
    if not values or any(not isinstance(v, (bool, np.bool_)) for v in values):
        raise ValueError(f"class_agnostic must be a bool or a non-empty list of bools, got {class_agnostic!r}")
    return caps, tuple(sorted({bool(v) for v in values}))


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
                  num_proposals, per_level, caps=None) -> tuple[int, int, int, bool]:
    """Checks the NMS caps; returns ``(max_detections_per_class, max_total_detections,
    num_proposals, per_level)`` with their defaults filled in (100 and 100; the cache's
    ``num_proposals``, else `nms.DEFAULT_NUM_PROPOSALS`; per level when the cache records
    levels). With a ``max_detections`` axis (``caps``) the two caps come from it and must not
    be given."""
    if caps is not None:
        given = [name for name, value in (("max_detections_per_class", max_detections_per_class),
                                          ("max_total_detections", max_total_detections)) if value is not None]
        if given:
            raise ValueError(f"max_detections sets the cap per class and per image (Model Garden's max_num_detections); "
                             f"do not give {' or '.join(given)} with it")
        max_detections_per_class = max_total_detections = max(caps)
    if max_detections_per_class is None:
        max_detections_per_class = nms_ops.DEFAULT_MAX_DETECTIONS_PER_CLASS
    if max_total_detections is None:
        max_total_detections = nms_ops.DEFAULT_MAX_TOTAL_DETECTIONS
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
    return int(max_detections_per_class), int(max_total_detections), int(num_proposals), bool(per_level)


NMS_VERSIONS = ("batched", "v2")
"""Model Garden's ``detection_generator.nms_version`` values a sweep reproduces: ``batched``
(greedy NMS, `detsearch.detection.nms`) and ``v2``, its default (pre-NMS top-k and tiled NMS,
`detsearch.detection.nms_v2`)."""

PROPOSAL_NMS = ("batched", "tiled")
"""Two-stage first-stage NMS: ``batched`` (Model Garden's ``roi_generator.use_batched_nms:
true``, greedy) or ``tiled`` (``use_batched_nms: false``, its default: the top-k proposals per
level, then the tiled NMS of v2)."""


def check_nms_version(nms_version: str, kind: CacheKind, agnostic: tuple[bool, ...], max_detections_per_class: int,
                      max_total_detections: int, pre_nms_top_k, proposal_nms: str = "batched", proposal_top_k=None,
                      num_proposals: int = 0, per_level: bool = False) -> tuple[int, int]:
    """Checks the NMS versions against the other settings; returns ``(pre_nms_top_k,
    proposal_top_k)`` with the defaults filled in (5000 and 1000, Model Garden's) and 0 where
    the setting does not apply."""
    if nms_version not in NMS_VERSIONS:
        raise ValueError(f"nms_version must be one of {', '.join(NMS_VERSIONS)}, got {nms_version!r}")
    if proposal_nms not in PROPOSAL_NMS:
        raise ValueError(f"proposal_nms must be one of {', '.join(PROPOSAL_NMS)}, got {proposal_nms!r}")
    if nms_version == "batched" and pre_nms_top_k is not None:
        raise ValueError("pre_nms_top_k is a setting of nms_version v2")
    if proposal_nms == "batched" and proposal_top_k is not None:
        raise ValueError("proposal_top_k is a setting of proposal_nms tiled")
    top_k = _positive("pre_nms_top_k", 5000 if pre_nms_top_k is None else pre_nms_top_k) if nms_version == "v2" else 0
    proposals = _positive("proposal_top_k", 1000 if proposal_top_k is None else proposal_top_k) if proposal_nms == "tiled" else 0
    if nms_version == "v2":
        if True in agnostic:
            raise ValueError("nms_version v2 is swept class-aware; class-agnostic v2 NMS is not reproduced")
        if max_detections_per_class != max_total_detections:
            raise ValueError(f"nms_version v2 caps each class and each image at one max_num_detections; got "
                             f"max_detections_per_class {max_detections_per_class} and max_total_detections "
                             f"{max_total_detections}")
        if kind == CacheKind.TWO_STAGE and top_k < num_proposals:
            raise ValueError(f"pre_nms_top_k {top_k} < num_proposals {num_proposals}: Model Garden's top-k would then "
                             "rank the all-zero padding proposals too, which the cache does not record")
    if proposal_nms == "tiled":
        if kind != CacheKind.TWO_STAGE:
            raise ValueError("proposal_nms is a setting of two-stage sweeps")
        if not per_level:
            raise ValueError("proposal_nms tiled runs per FPN level: it needs the cache's row_level and per_level")
    return top_k, proposals


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


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


def nms_keys(kind: CacheKind, axes: Mapping[str, tuple[float, ...]], agnostic: tuple[bool, ...] = (False,)) -> list[tuple]:
    """The NMS settings of the grid: ``(class_agnostic, iou_threshold)`` one-stage;
    ``(nms_score_threshold, nms_iou_threshold, class_agnostic, iou_threshold)`` two-stage,
    ``nms_iou_threshold`` outermost (the first stage of one ``nms_iou_threshold`` is computed
    once and reused). Every score threshold and every ``max_detections`` cap is read off one
    NMS setting."""
    if kind == CacheKind.ONE_STAGE:
        return [(flag, iou) for flag in agnostic for iou in axes["iou_threshold"]]
    return [
        (nms_score, nms_iou, flag, iou)
        for nms_iou in axes["nms_iou_threshold"]
        for nms_score in axes["nms_score_threshold"]
        for flag in agnostic
        for iou in axes["iou_threshold"]
    ]


def row_params(kind: CacheKind, key: tuple, score_threshold: float, cap: int | None = None,
               swept_agnostic: bool = False) -> dict[str, float | int | bool]:
    """A row's settings from its NMS setting ``key``, score threshold and cap: the thresholds
    by MoXing name, then ``max_detections`` (when ``cap`` is given) and ``class_agnostic``
    (when swept)."""
    if kind == CacheKind.ONE_STAGE:
        flag, iou = key
        params = {"score_threshold": float(score_threshold), "iou_threshold": float(iou)}
    else:
        nms_score, nms_iou, flag, iou = key
        params = {
            "nms_score_threshold": float(nms_score),
            "nms_iou_threshold": float(nms_iou),
            "score_threshold": float(score_threshold),
            "iou_threshold": float(iou),
        }
    if cap is not None:
        params["max_detections"] = int(cap)
    if swept_agnostic:
        params["class_agnostic"] = bool(flag)
    return params


def key_of(kind: CacheKind, params: Mapping[str, float | int | bool]) -> tuple:
    """The NMS setting (`nms_keys`) of a row's ``params``."""
    flag = bool(params.get("class_agnostic", False))
    if kind == CacheKind.ONE_STAGE:
        return (flag, params["iou_threshold"])
    return (params["nms_score_threshold"], params["nms_iou_threshold"], flag, params["iou_threshold"])
