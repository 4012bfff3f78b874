"""`CacheBuilder`: a `DetectionCache` built in memory, one image at a time."""

from __future__ import annotations

from typing import Any

import numpy as np

from detsearch.detection.cache.arrays import DetectionCache, ImageStream
from detsearch.detection.cache.format import ARRAY_NAMES, CacheSettings

__all__ = ["ADD_IMAGE_DOC", "CacheBuilder"]

ADD_IMAGE_DOC = """
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
"""The ``Args``/``Raises`` of `CacheBuilder.add_image` and `CacheWriter.add_image`."""


class CacheBuilder:
    """Builds a `DetectionCache` in memory, one image at a time (the in-memory `CacheWriter`).

    Each image is checked when it is added; `build` assembles the checked images without
    checking them again.

    Args:
      settings: the `CacheSettings`; or, instead, their fields as keywords (``kind``,
        ``category_ids``, ``score_floor``, ``top_k``, ``num_proposals``, ``category_names``,
        ``source``, ``first_stage_iou_thresholds``, ``first_stage_min_score``).

    Raises:
      CacheError: a bad settings field. TypeError: both ``settings`` and keywords, or an
        unknown keyword.
    """

    def __init__(self, settings: CacheSettings | None = None, /, **fields: Any) -> None:
        self._stream = ImageStream(CacheSettings.resolve(settings, fields, "CacheBuilder"))
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in ARRAY_NAMES}

    @property
    def settings(self) -> CacheSettings:
        return self._stream.settings

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
            image_id, size, row_boxes=row_boxes, entry_row=entry_row, entry_class=entry_class,
            entry_score=entry_score, entry_boxes=entry_boxes, row_objectness=row_objectness, row_level=row_level,
        )
        self._stream.record(image_id, size, arrays)
        for name, array in arrays.items():
            self._parts[name].append(array)

    add_image.__doc__ = "Adds one image." + ADD_IMAGE_DOC

    def build(self) -> DetectionCache:
        """Returns the cache of the images added so far."""
        return self._stream.cache(self._parts)
