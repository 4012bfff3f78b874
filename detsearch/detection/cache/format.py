"""What a detection cache is: its constants, error type, kinds, arrays and meta fields.

`CacheSettings` are the fields a cache's producer chooses (kind, categories, score floor, caps,
first-stage settings, provenance); `CacheMeta` is those settings plus the images and the
format version. Both check and normalise their values on creation, once: every other module
of the package trusts a `CacheMeta`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from detsearch.checks import positive_int
from detsearch.detection.cache.values import (
    CacheError,
    as_int,
    as_items,
    image_size,
    json_copy,
    optional_positive_int,
    probability,
    unique_ints,
)

__all__ = [
    "ARRAY_NAMES",
    "ARRAY_SPECS",
    "BOX_FORMAT",
    "CACHE_VERSION",
    "READABLE_VERSIONS",
    "DEFAULT_NUM_PROPOSALS",
    "FORMAT_NAME",
    "META_FILE",
    "SHARDS_DIR",
    "SETTING_NAMES",
    "SHARD_NAME_DIGITS",
    "ArraySpec",
    "CacheError",
    "CacheKind",
    "CacheMeta",
    "CacheSettings",
    "Presence",
    "ShardSpec",
    "plan_shards",
    "shard_dir",
    "spec_of",
]

CACHE_VERSION = 2
"""The format version this package writes. Version 2 added float64 ``entry_score`` and the
optional one-stage ``row_xywh`` (the boxes as a COCO results file gave them)."""

READABLE_VERSIONS = (1, 2)
"""The format versions this package reads; a version-1 cache is a version-2 cache without
the version-2 options."""

FORMAT_NAME = "detsearch.detection_cache"
"""The ``format`` field of ``meta.json``: tells a cache apart from other JSON files."""

BOX_FORMAT = "yxyx"
"""Box order of every box array: (ymin, xmin, ymax, xmax), absolute pixels."""

META_FILE = "meta.json"
SHARDS_DIR = "shards"
SHARD_NAME_DIGITS = 5
DEFAULT_NUM_PROPOSALS = 1000
"""TF Model Garden's ``ROIGenerator.test_num_proposals`` default."""


class CacheKind(enum.StrEnum):
    """What a cache's rows are; compares equal to its string value."""

    ONE_STAGE = "one_stage"
    TWO_STAGE = "two_stage"


