"""`DetectionCache`: a cache's arrays, validated once, when the cache is made.

Two ways in, one set of checks:

- a whole cache (`DetectionCache(...)`, `DetectionCache.from_arrays`, `read_cache`, the
  importers): `validate_cache` runs once, at construction;
- one image at a time (`CacheBuilder`, `CacheWriter`): `ImageStream.prepare` runs the same
  row and entry checks on each image as it is added, so an error names the image; the
  stream's `ImageStream.cache` then assembles the arrays without checking them again (the
  offsets and the global entry order are the stream's own bookkeeping).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from detsearch.detection.cache.format import (
    ARRAY_NAMES,
    ARRAY_SPECS,
    ArraySpec,
    CacheError,
    CacheKind,
    CacheMeta,
    CacheSettings,
    Presence,
    spec_of,
)
from detsearch.detection.cache.values import (
    INT32_MAX,
    as_int,
    check_offsets,
    chunks,
    find_bad_box,
    find_bad_probability,
    find_out_of_range,
    image_size,
)

__all__ = ["DetectionCache", "ImageStream", "coerce_array", "image_range", "validate_cache"]

Label = Callable[[str], str]


def _same_name(name: str) -> str:
    return name


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
      entry_score: float32 or float64 ``[E]``, ``float32(score)`` in [float32(score_floor), 1]:
        float64 when the scores came so (a COCO results file); NMS compares them in float32,
        COCO matching orders them as they are.
      entry_boxes: float32 ``[E, 4]`` per-class second-stage box (two-stage); None for
        one-stage, where an entry's box is its row's box.
      row_xywh: float64 ``[R, 4]`` (one-stage, optional): the COCO ``[x, y, w, h]`` each row
        came from, which COCO matching uses as given; ``row_boxes`` is then its float32
        (y, x, y + h, x + w) (`yxyx_of_xywh`). None: matching uses ``row_boxes``.
      path: the directory `read_cache` read the whole cache from (the sweep's tasks read their
        images from it); None for a cache made in memory or a part of one.

    The constructor takes arrays of the exact dtypes and validates them (`validate_cache`);
    `from_arrays` converts array-likes first. `CacheBuilder`, the importers and `read_cache`
    also give validated caches: every `DetectionCache` satisfies the format's invariants.

    Raises:
      CacheError: on construction, naming the first violated invariant.
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
    row_xywh: np.ndarray | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        validate_cache(self, "DetectionCache")

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
        row_xywh: Any = None,
        where: str = "DetectionCache",
        array_names: Mapping[str, str] | None = None,
    ) -> DetectionCache:
        """Builds and validates a cache from array-likes.

        Integer arrays are converted to their dtype only when every value fits; real arrays are
        rounded to float32, except float64 ``entry_score`` (kept) and ``row_xywh`` (float64). The result holds read-only views; the caller's arrays are not
        modified.

        Args:
          where: how error messages name the cache (a path, say).
          array_names: how error messages name the arrays, by format name (an importer names
            them as its input file does, e.g. ``{"row_boxes": "proposals"}``); others keep
            their format names.

        Raises:
          TypeError: ``meta`` is not a `CacheMeta`.
          CacheError: an array has the wrong kind of values or breaks an invariant (see
            `validate_cache`).
        """
        if not isinstance(meta, CacheMeta):
            raise TypeError(f"meta must be a CacheMeta, got {type(meta).__name__}")
        label: Label = _same_name if array_names is None else (lambda name: array_names.get(name, name))
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
            row_xywh=row_xywh,
        )
        arrays = {name: coerce_array(where, label(name), value, spec_of(name)) for name, value in given.items()}
        cache = _assemble(meta, arrays)
        validate_cache(cache, where, label)
        return cache

    def validate(self) -> None:
        """Checks every invariant again (see `validate_cache`); construction already did."""
        validate_cache(self, "DetectionCache")

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

    def images(self, start: int, stop: int) -> DetectionCache:
        """The cache of the images at positions ``start:stop``, in order (`image_range`; not
        checked again: a range of a valid cache is valid). All of them: this cache."""
        if (start, stop) == (0, self.num_images()):
            return self
        return image_range(self.meta, self.arrays(), start, stop, "DetectionCache", validate=False)

    def __repr__(self) -> str:
        return (
            f"DetectionCache(kind={str(self.meta.kind)!r}, images={self.num_images()}, "
            f"rows={self.num_rows()}, entries={self.num_entries()}, "
            f"categories={len(self.meta.category_ids)}, score_floor={self.meta.score_floor})"
        )


def _assemble(meta: CacheMeta, arrays: Mapping[str, np.ndarray | None]) -> DetectionCache:
    """A `DetectionCache` of already checked arrays, without running the constructor's checks."""
    cache = object.__new__(DetectionCache)
    object.__setattr__(cache, "meta", meta)
    object.__setattr__(cache, "path", None)
    for name in ARRAY_NAMES:
        object.__setattr__(cache, name, arrays.get(name))
    return cache


