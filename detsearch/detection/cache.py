"""Versioned on-disk cache of raw (pre-NMS) detector predictions.

The detection sweep re-runs NMS and COCO evaluation on these caches instead of running the
network again. One cache holds, for every image of an evaluation set:

- **rows**: one-stage (SSD, RetinaNet): the decoded candidate boxes before NMS; two-stage
  (Faster R-CNN): the RPN proposals before first-stage NMS, with their objectness.
- **entries**: one (row, class) pair with its score (>= ``score_floor``); two-stage entries also
  carry the second-stage box of that class for that proposal.

In memory a cache is a `DetectionCache` of flat arrays (often ``np.memmap``); on disk it is a
directory of ``.npy`` files plus ``meta.json``. Every write is atomic (the directory rename is
the commit), every read checks the version, each array's dtype, shape and SHA-256, and the
cross-array invariants. ``docs/cache_format.md`` describes the format in full.

This module imports numpy and the standard library only.
"""

from __future__ import annotations

import ast
import enum
import errno
import hashlib
import io
import json
import logging
import math
import numbers
import operator
import os
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BOX_FORMAT",
    "CACHE_VERSION",
    "CacheBuilder",
    "CacheError",
    "CacheKind",
    "CacheMeta",
    "CacheWriter",
    "DetectionCache",
    "ShardSpec",
    "completed_shards",
    "import_coco_detections",
    "import_two_stage_json",
    "import_two_stage_npz",
    "merge_shards",
    "plan_shards",
    "read_cache",
    "write_cache",
]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
"""The format version this module reads and writes; any other version is refused."""

FORMAT_NAME = "detsearch.detection_cache"
"""The ``format`` field of ``meta.json``: tells a cache apart from other JSON files."""

BOX_FORMAT = "yxyx"
"""Box order of every box array: (ymin, xmin, ymax, xmax), absolute pixels."""

META_FILE = "meta.json"
SHARDS_DIR = "shards"
SHARD_NAME_DIGITS = 5
DEFAULT_NUM_PROPOSALS = 1000
"""TF Model Garden's ``ROIGenerator.test_num_proposals`` default."""

_CHUNK_ELEMENTS = 1 << 22  # rows or entries per validation step: bounds temporary memory
_IO_CHUNK_BYTES = 8 << 20
_MAX_NPY_HEADER_BYTES = 4096  # ours are 128 bytes; a larger one is corrupt
_MAX_READ_ATTEMPTS = 5
_INT32_MAX = int(np.iinfo(np.int32).max)
_SHARD_NAME = re.compile(r"\d{%d,}" % SHARD_NAME_DIGITS)
_TEMPORARY_NAME = re.compile(r".+\.(tmp|old)-\d+")


class CacheError(ValueError):
    """A cache (or an importer's input) is missing, corrupt, inconsistent or unsupported.

    The message names the file or array and the first bad index or record.
    """


class CacheKind(enum.StrEnum):
    """What a cache's rows are; compares equal to its string value."""

    ONE_STAGE = "one_stage"
    TWO_STAGE = "two_stage"


# --------------------------------------------------------------------------------------------
# Array specifications


class _Presence(enum.Enum):
    REQUIRED = "required"
    OPTIONAL = "optional"
    ABSENT = "absent"


@dataclass(frozen=True)
class _ArraySpec:
    name: str
    dtype: np.dtype
    item_shape: tuple[int, ...]
    axis: str  # what axis 0 counts: "images" (num_images + 1), "rows" or "entries"
    one_stage: _Presence
    two_stage: _Presence

    def presence(self, kind: str) -> _Presence:
        return self.one_stage if kind == CacheKind.ONE_STAGE else self.two_stage

    @property
    def file_name(self) -> str:
        return self.name + ".npy"

    def shape_text(self) -> str:
        dims = {"images": "num_images + 1", "rows": "R", "entries": "E"}[self.axis]
        return "[" + ", ".join([dims, *map(str, self.item_shape)]) + "]"


_R, _O, _A = _Presence.REQUIRED, _Presence.OPTIONAL, _Presence.ABSENT
_ARRAY_SPECS = (
    _ArraySpec("row_offsets", np.dtype("<i8"), (), "images", _R, _R),
    _ArraySpec("row_boxes", np.dtype("<f4"), (4,), "rows", _R, _R),
    _ArraySpec("row_objectness", np.dtype("<f4"), (), "rows", _A, _R),
    _ArraySpec("row_level", np.dtype("<i4"), (), "rows", _A, _O),
    _ArraySpec("entry_offsets", np.dtype("<i8"), (), "images", _R, _R),
    _ArraySpec("entry_row", np.dtype("<i4"), (), "entries", _R, _R),
    _ArraySpec("entry_class", np.dtype("<i4"), (), "entries", _R, _R),
    _ArraySpec("entry_score", np.dtype("<f4"), (), "entries", _R, _R),
    _ArraySpec("entry_boxes", np.dtype("<f4"), (4,), "entries", _A, _R),
)
_SPECS = {spec.name: spec for spec in _ARRAY_SPECS}
ARRAY_NAMES = tuple(_SPECS)


# --------------------------------------------------------------------------------------------
# Scalar checks (they raise CacheError: every bad input of this module is a CacheError)


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise CacheError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise CacheError(f"{what} must be an integer, got {value!r} ({type(value).__name__})") from None


