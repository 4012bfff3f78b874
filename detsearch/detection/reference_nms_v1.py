"""Model Garden's ``nms_version: v1`` post-processing transcribed line by line in NumPy: the
oracle for `detsearch.detection.nms_v1` (the sweep's path), itself held against Model Garden's
TensorFlow function by the tests.

Transcribed (TensorFlow 2.20, tf-models-official 2.20.0):

- ``_generate_detections_v1`` / ``_generate_detections_per_image``
  (``official/vision/modeling/layers/detection_generator.py``): per image, per class the
  ``tf.nn.top_k`` of ``pre_nms_top_k`` (equal scores: lower anchor first), one NMS, the class's
  list padded to ``max_num_detections`` with score -1, then all classes merged by
  ``tf.nn.top_k`` (equal scores: lower (class, position) first); ``valid`` counts scores > -1.
- ``soft_nms_sigma`` None: ``tf.image.non_max_suppression_padded(..., pad_to_max_output_size=
  True)``, i.e. ``non_max_suppression_padded_v2`` (``tensorflow/python/ops/image_ops_impl.py``),
  tile by tile (`non_max_suppression_padded_v2`): the score mask, the canonicalisation of
  coordinates decided by the first box, the descending sort, cross-tile suppression at
  IoU ``>= iou_threshold``, the self-suppression loop (`_self_suppression`) with its stop rule
  "the IoU sum dropped by more than ``iou_threshold``", selection of boxes with a coordinate
  > 0, and the padded index output (index 0 past ``num_valid``; Model Garden then gathers the
  class's first box with score -1 there).
- ``soft_nms_sigma`` set (0.0 included): ``tf.image.non_max_suppression_with_scores``, i.e. the
  C++ kernel ``NonMaxSuppressionV5`` (``tensorflow/core/kernels/image/
  non_max_suppression_op.cc``, `non_max_suppression_v5`): its priority queue and comparator,
  the lazy decay loop, float32 arithmetic in the kernel's order, the kernel's IoU function.
  Model Garden pads the boxes with zeros and the scores with -1.

The two places where this is not TensorFlow's arithmetic to the bit:

- the self-suppression loop's IoU sums are taken in float64 where TensorFlow sums a 512 x 512
  float32 matrix with Eigen's (thread-count and SIMD dependent) reduction order. The sums'
  difference is then exact whenever ``iou_threshold >= 2**-12`` (entries are 0 or in
  ``[iou_threshold, 1]``, at most 2**18 of them), so the stop rule is judged exactly; TensorFlow
  can judge otherwise only when one iteration removes a single entry within float32 rounding
  of the IoU sums of ``iou_threshold`` (TensorFlow's difference of the sums of two 512 x 512
  matrices differing by one entry 0.5, with 300 other entries in [0.5, 1), came out 0.5 -
  3.05e-5 once in 60 tries);
- ``expf`` is the C library's, called through ``ctypes`` (``libm.so.6``, the function the
  kernel's ``Eigen::numext::exp<float>`` -> ``std::exp(float)`` calls; TensorFlow imports
  ``expf@GLIBC_2.2.5``, whose compat wrapper returns the same values for finite results).
  NumPy's float32 ``np.exp`` is not that function: it differed from glibc's ``expf`` on 43% of
  the kernel's arguments tested (``float32(np.exp(float64 x))`` on 0.07%).

Shares no code with `detsearch.detection.nms_v1` or other fast paths: beside NumPy and the
standard library it takes only the kernel's ``IOU`` from the greedy kernels' reference
(`detsearch.detection.reference_nms.kernel_iou`, the same C++ function).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import heapq

import numpy as np

from detsearch.detection.reference_nms import kernel_iou

__all__ = [
    "expf",
    "generate_detections_v1_reference",
    "non_max_suppression_padded_v2",
    "non_max_suppression_v5",
    "padded_bbox_overlap",
]

_TILE = 512  # non_max_suppression_padded's default tile_size (Model Garden passes none)
_F32 = np.float32

_libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
_expf = _libm.expf
_expf.restype = ctypes.c_float
_expf.argtypes = [ctypes.c_float]


def expf(x) -> np.float32:
    """The C library's ``expf`` of a float32 (what ``Eigen::numext::exp<float>`` calls on CPU)."""
    return _F32(_expf(float(_F32(x))))


