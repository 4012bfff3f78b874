"""The sweep's grid: the threshold axes of a `ParamSpec`, the ``max_detections``,
``class_agnostic`` and ``soft_nms_sigma`` axes, the NMS settings (`NmsKey`) they make, and each
row's parameters."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, NamedTuple

import numpy as np

from detsearch.detection.cache import CacheKind
from detsearch.detection.sweep.settings import PostProcessing
from detsearch.errors import BadSetting
from detsearch.params import ONE_STAGE_THRESHOLDS, TWO_STAGE_THRESHOLDS, ParamSpec

__all__ = ["EXTRA_AXES", "Grid", "NmsKey", "threshold_names"]


EXTRA_AXES = ("max_detections", "class_agnostic", "soft_nms_sigma")
"""Post-processing axes beyond the MoXing thresholds, in a row's ``params`` after them (only
when swept): ``max_detections``, Model Garden's ``max_num_detections`` (the cap per class and
per image); ``class_agnostic``, one NMS over all classes of an image, each box taking only its
highest-scoring class; ``soft_nms_sigma``, v1's soft NMS (0: the kernel's hard NMS)."""


class NmsKey(NamedTuple):
    """One NMS setting of a grid: one NMS pass answers every score threshold and every
    ``max_detections`` cap at it. One-stage keys have no first-stage thresholds (None)."""

    iou_threshold: float
    class_agnostic: bool = False
    nms_score_threshold: float | None = None
    nms_iou_threshold: float | None = None
    soft_nms_sigma: float | None = None

    @property
    def selection(self) -> tuple[float | None, float | None, bool]:
        """What decides the candidates that reach the (second-stage) NMS: the same for every
        ``iou_threshold``."""
        return (self.nms_score_threshold, self.nms_iou_threshold, self.class_agnostic)


def threshold_names(kind: CacheKind) -> tuple[str, ...]:
    """The thresholds a sweep of ``kind`` takes, in `detsearch.params.PARAM_NAMES` order."""
    return ONE_STAGE_THRESHOLDS if kind == CacheKind.ONE_STAGE else TWO_STAGE_THRESHOLDS


@dataclass(frozen=True)
class Grid:
    """The configurations a sweep evaluates.

    Attributes:
      kind: the cache's `CacheKind`.
      axes: sorted distinct candidates per threshold of ``kind`` (`threshold_names` order).
      caps: the ``max_detections`` axis, sorted and distinct, or None when it is not swept.
      agnostic: the ``class_agnostic`` values NMS runs with, sorted and distinct: the axis, or
        the post-processing's one value.
      swept_agnostic: whether rows name ``class_agnostic`` (its axis was given).
      sigmas: the ``soft_nms_sigma`` values NMS runs with: the axis (sorted, distinct, >= 0), or
        the post-processing's one value (None unless v1 sets it).
      swept_sigma: whether rows name ``soft_nms_sigma`` (its axis was given).
    """

    kind: CacheKind
    axes: Mapping[str, tuple[float, ...]]
    caps: tuple[int, ...] | None = None
    agnostic: tuple[bool, ...] = (False,)
    swept_agnostic: bool = False
    sigmas: tuple[float | None, ...] = (None,)
    swept_sigma: bool = False

    @classmethod
    def build(cls, kind: CacheKind, spec: ParamSpec, post_processing: PostProcessing, max_detections=None,
              class_agnostic=None, soft_nms_sigma=None) -> Grid:
        """The grid of ``spec``'s thresholds and the two extra axes.

        Args:
          kind: the cache's kind.
          spec: candidate lists for exactly the thresholds of ``kind``.
          post_processing: the experiment's settings; an axis replaces its setting, which must
            then be left unset.
          max_detections: None (not swept), an integer >= 1, or a non-empty list of them.
          class_agnostic: None (not swept), a bool, or a non-empty list of bools.
          soft_nms_sigma: None (not swept), a number >= 0, or a non-empty list of them (v1 only).

        Raises:
          TypeError: ``spec`` is not a `ParamSpec`.
          BadSetting: a threshold of ``kind`` without candidates, another threshold, a bad axis,
            an axis beside the setting it replaces.
        """
        if not isinstance(spec, ParamSpec):
            raise TypeError(f"grid must be a ParamSpec, got {type(spec).__name__}")
        names = threshold_names(kind)
        unexpected = [name for name in spec.names() if name not in names]
        if unexpected:
            raise BadSetting(f"a {kind} sweep takes {', '.join(names)}; got also {', '.join(unexpected)}")
        missing = [name for name in names if name not in spec]
        if missing:
            raise BadSetting(f"a {kind} sweep needs candidates for {', '.join(missing)}")
        axes = {name: tuple(sorted(set(spec.candidates(name)))) for name in names}
        caps = None
        if max_detections is not None:
            values = _listed(max_detections)
            if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values):
                raise BadSetting(f"max_detections must be an integer >= 1 or a non-empty list of them, got {max_detections!r}")
            given = [name for name in ("max_detections_per_class", "max_total_detections")
                     if getattr(post_processing, name) is not None]
            if given:
                raise BadSetting(f"max_detections sets the cap per class and per image (Model Garden's max_num_detections); "
                                 f"do not give {' or '.join(given)} with it")
            caps = tuple(sorted({int(v) for v in values}))
        sigmas, swept_sigma = (post_processing.soft_nms_sigma,), False
        if soft_nms_sigma is not None:
            values = _listed(soft_nms_sigma)
            if not values or any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
                                 or not (np.isfinite(v) and v >= 0) for v in values):
                raise BadSetting(f"soft_nms_sigma must be a number >= 0 or a non-empty list of them, got {soft_nms_sigma!r}")
            if post_processing.nms_version != "v1":
                raise BadSetting(f"soft_nms_sigma is a setting of nms_version v1, not {post_processing.nms_version}")
            if post_processing.soft_nms_sigma is not None:
                raise BadSetting("the soft_nms_sigma axis sets soft_nms_sigma; do not set it in the post-processing too")
            sigmas, swept_sigma = tuple(sorted({float(v) for v in values})), True
        if class_agnostic is None:
            return cls(kind, axes, caps, (bool(post_processing.class_agnostic),), False, sigmas, swept_sigma)
        values = _listed(class_agnostic)
        if not values or any(not isinstance(v, (bool, np.bool_)) for v in values):
            raise BadSetting(f"class_agnostic must be a bool or a non-empty list of bools, got {class_agnostic!r}")
        if post_processing.class_agnostic:
            raise BadSetting("the class_agnostic axis sets class_agnostic; do not set it in the post-processing too")
        return cls(kind, axes, caps, tuple(sorted({bool(v) for v in values})), True, sigmas, swept_sigma)

    def nms_post_processing(self, post_processing: PostProcessing) -> PostProcessing:
        """``post_processing`` as NMS runs it for this grid: with the ``max_detections`` axis both
        caps at its largest value (every smaller cap is read off that pass), class-agnostic when
        any of the grid's ``class_agnostic`` values is (each NMS setting says which it runs)."""
        changes: dict[str, Any] = {"class_agnostic": True in self.agnostic}
        if self.caps is not None:
            changes.update(max_detections_per_class=max(self.caps), max_total_detections=max(self.caps))
        return replace(post_processing, **changes)

    @property
    def score_thresholds(self) -> tuple[float, ...]:
        return self.axes["score_threshold"]

    @property
    def row_axes(self) -> dict[str, tuple]:
        """Every axis a row names: the thresholds, then the swept extra axes."""
        axes: dict[str, tuple] = dict(self.axes)
        if self.caps is not None:
            axes["max_detections"] = self.caps
        if self.swept_agnostic:
            axes["class_agnostic"] = self.agnostic
        if self.swept_sigma:
            axes["soft_nms_sigma"] = self.sigmas
        return axes

    def nms_keys(self) -> list[NmsKey]:
        """The NMS settings of the grid, ``nms_iou_threshold`` outermost (the first stage of one
        ``nms_iou_threshold`` is computed once and reused), then ``nms_score_threshold``,
        ``class_agnostic``, ``soft_nms_sigma`` and ``iou_threshold``: keys of one
        `NmsKey.selection` are adjacent."""
        if self.kind == CacheKind.ONE_STAGE:
            return [NmsKey(iou, flag, soft_nms_sigma=sigma) for flag in self.agnostic for sigma in self.sigmas
                    for iou in self.axes["iou_threshold"]]
        return [
            NmsKey(iou, flag, nms_score, nms_iou, sigma)
            for nms_iou in self.axes["nms_iou_threshold"]
            for nms_score in self.axes["nms_score_threshold"]
            for flag in self.agnostic
            for sigma in self.sigmas
            for iou in self.axes["iou_threshold"]
        ]

    def key_of(self, params: Mapping[str, Any]) -> NmsKey:
        """The NMS setting of a row's ``params``."""
        flag = bool(params["class_agnostic"]) if self.swept_agnostic else self.agnostic[0]
        sigma = float(params["soft_nms_sigma"]) if self.swept_sigma else self.sigmas[0]
        if self.kind == CacheKind.ONE_STAGE:
            return NmsKey(params["iou_threshold"], flag, soft_nms_sigma=sigma)
        return NmsKey(params["iou_threshold"], flag, params["nms_score_threshold"], params["nms_iou_threshold"], sigma)

    def row_params(self, key: NmsKey, score_threshold: float, cap: int | None = None) -> dict[str, float | int | bool]:
        """A row's settings: the thresholds by MoXing name, then ``max_detections`` (when
        swept: ``cap``), ``class_agnostic`` and ``soft_nms_sigma`` (when swept)."""
        params: dict[str, float | int | bool] = {}
        if self.kind == CacheKind.TWO_STAGE:
            params.update(nms_score_threshold=float(key.nms_score_threshold), nms_iou_threshold=float(key.nms_iou_threshold))
        params.update(score_threshold=float(score_threshold), iou_threshold=float(key.iou_threshold))
        if cap is not None:
            params["max_detections"] = int(cap)
        if self.swept_agnostic:
            params["class_agnostic"] = bool(key.class_agnostic)
        if self.swept_sigma:
            params["soft_nms_sigma"] = float(key.soft_nms_sigma)
        return params

    def row_position(self, params: Mapping[str, Any]) -> int:
        """Position of the row with ``params`` among the rows of its NMS setting (caps outer,
        score thresholds inner)."""
        cap_index = self.caps.index(params["max_detections"]) if self.caps else 0
        return cap_index * len(self.score_thresholds) + self.score_thresholds.index(params["score_threshold"])

    def at(self, params: Mapping[str, Any]) -> Grid:
        """The one-configuration grid of a row's ``params`` (its rows name what this grid's do)."""
        axes = {name: (params[name],) for name in self.axes}
        caps = None if self.caps is None else (params["max_detections"],)
        key = self.key_of(params)
        return replace(self, axes=axes, caps=caps, agnostic=(key.class_agnostic,), sigmas=(key.soft_nms_sigma,))


def _listed(value) -> list:
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