class Presence(enum.Enum):
    """Whether an array is in a cache of a given kind."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    ABSENT = "absent"


@dataclass(frozen=True)
class ArraySpec:
    """One array of the format: its name (and ``.npy`` file), dtype, item shape and what axis 0
    counts: ``"images"`` (num_images + 1), ``"rows"`` or ``"entries"``."""

    name: str
    dtypes: tuple[np.dtype, ...]  # allowed, the first is the default
    item_shape: tuple[int, ...]
    axis: str
    one_stage: Presence
    two_stage: Presence

    @property
    def dtype(self) -> np.dtype:
        """The default dtype (what other dtypes are converted to)."""
        return self.dtypes[0]

    def presence(self, kind: CacheKind) -> Presence:
        return self.one_stage if kind == CacheKind.ONE_STAGE else self.two_stage

    @property
    def file_name(self) -> str:
        return self.name + ".npy"

    def shape_text(self) -> str:
        dims = {"images": "num_images + 1", "rows": "R", "entries": "E"}[self.axis]
        return "[" + ", ".join([dims, *map(str, self.item_shape)]) + "]"


_R, _O, _A = Presence.REQUIRED, Presence.OPTIONAL, Presence.ABSENT
ARRAY_SPECS = (
    ArraySpec("row_offsets", (np.dtype("<i8"),), (), "images", _R, _R),
    ArraySpec("row_boxes", (np.dtype("<f4"),), (4,), "rows", _R, _R),
    ArraySpec("row_xywh", (np.dtype("<f8"),), (4,), "rows", _O, _A),
    ArraySpec("row_objectness", (np.dtype("<f4"),), (), "rows", _A, _R),
    ArraySpec("row_level", (np.dtype("<i4"),), (), "rows", _A, _O),
    ArraySpec("entry_offsets", (np.dtype("<i8"),), (), "images", _R, _R),
    ArraySpec("entry_row", (np.dtype("<i4"),), (), "entries", _R, _R),
    ArraySpec("entry_class", (np.dtype("<i4"),), (), "entries", _R, _R),
    ArraySpec("entry_score", (np.dtype("<f4"), np.dtype("<f8")), (), "entries", _R, _R),
    ArraySpec("entry_boxes", (np.dtype("<f4"), np.dtype("<f8")), (4,), "entries", _A, _R),
)
"""Every array of the format, in format order."""

_SPECS = {spec.name: spec for spec in ARRAY_SPECS}
ARRAY_NAMES = tuple(_SPECS)


def spec_of(name: str) -> ArraySpec:
    """The `ArraySpec` of the array ``name`` (one of `ARRAY_NAMES`)."""
    return _SPECS[name]


@dataclass(frozen=True)
class CacheSettings:
    """What the producer of a cache chooses: every `CacheMeta` field but the images and version.

    `CacheBuilder`, `CacheWriter` and the recorders take one of these (or its fields as
    keywords). Values are checked and normalised on creation.

    Attributes:
      kind: ``"one_stage"`` or ``"two_stage"`` (stored as a `CacheKind`, a ``str``).
      category_ids: COCO category ids; class index ``c`` of the arrays is ``category_ids[c]``.
      score_floor: entries were recorded only when ``score >= score_floor``; in the arrays,
        ``entry_score >= np.float32(score_floor)`` (the comparison is made in float32, the
        dtype of the scores). In [0, 1].
      top_k: per-image cap on rows used when recording (two-stage: proposals recorded per
        image, the top-k by objectness), or None when no cap was applied. Checked on validation.
      num_proposals: two-stage only: proposals kept after first-stage NMS by the model at
        inference (TF Model Garden default 1000); None for one-stage caches.
      category_names: names aligned with ``category_ids``, or None.
      source: free-form JSON-serialisable provenance (experiment, checkpoint, config digest,
        ...). Stored as a JSON-normalised copy (tuples become lists); not part of the hash.
      first_stage_iou_thresholds, first_stage_min_score: two-stage only. None (the default):
        entries were recorded for every row. Otherwise the second stage was run only on the rows
        that first-stage NMS keeps (per level, then merged, at most ``num_proposals``) for some
        ``nms_iou_threshold`` in this sorted tuple and ``nms_score_threshold >=
        first_stage_min_score``; rows outside that union have no entries, and a sweep accepts
        only first-stage settings inside it. Both are set, or neither.
    """

    kind: CacheKind
    category_ids: tuple[int, ...]
    score_floor: float
    top_k: int | None = None
    num_proposals: int | None = None
    category_names: tuple[str, ...] | None = None
    source: Mapping[str, Any] = field(default_factory=dict, hash=False)
    first_stage_iou_thresholds: tuple[float, ...] | None = None
    first_stage_min_score: float | None = None

    def __post_init__(self) -> None:
        for name, value in _checked_settings(self).items():
            object.__setattr__(self, name, value)

    @classmethod
    def resolve(cls, settings: CacheSettings | None, keywords: Mapping[str, Any], who: str) -> CacheSettings:
        """``settings``, or settings made from ``keywords`` (the fields by name); not both.

        Raises:
          TypeError: both or an unknown keyword.
        """
        if settings is None:
            try:
                return cls(**keywords)
            except TypeError as error:
                raise TypeError(f"{who}: {error}") from None
        if not isinstance(settings, CacheSettings):
            raise TypeError(f"{who}: settings must be a CacheSettings, got {type(settings).__name__}")
        if keywords:
            raise TypeError(f"{who}: pass a CacheSettings or its fields as keywords, not both ({sorted(keywords)})")
        return settings

    def meta(self, image_ids: Any, image_sizes: Any) -> CacheMeta:
        """The `CacheMeta` of a cache with these settings over these images."""
        return CacheMeta(CACHE_VERSION, image_ids=image_ids, image_sizes=image_sizes,
                         **{name: getattr(self, name) for name in SETTING_NAMES})


SETTING_NAMES = tuple(f.name for f in fields(CacheSettings))
"""The `CacheSettings` fields, in order; shards of one cache agree on all of them."""


def _checked_settings(values: Any) -> dict[str, Any]:
    """The normalised settings fields of ``values`` (a `CacheSettings` or `CacheMeta`)."""
    out: dict[str, Any] = {}
    try:
        kind = CacheKind(values.kind)
    except (ValueError, TypeError):
        raise CacheError(f"meta.kind must be 'one_stage' or 'two_stage', got {values.kind!r}") from None
    out["kind"] = kind
    category_ids = unique_ints(values.category_ids, "meta.category_ids")
    out["category_ids"] = category_ids
    out["score_floor"] = probability(values.score_floor, "meta.score_floor")
    out["top_k"] = optional_positive_int(values.top_k, "meta.top_k")
    num_proposals = optional_positive_int(values.num_proposals, "meta.num_proposals")
    if kind == CacheKind.ONE_STAGE and num_proposals is not None:
        raise CacheError(f"meta.num_proposals must be None for a one_stage cache, got {num_proposals}")
    out["num_proposals"] = num_proposals
    ious, min_score = values.first_stage_iou_thresholds, values.first_stage_min_score
    if (ious is None) != (min_score is None):
        raise CacheError("meta.first_stage_iou_thresholds and meta.first_stage_min_score are set together or not at all")
    if ious is not None:
        if kind != CacheKind.TWO_STAGE:
            raise CacheError("meta.first_stage_iou_thresholds applies to a two_stage cache only")
        items = as_items(ious, "meta.first_stage_iou_thresholds")
        if not items:
            raise CacheError("meta.first_stage_iou_thresholds must not be empty")
        checked = tuple(probability(v, f"meta.first_stage_iou_thresholds[{i}]") for i, v in enumerate(items))
        out["first_stage_iou_thresholds"] = tuple(sorted(set(checked)))
        out["first_stage_min_score"] = probability(min_score, "meta.first_stage_min_score")
    if values.category_names is not None:
        names = as_items(values.category_names, "meta.category_names")
        if len(names) != len(category_ids):
            raise CacheError(
                f"meta.category_names has {len(names)} names for {len(category_ids)} meta.category_ids"
            )
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise CacheError(f"meta.category_names[{i}] must be a str, got {name!r}")
        out["category_names"] = names
    out["source"] = json_copy(values.source, "meta.source")
    return out


@dataclass(frozen=True)
class CacheMeta:
    """Everything about a cache except its arrays. Values are checked and normalised on creation.

    Attributes:
      version: format version, one of `READABLE_VERSIONS` (new caches: `CACHE_VERSION`).
      image_ids: COCO image ids in cache order; unique.
      image_sizes: ``(height, width)`` in pixels per image, both >= 1.
      box_format: always ``"yxyx"`` (ymin, xmin, ymax, xmax), absolute pixels.
      kind, category_ids, score_floor, top_k, num_proposals, first_stage_iou_thresholds,
      first_stage_min_score, category_names, source: the `CacheSettings` fields (see there).
    """

    version: int
    kind: str
    image_ids: tuple[int, ...]
    image_sizes: tuple[tuple[int, int], ...]
    category_ids: tuple[int, ...]
    score_floor: float
    top_k: int | None = None
    num_proposals: int | None = None
    first_stage_iou_thresholds: tuple[float, ...] | None = None
    first_stage_min_score: float | None = None
    box_format: str = BOX_FORMAT
    category_names: tuple[str, ...] | None = None
    source: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        version = as_int(self.version, "meta.version")
        if version not in READABLE_VERSIONS:
            raise CacheError(f"meta.version {version} is not supported (this detsearch reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
        put("version", version)
        settings = _checked_settings(self)
        put("kind", settings["kind"])
        image_ids = unique_ints(self.image_ids, "meta.image_ids")
        put("image_ids", image_ids)
        sizes = as_items(self.image_sizes, "meta.image_sizes")
        if len(sizes) != len(image_ids):
            raise CacheError(
                f"meta.image_sizes has {len(sizes)} sizes for {len(image_ids)} meta.image_ids"
            )
        put("image_sizes", tuple(image_size(size, f"meta.image_sizes[{i}]") for i, size in enumerate(sizes)))
        for name, value in settings.items():
            put(name, value)
        if self.box_format != BOX_FORMAT:
            raise CacheError(f"meta.box_format must be {BOX_FORMAT!r}, got {self.box_format!r}")

    @property
    def settings(self) -> CacheSettings:
        """The producer's part of this meta (all but the images and the version)."""
        return CacheSettings(**{name: getattr(self, name) for name in SETTING_NAMES})

    def with_images(self, image_ids: Any, image_sizes: Any) -> CacheMeta:
        """Returns a copy of this meta with other images (and the same everything else)."""
        return replace(self, image_ids=image_ids, image_sizes=image_sizes)