# ---------------------------------------------------------------------------------------------
# tf.image.non_max_suppression_padded -> non_max_suppression_padded_v2 (image_ops_impl.py)


def padded_bbox_overlap(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``image_ops_impl._bbox_overlap``: ``[B, N, 4]`` x ``[B, M, 4]`` -> ``[B, N, M]`` float32,
    ``i_area / (a_area + b_area - i_area + 1e-8)`` with the intersection width times height."""
    a_y_min, a_x_min, a_y_max, a_x_max = (boxes_a[:, :, k:k + 1] for k in range(4))
    b_y_min, b_x_min, b_y_max, b_x_max = (boxes_b[:, :, k:k + 1] for k in range(4))
    t = lambda v: np.transpose(v, [0, 2, 1])  # noqa: E731
    i_xmin = np.maximum(a_x_min, t(b_x_min))
    i_xmax = np.minimum(a_x_max, t(b_x_max))
    i_ymin = np.maximum(a_y_min, t(b_y_min))
    i_ymax = np.minimum(a_y_max, t(b_y_max))
    i_area = np.maximum(i_xmax - i_xmin, _F32(0)) * np.maximum(i_ymax - i_ymin, _F32(0))
    a_area = (a_y_max - a_y_min) * (a_x_max - a_x_min)
    b_area = (b_y_max - b_y_min) * (b_x_max - b_x_min)
    u_area = a_area + t(b_area) - i_area + _F32(1e-8)
    return (i_area / u_area).astype(_F32)


def _self_suppression(iou, iou_sum, iou_threshold):
    """``image_ops_impl._self_suppression``: one iteration; returns the new matrix, the loop
    condition and the new sum (float64: see the module's docstring)."""
    batch_size = iou.shape[0]
    can_suppress_others = (iou.max(1) < iou_threshold).reshape(batch_size, -1, 1).astype(iou.dtype)
    iou_after_suppression = ((can_suppress_others * iou).max(1) < iou_threshold).reshape(
        batch_size, -1, 1).astype(iou.dtype) * iou
    iou_sum_new = iou_after_suppression.sum((1, 2), dtype=np.float64)
    return iou_after_suppression, bool((iou_sum - iou_sum_new > np.float64(iou_threshold)).any()), iou_sum_new


def _cross_suppression(boxes, box_slice, iou_threshold, inner_idx, tile_size):
    """``image_ops_impl._cross_suppression``."""
    new_slice = boxes[:, inner_idx * tile_size:(inner_idx + 1) * tile_size]
    iou = padded_bbox_overlap(new_slice, box_slice)
    return (iou < iou_threshold).all(1)[:, :, None].astype(box_slice.dtype) * box_slice


def _suppression_loop_body(boxes, iou_threshold, output_size, idx, tile_size):
    """``image_ops_impl._suppression_loop_body``."""
    num_tiles = boxes.shape[1] // tile_size
    batch_size = boxes.shape[0]
    box_slice = boxes[:, idx * tile_size:(idx + 1) * tile_size]
    for inner_idx in range(idx):  # while inner_idx < idx
        box_slice = _cross_suppression(boxes, box_slice, iou_threshold, inner_idx, tile_size)
    iou = padded_bbox_overlap(box_slice, box_slice)
    mask = (np.arange(tile_size).reshape(1, -1) > np.arange(tile_size).reshape(-1, 1))[None]
    iou = iou * (mask & (iou >= iou_threshold)).astype(iou.dtype)
    iou_sum = iou.sum((1, 2), dtype=np.float64)
    loop_condition = True
    while loop_condition:
        iou, loop_condition, iou_sum = _self_suppression(iou, iou_sum, iou_threshold)
    suppressed_box = iou.sum(1, dtype=np.float64) > 0
    box_slice = box_slice * (_F32(1) - suppressed_box.astype(box_slice.dtype))[:, :, None]
    mask = (np.arange(num_tiles) == idx).astype(boxes.dtype).reshape(1, -1, 1, 1)
    boxes = (np.tile(box_slice[:, None], [1, num_tiles, 1, 1]) * mask
             + boxes.reshape(batch_size, num_tiles, tile_size, 4) * (_F32(1) - mask))
    boxes = boxes.reshape(batch_size, -1, 4)
    output_size = output_size + (box_slice > 0).any(2).sum(1)
    return boxes, output_size, idx + 1


def non_max_suppression_padded_v2(boxes, scores, max_output_size: int, iou_threshold: float = 0.5,
                                  score_threshold: float = float("-inf"), tile_size: int = _TILE):
    """``image_ops_impl.non_max_suppression_padded_v2`` (``sorted_input=False``,
    ``canonicalized_coordinates=False``) on one image: ``boxes`` ``[N, 4]``, ``scores`` ``[N]``.
    Returns ``(idx [max_output_size], num_valid)``: input positions, 0 past ``num_valid``."""
    boxes = np.asarray(boxes, _F32).reshape(1, -1, 4)
    scores = np.asarray(scores, _F32).reshape(1, -1)
    num_boxes = boxes.shape[1]
    batch_size = 1
    iou_threshold = _F32(iou_threshold)
    if iou_threshold < 0:
        raise ValueError("iou_threshold < 0: TensorFlow's self-suppression loop never ends")
    if score_threshold != float("-inf"):
        score_mask = (scores > _F32(score_threshold)).astype(scores.dtype)
        scores = scores * score_mask
        boxes = boxes * score_mask[:, :, None]
    # canonicalize_coordinates: decided by the first box of the first image
    y_1, x_1, y_2, x_2 = (boxes[:, :, k:k + 1] for k in range(4))
    y_min, y_max = (y_1, y_2) if y_1[0, 0, 0] <= y_2[0, 0, 0] else (y_2, y_1)
    x_min, x_max = (x_1, x_2) if x_1[0, 0, 0] <= x_2[0, 0, 0] else (x_2, x_1)
    boxes = np.concatenate([y_min, x_min, y_max, x_max], axis=2)
    # _sort_scores_and_boxes: argsort DESCENDING is a top_k (equal scores: lower index first)
    sorted_indices = np.argsort(-scores, axis=1, kind="stable")
    scores = np.take_along_axis(scores, sorted_indices, 1)
    boxes = np.take_along_axis(boxes, sorted_indices[:, :, None], 1)
    pad = int(np.ceil(_F32(max(num_boxes, max_output_size)) / _F32(tile_size))) * tile_size - num_boxes
    boxes = np.pad(boxes, [[0, 0], [0, pad], [0, 0]])
    scores = np.pad(scores, [[0, 0], [0, pad]])
    num_boxes_after_padding = num_boxes + pad
    num_iterations = num_boxes_after_padding // tile_size
    output_size = np.zeros(batch_size, np.int64)
    idx = 0
    while output_size.min() < max_output_size and idx < num_iterations:
        boxes, output_size, idx = _suppression_loop_body(boxes, iou_threshold, output_size, idx, tile_size)
    num_valid = np.minimum(output_size, max_output_size)
    values = (boxes > 0).any(2).astype(np.int64) * np.arange(num_boxes_after_padding, 0, -1)[None]
    top = -np.sort(-values, axis=1, kind="stable")[:, :max_output_size]  # top_k values
    idx = num_boxes_after_padding - top
    idx = np.minimum(idx, num_boxes - 1)
    idx = np.take_along_axis(sorted_indices, idx, 1)
    idx = np.where(np.arange(max_output_size)[None] < num_valid[:, None], idx, 0)
    return idx[0], int(num_valid[0])


# ---------------------------------------------------------------------------------------------
# tf.image.non_max_suppression_with_scores -> NonMaxSuppressionV5 (non_max_suppression_op.cc)


class _Candidate:
    """The kernel's ``Candidate`` ordered as its priority queue pops: the highest score first,
    equal scores the lower ``box_index`` first (``cmp`` is the queue's "less")."""

    __slots__ = ("box_index", "score", "suppress_begin_index")

    def __init__(self, box_index: int, score: np.float32, suppress_begin_index: int):
        self.box_index = box_index
        self.score = score
        self.suppress_begin_index = suppress_begin_index

    def __lt__(self, other: "_Candidate") -> bool:  # heapq's min = the queue's top
        return self.score > other.score or (self.score == other.score and self.box_index < other.box_index)


def non_max_suppression_v5(boxes, scores, max_output_size: int, iou_threshold: float, score_threshold: float,
                           soft_nms_sigma: float):
    """``DoNonMaxSuppressionOp<float>`` as ``NonMaxSuppressionV5`` runs it
    (``pad_to_max_output_size=False``): returns ``(selected_indices, selected_scores)``."""
    boxes = np.asarray(boxes, _F32)
    scores_data = np.asarray(scores, _F32)
    similarity_threshold = _F32(iou_threshold)
    score_threshold = _F32(score_threshold)
    soft_nms_sigma = _F32(soft_nms_sigma)
    if not (similarity_threshold >= 0 and similarity_threshold <= 1):
        raise ValueError("iou_threshold must be in [0, 1]")
    if not soft_nms_sigma >= 0:
        raise ValueError("soft_nms_sigma_val must be >= 0")
    candidate_priority_queue: list[_Candidate] = []
    for i in range(len(scores_data)):
        if scores_data[i] > score_threshold:
            heapq.heappush(candidate_priority_queue, _Candidate(i, scores_data[i], 0))

    scale = _F32(0.0)
    is_soft_nms = soft_nms_sigma > _F32(0.0)
    if is_soft_nms:
        scale = _F32(-0.5) / soft_nms_sigma

    def suppress_weight(sim: np.float32) -> np.float32:
        weight = expf(scale * sim * sim)
        return weight if is_soft_nms or sim <= similarity_threshold else _F32(0.0)

    selected: list[int] = []
    selected_scores: list[np.float32] = []
    while len(selected) < max_output_size and candidate_priority_queue:
        next_candidate = heapq.heappop(candidate_priority_queue)
        original_score = next_candidate.score
        should_hard_suppress = False
        for j in range(len(selected) - 1, next_candidate.suppress_begin_index - 1, -1):
            similarity = kernel_iou(boxes[next_candidate.box_index], boxes[selected[j]])
            next_candidate.score = next_candidate.score * suppress_weight(similarity)
            if not is_soft_nms and similarity > similarity_threshold:
                should_hard_suppress = True
                break
            if next_candidate.score <= score_threshold:
                break
        next_candidate.suppress_begin_index = len(selected)
        if not should_hard_suppress:
            if next_candidate.score == original_score:
                selected.append(next_candidate.box_index)
                selected_scores.append(next_candidate.score)
                continue
            if next_candidate.score > score_threshold:
                heapq.heappush(candidate_priority_queue, next_candidate)
    return np.asarray(selected, np.int64), np.asarray(selected_scores, _F32)


# ---------------------------------------------------------------------------------------------
# Model Garden: _generate_detections_v1 / _generate_detections_per_image


def _top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``tf.nn.top_k`` of a vector: descending, equal values lower index first."""
    indices = np.argsort(-values, kind="stable")[:k]
    return values[indices], indices


def _clip_or_pad(values: np.ndarray, size: int, constant) -> np.ndarray:
    """``preprocess_ops.clip_or_pad_to_fixed_size`` on the first dimension."""
    values = values[:size]
    pad = np.full((size - len(values),) + values.shape[1:], constant, values.dtype)
    return np.concatenate([values, pad], 0)


def _generate_detections_per_image(boxes, scores, pre_nms_top_k, pre_nms_score_threshold, nms_iou_threshold,
                                   max_num_detections, soft_nms_sigma):
    nmsed_boxes, nmsed_scores, nmsed_classes, nmsed_anchors = [], [], [], []
    num_classes_for_box = boxes.shape[1]
    num_classes = scores.shape[1]
    for i in range(num_classes):
        boxes_i = boxes[:, min(num_classes_for_box - 1, i)]
        scores_i = scores[:, i]
        scores_i, indices = _top_k(scores_i, min(scores_i.shape[-1], pre_nms_top_k))
        boxes_i = boxes_i[indices]
        if soft_nms_sigma is not None:
            nmsed_indices_i, nmsed_scores_i = non_max_suppression_v5(
                boxes_i, scores_i, max_num_detections, nms_iou_threshold, pre_nms_score_threshold, soft_nms_sigma)
            nmsed_boxes_i = _clip_or_pad(boxes_i[nmsed_indices_i], max_num_detections, 0.0)
            nmsed_scores_i = _clip_or_pad(nmsed_scores_i, max_num_detections, -1.0)
            anchors_i = _clip_or_pad(indices[nmsed_indices_i], max_num_detections, -1)
        else:
            nmsed_indices_i, nmsed_num_valid_i = non_max_suppression_padded_v2(
                boxes_i, scores_i, max_num_detections, nms_iou_threshold, pre_nms_score_threshold)
            nmsed_boxes_i = boxes_i[nmsed_indices_i]
            nmsed_scores_i = scores_i[nmsed_indices_i]
            valid_i = np.arange(max_num_detections) < nmsed_num_valid_i
            nmsed_scores_i = np.where(valid_i, nmsed_scores_i, -np.ones_like(nmsed_scores_i))
            anchors_i = np.where(valid_i, indices[nmsed_indices_i], -1)
        nmsed_boxes.append(nmsed_boxes_i)
        nmsed_scores.append(nmsed_scores_i)
        nmsed_classes.append(np.full(max_num_detections, i, np.int32))
        nmsed_anchors.append(anchors_i)
    nmsed_boxes = np.concatenate(nmsed_boxes, 0)
    nmsed_scores = np.concatenate(nmsed_scores, 0)
    nmsed_classes = np.concatenate(nmsed_classes, 0)
    nmsed_anchors = np.concatenate(nmsed_anchors, 0)
    nmsed_scores, indices = _top_k(nmsed_scores, max_num_detections)
    valid_detections = int((nmsed_scores > -1).sum())
    return (nmsed_boxes[indices], nmsed_scores, nmsed_classes[indices], valid_detections,
            np.where(nmsed_scores > -1, nmsed_anchors[indices], -1))


def generate_detections_v1_reference(boxes, scores, *, pre_nms_top_k: int = 5000,
                                     pre_nms_score_threshold: float = 0.05, nms_iou_threshold: float = 0.5,
                                     max_num_detections: int = 100, soft_nms_sigma: float | None = None):
    """``_generate_detections_v1`` line by line on one batch: ``boxes`` ``[B, N, C or 1, 4]``,
    ``scores`` ``[B, N, C]`` (float32). Returns Model Garden's ``(boxes [B, max, 4], scores [B,
    max], classes [B, max] int32, valid_detections [B])`` and the anchor of every output
    ``[B, max]`` (-1 where invalid)."""
    boxes = np.asarray(boxes, _F32)
    scores = np.asarray(scores, _F32)
    outputs = [_generate_detections_per_image(boxes[b], scores[b], int(pre_nms_top_k), pre_nms_score_threshold,
                                              nms_iou_threshold, int(max_num_detections), soft_nms_sigma)
               for b in range(scores.shape[0])]
    return (np.stack([o[0] for o in outputs]), np.stack([o[1] for o in outputs]),
            np.stack([o[2] for o in outputs]), np.asarray([o[3] for o in outputs], np.int32),
            np.stack([o[4] for o in outputs]))