def _as_real(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise CacheError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _as_items(value: Any, what: str) -> tuple:
    if isinstance(value, (str, bytes, Mapping)):
        raise CacheError(f"{what} must be a sequence, got {type(value).__name__}")
    try:
        return tuple(value)
    except TypeError:
        raise CacheError(f"{what} must be a sequence, got {type(value).__name__}") from None


def _unique_ints(values: Any, what: str) -> tuple[int, ...]:
    items = tuple(_as_int(v, f"{what}[{i}]") for i, v in enumerate(_as_items(values, what)))
    if len(set(items)) != len(items):
        first: dict[int, int] = {}
        for i, v in enumerate(items):
            if v in first:
                raise CacheError(f"{what}[{i}] = {v} repeats {what}[{first[v]}]")
            first[v] = i
    return items


def _optional_positive_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    number = _as_int(value, what)
    if number < 1:
        raise CacheError(f"{what} must be >= 1 or None, got {number}")
    return number


def _score_floor(value: Any, what: str = "score_floor") -> float:
    floor = _as_real(value, what)
    if not (math.isfinite(floor) and 0.0 <= floor <= 1.0):
        raise CacheError(f"{what} must be in [0, 1], got {value!r}")
    return floor


def _json_copy(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CacheError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise CacheError(f"{what} must be JSON-serialisable (finite numbers, str keys): {error}") from None


# --------------------------------------------------------------------------------------------
# In-memory API


@dataclass(frozen=True)
class CacheMeta:
    """Everything about a cache except its arrays. Values are checked and normalised on creation.

    Attributes:
      version: format version; must equal `CACHE_VERSION`.
      kind: ``"one_stage"`` or ``"two_stage"`` (stored as a `CacheKind`, a ``str``).
      image_ids: COCO image ids in cache order; unique.
      image_sizes: ``(height, width)`` in pixels per image, both >= 1.
      category_ids: COCO category ids; class index ``c`` of the arrays is ``category_ids[c]``.
      score_floor: entries were recorded only when ``score >= score_floor``; in the arrays,
        ``entry_score >= np.float32(score_floor)`` (the comparison is made in float32, the
        dtype of the scores). In [0, 1].
      top_k: per-image cap on rows used when recording (two-stage: proposals recorded per
        image, the top-k by objectness), or None when no cap was applied. Checked on validation.
      num_proposals: two-stage only: proposals kept after first-stage NMS by the model at
        inference (TF Model Garden default 1000); None for one-stage caches.
      first_stage_iou_thresholds, first_stage_min_score: two-stage only. None (the default):
        entries were recorded for every row. Otherwise the second stage was run only on the rows
        that first-stage NMS keeps (per level, then merged, at most ``num_proposals``) for some
        ``nms_iou_threshold`` in this sorted tuple and ``nms_score_threshold >=
        first_stage_min_score``; rows outside that union have no entries, and a sweep accepts
        only first-stage settings inside it. Both are set, or neither.
      box_format: always ``"yxyx"`` (ymin, xmin, ymax, xmax), absolute pixels.
      category_names: names aligned with ``category_ids``, or None.
      source: free-form JSON-serialisable provenance (model, preset, checkpoint, ...). Stored as
        a JSON-normalised copy (tuples become lists); not part of the hash.
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

        version = _as_int(self.version, "meta.version")
        if version != CACHE_VERSION:
            raise CacheError(
                f"meta.version {version} is not supported (this detsearch supports version {CACHE_VERSION})"
            )
        put("version", version)
        try:
            kind = CacheKind(self.kind)
        except (ValueError, TypeError):
            raise CacheError(f"meta.kind must be 'one_stage' or 'two_stage', got {self.kind!r}") from None
        put("kind", kind)
        image_ids = _unique_ints(self.image_ids, "meta.image_ids")
        put("image_ids", image_ids)
        sizes = _as_items(self.image_sizes, "meta.image_sizes")
        if len(sizes) != len(image_ids):
            raise CacheError(
                f"meta.image_sizes has {len(sizes)} sizes for {len(image_ids)} meta.image_ids"
            )
        put("image_sizes", tuple(_image_size(size, f"meta.image_sizes[{i}]") for i, size in enumerate(sizes)))
        category_ids = _unique_ints(self.category_ids, "meta.category_ids")
        put("category_ids", category_ids)
        put("score_floor", _score_floor(self.score_floor, "meta.score_floor"))
        put("top_k", _optional_positive_int(self.top_k, "meta.top_k"))
        num_proposals = _optional_positive_int(self.num_proposals, "meta.num_proposals")
        if kind == CacheKind.ONE_STAGE and num_proposals is not None:
            raise CacheError(f"meta.num_proposals must be None for a one_stage cache, got {num_proposals}")
        put("num_proposals", num_proposals)
        ious, min_score = self.first_stage_iou_thresholds, self.first_stage_min_score
        if (ious is None) != (min_score is None):
            raise CacheError("meta.first_stage_iou_thresholds and meta.first_stage_min_score are set together or not at all")
        if ious is not None:
            if kind != CacheKind.TWO_STAGE:
                raise CacheError("meta.first_stage_iou_thresholds applies to a two_stage cache only")
            items = _as_items(ious, "meta.first_stage_iou_thresholds")
            if not items:
                raise CacheError("meta.first_stage_iou_thresholds must not be empty")
            values = tuple(_score_floor(v, f"meta.first_stage_iou_thresholds[{i}]") for i, v in enumerate(items))
            put("first_stage_iou_thresholds", tuple(sorted(set(values))))
            put("first_stage_min_score", _score_floor(min_score, "meta.first_stage_min_score"))
        if self.box_format != BOX_FORMAT:
            raise CacheError(f"meta.box_format must be {BOX_FORMAT!r}, got {self.box_format!r}")
        if self.category_names is not None:
            names = _as_items(self.category_names, "meta.category_names")
            if len(names) != len(category_ids):
                raise CacheError(
                    f"meta.category_names has {len(names)} names for {len(category_ids)} meta.category_ids"
                )
            for i, name in enumerate(names):
                if not isinstance(name, str):
                    raise CacheError(f"meta.category_names[{i}] must be a str, got {name!r}")
            put("category_names", names)
        put("source", _json_copy(self.source, "meta.source"))

    def with_images(self, image_ids: Any, image_sizes: Any) -> CacheMeta:
        """Returns a copy of this meta with other images (and the same everything else)."""
        return replace(self, image_ids=image_ids, image_sizes=image_sizes)


def _image_size(value: Any, what: str) -> tuple[int, int]:
    items = _as_items(value, what)
    if len(items) != 2:
        raise CacheError(f"{what} must be (height, width), got {value!r}")
    height, width = (_as_int(v, what) for v in items)
    if height < 1 or width < 1:
        raise CacheError(f"{what} = ({height}, {width}): height and width must be >= 1")
    return height, width


@dataclass(frozen=True, eq=False, repr=False)
class DetectionCache:
    """Raw detector predictions of a set of images, as flat arrays.

    Rows of image ``i`` are ``row_offsets[i]:row_offsets[i + 1]``; its entries are
    ``entry_offsets[i]:entry_offsets[i + 1]``. Within the whole cache entries are sorted by
    ``(entry_row, entry_class)`` with no pair repeated. Boxes are yxyx float32 absolute pixels.

    Attributes:
      meta: the `CacheMeta`.
      row_offsets: int64 ``[num_images + 1]``.
      row_boxes: float32 ``[R, 4]``: one-stage candidate boxes; two-stage RPN proposals.
      row_objectness: float32 ``[R]`` RPN objectness in [0, 1] (two-stage); None for one-stage.
      row_level: int32 ``[R]`` FPN level of a proposal (two-stage, optional), >= 0; else None.
      entry_offsets: int64 ``[num_images + 1]``.
      entry_row: int32 ``[E]``: global row index of the entry, within its image's rows.
      entry_class: int32 ``[E]``: class index into ``meta.category_ids``.
      entry_score: float32 ``[E]`` in [float32(score_floor), 1].
      entry_boxes: float32 ``[E, 4]`` per-class second-stage box (two-stage); None for
        one-stage, where an entry's box is its row's box.

    Build one with `from_arrays` (validated), `CacheBuilder`, an importer, or `read_cache`.
    The plain constructor does not validate; call `validate` after it.
    """

    meta: CacheMeta
    row_offsets: np.ndarray
    row_boxes: np.ndarray
    row_objectness: np.ndarray | None
    row_level: np.ndarray | None
    entry_offsets: np.ndarray
    entry_row: np.ndarray
    entry_class: np.ndarray
    entry_score: np.ndarray
    entry_boxes: np.ndarray | None

    @classmethod
    def from_arrays(
        cls,
        meta: CacheMeta,
        *,
        row_offsets: Any,
        row_boxes: Any,
        entry_offsets: Any,
        entry_row: Any,
        entry_class: Any,
        entry_score: Any,
        row_objectness: Any = None,
        row_level: Any = None,
        entry_boxes: Any = None,
    ) -> DetectionCache:
        """Builds and validates a cache from array-likes.

        Integer arrays are converted to their dtype only when every value fits; real arrays are
        rounded to float32. The result holds read-only views; the caller's arrays are not
        modified.

        Raises:
          TypeError: ``meta`` is not a `CacheMeta`.
          CacheError: an array has the wrong kind of values or breaks an invariant (see
            `validate`).
        """
        if not isinstance(meta, CacheMeta):
            raise TypeError(f"meta must be a CacheMeta, got {type(meta).__name__}")
        given = dict(
            row_offsets=row_offsets,
            row_boxes=row_boxes,
            row_objectness=row_objectness,
            row_level=row_level,
            entry_offsets=entry_offsets,
            entry_row=entry_row,
            entry_class=entry_class,
            entry_score=entry_score,
            entry_boxes=entry_boxes,
        )
        arrays = {name: _coerce_array("DetectionCache", name, value, _SPECS[name]) for name, value in given.items()}
        cache = cls(meta=meta, **arrays)
        cache.validate()
        return cache

    def validate(self) -> None:
        """Checks every invariant of the format; raises `CacheError` naming the first violation.

        Checked: presence of each array for the cache kind, dtypes (little-endian), shapes;
        offsets start at 0, never decrease and end at the array length; rows per image <=
        ``top_k``; boxes finite with ymin <= ymax and xmin <= xmax; objectness finite in [0, 1];
        levels >= 0; entries sorted by (entry_row, entry_class) without repeats, each entry_row
        within its image's rows; class indices in [0, num_categories); scores finite in
        [float32(score_floor), 1]. Image id uniqueness and the meta fields are checked when the
        `CacheMeta` is created.
        """
        _check_cache(self, "DetectionCache")

    def num_images(self) -> int:
        return len(self.meta.image_ids)

    def num_rows(self) -> int:
        return int(self.row_boxes.shape[0])

    def num_entries(self) -> int:
        return int(self.entry_row.shape[0])

    def image_rows(self, index: int) -> slice:
        """Slice of the row arrays that belongs to image ``index`` (a position, not an id)."""
        return slice(int(self.row_offsets[index]), int(self.row_offsets[index + 1]))

    def image_entries(self, index: int) -> slice:
        """Slice of the entry arrays that belongs to image ``index`` (a position, not an id)."""
        return slice(int(self.entry_offsets[index]), int(self.entry_offsets[index + 1]))

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that are present (not None), by name, in format order."""
        return {name: getattr(self, name) for name in ARRAY_NAMES if getattr(self, name) is not None}

    def __repr__(self) -> str:
        return (
            f"DetectionCache(kind={str(self.meta.kind)!r}, images={self.num_images()}, "
            f"rows={self.num_rows()}, entries={self.num_entries()}, "
            f"categories={len(self.meta.category_ids)}, score_floor={self.meta.score_floor})"
        )


def _coerce_array(where: str, name: str, value: Any, spec: _ArraySpec) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value)
    if array.dtype != spec.dtype:
        kind = array.dtype.kind
        if array.size == 0 and kind in "biuf":
            array = array.astype(spec.dtype)
        elif spec.dtype.kind == "i":
            if kind not in "iu":
                raise CacheError(f"{where}: {name} must hold integers, got dtype {array.dtype}")
            converted = array.astype(spec.dtype)
            if not np.array_equal(converted, array):
                bad = int(np.flatnonzero((converted != array).reshape(-1))[0])
                raise CacheError(
                    f"{where}: {name}.flat[{bad}] = {array.reshape(-1)[bad]} does not fit in {spec.dtype.name}"
                )
            array = converted
        else:
            if kind not in "iuf":
                raise CacheError(f"{where}: {name} must hold real numbers, got dtype {array.dtype}")
            array = array.astype(spec.dtype)
    if array.shape == (0,) and spec.item_shape:  # [] for "no boxes"
        array = array.reshape((0, *spec.item_shape))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    view = array.view()
    view.flags.writeable = False
    return view


# --------------------------------------------------------------------------------------------
# Validation


def _chunks(length: int, size: int = _CHUNK_ELEMENTS) -> Iterator[tuple[int, int]]:
    for start in range(0, length, size):
        yield start, min(length, start + size)


def _find_bad_box(boxes: np.ndarray) -> tuple[int, list[float], str] | None:
    """First box (in ``[N, 4]`` yxyx) that is not finite or has ymin > ymax or xmin > xmax."""
    for start, stop in _chunks(boxes.shape[0]):
        chunk = np.asarray(boxes[start:stop])
        finite = np.isfinite(chunk).all(axis=1)
        ok = finite & (chunk[:, 0] <= chunk[:, 2]) & (chunk[:, 1] <= chunk[:, 3])
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            box = chunk[i]
            if not finite[i]:
                reason = "is not finite"
            elif box[0] > box[2]:
                reason = "has ymin > ymax"
            else:
                reason = "has xmin > xmax"
            return start + i, [float(v) for v in box], reason
    return None


def _find_bad_probability(values: np.ndarray, low: np.floating, low_name: str) -> tuple[int, float, str] | None:
    """First value that is not finite or outside [low, 1]."""
    for start, stop in _chunks(values.shape[0]):
        chunk = np.asarray(values[start:stop])
        ok = (chunk >= low) & (chunk <= 1)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            value = float(chunk[i])
            if not math.isfinite(value):
                reason = "is not finite"
            elif value < low:
                reason = f"is below {low_name}"
            else:
                reason = "is above 1"
            return start + i, value, reason
    return None


def _find_out_of_range(values: np.ndarray, low: int, high: int | None) -> int | None:
    """First index whose value is < low or >= high (high None: no upper bound)."""
    for start, stop in _chunks(values.shape[0]):
        chunk = np.asarray(values[start:stop])
        bad = chunk < low
        if high is not None:
            bad |= chunk >= high
        if bad.any():
            return start + int(np.flatnonzero(bad)[0])
    return None


def _check_offsets(where: str, name: str, offsets: np.ndarray, total: int, total_name: str) -> np.ndarray:
    offsets = np.asarray(offsets)
    if offsets[0] != 0:
        raise CacheError(f"{where}: {name}[0] = {offsets[0]}, expected 0")
    decreasing = np.flatnonzero(np.diff(offsets) < 0)
    if decreasing.size:
        i = int(decreasing[0]) + 1
        raise CacheError(f"{where}: {name}[{i}] = {offsets[i]} is less than {name}[{i - 1}] = {offsets[i - 1]}")
    if offsets[-1] != total:
        raise CacheError(f"{where}: {name}[-1] = {offsets[-1]}, but {total_name} has {total} elements")
    return offsets


def _check_cache(cache: DetectionCache, where: str) -> None:
    meta = cache.meta
    if not isinstance(meta, CacheMeta):
        raise CacheError(f"{where}: meta must be a CacheMeta, got {type(meta).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for spec in _ARRAY_SPECS:
        array = getattr(cache, spec.name)
        presence = spec.presence(meta.kind)
        if array is None:
            if presence is _Presence.REQUIRED:
                raise CacheError(f"{where}: {spec.name} is required in a {meta.kind} cache")
            continue
        if presence is _Presence.ABSENT:
            raise CacheError(f"{where}: {spec.name} must be None in a {meta.kind} cache")
        if not isinstance(array, np.ndarray):
            raise CacheError(f"{where}: {spec.name} must be a numpy array, got {type(array).__name__}")
        if array.dtype != spec.dtype:
            raise CacheError(f"{where}: {spec.name} has dtype {array.dtype.str}, expected {spec.dtype.str}")
        if array.ndim != 1 + len(spec.item_shape) or array.shape[1:] != spec.item_shape:
            raise CacheError(f"{where}: {spec.name} has shape {array.shape}, expected {spec.shape_text()}")
        arrays[spec.name] = array
    num_images = len(meta.image_ids)
    num_rows = arrays["row_boxes"].shape[0]
    num_entries = arrays["entry_row"].shape[0]
    lengths = {"images": num_images + 1, "rows": num_rows, "entries": num_entries}
    meaning = {"images": "num_images + 1", "rows": "rows in row_boxes", "entries": "entries in entry_row"}
    for name, array in arrays.items():
        axis = _SPECS[name].axis
        if array.shape[0] != lengths[axis]:
            raise CacheError(
                f"{where}: {name} has {array.shape[0]} elements, expected {lengths[axis]} ({meaning[axis]})"
            )
    row_offsets = _check_offsets(where, "row_offsets", arrays["row_offsets"], num_rows, "row_boxes")
    entry_offsets = _check_offsets(where, "entry_offsets", arrays["entry_offsets"], num_entries, "entry_row")
    if meta.top_k is not None:
        over = np.flatnonzero(np.diff(row_offsets) > meta.top_k)
        if over.size:
            i = int(over[0])
            raise CacheError(
                f"{where}: image {i} (id {meta.image_ids[i]}) has {row_offsets[i + 1] - row_offsets[i]} rows, "
                f"more than meta.top_k = {meta.top_k}"
            )
    for name in ("row_boxes", "entry_boxes"):
        if name in arrays:
            bad_box = _find_bad_box(arrays[name])
            if bad_box is not None:
                i, box, reason = bad_box
                raise CacheError(f"{where}: {name}[{i}] = {box} (ymin, xmin, ymax, xmax) {reason}")
    if "row_objectness" in arrays:
        bad_value = _find_bad_probability(arrays["row_objectness"], np.float32(0), "0")
        if bad_value is not None:
            i, value, reason = bad_value
            raise CacheError(f"{where}: row_objectness[{i}] = {value!r} {reason}")
    if "row_level" in arrays:
        i = _find_out_of_range(arrays["row_level"], 0, None)
        if i is not None:
            raise CacheError(f"{where}: row_level[{i}] = {arrays['row_level'][i]} is negative")
    _check_entries(where, meta, row_offsets, entry_offsets, arrays)


def _check_entries(
    where: str, meta: CacheMeta, row_offsets: np.ndarray, entry_offsets: np.ndarray, arrays: dict[str, np.ndarray]
) -> None:
    entry_row, entry_class = arrays["entry_row"], arrays["entry_class"]
    num_categories = len(meta.category_ids)
    i = _find_out_of_range(entry_class, 0, num_categories)
    if i is not None:
        raise CacheError(
            f"{where}: entry_class[{i}] = {entry_class[i]} is outside [0, {num_categories}) "
            f"(the cache has {num_categories} categories)"
        )
    bad_value = _find_bad_probability(
        arrays["entry_score"], np.float32(meta.score_floor), f"score_floor {meta.score_floor}"
    )
    if bad_value is not None:
        i, value, reason = bad_value
        raise CacheError(f"{where}: entry_score[{i}] = {value!r} {reason}")
    # Sorted by (row, class) without repeats; one linear pass, carried across chunk borders.
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for start, stop in _chunks(entry_row.shape[0]):
        rows = np.asarray(entry_row[start:stop]).astype(np.int64)
        classes = np.asarray(entry_class[start:stop]).astype(np.int64)
        first = start
        if previous is not None:
            rows = np.concatenate([previous[0], rows])
            classes = np.concatenate([previous[1], classes])
            first = start - 1
        row_step, class_step = np.diff(rows), np.diff(classes)
        bad = np.flatnonzero((row_step < 0) | ((row_step == 0) & (class_step <= 0)))
        if bad.size:
            j = int(bad[0])
            raise CacheError(
                f"{where}: entries must be sorted by (entry_row, entry_class) with no pair repeated: entry "
                f"{first + j + 1} (row {rows[j + 1]}, class {classes[j + 1]}) follows entry {first + j} "
                f"(row {rows[j]}, class {classes[j]})"
            )
        previous = (rows[-1:], classes[-1:])
    # With the entries sorted, an image's entries lie within its rows iff its first and last do.
    starts, stops = entry_offsets[:-1], entry_offsets[1:]
    images = np.flatnonzero(stops > starts)
    if images.size:
        first_rows = np.asarray(entry_row[starts[images]])
        last_rows = np.asarray(entry_row[stops[images] - 1])
        bad = np.flatnonzero((first_rows < row_offsets[images]) | (last_rows >= row_offsets[images + 1]))
        if bad.size:
            image = int(images[bad[0]])
            low, high = int(row_offsets[image]), int(row_offsets[image + 1])
            rows = np.asarray(entry_row[starts[image] : stops[image]])
            j = int(np.flatnonzero((rows < low) | (rows >= high))[0])
            raise CacheError(
                f"{where}: entry_row[{int(starts[image]) + j}] = {rows[j]} is outside the rows of image "
                f"{image} (id {meta.image_ids[image]}): [{low}, {high})"
            )


# --------------------------------------------------------------------------------------------
# Building images one at a time (shared by CacheWriter and CacheBuilder)


class _ImageStream:
    """Checks one image's arrays, sorts its entries and keeps the per-image bookkeeping."""

    def __init__(
        self,
        *,
        kind: str,
        category_ids: Any,
        score_floor: float,
        top_k: int | None,
        num_proposals: int | None,
        category_names: Any,
        source: Mapping[str, Any] | None,
        first_stage_iou_thresholds: Any = None,
        first_stage_min_score: float | None = None,
    ) -> None:
        self.template = CacheMeta(
            version=CACHE_VERSION,
            kind=kind,
            image_ids=(),
            image_sizes=(),
            category_ids=category_ids,
            score_floor=score_floor,
            top_k=top_k,
            num_proposals=num_proposals,
            first_stage_iou_thresholds=first_stage_iou_thresholds,
            first_stage_min_score=first_stage_min_score,
            category_names=category_names,
            source=source,
        )
        self.floor32 = np.float32(self.template.score_floor)
        self.image_ids: list[int] = []
        self.image_sizes: list[tuple[int, int]] = []
        self.seen: set[int] = set()
        self.row_offsets = [0]
        self.entry_offsets = [0]
        self.has_level: bool | None = None

    @property
    def num_rows(self) -> int:
        return self.row_offsets[-1]

    def names(self) -> tuple[str, ...]:
        kind = self.template.kind
        return tuple(
            spec.name
            for spec in _ARRAY_SPECS
            if spec.presence(kind) is _Presence.REQUIRED or (spec.name == "row_level" and self.has_level)
        )

    def meta(self) -> CacheMeta:
        return self.template.with_images(self.image_ids, self.image_sizes)

    def prepare(
        self,
        image_id: Any,
        size: Any,
        row_boxes: Any,
        entry_row: Any,
        entry_class: Any,
        entry_score: Any,
        entry_boxes: Any,
        row_objectness: Any,
        row_level: Any,
    ) -> tuple[int, tuple[int, int], dict[str, np.ndarray]]:
        """Returns (image_id, size, arrays) with entry_row made global; nothing is recorded yet."""
        image_id = _as_int(image_id, "image_id")
        where = f"image_id {image_id}"
        if image_id in self.seen:
            raise CacheError(f"{where} was already added")
        size = _image_size(size, f"{where}: size")
        kind = self.template.kind
        given = dict(
            row_boxes=row_boxes,
            row_objectness=row_objectness,
            row_level=row_level,
            entry_row=entry_row,
            entry_class=entry_class,
            entry_score=entry_score,
            entry_boxes=entry_boxes,
        )
        arrays: dict[str, np.ndarray] = {}
        for name, value in given.items():
            spec = _SPECS[name]
            presence = spec.presence(kind)
            if value is None:
                if presence is _Presence.REQUIRED:
                    raise CacheError(f"{where}: {name} is required in a {kind} cache")
                continue
            if presence is _Presence.ABSENT:
                raise CacheError(f"{where}: {name} must be None in a {kind} cache")
            array = _coerce_array(where, name, value, spec)
            if array.ndim != 1 + len(spec.item_shape) or array.shape[1:] != spec.item_shape:
                raise CacheError(f"{where}: {name} has shape {array.shape}, expected {spec.shape_text()}")
            arrays[name] = array
        has_level = "row_level" in arrays
        if self.has_level is not None and has_level != self.has_level:
            state = "given" if self.has_level else "not given"
            raise CacheError(f"{where}: row_level must be given for all images or none; it was {state} before")
        num_rows = arrays["row_boxes"].shape[0]
        num_entries = arrays["entry_row"].shape[0]
        for name, array in arrays.items():
            expected = num_rows if _SPECS[name].axis == "rows" else num_entries
            if array.shape[0] != expected:
                axis = "row_boxes" if _SPECS[name].axis == "rows" else "entry_row"
                raise CacheError(f"{where}: {name} has {array.shape[0]} elements but {axis} has {expected}")
        if self.template.top_k is not None and num_rows > self.template.top_k:
            raise CacheError(f"{where}: {num_rows} rows, more than top_k = {self.template.top_k}")
        if self.num_rows + num_rows > _INT32_MAX:
            raise CacheError(f"{where}: the cache would exceed {_INT32_MAX} rows (entry_row is int32)")
        for name in ("row_boxes", "entry_boxes"):
            if name in arrays:
                bad_box = _find_bad_box(arrays[name])
                if bad_box is not None:
                    i, box, reason = bad_box
                    raise CacheError(f"{where}: {name}[{i}] = {box} (ymin, xmin, ymax, xmax) {reason}")
        if "row_objectness" in arrays:
            bad_value = _find_bad_probability(arrays["row_objectness"], np.float32(0), "0")
            if bad_value is not None:
                i, value, reason = bad_value
                raise CacheError(f"{where}: row_objectness[{i}] = {value!r} {reason}")
        if has_level:
            i = _find_out_of_range(arrays["row_level"], 0, None)
            if i is not None:
                raise CacheError(f"{where}: row_level[{i}] = {arrays['row_level'][i]} is negative")
        num_categories = len(self.template.category_ids)
        i = _find_out_of_range(arrays["entry_class"], 0, num_categories)
        if i is not None:
            raise CacheError(
                f"{where}: entry_class[{i}] = {arrays['entry_class'][i]} is outside [0, {num_categories})"
            )
        i = _find_out_of_range(arrays["entry_row"], 0, num_rows)
        if i is not None:
            raise CacheError(
                f"{where}: entry_row[{i}] = {arrays['entry_row'][i]} is outside [0, {num_rows}) "
                f"(entry_row is local to the image here)"
            )
        bad_value = _find_bad_probability(
            arrays["entry_score"], self.floor32, f"score_floor {self.template.score_floor}"
        )
        if bad_value is not None:
            i, value, reason = bad_value
            raise CacheError(f"{where}: entry_score[{i}] = {value!r} {reason}")
        order = np.lexsort((arrays["entry_class"], arrays["entry_row"]))  # stable
        sorted_rows = arrays["entry_row"][order]
        sorted_classes = arrays["entry_class"][order]
        repeat = np.flatnonzero((np.diff(sorted_rows) == 0) & (np.diff(sorted_classes) == 0))
        if repeat.size:
            j = int(repeat[0])
            a, b = sorted((int(order[j]), int(order[j + 1])))
            raise CacheError(
                f"{where}: entries {a} and {b} repeat the pair (entry_row {sorted_rows[j]}, "
                f"entry_class {sorted_classes[j]})"
            )
        for name in ("entry_row", "entry_class", "entry_score", "entry_boxes"):
            if name in arrays:
                arrays[name] = arrays[name][order]
        arrays["entry_row"] = (sorted_rows.astype(np.int64) + self.num_rows).astype(np.int32)
        return image_id, size, arrays

    def record(self, image_id: int, size: tuple[int, int], arrays: dict[str, np.ndarray]) -> None:
        if self.has_level is None:
            self.has_level = "row_level" in arrays
        self.seen.add(image_id)
        self.image_ids.append(image_id)
        self.image_sizes.append(size)
        self.row_offsets.append(self.row_offsets[-1] + arrays["row_boxes"].shape[0])
        self.entry_offsets.append(self.entry_offsets[-1] + arrays["entry_row"].shape[0])


_ADD_IMAGE_DOC = """
        Args:
          image_id: COCO image id; unique within the cache.
          size: ``(height, width)`` in pixels.
          row_boxes: float ``[r, 4]`` yxyx absolute pixels (rounded to float32).
          entry_row: int ``[e]``: row of each entry, LOCAL to this image (0 <= entry_row < r).
          entry_class: int ``[e]``: class index into ``category_ids``.
          entry_score: float ``[e]``, each in [score_floor, 1] (compared in float32).
          entry_boxes: float ``[e, 4]`` yxyx: two-stage per-class boxes; None for one-stage.
          row_objectness: float ``[r]`` in [0, 1]: two-stage RPN objectness; None for one-stage.
          row_level: int ``[r]`` FPN level (two-stage, optional; all images or none).

        Entries may come in any order; they are stored sorted by (row, class), a stable sort.
        A (row, class) pair may appear once. The caller's arrays are not modified.

        Raises:
          CacheError: naming the image id, the array and the first bad index. Nothing of the
            image is recorded then, and the writer stays usable.
"""


class CacheBuilder:
    """Builds a `DetectionCache` in memory, one image at a time (the in-memory `CacheWriter`).

    Args:
      kind: ``"one_stage"`` or ``"two_stage"``.
      category_ids, score_floor, top_k, num_proposals, category_names, source,
      first_stage_iou_thresholds, first_stage_min_score: as in `CacheMeta`.
    """

    def __init__(
        self,
        *,
        kind: str,
        category_ids: Any,
        score_floor: float,
        top_k: int | None = None,
        num_proposals: int | None = None,
        category_names: Any = None,
        source: Mapping[str, Any] | None = None,
        first_stage_iou_thresholds: Any = None,
        first_stage_min_score: float | None = None,
    ) -> None:
        self._stream = _ImageStream(
            kind=kind,
            category_ids=category_ids,
            score_floor=score_floor,
            top_k=top_k,
            num_proposals=num_proposals,
            category_names=category_names,
            source=source,
            first_stage_iou_thresholds=first_stage_iou_thresholds,
            first_stage_min_score=first_stage_min_score,
        )
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in ARRAY_NAMES}

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
        image_id, size, arrays = self._stream.prepare(
            image_id, size, row_boxes, entry_row, entry_class, entry_score, entry_boxes, row_objectness, row_level
        )
        self._stream.record(image_id, size, arrays)
        for name, array in arrays.items():
            self._parts[name].append(array)

    add_image.__doc__ = "Adds one image." + _ADD_IMAGE_DOC

    def build(self) -> DetectionCache:
        """Returns the validated cache of the images added so far."""
        stream = self._stream
        arrays: dict[str, Any] = {
            "row_offsets": np.asarray(stream.row_offsets, dtype=np.int64),
            "entry_offsets": np.asarray(stream.entry_offsets, dtype=np.int64),
        }
        for name in stream.names():
            if name in arrays:
                continue
            spec = _SPECS[name]
            parts = self._parts[name]
            arrays[name] = np.concatenate(parts) if parts else np.zeros((0, *spec.item_shape), spec.dtype)
        return DetectionCache.from_arrays(stream.meta(), **arrays)


# --------------------------------------------------------------------------------------------
# On-disk writing


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
            object.__setattr__(self, name, _as_int(getattr(self, name), f"ShardSpec.{name}"))
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

    def to_json(self) -> dict[str, int]:
        return {
            "index": self.index,
            "image_start": self.image_start,
            "image_stop": self.image_stop,
            "num_images": self.num_images,
        }


def plan_shards(num_images: int, images_per_shard: int) -> tuple[ShardSpec, ...]:
    """Splits ``num_images`` images into consecutive shards of ``images_per_shard`` (last shorter)."""
    num_images = _as_int(num_images, "num_images")
    images_per_shard = _as_int(images_per_shard, "images_per_shard")
    if num_images < 1 or images_per_shard < 1:
        raise CacheError(f"num_images and images_per_shard must be >= 1, got {num_images}, {images_per_shard}")
    return tuple(
        ShardSpec(index, start, min(start + images_per_shard, num_images), num_images)
        for index, start in enumerate(range(0, num_images, images_per_shard))
    )


def _shard_dir(path: Path, index: int) -> Path:
    return path / SHARDS_DIR / f"{index:0{SHARD_NAME_DIGITS}d}"


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    )
    return buffer.getvalue()


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _remove_stale(target: Path, tag: str) -> None:
    """Removes ``target.<tag>-<pid>`` directories left by writers that no longer run."""
    parent = target.parent
    if not parent.is_dir():
        return
    pattern = re.compile(re.escape(target.name) + r"\." + tag + r"-(\d+)")
    for entry in os.scandir(parent):
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        logger.info("removing %s, left by an interrupted cache write (process %d)", entry.path, pid)
        shutil.rmtree(entry.path, ignore_errors=True)


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