def image_range(meta: CacheMeta, arrays: Mapping[str, np.ndarray | None], start: int, stop: int,
                where: str, validate: bool = True) -> DetectionCache:
    """The cache of the images at positions ``start:stop`` of a cache's ``meta`` and ``arrays``,
    validated (that range only; ``validate`` False: ``arrays`` are a valid cache's). Its arrays
    are views of ``arrays`` (memory maps stay memory maps, read as they are used), except the
    rebased offsets and ``entry_row``.

    Raises:
      ValueError: not ``0 <= start < stop <= number of images``.
      CacheError: the range breaks an invariant of the format.
    """
    num_images = len(meta.image_ids)
    if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer)) and 0 <= start < stop <= num_images):
        raise ValueError(f"image range {start}:{stop} is not a non-empty range of the cache's {num_images} images")
    row_offsets = np.asarray(arrays["row_offsets"][start : stop + 1], np.int64)
    entry_offsets = np.asarray(arrays["entry_offsets"][start : stop + 1], np.int64)
    rows = slice(int(row_offsets[0]), int(row_offsets[-1]))
    entries = slice(int(entry_offsets[0]), int(entry_offsets[-1]))
    part: dict[str, Any] = {}
    for name in ARRAY_NAMES:
        array = arrays.get(name)
        if array is not None and spec_of(name).axis != "images":
            part[name] = array[rows if spec_of(name).axis == "rows" else entries]
    entry_row = arrays["entry_row"][entries]
    part.update(row_offsets=row_offsets - row_offsets[0], entry_offsets=entry_offsets - entry_offsets[0],
                entry_row=(entry_row - entry_row.dtype.type(row_offsets[0])) if row_offsets[0] else entry_row)
    sub_meta = meta.with_images(meta.image_ids[start:stop], meta.image_sizes[start:stop])
    if not validate:
        return _assemble(sub_meta, part)
    return DetectionCache.from_arrays(sub_meta, where=f"{where} images {start}:{stop}", **part)


def coerce_array(where: str, name: str, value: Any, spec: ArraySpec) -> np.ndarray | None:
    """``value`` as a read-only C-contiguous array of one of ``spec.dtypes`` (None stays None):
    kept in its dtype when the spec allows it (float64 scores stay float64), else converted to
    ``spec.dtype``. Integers are converted only when every value fits; reals are rounded to the
    float dtype.
    """
    if value is None:
        return None
    array = value if isinstance(value, np.ndarray) else np.asarray(value)  # keeps an np.memmap one
    if array.dtype.newbyteorder("<") in spec.dtypes and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if array.dtype not in spec.dtypes:
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


def _check_presence(where: str, kind: CacheKind, spec: ArraySpec, value: Any, label: Label) -> bool:
    """Whether the array is there; raises when a required one is missing or an absent one given."""
    presence = spec.presence(kind)
    if value is None:
        if presence is Presence.REQUIRED:
            raise CacheError(f"{where}: {label(spec.name)} is required in a {kind} cache")
        return False
    if presence is Presence.ABSENT:
        raise CacheError(f"{where}: {label(spec.name)} must be None in a {kind} cache")
    return True


