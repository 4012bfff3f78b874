"""What one experiment's post-processing runs: `PostProcessing`, one frozen settings object,
checked once against a cache.

Every NMS setting the sweep reproduces, by Model Garden's meaning (``task.model.`` omitted):

==============================  =========================================================
``nms_version``                 ``detection_generator.nms_version`` (`NmsVersion`)
``max_detections_per_class``,   ``detection_generator.max_num_detections`` (Model Garden
``max_total_detections``        caps each class and each image at it)
``class_agnostic``              one NMS over all classes of an image, each box keeping only
                                its best class (v2: ``use_class_agnostic_nms``; batched too)
``pre_nms_top_k``               ``detection_generator.pre_nms_top_k`` (v1, v2)
``soft_nms_sigma``              ``detection_generator.soft_nms_sigma`` (v1: None, 0 or the
                                Gaussian's sigma; `detsearch.detection.nms_v1`)
``proposal_nms``                ``roi_generator.use_batched_nms``: true ``batched``, false
                                ``tiled`` (`ProposalNms`; two-stage)
``num_proposals``               ``roi_generator.test_num_proposals`` (two-stage)
``per_level``                   first-stage NMS per FPN level (Model Garden: always)
``proposal_top_k``              ``roi_generator.test_pre_nms_top_k`` (tiled)
``score_dtype``                 ``runtime.mixed_precision_dtype``: the dtype of the model's
                                scores (float32; bfloat16 or float16 under mixed precision)
``max_eval_detections``         ``task.max_num_eval_detections``: COCO's ``maxDets[2]``,
                                detections evaluated per image and category (RetinaNet;
                                Model Garden's Faster and Mask R-CNN tasks evaluate 100)
==============================  =========================================================

The score thresholds are not here: they are the grid (`detsearch.params.ParamSpec`), and so
are the ``max_detections`` and ``class_agnostic`` axes a sweep may add (`detsearch.detection.
sweep.sweep`). How the grid relates to the cache's score floor is `check_score_floor`.

`PostProcessing.checked` is the one place the settings are checked and the defaults that depend
on a cache are filled in; the sweep, its reference and the engine run what it returns. A
`PostProcessing` is built once: from an experiment's config
(`detsearch.models.experiment.Experiment.post_processing`), from the command line
(``detsearch sweep``), or by hand.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from detsearch.checks import positive_int
from detsearch.detection.cache import DEFAULT_NUM_PROPOSALS, CacheKind, DetectionCache
from detsearch.detection.nms import DEFAULT_MAX_DETECTIONS_PER_CLASS, DEFAULT_MAX_TOTAL_DETECTIONS
from detsearch.detection.sweep.cuts import REDUCED_DTYPES, float32_cut, next_value, reduced_threshold
from detsearch.errors import BadSetting
from detsearch.params import ParamSpec

__all__ = [
    "DEFAULT_MAX_EVAL_DETECTIONS",
    "DEFAULT_PRE_NMS_TOP_K",
    "DEFAULT_PROPOSAL_TOP_K",
    "NmsBackend",
    "NmsVersion",
    "PostProcessing",
    "ProposalNms",
    "cache_kind",
    "check_score_floor",
]

DEFAULT_PRE_NMS_TOP_K = 5000
"""Model Garden's ``detection_generator.pre_nms_top_k``: v2's candidates per image and class."""
DEFAULT_MAX_EVAL_DETECTIONS = 100
"""COCO's ``maxDets[2]`` (Model Garden's ``task.max_num_eval_detections``)."""
DEFAULT_PROPOSAL_TOP_K = 1000
"""Model Garden's ``roi_generator.test_pre_nms_top_k``: the tiled first stage's proposals per
level before NMS."""


class NmsVersion(enum.StrEnum):
    """Model Garden's ``detection_generator.nms_version`` values the sweep reproduces."""

    BATCHED = "batched"
    """Greedy per-class NMS, suppression at IoU > the threshold (`detsearch.detection.nms`)."""
    V2 = "v2"
    """Model Garden's default: per class the top ``pre_nms_top_k``, then its tiled NMS, which
    suppresses at IoU >= the threshold (`detsearch.detection.nms_v2`)."""
    V1 = "v1"
    """Per class the top ``pre_nms_top_k``, then TensorFlow's NMS: with ``soft_nms_sigma`` None
    ``non_max_suppression_padded`` (IoU >= the threshold), with a sigma the
    ``NonMaxSuppressionV5`` kernel (0: hard, IoU > the threshold; above 0: soft NMS, whose
    decayed scores are the output) (`detsearch.detection.nms_v1`)."""