def _prepare_target(target: Path) -> Path:
    _check_replaceable(target)
    _remove_stale(target, "tmp")
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _commit_directory(tmp: Path, target: Path) -> None:
    """Renames the complete directory ``tmp`` onto ``target``: the commit of a write."""
    _check_replaceable(target)
    try:
        os.replace(tmp, target)
    except OSError as error:
        # rename(2) cannot replace a non-empty directory: move the old cache aside first. A
        # crash between the two renames leaves no cache at target and the previous one at
        # target.old-<pid>; the next write to target removes it.
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not target.is_dir():
            raise
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        if os.path.lexists(old):
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)
    _remove_stale(target, "old")


class _NpyAppender:
    """Writes one ``.npy`` file by appending rows; the header is completed on `finish`.

    numpy pads a header with room for the first axis to grow to 21 digits, so the header of
    shape ``(0, ...)`` and of the final shape have the same length and can be swapped in place.
    """

    def __init__(self, directory: Path, spec: _ArraySpec) -> None:
        self.spec = spec
        self.path = directory / spec.file_name
        self.length = 0
        self._hash = hashlib.sha256()
        self._file = open(self.path, "xb")
        header = _npy_header(spec.dtype, (0, *spec.item_shape))
        self._header_length = len(header)
        self._file.write(header)

    def append(self, array: np.ndarray) -> None:
        spec = self.spec
        if array.dtype != spec.dtype or array.shape[1:] != spec.item_shape:
            raise ValueError(f"internal: {spec.name} got {array.dtype} {array.shape}")
        row_bytes = max(1, spec.dtype.itemsize * int(np.prod(spec.item_shape, dtype=np.int64)))
        step = max(1, _IO_CHUNK_BYTES // row_bytes)
        for start in range(0, array.shape[0], step):
            chunk = np.ascontiguousarray(array[start : start + step])
            data = memoryview(chunk).cast("B")
            self._file.write(data)
            self._hash.update(data)
        self.length += array.shape[0]

    def finish(self) -> dict[str, Any]:
        shape = (self.length, *self.spec.item_shape)
        header = _npy_header(self.spec.dtype, shape)
        if len(header) != self._header_length:
            raise RuntimeError(f"numpy wrote a {len(header)}-byte header for {shape}; expected {self._header_length}")
        self._file.seek(0)
        self._file.write(header)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {
            "file": self.spec.file_name,
            "dtype": self.spec.dtype.str,
            "shape": list(shape),
            "sha256": self._hash.hexdigest(),
        }

    def close(self) -> None:
        self._file.close()


class _DirectoryWriter:
    """The files of one cache directory under construction."""

    def __init__(self, directory: Path, names: tuple[str, ...]) -> None:
        self.directory = directory
        self.files: dict[str, _NpyAppender] = {}
        try:
            for name in names:
                self.files[name] = _NpyAppender(directory, _SPECS[name])
        except BaseException:
            self.close()
            raise

    def append(self, name: str, array: np.ndarray) -> None:
        self.files[name].append(array)

    def finish(self, meta: CacheMeta, shard: ShardSpec | None) -> None:
        infos = {name: appender.finish() for name, appender in self.files.items()}
        document = _meta_document(meta, infos, shard)
        with open(self.directory / META_FILE, "xb") as handle:
            handle.write(_render_meta(document).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(self.directory)

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
      kind, category_ids, score_floor, top_k, num_proposals, category_names, source,
        first_stage_iou_thresholds, first_stage_min_score: as in `CacheMeta`; the image ids
        and sizes come from `add_image`.
      shard: write one shard of a sharded cache (see `ShardSpec`, `merge_shards`): exactly
        ``image_stop - image_start`` images must be added. Writing a shard again replaces it.

    Raises:
      CacheError: bad meta fields, or the target exists and is not a cache (it is never
        replaced then), or holds shards (for a whole-cache write).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        kind: str,
        category_ids: Any,
        score_floor: float,
        top_k: int | None = None,
        num_proposals: int | None = None,
        category_names: Any = None,
        source: Mapping[str, Any] | None = None,
        shard: ShardSpec | None = None,
        first_stage_iou_thresholds: Any = None,
        first_stage_min_score: float | None = None,
    ) -> None:
        self._stream = _ImageStream(
            kind=kind,
            category_ids=category_ids,
            score_floor=score_floor,
            top_k=top_k,
            num_proposals=num_proposals,
            category_names=category_names,
            source=source,
            first_stage_iou_thresholds=first_stage_iou_thresholds,
            first_stage_min_score=first_stage_min_score,
        )
        if shard is not None and not isinstance(shard, ShardSpec):
            raise TypeError(f"shard must be a ShardSpec or None, got {type(shard).__name__}")
        self._shard = shard
        root = Path(path)
        self._target = _shard_dir(root, shard.index) if shard is not None else root
        self._tmp = _prepare_target(self._target)
        self._files: _DirectoryWriter | None = None
        self._done = False

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
        if shard is not None and self.num_images() >= shard.image_stop - shard.image_start:
            raise CacheError(
                f"{self._target}: shard {shard.name} covers images [{shard.image_start}, {shard.image_stop}), "
                f"all {shard.image_stop - shard.image_start} already added"
            )
        image_id, size, arrays = self._stream.prepare(
            image_id, size, row_boxes, entry_row, entry_class, entry_score, entry_boxes, row_objectness, row_level
        )
        self._stream.record(image_id, size, arrays)
        if self._files is None:
            self._files = _DirectoryWriter(self._tmp, self._stream.names())
        for name, array in arrays.items():
            self._files.append(name, array)

    add_image.__doc__ = "Appends one image to the cache files." + _ADD_IMAGE_DOC

    def close(self) -> Path:
        """Completes and commits the cache; returns its path.

        Raises:
          CacheError: a shard writer got fewer images than its range (the writer stays open:
            add the rest and close again).
        """
        self._check_open()
        shard = self._shard
        if shard is not None and self.num_images() != shard.image_stop - shard.image_start:
            raise CacheError(
                f"{self._target}: shard {shard.name} covers images [{shard.image_start}, {shard.image_stop}) "
                f"but {self.num_images()} were added"
            )
        stream = self._stream
        if self._files is None:
            self._files = _DirectoryWriter(self._tmp, stream.names())
        try:
            self._files.append("row_offsets", np.asarray(stream.row_offsets, dtype="<i8"))
            self._files.append("entry_offsets", np.asarray(stream.entry_offsets, dtype="<i8"))
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
    """Validates ``cache`` and writes it to ``path`` atomically (see `CacheWriter`); returns the path.

    With ``shard``, writes it as that shard of ``path`` (the cache must hold exactly the
    shard's images).
    """
    if not isinstance(cache, DetectionCache):
        raise TypeError(f"cache must be a DetectionCache, got {type(cache).__name__}")
    cache.validate()
    if shard is not None:
        if not isinstance(shard, ShardSpec):
            raise TypeError(f"shard must be a ShardSpec or None, got {type(shard).__name__}")
        if cache.num_images() != shard.image_stop - shard.image_start:
            raise CacheError(
                f"shard {shard.name} covers {shard.image_stop - shard.image_start} images, the cache has "
                f"{cache.num_images()}"
            )
    root = Path(path)
    target = _shard_dir(root, shard.index) if shard is not None else root
    tmp = _prepare_target(target)
    arrays = cache.arrays()
    files = _DirectoryWriter(tmp, tuple(arrays))
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


# --------------------------------------------------------------------------------------------
# meta.json


_META_FIELDS = (
    "format",
    "version",
    "kind",
    "box_format",
    "score_floor",
    "top_k",
    "num_proposals",
    "first_stage_iou_thresholds",
    "first_stage_min_score",
    "category_ids",
    "category_names",
    "source",
    "shard",
    "arrays",
    "image_ids",
    "image_sizes",
    "meta_sha256",
)


_OPTIONAL_META_FIELDS = ("first_stage_iou_thresholds", "first_stage_min_score")
"""Fields a cache written before they existed lacks (read as None: every row evaluated)."""


def _canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _meta_document(meta: CacheMeta, infos: Mapping[str, Any], shard: ShardSpec | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": meta.version,
        "kind": str(meta.kind),
        "box_format": meta.box_format,
        "score_floor": meta.score_floor,
        "top_k": meta.top_k,
        "num_proposals": meta.num_proposals,
        "first_stage_iou_thresholds": (None if meta.first_stage_iou_thresholds is None
                                       else list(meta.first_stage_iou_thresholds)),
        "first_stage_min_score": meta.first_stage_min_score,
        "category_ids": list(meta.category_ids),
        "category_names": None if meta.category_names is None else list(meta.category_names),
        "source": meta.source,
        "shard": None if shard is None else shard.to_json(),
        "arrays": {name: infos[name] for name in ARRAY_NAMES if name in infos},
        "image_ids": list(meta.image_ids),
        "image_sizes": [list(size) for size in meta.image_sizes],
    }
    document["meta_sha256"] = hashlib.sha256(_canonical_json(document)).hexdigest()
    return document


def _render_meta(document: Mapping[str, Any]) -> str:
    """One top-level field per line, values compact: readable without a 100k-line image list."""
    def compact(value: Any) -> str:
        return json.dumps(value, separators=(", ", ": "), allow_nan=False)

    lines = []
    for key in _META_FIELDS:
        value = document[key]
        if key == "arrays" and value:
            inner = ",\n".join(f"    {compact(name)}: {compact(info)}" for name, info in value.items())
            lines.append(f"  {compact(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {compact(key)}: {compact(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _parse_meta(data: bytes, where: str) -> tuple[CacheMeta, dict[str, dict[str, Any]], ShardSpec | None]:
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # includes JSONDecodeError, UnicodeDecodeError
        raise CacheError(f"{where}: not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise CacheError(f"{where}: must hold a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT_NAME:
        raise CacheError(f"{where}: 'format' is {document.get('format')!r}, expected {FORMAT_NAME!r}")
    version = document.get("version")
    if version != CACHE_VERSION or isinstance(version, bool):
        raise CacheError(
            f"{where}: cache format version {version!r} is not supported (this detsearch supports version "
            f"{CACHE_VERSION}); rewrite the cache with a matching detsearch"
        )
    missing = [key for key in _META_FIELDS if key not in document and key not in _OPTIONAL_META_FIELDS]
    unknown = sorted(set(document) - set(_META_FIELDS))
    if missing or unknown:
        raise CacheError(f"{where}: missing fields {missing}, unknown fields {unknown}")
    recorded = document.pop("meta_sha256")
    try:
        content_sha256 = hashlib.sha256(_canonical_json(document)).hexdigest()
    except (ValueError, RecursionError):  # NaN or Infinity, which the writer never writes
        content_sha256 = None
    if recorded != content_sha256:
        raise CacheError(f"{where}: meta_sha256 does not match the content (meta.json was altered or is corrupt)")
    try:
        meta = CacheMeta(
            version=document["version"],
            kind=document["kind"],
            image_ids=document["image_ids"],
            image_sizes=document["image_sizes"],
            category_ids=document["category_ids"],
            score_floor=document["score_floor"],
            top_k=document["top_k"],
            num_proposals=document["num_proposals"],
            first_stage_iou_thresholds=document.get("first_stage_iou_thresholds"),
            first_stage_min_score=document.get("first_stage_min_score"),
            box_format=document["box_format"],
            category_names=document["category_names"],
            source=document["source"],
        )
    except CacheError as error:
        raise CacheError(f"{where}: {error}") from None
    shard = None
    if document["shard"] is not None:
        record = document["shard"]
        keys = ("index", "image_start", "image_stop", "num_images")
        if not isinstance(record, dict) or sorted(record) != sorted(keys):
            raise CacheError(f"{where}: 'shard' must be null or an object with fields {list(keys)}")
        try:
            shard = ShardSpec(**{key: record[key] for key in keys})
        except CacheError as error:
            raise CacheError(f"{where}: {error}") from None
        if shard.image_stop - shard.image_start != len(meta.image_ids):
            raise CacheError(
                f"{where}: shard covers {shard.image_stop - shard.image_start} images, "
                f"image_ids has {len(meta.image_ids)}"
            )
    arrays = document["arrays"]
    if not isinstance(arrays, dict):
        raise CacheError(f"{where}: 'arrays' must be an object")
    for spec in _ARRAY_SPECS:
        presence = spec.presence(meta.kind)
        if spec.name not in arrays and presence is _Presence.REQUIRED:
            raise CacheError(f"{where}: 'arrays' lacks {spec.name!r}, required in a {meta.kind} cache")
        if spec.name in arrays and presence is _Presence.ABSENT:
            raise CacheError(f"{where}: 'arrays' lists {spec.name!r}, which a {meta.kind} cache must not have")
    unknown = sorted(set(arrays) - set(ARRAY_NAMES))
    if unknown:
        raise CacheError(f"{where}: 'arrays' lists unknown arrays {unknown}")
    for name, info in arrays.items():
        spec = _SPECS[name]
        if not isinstance(info, dict) or sorted(info) != ["dtype", "file", "sha256", "shape"]:
            raise CacheError(f"{where}: arrays.{name} must be an object with fields file, dtype, shape, sha256")
        if info["file"] != spec.file_name:
            raise CacheError(f"{where}: arrays.{name}.file is {info['file']!r}, expected {spec.file_name!r}")
        if info["dtype"] != spec.dtype.str:
            raise CacheError(f"{where}: arrays.{name}.dtype is {info['dtype']!r}, expected {spec.dtype.str!r}")
        shape = info["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) != 1 + len(spec.item_shape)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)
            or tuple(shape[1:]) != spec.item_shape
        ):
            raise CacheError(f"{where}: arrays.{name}.shape is {shape!r}, expected {spec.shape_text()}")
        digest = info["sha256"]
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise CacheError(f"{where}: arrays.{name}.sha256 is not a hex SHA-256 digest")
    return meta, arrays, shard


# --------------------------------------------------------------------------------------------
# Reading


class _ChangedWhileReading(Exception):
    pass


class _Directory:
    """Opens files relative to one directory inode, so a concurrent rename of the path cannot
    make a read mix files of two caches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        if os.open in os.supports_dir_fd:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        elif not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))

    def open(self, name: str) -> io.BufferedReader:
        if self.fd is None:
            return open(self.path / name, "rb")
        fd = self.fd
        return open(name, "rb", opener=lambda file, flags: os.open(file, flags, dir_fd=fd))

    def stat(self, name: str) -> os.stat_result:
        if self.fd is None:
            return os.stat(self.path / name)
        return os.stat(name, dir_fd=self.fd)

    def still_at_path(self) -> bool:
        if self.fd is None:
            return True
        opened, now = os.fstat(self.fd), os.stat(self.path)
        return (opened.st_ino, opened.st_dev) == (now.st_ino, now.st_dev)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_npy_header(handle: io.BufferedReader, where: str) -> tuple[dict[str, Any], int]:
    magic = handle.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise CacheError(f"{where}: not a .npy file (bad magic bytes or truncated)")
    major, minor = magic[6], magic[7]
    if (major, minor) == (1, 0):
        length_bytes, encoding = 2, "latin1"
    elif (major, minor) in ((2, 0), (3, 0)):
        length_bytes, encoding = 4, "latin1" if major == 2 else "utf8"
    else:
        raise CacheError(f"{where}: unsupported .npy format version {major}.{minor}")
    raw_length = handle.read(length_bytes)
    if len(raw_length) < length_bytes:
        raise CacheError(f"{where}: truncated .npy header")
    header_length = int.from_bytes(raw_length, "little")
    if header_length > _MAX_NPY_HEADER_BYTES:
        raise CacheError(f"{where}: .npy header of {header_length} bytes is implausibly long (corrupt)")
    raw_header = handle.read(header_length)
    if len(raw_header) < header_length:
        raise CacheError(f"{where}: truncated .npy header")
    try:
        header = ast.literal_eval(raw_header.decode(encoding))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise CacheError(f"{where}: unreadable .npy header {raw_header[:80]!r}") from None
    if not isinstance(header, dict) or sorted(header) != ["descr", "fortran_order", "shape"]:
        raise CacheError(f"{where}: .npy header {raw_header[:80]!r} lacks descr/fortran_order/shape")
    return header, 8 + length_bytes + header_length


def _open_array(directory: _Directory, spec: _ArraySpec, info: Mapping[str, Any], verify: bool) -> np.ndarray:
    where = str(directory.path / spec.file_name)
    shape = tuple(info["shape"])
    try:
        handle = directory.open(spec.file_name)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise CacheError(f"{where}: cannot open: {error}") from None
    with handle:
        header, data_offset = _read_npy_header(handle, where)
        if header["descr"] != spec.dtype.str or header["fortran_order"] is not False or header["shape"] != shape:
            raise CacheError(
                f"{where}: header says dtype {header['descr']!r}, shape {header['shape']!r}, fortran_order "
                f"{header['fortran_order']!r}; meta.json says dtype {spec.dtype.str!r}, shape {shape}, C order"
            )
        num_bytes = spec.dtype.itemsize * math.prod(shape)
        file_size = os.fstat(handle.fileno()).st_size
        if file_size != data_offset + num_bytes:
            state = "truncated" if file_size < data_offset + num_bytes else "too long"
            raise CacheError(
                f"{where}: file is {state}: {file_size} bytes, expected {data_offset + num_bytes} for shape {shape}"
            )
        if verify:
            digest = hashlib.sha256()
            buffer = bytearray(_IO_CHUNK_BYTES)
            view = memoryview(buffer)
            handle.seek(data_offset)
            while True:
                count = handle.readinto(buffer)
                if not count:
                    break
                digest.update(view[:count])
            if digest.hexdigest() != info["sha256"]:
                raise CacheError(f"{where}: SHA-256 checksum mismatch: the array data is corrupt")
        try:
            # Memory-maps the already validated file through this handle (np.load(mmap_mode="r")
            # would reopen it by name, which a concurrent rename could swap).
            return np.memmap(handle, dtype=spec.dtype, mode="r", offset=data_offset, shape=shape)
        except (OSError, ValueError) as error:
            raise CacheError(f"{where}: cannot memory-map: {error}") from None


def _describe_missing(path: Path) -> str:
    hints = []
    parent = path.parent
    if parent.is_dir():
        for tag, text in (
            ("old", "a previous cache, moved aside by an interrupted replace"),
            ("tmp", "an unfinished write"),
        ):
            pattern = re.compile(re.escape(path.name) + r"\." + tag + r"-\d+")
            found = sorted(entry.name for entry in os.scandir(parent) if pattern.fullmatch(entry.name))
            if found:
                hints.append(f"{found[0]} is {text}")
    return f"{path}: no cache here" + (f" ({'; '.join(hints)})" if hints else "")


def _open_cache_once(path: Path, verify: bool) -> tuple[DetectionCache, ShardSpec | None]:
    try:
        directory = _Directory(path)
    except FileNotFoundError:
        raise CacheError(_describe_missing(path)) from None
    except NotADirectoryError:
        raise CacheError(f"{path}: is not a directory") from None
    except OSError as error:
        raise CacheError(f"{path}: cannot open: {error}") from None
    try:
        meta_where = str(path / META_FILE)
        try:
            with directory.open(META_FILE) as handle:
                meta_stat = os.fstat(handle.fileno())
                data = handle.read()
        except FileNotFoundError:
            if (path / SHARDS_DIR).is_dir():
                count = sum(1 for entry in os.scandir(path / SHARDS_DIR) if _SHARD_NAME.fullmatch(entry.name))
                raise CacheError(
                    f"{path}: not a merged cache: no {META_FILE}, {count} shard(s) in {SHARDS_DIR}/; "
                    f"call merge_shards({str(path)!r})"
                ) from None
            raise CacheError(
                f"{meta_where}: missing; {path} is not a cache (or a write to it never finished)"
            ) from None
        except OSError as error:
            raise CacheError(f"{meta_where}: cannot read: {error}") from None
        meta, infos, shard = _parse_meta(data, meta_where)

        def unchanged() -> bool:
            # Same meta.json in the same directory, still at `path`: no replace or merge began
            # since meta.json was read (both remove or move meta.json before touching arrays).
            try:
                now = directory.stat(META_FILE)
                if not directory.still_at_path():
                    return False
            except FileNotFoundError:
                return False
            return (now.st_ino, now.st_dev) == (meta_stat.st_ino, meta_stat.st_dev)

        arrays: dict[str, np.ndarray | None] = {name: None for name in ARRAY_NAMES}
        for name, info in infos.items():
            try:
                arrays[name] = _open_array(directory, _SPECS[name], info, verify)
            except FileNotFoundError:
                if not unchanged():
                    raise _ChangedWhileReading from None
                raise CacheError(f"{path / _SPECS[name].file_name}: missing (listed in {META_FILE})") from None
            except CacheError:
                if not unchanged():
                    raise _ChangedWhileReading from None
                raise
        if not unchanged():
            raise _ChangedWhileReading
    finally:
        directory.close()
    cache = DetectionCache(meta=meta, **arrays)
    _check_cache(cache, str(path))
    return cache, shard


def _open_cache(path: Path, verify: bool) -> tuple[DetectionCache, ShardSpec | None]:
    if _TEMPORARY_NAME.fullmatch(path.name):
        raise CacheError(f"{path}: is the temporary directory of an unfinished or replaced write, not a cache")
    for _ in range(_MAX_READ_ATTEMPTS):
        try:
            return _open_cache_once(path, verify)
        except _ChangedWhileReading:
            logger.info("%s changed while being read; reading it again", path)
    raise CacheError(f"{path}: kept changing while being read ({_MAX_READ_ATTEMPTS} attempts)")


def read_cache(path: str | os.PathLike, verify: bool = True) -> DetectionCache:
    """Opens a cache directory; its arrays are read-only ``np.memmap``s.

    Checks, in order: ``meta.json`` (JSON, format name, version, its own checksum, fields);
    each listed array's file (present, ``.npy`` header agrees with the recorded dtype and shape,
    exact file size); with ``verify``, each array's SHA-256 (streamed, 8 MiB at a time); then
    every invariant of `DetectionCache.validate`. A cache replaced while it is being read is
    read again (never a mix of two caches).

    Args:
      path: the cache directory (or a shard directory ``root/shards/NNNNN``).
      verify: check the SHA-256 of every array. Without it, a flipped bit inside the data may go
        unnoticed (truncation and header damage are still caught).

    Raises:
      CacheError: one message naming the file and what is wrong (including a version other
        than `CACHE_VERSION`: "found vs supported").
    """
    cache, _ = _open_cache(Path(path), verify)
    return cache


# --------------------------------------------------------------------------------------------
# Shards


def completed_shards(path: str | os.PathLike) -> tuple[int, ...]:
    """Indices of the shards committed under ``path/shards/`` (not verified), ascending."""
    shards = Path(path) / SHARDS_DIR
    if not shards.is_dir():
        return ()
    return tuple(
        sorted(
            int(entry.name)
            for entry in os.scandir(shards)
            if _SHARD_NAME.fullmatch(entry.name) and (Path(entry.path) / META_FILE).is_file()
        )
    )


_SHARED_META_FIELDS = ("kind", "category_ids", "category_names", "score_floor", "top_k", "num_proposals",
                       "first_stage_iou_thresholds", "first_stage_min_score", "source")


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
    indices = sorted(int(entry.name) for entry in os.scandir(shards_dir) if _SHARD_NAME.fullmatch(entry.name))
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
        directory = _shard_dir(root, index)
        cache, shard = _open_cache(directory, verify)
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
        for name in _SHARED_META_FIELDS:
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
    if total_rows > _INT32_MAX:
        raise CacheError(
            f"{shards_dir}: the merged cache would have {total_rows} rows, more than int32 entry_row allows"
        )

    meta = first.with_images(
        [i for cache in caches for i in cache.meta.image_ids],
        [s for cache in caches for s in cache.meta.image_sizes],
    )
    names = tuple(caches[0].arrays())
    tmp = _prepare_merge(root)
    files = _DirectoryWriter(tmp, names)
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
                    for start, stop in _chunks(array.shape[0]):
                        shifted = np.asarray(array[start:stop]).astype(np.int64) + row_base
                        files.append(name, shifted.astype("<i4"))
                else:
                    files.append(name, array)
            row_base += cache.num_rows()
            entry_base += cache.num_entries()
        files.finish(meta, None)
        _install_merged(tmp, root)
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


def _prepare_merge(root: Path) -> Path:
    _remove_stale(root, "tmp")
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _install_merged(tmp: Path, root: Path) -> None:
    meta = root / META_FILE
    if os.path.lexists(meta):
        os.remove(meta)  # from here on, root does not read as a cache until the new meta lands
        _fsync_dir(root)
    new_files = {entry.name for entry in os.scandir(tmp)} - {META_FILE}
    for name in sorted(new_files):
        os.replace(tmp / name, root / name)
    for spec in _ARRAY_SPECS:
        if spec.file_name not in new_files and os.path.lexists(root / spec.file_name):
            os.remove(root / spec.file_name)
    _fsync_dir(root)
    os.replace(tmp / META_FILE, meta)
    _fsync_dir(root)
    os.rmdir(tmp)


# --------------------------------------------------------------------------------------------
# Importers


def _load_json(source: Any, what: str) -> tuple[Any, str]:
    """Returns (document, where): ``source`` is a path or an already loaded document."""
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise CacheError(f"{where}: cannot read {what}: {error}") from None
        try:
            return json.loads(data.decode("utf-8")), where
        except (ValueError, RecursionError) as error:
            raise CacheError(f"{where}: malformed JSON: {error}") from None
    return source, f"<{what}>"


@dataclass(frozen=True)
class _Annotations:
    where: str
    image_ids: tuple[int, ...]  # sorted, as COCOeval orders them
    sizes: dict[int, tuple[int, int]]
    category_ids: tuple[int, ...]  # sorted, as COCOeval orders them
    category_names: tuple[str, ...]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _brief(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened when long (a 400-digit JSON integer, say)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _strict_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _load_annotations(annotations: Any) -> _Annotations:
    if hasattr(annotations, "dataset") and isinstance(annotations.dataset, dict):  # pycocotools COCO
        document, where = annotations.dataset, "<annotations: COCO object>"
    else:
        document, where = _load_json(annotations, "annotations")
    if not isinstance(document, Mapping):
        raise CacheError(f"{where}: COCO annotations must be a JSON object, got {type(document).__name__}")
    for key in ("images", "categories"):
        if not isinstance(document.get(key), list):
            raise CacheError(f"{where}: COCO annotations need a list {key!r}")
    sizes: dict[int, tuple[int, int]] = {}
    for i, image in enumerate(document["images"]):
        if not isinstance(image, Mapping):
            raise CacheError(f"{where}: images[{i}] is not an object")
        for key in ("id", "height", "width"):
            if key not in image:
                raise CacheError(f"{where}: images[{i}] lacks {key!r}")
            if not _strict_int(image[key]):
                raise CacheError(f"{where}: images[{i}].{key} must be an integer, got {image[key]!r}")
        if image["height"] < 1 or image["width"] < 1:
            raise CacheError(f"{where}: images[{i}] has size {image['height']}x{image['width']}")
        if image["id"] in sizes:
            raise CacheError(f"{where}: images[{i}].id {image['id']} repeats an earlier image")
        sizes[image["id"]] = (image["height"], image["width"])
    names: dict[int, str] = {}
    for i, category in enumerate(document["categories"]):
        if not isinstance(category, Mapping):
            raise CacheError(f"{where}: categories[{i}] is not an object")
        if not _strict_int(category.get("id")):
            raise CacheError(f"{where}: categories[{i}].id must be an integer, got {category.get('id')!r}")
        if category["id"] in names:
            raise CacheError(f"{where}: categories[{i}].id {category['id']} repeats an earlier category")
        name = category.get("name", str(category["id"]))
        if not isinstance(name, str):
            raise CacheError(f"{where}: categories[{i}].name must be a string, got {name!r}")
        names[category["id"]] = name
    category_ids = tuple(sorted(names))
    return _Annotations(
        where=where,
        image_ids=tuple(sorted(sizes)),
        sizes=sizes,
        category_ids=category_ids,
        category_names=tuple(names[c] for c in category_ids),
    )


_DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


def import_coco_detections(
    detections: Any,
    annotations: Any,
    score_floor: float = 0.0,
    *,
    top_k: int | None = None,
    source: Mapping[str, Any] | None = None,
) -> DetectionCache:
    """One-stage cache from raw (pre-NMS) candidates in COCO results format.

    Args:
      detections: path of a JSON file, or a loaded list, of
        ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}``
        (other keys are ignored). Absolute pixels, w and h >= 0, score in [0, 1].
      annotations: COCO instances JSON path, loaded dict, or pycocotools ``COCO``: gives the
        images (id, height, width) and categories. Not modified.
      score_floor: records with ``float32(score) < float32(score_floor)`` are dropped.
      top_k: recorded in the meta (and then checked) when the candidates were capped per image.
      source: provenance for `CacheMeta.source`.

    Returns:
      A validated one-stage `DetectionCache` over ALL annotation images, sorted by id (images
      without detections get zero rows and still count in evaluation); category_ids are the
      annotation categories sorted by id. Records of an image with an equal bbox share one row
      (one entry per category); a second record of the same bbox and category starts a new row.
      Boxes become yxyx: (y, x, y + h, x + w), summed in float64 and rounded to float32.

    Raises:
      CacheError: naming the file, the record index and the problem: malformed JSON, not a
        list, a missing key, a wrong type, an unknown image_id or category_id, a non-finite or
        out-of-range score, a non-finite bbox, one with negative width or height, or one
        beyond the float32 range of the cache's boxes.
    """
    floor = _score_floor(score_floor)
    floor32 = np.float32(floor)
    info = _load_annotations(annotations)
    records, where = _load_json(detections, "detections")
    if not isinstance(records, list):
        raise CacheError(f"{where}: detections must be a JSON list of records, got {type(records).__name__}")
    class_of = {category_id: c for c, category_id in enumerate(info.category_ids)}
    images: dict[int, _ImageRows] = {image_id: _ImageRows() for image_id in info.image_ids}
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise CacheError(f"{where}: record {i} is not an object: {record!r}")
        for key in _DETECTION_KEYS:
            if key not in record:
                raise CacheError(f"{where}: record {i} lacks {key!r}")
        image_id, category_id, bbox, score = (record[key] for key in _DETECTION_KEYS)
        if not _strict_int(image_id):
            raise CacheError(f"{where}: record {i}: image_id must be an integer, got {image_id!r}")
        if not _strict_int(category_id):
            raise CacheError(f"{where}: record {i}: category_id must be an integer, got {category_id!r}")
        if not _is_real(score):
            raise CacheError(f"{where}: record {i}: score must be a number, got {score!r}")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_real(v) for v in bbox)):
            raise CacheError(f"{where}: record {i}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
        if image_id not in images:
            raise CacheError(f"{where}: record {i}: image_id {image_id} is not in the annotations ({info.where})")
        if category_id not in class_of:
            raise CacheError(f"{where}: record {i}: category_id {category_id} is not in the annotations ({info.where})")
        if isinstance(score, float) and not math.isfinite(score):
            raise CacheError(f"{where}: record {i}: score {score!r} is not finite")
        if not 0.0 <= score <= 1.0:  # exact for ints of any size: no float conversion
            raise CacheError(f"{where}: record {i}: score {_brief(score)} is outside [0, 1]")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except OverflowError:  # an int beyond float64
            raise CacheError(f"{where}: record {i}: bbox {_brief(bbox)} is not finite") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise CacheError(f"{where}: record {i}: bbox {bbox!r} is not finite")
        if w < 0 or h < 0:
            raise CacheError(f"{where}: record {i}: bbox {bbox!r} has negative width or height")
        if max(abs(x), abs(y), abs(x + w), abs(y + h)) > _FLOAT32_MAX:
            # Boxes are stored as float32: such a box would become inf there.
            raise CacheError(f"{where}: record {i}: bbox {bbox!r} lies beyond the float32 range")
        if np.float32(score) < floor32:
            continue
        images[image_id].add((x, y, w, h), class_of[category_id], score)

    meta = CacheMeta(
        version=CACHE_VERSION,
        kind=CacheKind.ONE_STAGE,
        image_ids=info.image_ids,
        image_sizes=tuple(info.sizes[i] for i in info.image_ids),
        category_ids=info.category_ids,
        score_floor=floor,
        top_k=top_k,
        category_names=info.category_names,
        source={"importer": "import_coco_detections", **({} if source is None else dict(source))},
    )
    boxes: list[tuple[float, float, float, float]] = []
    entry_row: list[int] = []
    entry_class: list[int] = []
    entry_score: list[float] = []
    row_offsets = [0]
    entry_offsets = [0]
    for image_id in info.image_ids:
        rows = images[image_id]
        base = len(boxes)
        boxes.extend(rows.boxes)
        for row, entries in enumerate(rows.entries):
            for category, score in sorted(entries.items()):
                entry_row.append(base + row)
                entry_class.append(category)
                entry_score.append(score)
        row_offsets.append(len(boxes))
        entry_offsets.append(len(entry_row))
    xywh = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    yxyx = np.stack(
        [xywh[:, 1], xywh[:, 0], xywh[:, 1] + xywh[:, 3], xywh[:, 0] + xywh[:, 2]], axis=1
    ).astype(np.float32)
    try:
        return DetectionCache.from_arrays(
            meta,
            row_offsets=np.asarray(row_offsets, dtype=np.int64),
            row_boxes=yxyx,
            entry_offsets=np.asarray(entry_offsets, dtype=np.int64),
            entry_row=np.asarray(entry_row, dtype=np.int32),
            entry_class=np.asarray(entry_class, dtype=np.int32),
            entry_score=np.asarray(entry_score, dtype=np.float32),
        )
    except CacheError as error:
        raise CacheError(f"{where}: {error}") from None


class _ImageRows:
    """Rows of one image during import: equal bboxes share a row while their classes differ."""

    def __init__(self) -> None:
        self.boxes: list[tuple[float, float, float, float]] = []
        self.entries: list[dict[int, float]] = []
        self._rows_of: dict[tuple[float, float, float, float], list[int]] = {}

    def add(self, box: tuple[float, float, float, float], category: int, score: float) -> None:
        rows = self._rows_of.setdefault(box, [])
        for row in rows:
            if category not in self.entries[row]:
                self.entries[row][category] = score
                return
        rows.append(len(self.boxes))
        self.boxes.append(box)
        self.entries.append({category: score})


_TWO_STAGE_REQUIRED = (
    "image_ids",
    "proposal_offsets",
    "proposals",
    "objectness",
    "class_scores",
    "class_boxes",
    "category_ids",
)
_TWO_STAGE_OPTIONAL = ("proposal_level",)


def import_two_stage_npz(
    path: str | os.PathLike,
    annotations: Any,
    score_floor: float = 0.0,
    *,
    top_k: int | None = None,
    num_proposals: int | None = DEFAULT_NUM_PROPOSALS,
    source: Mapping[str, Any] | None = None,
) -> DetectionCache:
    """Two-stage cache from an NPZ of RPN proposals and second-stage outputs.

    The NPZ holds exactly these arrays (N images, R proposals in all, C model classes):

    - ``image_ids`` int ``[N]``: COCO image ids, unique, all in ``annotations``; cache order.
    - ``proposal_offsets`` int ``[N + 1]``: proposals of image i are
      ``proposal_offsets[i]:proposal_offsets[i + 1]``; starts at 0, ends at R.
    - ``proposals`` float ``[R, 4]``: yxyx absolute pixels, RPN proposals before first-stage NMS.
    - ``objectness`` float ``[R]`` in [0, 1] (sigmoid of the RPN logit).
    - ``proposal_level`` int ``[R]`` >= 0 (optional): FPN level of each proposal.
    - ``class_scores`` float ``[R, C]`` in [0, 1]: second-stage scores, background dropped.
    - ``class_boxes`` float ``[R, C, 4]`` yxyx: second-stage per-class boxes.
    - ``category_ids`` int ``[C]``: COCO category id of each column; all in ``annotations``.

    Every proposal becomes a row (also when none of its scores reaches the floor: it still
    takes part in first-stage NMS); every ``class_scores[r, c] >= score_floor`` (float32)
    becomes an entry with box ``class_boxes[r, c]``. The cache's categories are all annotation
    categories sorted by id (columns are mapped onto them); its images are ``image_ids`` in
    NPZ order, with sizes from the annotations.

    Args:
      path: the ``.npz`` file.
      annotations: COCO instances JSON path, dict, or pycocotools ``COCO``.
      score_floor: second-stage score floor in [0, 1].
      top_k: per-image proposal cap used when recording (checked), or None.
      num_proposals: proposals the model keeps after first-stage NMS at inference.
      source: provenance for `CacheMeta.source`.

    Raises:
      CacheError: naming the file, the array and the first bad index.
    """
    where = str(path)
    # A damaged archive surfaces as any of these, depending on where the damage is.
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        loaded = np.load(path, allow_pickle=False)
    except unreadable as error:
        raise CacheError(f"{where}: cannot read NPZ: {type(error).__name__}: {error}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CacheError(f"{where}: is a single .npy array, not an NPZ archive of named arrays")
    with loaded:
        try:
            arrays = {name: loaded[name] for name in loaded.files}
        except unreadable as error:
            raise CacheError(f"{where}: cannot read NPZ: {type(error).__name__}: {error}") from None
    return _import_two_stage(
        arrays, where, annotations, score_floor, top_k, num_proposals, source, "import_two_stage_npz"
    )


def import_two_stage_json(
    path: Any,
    annotations: Any,
    score_floor: float = 0.0,
    *,
    top_k: int | None = None,
    num_proposals: int | None = DEFAULT_NUM_PROPOSALS,
    source: Mapping[str, Any] | None = None,
) -> DetectionCache:
    """Two-stage cache from a JSON object with the same fields as `import_two_stage_npz`'s NPZ.

    ``path`` is a JSON file path or a loaded dict; each field is a (nested) list of numbers with
    the NPZ array's shape. Convenient for small sets; use the NPZ (or `CacheWriter`) for large
    ones.
    """
    document, where = _load_json(path, "two-stage predictions")
    if not isinstance(document, Mapping):
        raise CacheError(f"{where}: must hold a JSON object, got {type(document).__name__}")
    arrays = {}
    for name, value in document.items():
        try:
            arrays[name] = np.asarray(value)
        except (ValueError, TypeError) as error:
            raise CacheError(f"{where}: {name} is not a rectangular array of numbers: {error}") from None
    return _import_two_stage(
        arrays, where, annotations, score_floor, top_k, num_proposals, source, "import_two_stage_json"
    )


def _two_stage_array(where: str, arrays: Mapping[str, np.ndarray], name: str, kind: str, ndim: int) -> np.ndarray:
    array = arrays[name]
    if array.ndim != ndim:
        raise CacheError(f"{where}: {name} must have {ndim} dimension(s), got shape {array.shape}")
    allowed = "iu" if kind == "int" else "iuf"
    if array.dtype.kind not in allowed and not (array.size == 0 and array.dtype.kind in "iuf"):
        wanted = "integers" if kind == "int" else "numbers"
        raise CacheError(f"{where}: {name} must hold {wanted}, got dtype {array.dtype}")
    return array


def _import_two_stage(
    arrays: Mapping[str, np.ndarray],
    where: str,
    annotations: Any,
    score_floor: float,
    top_k: int | None,
    num_proposals: int | None,
    source: Mapping[str, Any] | None,
    importer: str,
) -> DetectionCache:
    floor = _score_floor(score_floor)
    info = _load_annotations(annotations)
    missing = [name for name in _TWO_STAGE_REQUIRED if name not in arrays]
    unknown = sorted(set(arrays) - set(_TWO_STAGE_REQUIRED) - set(_TWO_STAGE_OPTIONAL))
    if missing:
        raise CacheError(f"{where}: missing array(s) {missing}")
    if unknown:
        raise CacheError(
            f"{where}: unknown array(s) {unknown} (expected {list(_TWO_STAGE_REQUIRED)} and optionally "
            f"{list(_TWO_STAGE_OPTIONAL)})"
        )
    image_ids = _two_stage_array(where, arrays, "image_ids", "int", 1)
    offsets = _two_stage_array(where, arrays, "proposal_offsets", "int", 1).astype(np.int64)
    proposals = _two_stage_array(where, arrays, "proposals", "real", 2)
    objectness = _two_stage_array(where, arrays, "objectness", "real", 1)
    class_scores = _two_stage_array(where, arrays, "class_scores", "real", 2)
    class_boxes = _two_stage_array(where, arrays, "class_boxes", "real", 3)
    category_ids = _two_stage_array(where, arrays, "category_ids", "int", 1)
    level = _two_stage_array(where, arrays, "proposal_level", "int", 1) if "proposal_level" in arrays else None
    num_images, num_categories = image_ids.shape[0], category_ids.shape[0]
    num_rows = proposals.shape[0]
    expected = {
        "proposal_offsets": (num_images + 1,),
        "proposals": (num_rows, 4),
        "objectness": (num_rows,),
        "class_scores": (num_rows, num_categories),
        "class_boxes": (num_rows, num_categories, 4),
    }
    if level is not None:
        expected["proposal_level"] = (num_rows,)
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise CacheError(
                f"{where}: {name} has shape {arrays[name].shape}, expected {shape} "
                f"(N={num_images}, R={num_rows}, C={num_categories})"
            )
    try:
        ids = _unique_ints(image_ids.tolist(), "image_ids")
        columns = _unique_ints(category_ids.tolist(), "category_ids")
    except CacheError as error:
        raise CacheError(f"{where}: {error}") from None
    _check_offsets(where, "proposal_offsets", offsets, num_rows, "proposals")
    for i, image_id in enumerate(ids):
        if image_id not in info.sizes:
            raise CacheError(f"{where}: image_ids[{i}] = {image_id} is not in the annotations ({info.where})")
    class_of = {category_id: c for c, category_id in enumerate(info.category_ids)}
    for c, category_id in enumerate(columns):
        if category_id not in class_of:
            raise CacheError(f"{where}: category_ids[{c}] = {category_id} is not in the annotations ({info.where})")
    proposals = proposals.astype(np.float32)
    objectness = objectness.astype(np.float32)
    class_scores = class_scores.astype(np.float32)
    class_boxes = class_boxes.astype(np.float32)
    bad_box = _find_bad_box(proposals)
    if bad_box is not None:
        i, box, reason = bad_box
        raise CacheError(f"{where}: proposals[{i}] = {box} (ymin, xmin, ymax, xmax) {reason}")
    bad_value = _find_bad_probability(objectness, np.float32(0), "0")
    if bad_value is not None:
        i, value, reason = bad_value
        raise CacheError(f"{where}: objectness[{i}] = {value!r} {reason}")
    if level is not None:
        i = _find_out_of_range(level, 0, _INT32_MAX + 1)
        if i is not None:
            raise CacheError(f"{where}: proposal_level[{i}] = {level[i]} is negative or too large")
    bad_value = _find_bad_probability(class_scores.reshape(-1), np.float32(0), "0")
    if bad_value is not None:
        i, value, reason = bad_value
        r, c = divmod(i, max(num_categories, 1))
        raise CacheError(f"{where}: class_scores[{r}, {c}] = {value!r} {reason}")
    bad_box = _find_bad_box(class_boxes.reshape(-1, 4))
    if bad_box is not None:
        i, box, reason = bad_box
        r, c = divmod(i, max(num_categories, 1))
        raise CacheError(f"{where}: class_boxes[{r}, {c}] = {box} (ymin, xmin, ymax, xmax) {reason}")

    rows, columns_of_entries = np.nonzero(class_scores >= np.float32(floor))
    column_class = np.asarray([class_of[c] for c in columns], dtype=np.int32)
    entry_class = column_class[columns_of_entries] if columns_of_entries.size else np.zeros(0, np.int32)
    order = np.lexsort((entry_class, rows))
    rows, columns_of_entries, entry_class = rows[order], columns_of_entries[order], entry_class[order]
    meta = CacheMeta(
        version=CACHE_VERSION,
        kind=CacheKind.TWO_STAGE,
        image_ids=ids,
        image_sizes=tuple(info.sizes[i] for i in ids),
        category_ids=info.category_ids,
        score_floor=floor,
        top_k=top_k,
        num_proposals=num_proposals,
        category_names=info.category_names,
        source={"importer": importer, **({} if source is None else dict(source))},
    )
    try:
        return DetectionCache.from_arrays(
            meta,
            row_offsets=offsets,
            row_boxes=proposals,
            row_objectness=objectness,
            row_level=level,
            entry_offsets=np.searchsorted(rows, offsets, side="left").astype(np.int64),
            entry_row=rows.astype(np.int32),
            entry_class=entry_class,
            entry_score=class_scores[rows, columns_of_entries],
            entry_boxes=class_boxes[rows, columns_of_entries],
        )
    except CacheError as error:
        raise CacheError(f"{where}: {error}") from None