def _check_shape(where: str, spec: ArraySpec, array: np.ndarray, label: Label) -> None:
    if array.ndim != 1 + len(spec.item_shape) or array.shape[1:] != spec.item_shape:
        raise CacheError(f"{where}: {label(spec.name)} has shape {array.shape}, expected {spec.shape_text()}")


def _check_row_values(where: str, arrays: Mapping[str, np.ndarray], label: Label) -> None:
    """Boxes finite and ordered, objectness in [0, 1], levels >= 0."""
    for name in ("row_boxes", "entry_boxes"):
        if name in arrays:
            bad_box = find_bad_box(arrays[name])
            if bad_box is not None:
                i, box, reason = bad_box
                raise CacheError(f"{where}: {label(name)}[{i}] = {box} (ymin, xmin, ymax, xmax) {reason}")
    if "row_xywh" in arrays:
        _check_row_xywh(where, arrays["row_boxes"], arrays["row_xywh"], label)
    if "row_objectness" in arrays:
        bad_value = find_bad_probability(arrays["row_objectness"], np.float32(0), "0")
        if bad_value is not None:
            i, value, reason = bad_value
            raise CacheError(f"{where}: {label('row_objectness')}[{i}] = {value!r} {reason}")
    if "row_level" in arrays:
        i = find_out_of_range(arrays["row_level"], 0, None)
        if i is not None:
            raise CacheError(f"{where}: {label('row_level')}[{i}] = {arrays['row_level'][i]} is negative")


def yxyx_of_xywh(xywh: np.ndarray) -> np.ndarray:
    """float32 ``[n, 4]`` (y, x, y + h, x + w) of COCO boxes: summed in float64, rounded once."""
    xywh = np.asarray(xywh, np.float64)
    x, y, w, h = xywh.T
    return np.stack([y, x, y + h, x + w], axis=1).astype(np.float32)


def _check_row_xywh(where: str, row_boxes: np.ndarray, row_xywh: np.ndarray, label: Label) -> None:
    """``row_xywh`` finite with w, h >= 0, and ``row_boxes`` its float32 yxyx (`yxyx_of_xywh`)."""
    for start, stop in chunks(row_xywh.shape[0]):
        xywh = np.asarray(row_xywh[start:stop])
        bad = ~np.isfinite(xywh).all(axis=1) | (xywh[:, 2] < 0) | (xywh[:, 3] < 0)
        bad |= (yxyx_of_xywh(xywh) != np.asarray(row_boxes[start:stop])).any(axis=1)
        if bad.any():
            i = start + int(np.flatnonzero(bad)[0])
            raise CacheError(
                f"{where}: {label('row_xywh')}[{i}] = {[float(v) for v in row_xywh[i]]} must be finite with w, h >= 0, "
                f"and {label('row_boxes')}[{i}] its (y, x, y + h, x + w) in float32"
            )


def _check_entry_values(where: str, arrays: Mapping[str, np.ndarray], meta: CacheMeta | CacheSettings,
                        label: Label) -> None:
    """Class indices in [0, num_categories), scores in [float32(score_floor), 1]."""
    entry_class = arrays["entry_class"]
    num_categories = len(meta.category_ids)
    i = find_out_of_range(entry_class, 0, num_categories)
    if i is not None:
        raise CacheError(
            f"{where}: {label('entry_class')}[{i}] = {entry_class[i]} is outside [0, {num_categories}) "
            f"(the cache has {num_categories} categories)"
        )
    bad_value = find_bad_probability(
        arrays["entry_score"], np.float32(meta.score_floor), f"score_floor {meta.score_floor}"
    )
    if bad_value is not None:
        i, value, reason = bad_value
        raise CacheError(f"{where}: {label('entry_score')}[{i}] = {value!r} {reason}")


