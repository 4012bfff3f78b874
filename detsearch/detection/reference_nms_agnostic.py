"""Model Garden's class-agnostic ``nms_version: v2`` post-processing transcribed line by line in
NumPy: the oracle for `detsearch.detection.nms_v2.padded_nms` (the sweep's path) and the sweep's
reference, itself held against Model Garden's TensorFlow function by the tests.

``_generate_detections_v2_class_agnostic`` (``official/vision/modeling/layers/
detection_generator.py``, used with ``detection_generator.nms_version: v2`` and
``use_class_agnostic_nms: true``) and what it calls, ``tf.image.non_max_suppression_padded``
(``pad_to_max_output_size=True``, ``sorted_input=True``, the default ``tile_size`` 512 and
``canonicalized_coordinates=False``), i.e. TensorFlow's Python ``non_max_suppression_padded_v2``
with ``_bbox_overlap``, ``_suppression_loop_body``, ``_cross_suppression`` and
``_self_suppression`` (``tensorflow/python/ops/image_ops_impl.py``, TensorFlow 2.20): per anchor
the best class (``tf.nn.top_k(k=1)``: equal scores the lower class), per image the top
``pre_nms_top_k`` anchors by it (``tf.nn.top_k``: equal scores the lower anchor), then the tiled
NMS over every tile of every image of the batch, every padding box.

What TensorFlow's tiled NMS keeps (read off the code below, and checked by the tests):

- Score: ``score > float32(score_threshold)``; the other boxes are multiplied by 0 (all-zero
  "dots"). The threshold filter runs whenever the threshold is not ``-inf``.
- Coordinates are "canonicalized" from the first box of the first image only: when its
  ``y1 > y2`` (or ``x1 > x2``) the two columns are swapped for every box of the batch. Boxes with
  ``ymin <= ymax`` and ``xmin <= xmax`` (or a dot first) are left as they are.
- IoU is ``_bbox_overlap``'s float32 ``i_area / (a_area + b_area - i_area + 1e-8)``, ``i_area``
  the clipped width times the clipped height (the same operations, in the same order, as Model
  Garden's ``box_ops.bbox_overlap`` without its -1 padding rule).
- Suppression is at ``IoU >= float32(iou_threshold)`` (``iou < t`` survives the earlier tiles;
  ``iou >= t`` enters the tile's matrix), not ``>`` as in ``tf.image.non_max_suppression``.
- The self-suppression loop has no constant of its own: where Model Garden's
  ``nms.sorted_non_max_suppression_padded`` compares with 0.5, TensorFlow's compares with the
  IoU threshold ``t`` itself: a box "can suppress" when no live entry of its column is ``>= t``,
  a box's row is cleared when a box that can suppress overlaps it by ``>= t``, and the loop goes
  on while some image of the batch lost more than ``t`` of summed IoU in the iteration.
  For ``t > 0`` every entry of the tile's matrix is 0 or ``>= t``, and the loop's fixed point is
  greedy NMS over the tile (by induction on the position: a box that can suppress is one greedy
  NMS keeps; a box whose row is cleared is one it suppresses; at the fixed point every box greedy
  NMS suppresses has its row cleared, as its first kept suppressor can suppress). Cross-tile
  suppression by the earlier tiles' surviving boxes is greedy's rule too, so the whole is
  **greedy NMS at IoU >= t, at every t > 0** (below 0.5 as well: unlike Model Garden's tiled NMS,
  there is nothing special about 0.5). Two exceptions:

  * the loop can stop before its fixed point: it stops when no image of the batch lost more
    than ``t`` in an iteration, and an image that cleared a single nonzero entry (each is
    ``>= t``) lost exactly that entry, which may be ``t`` itself or, as TensorFlow sums in
    float32, within the sums' rounding of ``t``. An iteration that cleared no nonzero entry
    reached the fixed point; two or more lose ``>= 2t``. Here the sums are float64 (exact for
    float32 entries ``>= t`` down to ``t`` of about 2**-13): this transcription stops early where
    such an entry is exactly ``t``, TensorFlow also where its rounding says so. The stop is for
    the whole batch: only there can an image's result depend on the other images of its batch.
    Example (the tests'): five boxes 3 px wide, each 1 px right of the previous (IoU 0.5 between
    neighbours, 0.2 two apart) at ``t = 0.5``: alone TensorFlow keeps 0 and 2, greedy NMS (and
    TensorFlow beside an image whose loop goes on) 0, 2 and 4. The sweep's fast path
    (`detsearch.detection.nms_v2.padded_nms`) is the fixed point;
  * ``t = 0`` (after the float32 cast): no box suppresses within a tile (no box can suppress, every
    row is cleared) and every box of a later tile is suppressed (``iou < 0`` never holds): the
    first 512 positions survive. ``t < 0`` never leaves the loop in TensorFlow (the sums' change,
    0, stays ``> t``); here it is a ValueError.

- Selected: the surviving boxes with a coordinate ``> 0`` (a box with none still suppresses), by
  position, the first ``max_num_detections`` (the loop stops once every image of the batch has
  that many); the outputs past ``valid_detections`` are 0 (boxes, scores, classes).

The returned classes are Model Garden's (0-based; its ``__call__`` adds 1 afterwards).

Shares no code with `detsearch.detection.nms_v2`, `detsearch.detection.nms` or the sweep;
imports only NumPy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bbox_overlap", "generate_detections_v2_class_agnostic_reference", "non_max_suppression_padded_reference"]

_TILE_SIZE = 512  # tf.image.non_max_suppression_padded's default tile_size (Model Garden passes none)
_EPSILON = np.float32(1e-8)  # _bbox_overlap's EPSILON


def bbox_overlap(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``image_ops_impl._bbox_overlap`` in float32: ``[B, N, 4]`` x ``[B, M, 4]`` ``[ymin, xmin,
    ymax, xmax]`` -> ``[B, N, M]`` IoU."""
    boxes_a = np.asarray(boxes_a, np.float32)
    boxes_b = np.asarray(boxes_b, np.float32)
    a_y_min, a_x_min, a_y_max, a_x_max = np.split(boxes_a, 4, axis=2)
    b_y_min, b_x_min, b_y_max, b_x_max = np.split(boxes_b, 4, axis=2)

    def transpose(t):
        return np.transpose(t, [0, 2, 1])

    # Calculates the intersection area.
    i_xmin = np.maximum(a_x_min, transpose(b_x_min))
    i_xmax = np.minimum(a_x_max, transpose(b_x_max))
    i_ymin = np.maximum(a_y_min, transpose(b_y_min))
    i_ymax = np.minimum(a_y_max, transpose(b_y_max))
    i_area = np.maximum(i_xmax - i_xmin, np.float32(0)) * np.maximum(i_ymax - i_ymin, np.float32(0))
    # Calculates the union area.
    a_area = (a_y_max - a_y_min) * (a_x_max - a_x_min)
    b_area = (b_y_max - b_y_min) * (b_x_max - b_x_min)
    u_area = a_area + transpose(b_area) - i_area + _EPSILON
    return (i_area / u_area).astype(np.float32)


