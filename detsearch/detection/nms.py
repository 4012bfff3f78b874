"""Greedy non-maximum suppression: a NumPy reference, TensorFlow-op paths and a batched fast path.

Semantics (the same for every implementation here, and measured against TensorFlow 2.20's
``tf.image.non_max_suppression_with_scores``, i.e. the ``NonMaxSuppressionV5`` CPU kernel,
which ``tf.image.combined_non_max_suppression`` shares except for ties, see below):

- Thresholds are compared in float32, as the kernels receive them: a candidate is kept only
  if ``score > float32(score_threshold)`` (a score equal to the threshold is dropped).
- A candidate is suppressed when its IoU with an already kept box of the same group is
  ``> float32(iou_threshold)`` (an IoU exactly equal to the threshold does not suppress).
- IoU is the kernel's float32 formula, bit for bit (`detsearch.detection.boxes.iou_yxyx`;
  boxes with zero area never suppress nor get suppressed).
- Candidates are visited by descending score; equal scores are visited lower index first
  (the kernel's priority queue). ``combined_non_max_suppression`` orders equal scores with
  ``std::sort`` and so leaves their order unspecified; it agrees with these functions on
  inputs without ties.
- Per-class NMS runs that greedy pass for each class independently (at most
  ``max_detections_per_class`` kept per class), then merges all kept boxes by descending
  score, equal scores by ascending index, and keeps the first ``max_total_detections``
  (defaults 100 and 100, as Model Garden's detection generator).
- Class-agnostic NMS (the first stage of Faster R-CNN) is one greedy pass over all boxes,
  optionally per FPN level, merged by descending score (ties by index) and cut to
  ``max_output_size`` (default 1000, Model Garden's ``num_proposals``).

Implementations:

- ``*_reference``: plain greedy loops, one image at a time (the tests' reference), defined in
  `detsearch.detection.reference_nms` with code of their own (IoU, visiting order, merge) and
  re-exported here;
- ``*_tf``: the same passes through ``tf.image.non_max_suppression_with_scores`` (on a GPU
  when TensorFlow has one);
- ``*_batched`` / `greedy_walk`: many images at once. Per-class NMS is a vectorized NumPy walk
  (all images advance one candidate per step; it stops an image at ``max_total_detections``
  kept, so it only looks at the top of each image's candidate list); class-agnostic NMS with
  its long walks (up to ``num_proposals`` kept) batches the TF op over padded groups.

The single-image functions return int64 indices into their inputs in output order
(descending score); the batched ones return indices and per-image offsets, `greedy_walk` a
kept mask.

TensorFlow is imported inside the functions that use it only, so importing this module (and
``detsearch.detection``) does not import TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np

from detsearch.checks import positive_int
from detsearch.detection.boxes import _ordered
from detsearch.detection.cache.format import DEFAULT_NUM_PROPOSALS
from detsearch.detection.reference_nms import (class_agnostic_nms_reference, nms_reference,
                                               per_class_nms_reference)

__all__ = [
    "DEFAULT_MAX_DETECTIONS_PER_CLASS",
    "DEFAULT_MAX_TOTAL_DETECTIONS",
    "class_agnostic_nms_batched",
    "class_agnostic_nms_reference",
    "class_agnostic_nms_tf",
    "compact_groups",
    "GreedyWalk",
    "WalkWorkspace",
    "greedy_walk",
    "nms_reference",
    "nms_tf",
    "per_class_nms_batched",
    "per_class_nms_reference",
    "per_class_nms_tf",
    "walk_data",
]

DEFAULT_MAX_DETECTIONS_PER_CLASS = 100
"""Model Garden ``DetectionGenerator.max_num_detections`` is applied per class and in total."""
DEFAULT_MAX_TOTAL_DETECTIONS = 100


# --------------------------------------------------------------------------------------------
# argument checks


def _check_thresholds(iou_threshold, score_threshold) -> tuple[np.float32, np.float32]:
    iou = float(iou_threshold)
    if not 0.0 <= iou <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    score = float(score_threshold)
    if math.isnan(score):
        raise ValueError(f"score_threshold must not be NaN, got {score_threshold!r}")
    return np.float32(iou), np.float32(score)


def _check_cap(name: str, value, default: int) -> int:
    return default if value is None else positive_int(value, name, minimum=0)


def _check_inputs(boxes, scores, classes=None):
    boxes = np.asarray(boxes, np.float32)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {boxes.shape}")
    scores = np.asarray(scores, np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"scores has {len(scores)} entries for {len(boxes)} boxes")
    if classes is None:
        return boxes, scores
    classes = np.asarray(classes).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f"classes has {len(classes)} entries for {len(boxes)} boxes")
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be integers, got dtype {classes.dtype}")
    return boxes, scores, classes.astype(np.int64, copy=False)


def _merge(indices: np.ndarray, scores: np.ndarray, limit: int) -> np.ndarray:
    """Sorts kept indices by descending score (ties ascending index) and keeps ``limit``."""
    indices = np.asarray(indices, np.int64)
    order = np.lexsort((indices, -scores[indices]))
    return indices[order][:limit]


def _class_agnostic(single_class_nms, boxes, scores, iou_threshold, score_threshold, max_output_size,
                    levels) -> np.ndarray:
    """Class-agnostic NMS with ``single_class_nms`` (the TF op), per level when ``levels`` is
    given, then the merge by descending score."""
    boxes, scores = _check_inputs(boxes, scores)
    limit = _check_cap("max_output_size", max_output_size, DEFAULT_NUM_PROPOSALS)
    if levels is None:
        return single_class_nms(boxes, scores, iou_threshold=iou_threshold, score_threshold=score_threshold,
                                max_output_size=limit)
    levels = np.asarray(levels).reshape(-1)
    if len(levels) != len(boxes):
        raise ValueError(f"levels has {len(levels)} entries for {len(boxes)} boxes")
    kept = []
    for value in np.unique(levels):
        members = np.flatnonzero(levels == value)
        selected = single_class_nms(boxes[members], scores[members], iou_threshold=iou_threshold,
                                    score_threshold=score_threshold, max_output_size=limit)
        kept.append(members[selected])
    return _merge(np.concatenate(kept) if kept else np.zeros(0, np.int64), scores, limit)


# --------------------------------------------------------------------------------------------
# TensorFlow ops


def nms_tf(boxes, scores, *, iou_threshold, score_threshold=-math.inf, max_output_size=None) -> np.ndarray:
    """`nms_reference` through ``tf.image.non_max_suppression_with_scores`` (hard NMS).

    Runs on the default TensorFlow device (a GPU when one is present). Same arguments and
    result as `nms_reference`.
    """
    import tensorflow as tf

    boxes, scores = _check_inputs(boxes, scores)
    iou_t, score_t = _check_thresholds(iou_threshold, score_threshold)
    limit = _check_cap("max_output_size", max_output_size, len(boxes))
    if len(boxes) == 0 or limit == 0:
        return np.zeros(0, np.int64)
    selected, _ = tf.image.non_max_suppression_with_scores(
        tf.constant(boxes),
        tf.constant(scores),
        max_output_size=limit,
        iou_threshold=float(iou_t),
        score_threshold=float(score_t),
        soft_nms_sigma=0.0,
    )
    return selected.numpy().astype(np.int64)


def per_class_nms_tf(
    boxes,
    scores,
    classes,
    *,
    iou_threshold,
    score_threshold=-math.inf,
    max_detections_per_class=DEFAULT_MAX_DETECTIONS_PER_CLASS,
    max_total_detections=DEFAULT_MAX_TOTAL_DETECTIONS,
) -> np.ndarray:
    """`per_class_nms_reference` with the per-class passes run by the TensorFlow op."""
    boxes, scores, classes = _check_inputs(boxes, scores, classes)
    per_class = _check_cap("max_detections_per_class", max_detections_per_class, DEFAULT_MAX_DETECTIONS_PER_CLASS)
    total = _check_cap("max_total_detections", max_total_detections, DEFAULT_MAX_TOTAL_DETECTIONS)
    kept = []
    for value in np.unique(classes):
        members = np.flatnonzero(classes == value)
        selected = nms_tf(
            boxes[members], scores[members], iou_threshold=iou_threshold, score_threshold=score_threshold, max_output_size=per_class
        )
        kept.append(members[selected])
    return _merge(np.concatenate(kept) if kept else np.zeros(0, np.int64), scores, total)


def class_agnostic_nms_tf(
    boxes,
    scores,
    *,
    iou_threshold,
    score_threshold=-math.inf,
    max_output_size=DEFAULT_NUM_PROPOSALS,
    levels=None,
) -> np.ndarray:
    """`class_agnostic_nms_reference` with the greedy passes run by the TensorFlow op."""
    return _class_agnostic(nms_tf, boxes, scores, iou_threshold, score_threshold, max_output_size, levels)


# --------------------------------------------------------------------------------------------
# batched fast path


def greedy_walk(boxes, groups, image_offsets, *, iou_threshold, max_per_group, max_per_image) -> np.ndarray:
    """Greedy NMS of many images at once, on candidates already in visiting order.

    This is the engine of `per_class_nms_batched` and of the threshold sweep. Within each
    image, candidates are visited in the given order; a candidate is kept unless its IoU with
    a kept candidate of the same group is ``> iou_threshold``, or its group already holds
    ``max_per_group`` kept candidates; an image stops at ``max_per_image`` kept. When the
    order is descending score with ties by index and a group is a class, this is exactly
    per-class NMS followed by the merge and total cap (the per-class passes only ever look at
    earlier candidates of their own class, and the merge order is the visiting order).

    All images advance one candidate per step, so the Python loop runs as many times as the
    longest walk (until an image has ``max_per_image`` kept or no candidates left), and each
    step is a handful of array operations over the active images against the kept boxes of
    the candidates' groups.

    Args:
      boxes: float32 ``[N, 4]`` yxyx, grouped by image (image ``i`` owns rows
        ``image_offsets[i]:image_offsets[i + 1]``) and in visiting order within an image.
      groups: ``[N]`` integer group (class) of each candidate; groups of different images
        never interact, whatever their values.
      image_offsets: int ``[num_images + 1]``, non-decreasing, from 0 to N.
      iou_threshold: suppression threshold (``>``), compared in float32.
      max_per_group: cap per (image, group).
      max_per_image: cap per image.

    Returns:
      bool ``[N]``: True for kept candidates. Kept candidates of an image, in row order, are
      that image's output in order.
    """
    return GreedyWalk(boxes, groups, image_offsets).run(
        iou_threshold=iou_threshold, max_per_group=max_per_group, max_per_image=max_per_image
    )


class GreedyWalk:
    """Candidates of many images prepared once for several `greedy_walk` passes (for example
    one per IoU threshold). Arguments as `greedy_walk`."""

    def __init__(self, boxes, groups, image_offsets):
        boxes = np.asarray(boxes, np.float32)
        offsets = np.asarray(image_offsets, np.int64)
        if len(boxes) == 0:
            self._set(np.zeros((5, 0), np.float32), np.zeros(0, np.int64), 0, offsets)
            return
        image_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        group_index, num_groups = compact_groups(image_of, np.asarray(groups, np.int64))
        self._set(walk_data(boxes), group_index, num_groups, offsets)

    @classmethod
    def prepared(cls, data: np.ndarray, group_index: np.ndarray, num_groups: int, image_offsets) -> "GreedyWalk":
        """A walk over candidates whose `walk_data` and dense group ids (``< num_groups``,
        never shared by two images) are already known."""
        walk = cls.__new__(cls)
        walk._set(data, np.asarray(group_index, np.int64), int(num_groups), np.asarray(image_offsets, np.int64))
        return walk

    def _set(self, data, group_index, num_groups, offsets) -> None:
        self.data = data
        self.group_index = group_index
        self.num_groups = num_groups
        self.offsets = offsets
        self.size = data.shape[1]
        self.num_images = len(offsets) - 1
        self.group_size = np.bincount(group_index, minlength=num_groups)

    def run(self, *, iou_threshold, max_per_group, max_per_image, workspace: "WalkWorkspace | None" = None) -> np.ndarray:
        """Kept mask for one threshold (see `greedy_walk`). A `WalkWorkspace` shared by runs
        saves re-allocating (and the OS re-zeroing) the kept-box storage each time."""
        kept = np.zeros(self.size, bool)
        if self.size == 0 or max_per_group <= 0 or max_per_image <= 0:
            return kept
        iou_t = np.float32(iou_threshold)
        group_index = self.group_index
        data = [self.data[k] for k in range(5)]
        # Kept boxes of a group live in a reserved block of `slots` (rows as in `data`), sized
        # by the most the group can keep: min(its candidates, max_per_group, max_per_image).
        # Only the first `group_count` entries of a block are ever read, so stale values from
        # an earlier run do no harm.
        capacity = np.minimum(self.group_size, min(max_per_group, max_per_image))
        base = np.zeros(self.num_groups, np.int64)
        np.cumsum(capacity[:-1], out=base[1:])
        slots = (workspace or WalkWorkspace()).slots(int(capacity.sum()))
        group_count = np.zeros(self.num_groups, np.int64)
        image_count = np.zeros(self.num_images, np.int64)
        starts, ends = self.offsets[:-1], self.offsets[1:]
        active = np.flatnonzero(ends > starts)
        position = starts[active].copy()
        end = ends[active]
        zero = np.float32(0.0)
        while active.size:
            group = group_index[position]
            count = group_count[group]
            keep = count < max_per_group
            check = np.flatnonzero(keep & (count > 0))
            if check.size:
                # Every (candidate, kept box of its group) pair, flat: no padding to the
                # largest group. c and s: (ymin, xmin, ymax, xmax, area) of the pairs.
                g = group[check]
                counts = count[check]
                seg_end = np.cumsum(counts)
                seg_start = seg_end - counts
                slot_index = np.repeat(base[g] - seg_start, counts) + np.arange(int(seg_end[-1]))
                candidate_index = np.repeat(position[check], counts)
                s = [row[slot_index] for row in slots]
                c = [row[candidate_index] for row in data]
                height = np.minimum(c[2], s[2])
                height -= np.maximum(c[0], s[0])
                np.maximum(height, zero, out=height)
                breadth = np.minimum(c[3], s[3])
                breadth -= np.maximum(c[1], s[1])
                np.maximum(breadth, zero, out=breadth)
                intersection = height * breadth
                union = c[4] + s[4]
                union -= intersection
                with np.errstate(divide="ignore", invalid="ignore"):
                    iou = intersection / union
                suppress = iou > iou_t
                suppress &= s[4] > zero
                suppress &= c[4] > zero
                keep[check[np.logical_or.reduceat(suppress, seg_start)]] = False
            chosen = np.flatnonzero(keep)
            if chosen.size:
                g = group[chosen]
                p = position[chosen]
                destination = base[g] + count[chosen]
                for row, source in zip(slots, data):
                    row[destination] = source[p]
                group_count[g] += 1
                image_count[active[chosen]] += 1
                kept[p] = True
            position += 1
            alive = (position < end) & (image_count[active] < max_per_image)
            if not alive.all():
                active, position, end = active[alive], position[alive], end[alive]
        return kept


class WalkWorkspace:
    """Reusable storage for `GreedyWalk.run` (one per thread of work)."""

    def __init__(self):
        self._rows: list[np.ndarray] = []

    def slots(self, size: int) -> list[np.ndarray]:
        """Five float32 rows of at least ``size`` elements (contents unspecified)."""
        if not self._rows or len(self._rows[0]) < size:
            self._rows = [np.empty(max(size, 1), np.float32) for _ in range(5)]
        return self._rows


def walk_data(boxes) -> np.ndarray:
    """float32 ``[5, N]``: rows ymin, xmin, ymax, xmax (ordered as the kernel orders them) and
    the kernel's area ``(ymax - ymin) * (xmax - xmin)``; contiguous rows keep `GreedyWalk`'s
    arithmetic on contiguous arrays."""
    ordered = _ordered(np.asarray(boxes, np.float32))
    data = np.empty((5, len(ordered)), np.float32)
    data[:4] = ordered.T
    data[4] = (data[2] - data[0]) * (data[3] - data[1])
    return data


def compact_groups(image_of: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ids for the (image, group) pairs that occur, and their number."""
    if len(groups) == 0:
        return np.zeros(0, np.int32), 0
    low = int(groups.min())
    span = int(groups.max()) - low + 1
    key = image_of * span + (groups - low)
    size = (int(image_of[-1]) + 1) * span
    if size <= max(1 << 22, len(key)):
        present = np.zeros(size, bool)
        present[key] = True
        ids = np.cumsum(present, dtype=np.int32) - 1
        return ids[key], int(present.sum())
    unique, inverse = np.unique(key, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def per_class_nms_batched(
    boxes,
    scores,
    classes,
    image_offsets,
    *,
    iou_threshold,
    score_threshold=-math.inf,
    max_detections_per_class=DEFAULT_MAX_DETECTIONS_PER_CLASS,
    max_total_detections=DEFAULT_MAX_TOTAL_DETECTIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """`per_class_nms_reference` for many images at once (vectorized NumPy, same result).

    Args:
      boxes, scores, classes: candidates of all images, concatenated; image ``i`` owns rows
        ``image_offsets[i]:image_offsets[i + 1]``.
      image_offsets: int ``[num_images + 1]``.
      Other arguments as `per_class_nms_reference`.

    Returns:
      ``(indices, offsets)``: int64 global row indices of the kept candidates, image by image
      in output order, and int64 ``[num_images + 1]`` offsets into ``indices``.
    """
    boxes, scores, classes = _check_inputs(boxes, scores, classes)
    iou_t, score_t = _check_thresholds(iou_threshold, score_threshold)
    per_class = _check_cap("max_detections_per_class", max_detections_per_class, DEFAULT_MAX_DETECTIONS_PER_CLASS)
    total = _check_cap("max_total_detections", max_total_detections, DEFAULT_MAX_TOTAL_DETECTIONS)
    offsets = np.asarray(image_offsets, np.int64)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(boxes) or (np.diff(offsets) < 0).any():
        raise ValueError(f"image_offsets must rise from 0 to {len(boxes)}, got {offsets[:5].tolist()}...")
    image_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    candidates = np.flatnonzero(scores > score_t)
    order = candidates[np.lexsort((candidates, -scores[candidates], image_of[candidates]))]
    candidate_offsets = np.searchsorted(image_of[order], np.arange(len(offsets)), side="left")
    kept = greedy_walk(
        boxes[order],
        classes[order],
        candidate_offsets,
        iou_threshold=iou_t,
        max_per_group=per_class,
        max_per_image=total,
    )
    indices = order[kept]
    return indices, np.searchsorted(image_of[indices], np.arange(len(offsets)), side="left").astype(np.int64)


def class_agnostic_nms_batched(
    boxes,
    scores,
    image_offsets,
    *,
    iou_threshold,
    score_threshold=-math.inf,
    max_output_size=DEFAULT_NUM_PROPOSALS,
    levels=None,
    backend: str = "tensorflow",
) -> tuple[np.ndarray, np.ndarray]:
    """`class_agnostic_nms_reference` for many images (Faster R-CNN first stage).

    Args:
      boxes, scores: proposals of all images, concatenated; image ``i`` owns rows
        ``image_offsets[i]:image_offsets[i + 1]``.
      image_offsets: int ``[num_images + 1]``.
      levels: optional ``[N]`` FPN level per proposal (NMS per level, then merge).
      backend: ``"tensorflow"``: one ``non_max_suppression_with_scores`` call per image and
        level (the kernel's speed for the long first-stage walks); ``"numpy"``: `greedy_walk`
        (no TensorFlow; slow when many proposals are kept).
      Other arguments as `class_agnostic_nms_reference`.

    Returns:
      ``(indices, offsets)``: int64 global row indices of the kept proposals, image by image by
      descending score (ties by index), and int64 ``[num_images + 1]`` offsets.
    """
    boxes, scores = _check_inputs(boxes, scores)
    iou_t, score_t = _check_thresholds(iou_threshold, score_threshold)
    limit = _check_cap("max_output_size", max_output_size, DEFAULT_NUM_PROPOSALS)
    offsets = np.asarray(image_offsets, np.int64)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(boxes) or (np.diff(offsets) < 0).any():
        raise ValueError(f"image_offsets must rise from 0 to {len(boxes)}")
    num_images = len(offsets) - 1
    image_of = np.repeat(np.arange(num_images), np.diff(offsets))
    groups = np.zeros(len(boxes), np.int64) if levels is None else np.asarray(levels, np.int64).reshape(-1)
    if len(groups) != len(boxes):
        raise ValueError(f"levels has {len(groups)} entries for {len(boxes)} boxes")
    if backend == "numpy":
        candidates = np.flatnonzero(scores > score_t)
        order = candidates[np.lexsort((candidates, -scores[candidates], image_of[candidates]))]
        kept = greedy_walk(
            boxes[order],
            groups[order],
            np.searchsorted(image_of[order], np.arange(num_images + 1)),
            iou_threshold=iou_t,
            max_per_group=limit,
            max_per_image=limit,
        )
        indices = order[kept]
    elif backend == "tensorflow":
        # Group rows by (image, level) without disturbing row order inside a group.
        low = int(groups.min()) if len(groups) else 0
        span = int(groups.max()) - low + 1 if len(groups) else 1
        key = image_of * span + (groups - low)
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(order) else np.zeros(0, np.int64)
        sizes = np.diff(np.r_[starts, len(order)])
        kept = _grouped_nms_tf(boxes, scores, order, starts, sizes, iou_t, score_t, limit) if limit else np.zeros(0, np.int64)
        merged = kept[np.lexsort((kept, -scores[kept], image_of[kept]))]
        image_kept = image_of[merged]
        first = np.searchsorted(image_kept, np.arange(num_images + 1))
        rank = np.arange(len(merged)) - first[image_kept]
        indices = merged[rank < limit]
    else:
        raise ValueError(f"backend must be 'tensorflow' or 'numpy', got {backend!r}")
    return indices.astype(np.int64), np.searchsorted(image_of[indices], np.arange(num_images + 1)).astype(np.int64)


_GROUPED_NMS = None
_GROUPS_PER_CALL = 2048


def _grouped_nms_fn():
    """A traced function running ``NonMaxSuppressionV5`` over a batch of padded groups."""
    global _GROUPED_NMS
    if _GROUPED_NMS is None:
        import tensorflow as tf

        @tf.function(
            autograph=False,
            input_signature=[
                tf.TensorSpec([None, None, 4], tf.float32),
                tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([], tf.int32),
            ]
        )
        def grouped(boxes, scores, iou_threshold, score_threshold, limit):
            def one(group):
                selected, _, valid = tf.raw_ops.NonMaxSuppressionV5(
                    boxes=group[0],
                    scores=group[1],
                    max_output_size=limit,
                    iou_threshold=iou_threshold,
                    score_threshold=score_threshold,
                    soft_nms_sigma=tf.constant(0.0),
                    pad_to_max_output_size=True,
                )
                return selected, valid

            return tf.map_fn(
                one,
                (boxes, scores),
                fn_output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)),
                parallel_iterations=16,
            )

        _GROUPED_NMS = grouped
    return _GROUPED_NMS