def validate_cache(cache: DetectionCache, where: str, label: Label = _same_name) -> None:
    """Checks every invariant of the format; raises `CacheError` naming the first violation.

    Checked: presence of each array for the cache kind, dtypes (little-endian), shapes;
    offsets start at 0, never decrease and end at the array length; rows per image <=
    ``top_k``; boxes finite with ymin <= ymax and xmin <= xmax; objectness finite in [0, 1];
    levels >= 0; entries sorted by (entry_row, entry_class) without repeats, each entry_row
    within its image's rows; class indices in [0, num_categories); scores finite in
    [float32(score_floor), 1]. Image id uniqueness and the meta fields are checked when the
    `CacheMeta` is created.
    """
    meta = cache.meta
    if not isinstance(meta, CacheMeta):
        raise CacheError(f"{where}: meta must be a CacheMeta, got {type(meta).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for spec in ARRAY_SPECS:
        array = getattr(cache, spec.name)
        if not _check_presence(where, meta.kind, spec, array, label):
            continue
        name = label(spec.name)
        if not isinstance(array, np.ndarray):
            raise CacheError(f"{where}: {name} must be a numpy array, got {type(array).__name__}")
        if array.dtype not in spec.dtypes:
            expected = " or ".join(dtype.str for dtype in spec.dtypes)
            raise CacheError(f"{where}: {name} has dtype {array.dtype.str}, expected {expected}")
        _check_shape(where, spec, array, label)
        arrays[spec.name] = array
    num_images = len(meta.image_ids)
    num_rows = arrays["row_boxes"].shape[0]
    num_entries = arrays["entry_row"].shape[0]
    lengths = {"images": num_images + 1, "rows": num_rows, "entries": num_entries}
    meaning = {"images": "num_images + 1", "rows": f"rows in {label('row_boxes')}",
               "entries": f"entries in {label('entry_row')}"}
    for name, array in arrays.items():
        axis = spec_of(name).axis
        if array.shape[0] != lengths[axis]:
            raise CacheError(
                f"{where}: {label(name)} has {array.shape[0]} elements, expected {lengths[axis]} ({meaning[axis]})"
            )
    row_offsets = check_offsets(where, label("row_offsets"), arrays["row_offsets"], num_rows, label("row_boxes"))
    entry_offsets = check_offsets(where, label("entry_offsets"), arrays["entry_offsets"], num_entries,
                                  label("entry_row"))
    if meta.top_k is not None:
        over = np.flatnonzero(np.diff(row_offsets) > meta.top_k)
        if over.size:
            i = int(over[0])
            raise CacheError(
                f"{where}: image {i} (id {meta.image_ids[i]}) has {row_offsets[i + 1] - row_offsets[i]} rows, "
                f"more than meta.top_k = {meta.top_k}"
            )
    _check_row_values(where, arrays, label)
    _check_entry_values(where, arrays, meta, label)
    _check_entry_order(where, meta, row_offsets, entry_offsets, arrays, label)


def _check_entry_order(
    where: str, meta: CacheMeta, row_offsets: np.ndarray, entry_offsets: np.ndarray,
    arrays: dict[str, np.ndarray], label: Label,
) -> None:
    """Entries sorted by (row, class) without repeats, each within its image's rows."""
    entry_row, entry_class = arrays["entry_row"], arrays["entry_class"]
    # One linear pass, carried across chunk borders.
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for start, stop in chunks(entry_row.shape[0]):
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
                f"{where}: {label('entry_row')}[{int(starts[image]) + j}] = {rows[j]} is outside the rows of "
                f"image {image} (id {meta.image_ids[image]}): [{low}, {high})"
            )


_PER_IMAGE = ("row_boxes", "row_objectness", "row_level", "entry_row", "entry_class", "entry_score", "entry_boxes")