def _self_suppression(iou: np.ndarray, iou_sum: np.ndarray, iou_threshold: np.float32):
    """One iteration of ``_self_suppression``: ``(iou_after_suppression, go on, iou_sum_new)``.
    The sums are float64 (TensorFlow's float32)."""
    batch_size = iou.shape[0]
    can_suppress_others = (iou.max(1) < iou_threshold).astype(np.float32).reshape(batch_size, -1, 1)
    iou_after_suppression = ((can_suppress_others * iou).max(1) < iou_threshold).astype(np.float32).reshape(
        batch_size, -1, 1) * iou
    iou_sum_new = iou_after_suppression.sum((1, 2), dtype=np.float64)
    return iou_after_suppression, bool((iou_sum - iou_sum_new > iou_threshold).any()), iou_sum_new


def _cross_suppression(boxes: np.ndarray, box_slice: np.ndarray, iou_threshold: np.float32, inner_idx: int,
                       tile_size: int) -> np.ndarray:
    """``_cross_suppression``: ``box_slice`` after the tile ``inner_idx`` of ``boxes``."""
    new_slice = boxes[:, inner_idx * tile_size:(inner_idx + 1) * tile_size]
    iou = bbox_overlap(new_slice, box_slice)
    return (iou < iou_threshold).all(1).astype(np.float32)[:, :, None] * box_slice


