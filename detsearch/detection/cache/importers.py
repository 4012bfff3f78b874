"""Importers: caches from predictions saved in other formats, checked where they enter.

- `import_coco_detections`: one-stage, from raw (pre-NMS) candidates in COCO results JSON;
- `import_two_stage_npz` / `import_two_stage_json`: two-stage, from RPN proposals and
  second-stage outputs.

The user's file is checked here, record by record or array by array, and each error names the
file, the record or array index and what is wrong; the annotations are read through
`detsearch.detection.coco`. The cache the importer makes is then validated once, when it is
constructed (`DetectionCache.from_arrays`), with the errors naming the file's arrays.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from detsearch.detection.cache.arrays import DetectionCache, yxyx_of_xywh
from detsearch.detection.cache.format import DEFAULT_NUM_PROPOSALS, CacheError, CacheKind, CacheSettings
from detsearch.detection.cache.values import (
    find_bad_box,
    find_bad_probability,
    probability,
    unique_ints,
)
from detsearch.detection.results import ResultsError, read_results
from detsearch.detection.coco import (
    coco_document,
    parse_categories,
    parse_images,
    read_json,
    require_sizes,
)

__all__ = ["import_coco_detections", "import_two_stage_json", "import_two_stage_npz"]

def _load_json(source: Any, what: str) -> tuple[Any, str]:
    """Returns (document, where): ``source`` is a path or an already loaded document."""
    if isinstance(source, (str, os.PathLike)):
        try:
            return read_json(source, what), str(source)
        except ValueError as error:
            raise CacheError(str(error)) from None
    return source, f"<{what}>"


@dataclass(frozen=True)
class _Annotations:
    where: str
    image_ids: tuple[int, ...]  # sorted, as COCOeval orders them
    sizes: dict[int, tuple[int, int]]
    category_ids: tuple[int, ...]  # sorted, as COCOeval orders them
    category_names: tuple[str, ...]


def _load_annotations(annotations: Any) -> _Annotations:
    """The images (with their sizes, which a cache needs) and categories of COCO annotations."""
    try:
        document, where = coco_document(annotations, "annotations")
        images = parse_images(document, where)
        require_sizes(images, where, "a detection cache")
        categories = parse_categories(document, where)
    except ValueError as error:
        raise CacheError(str(error)) from None
    sizes = {image.id: (image.height, image.width) for image in images}
    names = {category.id: category.name for category in categories}
    category_ids = tuple(sorted(names))
    return _Annotations(
        where=where,
        image_ids=tuple(sorted(sizes)),
        sizes=sizes,
        category_ids=category_ids,
        category_names=tuple(names[c] for c in category_ids),
    )


def _settings(kind: CacheKind, info: _Annotations, floor: float, top_k: Any, num_proposals: Any,
              source: Mapping[str, Any] | None, importer: str) -> CacheSettings:
    return CacheSettings(
        kind=kind,
        category_ids=info.category_ids,
        score_floor=floor,
        top_k=top_k,
        num_proposals=num_proposals,
        category_names=info.category_names,
        source={"importer": importer, **({} if source is None else dict(source))},
    )


def import_coco_detections(
    detections: Any,
    annotations: Any,
    score_floor: float = 0.0,
    *,
    top_k: int | None = None,
    source: Mapping[str, Any] | None = None,
) -> DetectionCache:
    """One-stage cache from raw (pre-NMS) candidates in COCO results format, exact as given.

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
      annotation categories sorted by id. Every record is one row with one entry, an image's
      rows in file order, so equal scores tie in file order as in pycocotools. The file's
      values are kept: ``entry_score`` float64 and ``row_xywh`` float64 (the bbox as given, for
      COCO matching); ``row_boxes`` is its float32 (y, x, y + h, x + w), summed in float64 and
      rounded once, for NMS.

    Raises:
      CacheError: naming the file, the record index and the problem: malformed JSON, not a
        list, a missing key, a wrong type, an unknown image_id or category_id, a non-finite or
        out-of-range score, a non-finite bbox, one with negative width or height, or one
        beyond the float32 range of NMS.
    """
    floor = probability(score_floor)
    info = _load_annotations(annotations)
    if isinstance(detections, (str, os.PathLike)) or isinstance(detections, list):
        try:
            columns = read_results(detections, image_ids=info.image_ids, category_ids=info.category_ids,
                                   annotations_where=info.where)
        except ResultsError as error:
            raise CacheError(str(error)) from None
    else:
        raise CacheError(f"<detections>: detections must be a JSON list of records, got {type(detections).__name__}")
    keep = np.flatnonzero(columns.score.astype(np.float32) >= np.float32(floor))
    image_pos = np.searchsorted(np.asarray(info.image_ids, np.int64), columns.image_id[keep])
    order = keep[np.argsort(image_pos, kind="stable")]  # by image, file order within an image
    counts = np.bincount(image_pos, minlength=len(info.image_ids))
    offsets = np.zeros(len(info.image_ids) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    xywh = columns.bbox[order]
    meta = _settings(CacheKind.ONE_STAGE, info, floor, top_k, None, source, "import_coco_detections").meta(
        info.image_ids, tuple(info.sizes[i] for i in info.image_ids)
    )
    return DetectionCache.from_arrays(
        meta,
        where=columns.where,
        row_offsets=offsets,
        row_boxes=yxyx_of_xywh(xywh),
        row_xywh=xywh,
        entry_offsets=offsets,
        entry_row=np.arange(len(order), dtype=np.int32),
        entry_class=np.searchsorted(np.asarray(info.category_ids, np.int64), columns.category_id[order]).astype(np.int32),
        entry_score=columns.score[order],
    )


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
_TWO_STAGE_NAMES = {
    "row_offsets": "proposal_offsets",
    "row_boxes": "proposals",
    "row_objectness": "objectness",
    "row_level": "proposal_level",
}
"""The file's names of the cache arrays it gives as they are (for error messages)."""


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
    floor = probability(score_floor)
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
        ids = unique_ints(image_ids.tolist(), "image_ids")
        columns = unique_ints(category_ids.tolist(), "category_ids")
    except CacheError as error:
        raise CacheError(f"{where}: {error}") from None
    for i, image_id in enumerate(ids):
        if image_id not in info.sizes:
            raise CacheError(f"{where}: image_ids[{i}] = {image_id} is not in the annotations ({info.where})")
    class_of = {category_id: c for c, category_id in enumerate(info.category_ids)}
    for c, category_id in enumerate(columns):
        if category_id not in class_of:
            raise CacheError(f"{where}: category_ids[{c}] = {category_id} is not in the annotations ({info.where})")
    proposals = proposals.astype(np.float32)
    objectness = objectness.astype(np.float32)
    # Second-stage scores and boxes keep the precision given (float64 stays float64): they are
    # what COCO matching sees. Proposals and objectness only feed the first stage's float32 NMS.
    exact = np.float64 if class_scores.dtype == np.float64 or class_boxes.dtype == np.float64 else np.float32
    class_scores = class_scores.astype(exact)
    class_boxes = class_boxes.astype(exact)
    bad_value = find_bad_probability(class_scores.reshape(-1), np.float32(0), "0")
    if bad_value is not None:
        i, value, reason = bad_value
        r, c = divmod(i, max(num_categories, 1))
        raise CacheError(f"{where}: class_scores[{r}, {c}] = {value!r} {reason}")
    bad_box = find_bad_box(class_boxes.reshape(-1, 4))
    if bad_box is not None:
        i, box, reason = bad_box
        r, c = divmod(i, max(num_categories, 1))
        raise CacheError(f"{where}: class_boxes[{r}, {c}] = {box} (ymin, xmin, ymax, xmax) {reason}")

    rows, columns_of_entries = np.nonzero(class_scores.astype(np.float32) >= np.float32(floor))
    column_class = np.asarray([class_of[c] for c in columns], dtype=np.int32)
    entry_class = column_class[columns_of_entries] if columns_of_entries.size else np.zeros(0, np.int32)
    order = np.lexsort((entry_class, rows))
    rows, columns_of_entries, entry_class = rows[order], columns_of_entries[order], entry_class[order]
    meta = _settings(CacheKind.TWO_STAGE, info, floor, top_k, num_proposals, source, importer).meta(
        ids, tuple(info.sizes[i] for i in ids)
    )
    # proposal_offsets, proposals, objectness and proposal_level become the rows as they are:
    # the cache's validation checks them, naming them as the file does.
    return DetectionCache.from_arrays(
        meta,
        where=where,
        array_names=_TWO_STAGE_NAMES,
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