class ProposalNms(enum.StrEnum):
    """The two-stage first stage's NMS (Model Garden's ``roi_generator.use_batched_nms``)."""

    BATCHED = "batched"
    """``use_batched_nms: true``: greedy class-agnostic NMS of the proposals."""
    TILED = "tiled"
    """``use_batched_nms: false``, Model Garden's default: per FPN level the top
    ``proposal_top_k`` by objectness, then v2's tiled NMS; the levels merged by objectness."""


class NmsBackend(enum.StrEnum):
    """Which code runs the sweep's batched NMS; the figures do not depend on it."""

    FAST = "fast"
    """The compiled greedy walk (`nms.GreedyWalk`), the batched first stage included."""
    REFERENCE = "reference"
    """The NumPy reference loops (slow; no TensorFlow)."""


def member(kind: type[enum.StrEnum], value: Any, name: str):
    """``value`` as a member of ``kind``; `BadSetting` naming setting ``name`` otherwise."""
    try:
        return kind(value)
    except ValueError:
        raise BadSetting(f"{name} must be one of {', '.join(kind)}, got {value!r}") from None


def cache_kind(cache: Any) -> CacheKind:
    """The kind of ``cache``; TypeError unless it is a `DetectionCache` (which validated its
    arrays when it was built)."""
    if not isinstance(cache, DetectionCache):
        raise TypeError(f"cache must be a detsearch.detection.cache.DetectionCache, got {type(cache).__name__}")
    return CacheKind(cache.meta.kind)


def check_score_floor(grid: ParamSpec, score_floor: float) -> None:
    """How the cache's score floor bounds the grid.

    A cache holds the entries with ``float32(score) >= float32(score_floor)``; a score threshold
    keeps ``float32(score) > float32(score_threshold)``. So every threshold at or above the
    floor keeps only recorded entries, and NMS, v2's top-k and COCO matching see exactly what
    they would on the model's whole output; below it, entries the threshold keeps were never
    recorded.

    Args:
      grid: the thresholds to sweep (`ParamSpec`); only its ``score_threshold`` candidates count.
      score_floor: the cache's ``meta.score_floor``, or the floor a cache is about to be
        recorded with (check before recording).

    Raises:
      BadSetting: the lowest ``score_threshold`` is below ``score_floor`` (compared in float32).
    """
    if not isinstance(grid, ParamSpec):
        raise TypeError(f"grid must be a ParamSpec, got {type(grid).__name__}")
    if "score_threshold" not in grid:
        return
    lowest = min(grid.candidates("score_threshold"))
    if np.float32(lowest) < np.float32(score_floor):
        raise BadSetting(f"score_threshold {lowest:g} is below the cache's score floor {score_floor:g}: "
                         "entries under the floor were not recorded")