def _grouped_nms_tf(boxes, scores, order, starts, sizes, iou_t, score_t, limit) -> np.ndarray:
    """Rows kept by the TF op in each group ``order[starts[g]:starts[g] + sizes[g]]``.

    Groups are batched by similar size into padded tensors; padding gets a score below any
    threshold (-inf is never > a threshold) so it is never selected.
    """
    grouped = _grouped_nms_fn()
    by_size = np.argsort(sizes, kind="stable")
    parts = []
    for chunk_start in range(0, len(by_size), _GROUPS_PER_CALL):
        chunk = by_size[chunk_start : chunk_start + _GROUPS_PER_CALL]
        width = int(sizes[chunk].max())
        if width == 0:
            continue
        member = np.arange(width)[None, :] < sizes[chunk][:, None]
        rows = np.where(member, starts[chunk][:, None] + np.arange(width)[None, :], 0)
        rows = order[np.minimum(rows, len(order) - 1)]
        padded_boxes = np.where(member[:, :, None], boxes[rows], np.float32(0))
        padded_scores = np.where(member, scores[rows], np.float32(-np.inf))
        selected, valid = grouped(padded_boxes, padded_scores, float(iou_t), float(score_t), int(min(limit, width)))
        selected, valid = selected.numpy(), valid.numpy()
        take = np.arange(selected.shape[1])[None, :] < valid[:, None]
        parts.append(np.take_along_axis(rows, selected.astype(np.int64), axis=1)[take])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