def _suppression_loop_body(boxes: np.ndarray, iou_threshold: np.float32, output_size: np.ndarray, idx: int,
                           tile_size: int):
    """``_suppression_loop_body``: the tile ``idx`` of every image. Returns ``(boxes,
    output_size)``."""
    num_tiles = boxes.shape[1] // tile_size
    batch_size = boxes.shape[0]
    # Iterates over tiles that can possibly suppress the current tile.
    box_slice = boxes[:, idx * tile_size:(idx + 1) * tile_size]
    inner_idx = 0
    while inner_idx < idx:
        box_slice = _cross_suppression(boxes, box_slice, iou_threshold, inner_idx, tile_size)
        inner_idx += 1
    # Iterates over the current tile to compute self-suppression.
    iou = bbox_overlap(box_slice, box_slice)
    mask = (np.arange(tile_size).reshape(1, -1) > np.arange(tile_size).reshape(-1, 1))[None]
    iou = iou * (mask & (iou >= iou_threshold)).astype(np.float32)
    loop_condition, iou_sum = True, iou.sum((1, 2), dtype=np.float64)
    while loop_condition:
        iou, loop_condition, iou_sum = _self_suppression(iou, iou_sum, iou_threshold)
    suppressed_box = iou.sum(1) > 0
    box_slice = box_slice * (np.float32(1) - suppressed_box.astype(np.float32))[:, :, None]
    # Uses box_slice to update the input boxes.
    mask = (np.arange(num_tiles) == idx).astype(np.float32).reshape(1, -1, 1, 1)
    boxes = np.tile(box_slice[:, None], [1, num_tiles, 1, 1]) * mask + boxes.reshape(
        batch_size, num_tiles, tile_size, 4) * (np.float32(1) - mask)
    boxes = boxes.reshape(batch_size, -1, 4)
    # Updates output_size.
    output_size = output_size + (box_slice > 0).any(2).astype(np.int32).sum(1, dtype=np.int32)
    return boxes, output_size