@dataclass(frozen=True)
class PostProcessing:
    """The post-processing of one experiment, by Model Garden's meaning (the module's table).

    None means "the default" until `checked` fills it in (or, for a setting that does not apply,
    keeps it None); string values of the enum settings are taken as their members.

    Attributes:
      nms_version: `NmsVersion` (default batched).
      max_detections_per_class, max_total_detections: NMS caps per (image, class) and per image
        (default 100 and 100; v2 takes one cap for both).
      class_agnostic: one NMS over all classes of an image, each box keeping only its
        highest-scoring class (ties: the lower class), capped at ``max_total_detections``
        (default False; with v2 Model Garden's ``use_class_agnostic_nms``, TensorFlow's padded
        NMS over each image's top ``pre_nms_top_k`` anchors, `detsearch.detection.nms_v2.padded_nms`).
      pre_nms_top_k: v1's and v2's candidates per image and class (default 5000).
      soft_nms_sigma: v1 only: None (``non_max_suppression_padded``), 0 (the kernel's hard
        NMS) or the sigma of its soft NMS (> 0), as Model Garden's setting.
      proposal_nms: two-stage: the first stage's `ProposalNms` (default batched).
      num_proposals: two-stage: proposals kept after the first stage (default the cache's
        ``meta.num_proposals``, else `DEFAULT_NUM_PROPOSALS`).
      per_level: two-stage: first-stage NMS per FPN level (default: when the cache records
        ``row_level``).
      proposal_top_k: with ``proposal_nms`` tiled: proposals per level before NMS (default
        1000); the cache must hold at least these per level.
      max_eval_detections: COCO evaluation's ``maxDets[2]`` (default 100;
        `detsearch.detection.cocoeval.CocoMatcher`).
      score_dtype: the dtype the model's scores come in (``"float32"``; under Model Garden's
        mixed precision ``"bfloat16"`` or ``"float16"``, whose values the cache holds exactly
        in float32). v2's class-aware path compares them with the score threshold in that dtype
        (`threshold_cut`), and so does the tiled first stage with the objectness
        (`proposal_cut`); batched NMS, in either stage, is refused with it.
    """

    nms_version: NmsVersion = NmsVersion.BATCHED
    max_detections_per_class: int | None = None
    max_total_detections: int | None = None
    class_agnostic: bool = False
    pre_nms_top_k: int | None = None
    soft_nms_sigma: float | None = None
    proposal_nms: ProposalNms = ProposalNms.BATCHED
    num_proposals: int | None = None
    per_level: bool | None = None
    proposal_top_k: int | None = None
    max_eval_detections: int | None = None
    score_dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "nms_version", member(NmsVersion, self.nms_version, "nms_version"))
        object.__setattr__(self, "proposal_nms", member(ProposalNms, self.proposal_nms, "proposal_nms"))

    def checked(self, cache: DetectionCache, grid: ParamSpec | None = None) -> PostProcessing:
        """These settings as a sweep runs them on ``cache``, checked, with the defaults filled in.

        Settings that do not apply stay None: ``pre_nms_top_k`` unless v2, ``proposal_top_k``
        unless tiled, ``num_proposals`` one-stage (whose ``per_level`` is False).

        Args:
          cache: the `DetectionCache` to sweep.
          grid: the thresholds to sweep (`ParamSpec`), or None. With it, also what the cache can
            answer exactly: the lowest ``score_threshold`` against the score floor
            (`check_score_floor`) and, two-stage, the first-stage thresholds the cache was
            recorded for.

        Raises:
          TypeError: ``cache`` is not a `DetectionCache`.
          BadSetting: a setting that is not valid, does not apply to the cache's kind or to the
            other settings, or that the cache cannot answer exactly.
        """
        kind = cache_kind(cache)
        two_stage = kind == CacheKind.TWO_STAGE
        v2 = self.nms_version == NmsVersion.V2
        v1 = self.nms_version == NmsVersion.V1
        tiled = self.proposal_nms == ProposalNms.TILED
        per_class_cap = positive_int(_or(self.max_detections_per_class, DEFAULT_MAX_DETECTIONS_PER_CLASS),
                                     "max_detections_per_class")
        total_cap = positive_int(_or(self.max_total_detections, DEFAULT_MAX_TOTAL_DETECTIONS), "max_total_detections")
        if not isinstance(self.class_agnostic, (bool, np.bool_)):
            raise BadSetting(f"class_agnostic must be a bool, got {self.class_agnostic!r}")
        if not (v1 or v2) and self.pre_nms_top_k is not None:
            raise BadSetting("pre_nms_top_k is a setting of nms_version v1 and v2")
        sigma = self.soft_nms_sigma
        if sigma is not None:
            if not v1:
                raise BadSetting("soft_nms_sigma is a setting of nms_version v1")
            if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating, np.integer)) or not (
                    math.isfinite(sigma) and sigma >= 0):
                raise BadSetting(f"soft_nms_sigma must be None or a number >= 0, got {sigma!r}")
            sigma = float(sigma)
        if not tiled and self.proposal_top_k is not None:
            raise BadSetting("proposal_top_k is a setting of proposal_nms tiled")
        top_k = positive_int(_or(self.pre_nms_top_k, DEFAULT_PRE_NMS_TOP_K), "pre_nms_top_k") if v1 or v2 else None
        proposal_top_k = positive_int(_or(self.proposal_top_k, DEFAULT_PROPOSAL_TOP_K), "proposal_top_k") if tiled else None
        max_eval = positive_int(_or(self.max_eval_detections, DEFAULT_MAX_EVAL_DETECTIONS), "max_eval_detections")
        if self.score_dtype not in ("float32", *REDUCED_DTYPES):
            raise BadSetting(f"score_dtype must be float32, bfloat16 or float16, got {self.score_dtype!r}")
        if self.score_dtype != "float32" and self.nms_version == NmsVersion.BATCHED:
            raise BadSetting(f"score_dtype {self.score_dtype} (mixed precision) with nms_version batched: Model Garden's "
                             "combined_non_max_suppression takes float32 scores only and fails on these; use v2 or v1")
        if self.score_dtype != "float32" and two_stage and not tiled:
            raise BadSetting(f"score_dtype {self.score_dtype} (mixed precision) with proposal_nms batched: Model "
                             "Garden's first stage then runs combined_non_max_suppression, which takes float32 scores "
                             "only and fails on these; use proposal_nms tiled")
        # v2, class-aware or class-agnostic (one cap per image), has one max_num_detections.
        if (v1 or v2) and per_class_cap != total_cap:
            raise BadSetting(f"nms_version {self.nms_version} caps each class and each image at one max_num_detections; "
                             f"got max_detections_per_class {per_class_cap} and max_total_detections {total_cap}")
        if v1 and self.class_agnostic:
            raise BadSetting("nms_version v1 is per class: Model Garden runs class-agnostic NMS with v2 only")
        if self.per_level not in (None, True, False):
            raise BadSetting(f"per_level must be a bool, got {self.per_level!r}")
        if not two_stage:
            given = [name for name, value in (("proposal_nms", tiled), ("num_proposals", self.num_proposals is not None),
                                              ("per_level", self.per_level)) if value]
            if given:
                raise BadSetting(f"{given[0]} is a setting of two-stage sweeps")
            num_proposals, per_level = None, False
        else:
            num_proposals = positive_int(_or(self.num_proposals, cache.meta.num_proposals or DEFAULT_NUM_PROPOSALS),
                                         "num_proposals")
            per_level = cache.row_level is not None if self.per_level is None else bool(self.per_level)
            if per_level and cache.row_level is None:
                raise BadSetting("per_level NMS needs row_level in the cache")
            if v1:
                raise BadSetting("nms_version v1 is swept one-stage: on a two-stage model Model Garden's v1 also "
                                 "reports the all-zero padding proposals as detections, which the cache does not record")
            if v2 and top_k < num_proposals:
                raise BadSetting(f"pre_nms_top_k {top_k} < num_proposals {num_proposals}: Model Garden's top-k would "
                                 "then rank the all-zero padding proposals too, which the cache does not record")
            if tiled and not per_level:
                raise BadSetting("proposal_nms tiled runs per FPN level: it needs the cache's row_level and per_level")
        checked = replace(self, max_detections_per_class=per_class_cap, max_total_detections=total_cap,
                          class_agnostic=bool(self.class_agnostic), pre_nms_top_k=top_k, soft_nms_sigma=sigma,
                          num_proposals=num_proposals,
                          per_level=per_level, proposal_top_k=proposal_top_k, max_eval_detections=max_eval)
        if grid is not None:
            _check_grid(cache, grid, checked)
        return checked

    def threshold_cut(self, threshold: float) -> float:
        """The float64 ``c`` with ``score > c`` exactly when this post-processing's NMS keeps a
        score at score threshold ``threshold``: `float32_cut` (TensorFlow's NMS compares in
        float32), except where v2's class-aware path filters scores in a reduced ``score_dtype``
        (``box_ops.filter_boxes_by_scores`` before its float32 NMS): there the threshold as
        that dtype (`reduced_threshold`), the scores being that dtype's values."""
        if self.score_dtype != "float32" and self.nms_version == NmsVersion.V2 and not self.class_agnostic:
            return reduced_threshold(threshold, self.score_dtype)
        return float32_cut(threshold)

    def proposal_cut(self, threshold: float) -> float:
        """`threshold_cut` of the first stage's ``nms_score_threshold``: the tiled first stage
        (``_multilevel_propose_rois``) filters the objectness as the RPN gives it, in
        ``score_dtype`` (``box_ops.filter_boxes_by_scores``, before its float32 NMS), so under
        mixed precision the threshold as that dtype (`reduced_threshold`), else `float32_cut`."""
        if self.score_dtype != "float32":
            return reduced_threshold(threshold, self.score_dtype)
        return float32_cut(threshold)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON types (the enums as their strings)."""
        return {field.name: _plain(getattr(self, field.name)) for field in fields(self)}


def _or(value, default):
    return default if value is None else value


def _plain(value):
    return str(value) if isinstance(value, enum.Enum) else value


def _check_grid(cache: DetectionCache, grid: ParamSpec, post: PostProcessing) -> None:
    """What a cache can answer exactly for the thresholds of ``grid`` (those it names)."""
    check_score_floor(grid, float(cache.meta.score_floor))
    if "score_threshold" in grid:
        lowest = min(grid.candidates("score_threshold"))
        cut = post.threshold_cut(lowest)
        # The reduced dtype's scores above the cut start at its next value: recorded when at least the floor.
        if post.score_dtype != "float32" and next_value(cut, post.score_dtype) < float(np.float32(cache.meta.score_floor)):
            raise BadSetting(f"score_threshold {lowest:g} is {cut!r} in {post.score_dtype}, below the cache's score "
                             f"floor {cache.meta.score_floor:g}: entries under the floor were not recorded")
    if cache.meta.kind != CacheKind.TWO_STAGE or "nms_iou_threshold" not in grid:
        return
    nms_ious = grid.candidates("nms_iou_threshold")
    if 0.0 in nms_ious:
        raise BadSetting("nms_iou_threshold 0 is not swept: TF Model Garden skips first-stage NMS altogether at 0 "
                         "(every proposal up to num_proposals, whatever nms_score_threshold); use a value > 0")
    meta = cache.meta
    recorded_ious = meta.first_stage_iou_thresholds
    if recorded_ious is None:
        return
    min_score = meta.first_stage_min_score
    recorded = (f"the cache's second stage was recorded for the proposals that nms_iou_threshold in "
                f"{list(recorded_ious)} with nms_score_threshold >= {min_score:g} keep")
    outside = [value for value in nms_ious if value not in recorded_ious]
    if outside:
        raise BadSetting(f"nms_iou_threshold {outside[0]:g}: {recorded}; record it again with that value")
    if "nms_score_threshold" in grid and min(grid.candidates("nms_score_threshold")) < min_score:
        raise BadSetting(f"nms_score_threshold {min(grid.candidates('nms_score_threshold')):g}: {recorded}; record it "
                         "again with a lower minimum")
    if not post.per_level or post.num_proposals > (meta.num_proposals or post.num_proposals):
        raise BadSetting(f"num_proposals {post.num_proposals} (per_level {post.per_level}): {recorded}, per FPN level "
                         f"and at most {meta.num_proposals} each")
