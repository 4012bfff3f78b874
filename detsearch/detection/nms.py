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
- ``*_batched`` / `greedy_walk`: many images at once. Per-class NMS is a compiled walk (numba;
  image by image, it stops an image at ``max_total_detections`` kept, so it only looks at the
  top of each image's candidate list); class-agnostic NMS (up to ``num_proposals`` kept per
  image) is the same walk with the FPN levels as its groups.

The single-image functions return int64 indices into their inputs in output order
(descending score); the batched ones return indices and per-image offsets, `greedy_walk` a
kept mask.

TensorFlow is imported inside the functions that use it only, so importing this module (and
``detsearch.detection``) does not import TensorFlow.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from detsearch.checks import positive_int
from detsearch.detection.boxes import _ordered
from detsearch.detection.cache.format import DEFAULT_NUM_PROPOSALS
from detsearch.detection.reference_nms import (class_agnostic_nms_reference, nms_reference,
                                               per_class_nms_reference)

__all__ = [
    "DEFAULT_MAX_DETECTIONS_PER_CLASS",
    "DEFAULT_MAX_TOTAL_DETECTIONS",
    "ProposalWalk",
    "class_agnostic_nms_batched",
    "class_agnostic_nms_reference",
    "class_agnostic_nms_tf",
    "compact_groups",
    "GreedyWalk",
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

    A compiled loop (`_walk`): each candidate is compared with the kept boxes of its image
    until one suppresses it.

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
        self.group_index = np.asarray(group_index, np.int64)
        self.num_groups = num_groups
        self.offsets = offsets
        self.size = data.shape[1]

    def run(self, *, iou_threshold, max_per_group, max_per_image) -> np.ndarray:
        """Kept mask for one threshold (see `greedy_walk`)."""
        if self.size == 0 or max_per_group <= 0 or max_per_image <= 0:
            return np.zeros(self.size, bool)
        return _walk(self.data, self.group_index, self.num_groups, self.offsets, np.float32(iou_threshold),
                     int(max_per_group), int(max_per_image))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _walk(data, group_index, num_groups, offsets, iou_t, max_per_group, max_per_image):  # pragma: no cover - compiled
    """`GreedyWalk.run`'s kernel: image by image, candidates in the given order; a candidate is
    kept unless its group holds ``max_per_group`` kept or a kept box of its group overlaps it by
    IoU ``> iou_t`` (the kernel's float32 IoU from `walk_data`, its operations in its order; a
    box of zero area has no intersection, so neither suppresses nor is suppressed); an image stops at
    ``max_per_image`` kept."""
    zero = np.float32(0)
    kept = np.zeros(data.shape[1], np.bool_)
    group_count = np.zeros(num_groups, np.int64)
    image_kept = np.empty(data.shape[1], np.int64)  # the current image's kept candidates
    for image in range(len(offsets) - 1):
        count = 0
        for p in range(offsets[image], offsets[image + 1]):
            if count >= max_per_image:
                break
            g = group_index[p]
            if group_count[g] >= max_per_group:
                continue
            suppressed = False
            if data[4, p] > zero:  # a box of zero area intersects nothing: its IoUs are 0 (or 0 / 0)
                for k in range(count):
                    q = image_kept[k]
                    if group_index[q] != g:
                        continue
                    height = (data[2, p] if data[2, p] <= data[2, q] else data[2, q]) - \
                        (data[0, p] if data[0, p] >= data[0, q] else data[0, q])
                    if height < zero:
                        height = zero
                    breadth = (data[3, p] if data[3, p] <= data[3, q] else data[3, q]) - \
                        (data[1, p] if data[1, p] >= data[1, q] else data[1, q])
                    if breadth < zero:
                        breadth = zero
                    intersection = height * breadth
                    union = data[4, p] + data[4, q]
                    union = union - intersection
                    if intersection / union > iou_t:
                        suppressed = True
                        break
            if not suppressed:
                kept[p] = True
                image_kept[count] = p
                count += 1
                group_count[g] += 1
    return kept


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
) -> tuple[np.ndarray, np.ndarray]:
    """`class_agnostic_nms_reference` for many images (Faster R-CNN first stage).

    Args:
      boxes, scores: proposals of all images, concatenated; image ``i`` owns rows
        ``image_offsets[i]:image_offsets[i + 1]``.
      image_offsets: int ``[num_images + 1]``.
      levels: optional ``[N]`` FPN level per proposal (NMS per level, then merge).
      Other arguments as `class_agnostic_nms_reference`.

    One `greedy_walk` over all images (the levels its groups): an image's kept proposals, in
    visiting order (descending score, ties by index), are the merge of its levels' NMS.

    Returns:
      ``(indices, offsets)``: int64 global row indices of the kept proposals, image by image by
      descending score (ties by index), and int64 ``[num_images + 1]`` offsets.
    """
    limit = _check_cap("max_output_size", max_output_size, DEFAULT_NUM_PROPOSALS)
    return ProposalWalk(boxes, scores, image_offsets, score_threshold=score_threshold, levels=levels).kept(
        iou_threshold, limit)


class ProposalWalk:
    """The proposals above ``score_threshold`` of many images sorted into visiting order once,
    for `class_agnostic_nms_batched` at several IoU thresholds. Arguments as there."""

    def __init__(self, boxes, scores, image_offsets, *, score_threshold=-math.inf, levels=None):
        boxes, scores = _check_inputs(boxes, scores)
        _, score_t = _check_thresholds(0.5, score_threshold)
        offsets = np.asarray(image_offsets, np.int64)
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(boxes) or (np.diff(offsets) < 0).any():
            raise ValueError(f"image_offsets must rise from 0 to {len(boxes)}")
        num_images = len(offsets) - 1
        groups = np.zeros(len(boxes), np.int64) if levels is None else np.asarray(levels, np.int64).reshape(-1)
        if len(groups) != len(boxes):
            raise ValueError(f"levels has {len(groups)} entries for {len(boxes)} boxes")
        candidates = np.flatnonzero(scores > score_t)
        # Visiting order: by image, descending score, ties by row (the stable sorts keep the
        # rows ascending).
        self.row_image = np.repeat(np.arange(num_images), np.diff(offsets))
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        image_key = self.row_image[order]
        if num_images <= 1 << 16:
            image_key = image_key.astype(np.uint16)  # a radix sort
        self.order = order[np.argsort(image_key, kind="stable")]
        self.num_images = num_images
        self.walk = GreedyWalk(boxes[self.order], groups[self.order],
                               np.searchsorted(self.row_image[self.order], np.arange(num_images + 1)))

    def kept(self, iou_threshold, max_output_size=DEFAULT_NUM_PROPOSALS) -> tuple[np.ndarray, np.ndarray]:
        """`class_agnostic_nms_batched` at ``iou_threshold``: ``(indices, offsets)``."""
        iou_t, _ = _check_thresholds(iou_threshold, -math.inf)
        limit = _check_cap("max_output_size", max_output_size, DEFAULT_NUM_PROPOSALS)
        indices = self.order[self.walk.run(iou_threshold=iou_t, max_per_group=limit, max_per_image=limit)]
        return indices.astype(np.int64), np.searchsorted(self.row_image[indices],
                                                         np.arange(self.num_images + 1)).astype(np.int64)