def non_max_suppression_padded_reference(boxes: np.ndarray, scores: np.ndarray, max_output_size: int,
                                         iou_threshold: float = 0.5, score_threshold: float = -math.inf,
                                         tile_size: int = _TILE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``tf.image.non_max_suppression_padded(boxes, scores, max_output_size, iou_threshold,
    score_threshold, pad_to_max_output_size=True, sorted_input=True)`` on a batch: ``boxes``
    ``[B, N, 4]``, ``scores`` ``[B, N]``, sorted by descending score (N >= 1). Returns ``(idx,
    num_valid)``: int32 ``[B, max_output_size]`` (0 past ``num_valid``) and int32 ``[B]``.

    Raises:
      ValueError: ``float32(iou_threshold) < 0`` (TensorFlow's loop would not end).
    """
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    threshold = np.float32(iou_threshold)
    if not threshold >= 0:
        raise ValueError(f"iou_threshold {iou_threshold!r} < 0: TensorFlow's self-suppression loop never ends there")
    num_boxes = boxes.shape[-2]
    batch_size = boxes.shape[0]
    if score_threshold != -math.inf:
        score_mask = (scores > np.float32(score_threshold)).astype(np.float32)
        scores = scores * score_mask
        boxes = boxes * score_mask[:, :, None]
    # canonicalize_coordinates
    y_1, x_1, y_2, x_2 = np.split(boxes, 4, axis=2)
    y_min, y_max = (y_1, y_2) if y_1[0, 0, 0] <= y_2[0, 0, 0] else (y_2, y_1)
    x_min, x_max = (x_1, x_2) if x_1[0, 0, 0] <= x_2[0, 0, 0] else (x_2, x_1)
    boxes = np.concatenate([y_min, x_min, y_max, x_max], axis=2)
    # sorted_input: no sorting.
    pad = int(math.ceil(np.float32(max(num_boxes, max_output_size)) / np.float32(tile_size))) * tile_size - num_boxes
    boxes = np.pad(boxes, [(0, 0), (0, pad), (0, 0)])
    scores = np.pad(scores, [(0, 0), (0, pad)])
    num_boxes_after_padding = num_boxes + pad
    num_iterations = num_boxes_after_padding // tile_size
    output_size = np.zeros(batch_size, np.int32)
    idx = 0
    while output_size.min() < max_output_size and idx < num_iterations:
        boxes, output_size = _suppression_loop_body(boxes, threshold, output_size, idx, tile_size)
        idx += 1
    num_valid = np.minimum(output_size, np.int32(max_output_size))
    ranked = (boxes > 0).any(2).astype(np.int32) * np.arange(num_boxes_after_padding, 0, -1, dtype=np.int32)[None]
    top_values = -np.sort(-ranked, axis=1)[:, :max_output_size]  # tf.nn.top_k's values
    index = np.int32(num_boxes_after_padding) - top_values
    index = np.minimum(index, np.int32(num_boxes - 1))
    index = np.where(np.arange(max_output_size)[None] < num_valid[:, None], index, np.int32(0)).astype(np.int32)
    return index, num_valid.astype(np.int32)


def generate_detections_v2_class_agnostic_reference(boxes: np.ndarray, scores: np.ndarray, *,
                                                    pre_nms_top_k: int = 5000,
                                                    pre_nms_score_threshold: float = 0.05,
                                                    nms_iou_threshold: float = 0.5, max_num_detections: int = 100):
    """``_generate_detections_v2_class_agnostic`` line by line on one batch: ``boxes`` ``[B, N, C
    or 1, 4]``, ``scores`` ``[B, N, C]`` (float32). Returns Model Garden's ``(boxes, scores,
    classes, valid_detections)`` and the anchor index of every output ``[B, max]`` (-1 past
    ``valid_detections``)."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    num_classes_for_box = boxes.shape[2]
    total_anchors = scores.shape[1]
    # Keeps only the class with highest score for each predicted box (top_k, k=1: equal scores
    # the lower class).
    classes_ids = np.argsort(-scores, axis=2, kind="stable")[:, :, :1]
    scores_condensed = np.take_along_axis(scores, classes_ids, 2)[:, :, 0]
    if num_classes_for_box > 1:
        boxes = np.take_along_axis(boxes, classes_ids[:, :, :, None], 2)
    boxes_condensed = boxes[:, :, 0]
    classes_condensed = classes_ids[:, :, 0]
    # Selects top pre_nms_num scores and indices before NMS (equal scores: the lower anchor).
    num_anchors_filtered = min(total_anchors, int(pre_nms_top_k))
    indices_filtered = np.argsort(-scores_condensed, axis=1, kind="stable")[:, :num_anchors_filtered]
    scores_filtered = np.take_along_axis(scores_condensed, indices_filtered, 1)
    classes_filtered = np.take_along_axis(classes_condensed, indices_filtered, 1)
    boxes_filtered = np.take_along_axis(boxes_condensed, indices_filtered[:, :, None], 1)
    boxes_filtered = boxes_filtered.astype(np.float32)
    scores_filtered = scores_filtered.astype(np.float32)
    # Apply class-agnostic NMS on boxes.
    nmsed_indices_padded, valid_detections = non_max_suppression_padded_reference(
        boxes_filtered, scores_filtered, max_num_detections, iou_threshold=nms_iou_threshold,
        score_threshold=pre_nms_score_threshold)
    nmsed_boxes = np.take_along_axis(boxes_filtered, nmsed_indices_padded[:, :, None], 1)
    nmsed_scores = np.take_along_axis(scores_filtered, nmsed_indices_padded, 1)
    nmsed_classes = np.take_along_axis(classes_filtered, nmsed_indices_padded, 1)
    # Sets the padded boxes, scores, and classes to 0.
    padding_mask = np.arange(max_num_detections).reshape(1, -1) < valid_detections.reshape(-1, 1)
    nmsed_boxes = nmsed_boxes * padding_mask[:, :, None].astype(np.float32)
    nmsed_scores = nmsed_scores * padding_mask.astype(np.float32)
    nmsed_classes = nmsed_classes * padding_mask.astype(nmsed_classes.dtype)
    anchors = np.where(padding_mask, np.take_along_axis(indices_filtered, nmsed_indices_padded, 1), -1)
    return nmsed_boxes, nmsed_scores, nmsed_classes, valid_detections, anchors