class ImageStream:
    """A cache built one image at a time: checks each image, sorts its entries, keeps the offsets.

    Shared by `CacheBuilder` (in memory) and `CacheWriter` (to disk). `prepare` checks an
    image without recording it (so a bad image leaves the stream as it was); `record` then
    counts it.
    """

    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self.floor32 = np.float32(settings.score_floor)
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
        """The arrays of this cache, in format order."""
        kind = self.settings.kind
        return tuple(
            spec.name
            for spec in ARRAY_SPECS
            if spec.presence(kind) is Presence.REQUIRED or (spec.name == "row_level" and self.has_level)
        )

    def meta(self) -> CacheMeta:
        return self.settings.meta(self.image_ids, self.image_sizes)

    def prepare(self, image_id: Any, size: Any, **given: Any) -> tuple[int, tuple[int, int], dict[str, np.ndarray]]:
        """Returns (image_id, size, arrays) with entry_row made global; nothing is recorded yet.

        ``given`` holds the per-image arrays by name (row_boxes, entry_row, entry_class,
        entry_score, entry_boxes, row_objectness, row_level); see `CacheBuilder.add_image`.
        """
        image_id = as_int(image_id, "image_id")
        where = f"image_id {image_id}"
        if image_id in self.seen:
            raise CacheError(f"{where} was already added")
        size = image_size(size, f"{where}: size")
        kind = self.settings.kind
        arrays: dict[str, np.ndarray] = {}
        for name in _PER_IMAGE:
            spec, value = spec_of(name), given.get(name)
            if not _check_presence(where, kind, spec, value, _same_name):
                continue
            # Images streamed one at a time hold a model's outputs: the default dtypes.
            array = coerce_array(where, name, value, spec).astype(spec.dtype, copy=False)
            _check_shape(where, spec, array, _same_name)
            arrays[name] = array
        has_level = "row_level" in arrays
        if self.has_level is not None and has_level != self.has_level:
            state = "given" if self.has_level else "not given"
            raise CacheError(f"{where}: row_level must be given for all images or none; it was {state} before")
        num_rows = arrays["row_boxes"].shape[0]
        num_entries = arrays["entry_row"].shape[0]
        for name, array in arrays.items():
            expected = num_rows if spec_of(name).axis == "rows" else num_entries
            if array.shape[0] != expected:
                axis = "row_boxes" if spec_of(name).axis == "rows" else "entry_row"
                raise CacheError(f"{where}: {name} has {array.shape[0]} elements but {axis} has {expected}")
        top_k = self.settings.top_k
        if top_k is not None and num_rows > top_k:
            raise CacheError(f"{where}: {num_rows} rows, more than top_k = {top_k}")
        if self.num_rows + num_rows > INT32_MAX:
            raise CacheError(f"{where}: the cache would exceed {INT32_MAX} rows (entry_row is int32)")
        _check_row_values(where, arrays, _same_name)
        _check_entry_values(where, arrays, self.settings, _same_name)
        i = find_out_of_range(arrays["entry_row"], 0, num_rows)
        if i is not None:
            raise CacheError(
                f"{where}: entry_row[{i}] = {arrays['entry_row'][i]} is outside [0, {num_rows}) "
                f"(entry_row is local to the image here)"
            )
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

    def record(self, image_id: int, size: tuple[int, int], arrays: Mapping[str, np.ndarray]) -> None:
        """Counts an image that `prepare` accepted."""
        if self.has_level is None:
            self.has_level = "row_level" in arrays
        self.seen.add(image_id)
        self.image_ids.append(image_id)
        self.image_sizes.append(size)
        self.row_offsets.append(self.row_offsets[-1] + arrays["row_boxes"].shape[0])
        self.entry_offsets.append(self.entry_offsets[-1] + arrays["entry_row"].shape[0])

    def offsets(self) -> dict[str, np.ndarray]:
        """``row_offsets`` and ``entry_offsets`` of the images recorded so far."""
        return {
            "row_offsets": np.asarray(self.row_offsets, dtype="<i8"),
            "entry_offsets": np.asarray(self.entry_offsets, dtype="<i8"),
        }

    def cache(self, parts: Mapping[str, list[np.ndarray]]) -> DetectionCache:
        """The cache of the recorded images from their prepared arrays (``parts[name]``, one per
        image). Not checked again: every image was checked by `prepare`, and the offsets and
        the global entry order come from this stream."""
        arrays: dict[str, np.ndarray] = dict(self.offsets())
        for name in self.names():
            if name in arrays:
                continue
            spec = spec_of(name)
            chunks_of_name = parts.get(name) or []
            array = np.concatenate(chunks_of_name) if chunks_of_name else np.zeros((0, *spec.item_shape), spec.dtype)
            arrays[name] = array
        for array in arrays.values():
            array.flags.writeable = False
        return _assemble(self.meta(), arrays)