@dataclass(frozen=True)
class ShardSpec:
    """One shard: the contiguous images ``[image_start, image_stop)`` of a cache of ``num_images``.

    Shard ``index`` is written to ``path/shards/{index:05d}/``; `merge_shards` needs shards
    ``0 .. K-1`` whose ranges, in index order, tile ``[0, num_images)``. `plan_shards` makes such
    a list.
    """

    index: int
    image_start: int
    image_stop: int
    num_images: int

    def __post_init__(self) -> None:
        for name in ("index", "image_start", "image_stop", "num_images"):
            object.__setattr__(self, name, as_int(getattr(self, name), f"ShardSpec.{name}"))
        if self.index < 0:
            raise CacheError(f"ShardSpec.index must be >= 0, got {self.index}")
        if not 0 <= self.image_start < self.image_stop <= self.num_images:
            raise CacheError(
                f"ShardSpec needs 0 <= image_start < image_stop <= num_images, got "
                f"[{self.image_start}, {self.image_stop}) of {self.num_images}"
            )

    @property
    def name(self) -> str:
        return f"{self.index:0{SHARD_NAME_DIGITS}d}"

    @property
    def size(self) -> int:
        """Images in this shard."""
        return self.image_stop - self.image_start

    def to_json(self) -> dict[str, int]:
        return {
            "index": self.index,
            "image_start": self.image_start,
            "image_stop": self.image_stop,
            "num_images": self.num_images,
        }


def plan_shards(num_images: int, images_per_shard: int) -> tuple[ShardSpec, ...]:
    """Splits ``num_images`` images into consecutive shards of ``images_per_shard`` (last shorter)."""
    num_images = positive_int(num_images, "num_images")
    images_per_shard = positive_int(images_per_shard, "images_per_shard")
    return tuple(
        ShardSpec(index, start, min(start + images_per_shard, num_images), num_images)
        for index, start in enumerate(range(0, num_images, images_per_shard))
    )


def shard_dir(root: Path, index: int) -> Path:
    """Directory of shard ``index`` of the sharded cache at ``root``."""
    return root / SHARDS_DIR / f"{index:0{SHARD_NAME_DIGITS}d}"
