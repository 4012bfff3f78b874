"""Model Garden's ``nms_version: v1`` post-processing, one image and one class at a time, in
NumPy: the sweep's path. Exact (bit for bit) against the line-by-line transcription
`detsearch.detection.reference_nms_v1`, which the tests hold against Model Garden's TensorFlow
function.

Model Garden's ``_generate_detections_v1`` (``official/vision/modeling/layers/
detection_generator.py``), per image and class: the ``tf.nn.top_k`` of ``pre_nms_top_k`` scores
(equal scores: lower anchor first; the *visiting order* below), one NMS capped at
``max_num_detections``, the class's list padded with score -1; the classes concatenated and
merged by ``tf.nn.top_k(k=max_num_detections)`` (descending score, equal scores by (class,
position)); valid = score > -1. Which NMS depends on ``soft_nms_sigma``:

Below ``u`` is ``float32(iou_threshold)``, ``t < t'`` are score thresholds (float32).

``soft_nms_sigma: None`` -> `padded_nms_v1`: ``tf.image.non_max_suppression_padded``, i.e. the
Python ``non_max_suppression_padded_v2`` of ``tensorflow/python/ops/image_ops_impl.py``:

- boxes scoring ``<= t`` become all-zero dots with score 0 (never selected, never suppress:
  their IoU with anything is 0); the coordinates of *every* box are swapped when the first box
  has ``y1 > y2`` (likewise x), a rule decided by the first box only; then a stable descending
  sort (a no-op on Model Garden's top-k order when ``t >= 0``);
- IoU ``i_area / (a_area + b_area - i_area + 1e-8)`` in float32 (intersection width x height),
  suppression at IoU ``>= u`` (not ``>``);
- tiles of 512 in visiting order; a box is suppressed by any kept box of an earlier tile; within
  a tile a loop over the masked IoU matrix ``M`` (entries ``i < j`` with IoU ``>= u``, else 0):
  a box "can suppress" when its column of ``M`` has no entry (no live suppressor), the rows of
  the boxes such boxes suppress are cleared, and the loop stops as soon as an iteration lowered
  ``sum(M)`` by ``<= u``. At its fixed point this is greedy NMS (by induction over the visiting
  order the cleared rows are greedily suppressed boxes and the boxes that can suppress are
  greedily kept ones; at the fixed point every greedily suppressed box is cleared). It stops
  before the fixed point only when an iteration removes a single entry equal to ``u`` (entries
  are ``>= u``: two or more remove ``>= 2u``): a box that greedy NMS suppresses then still
  suppresses (the five-box chain in the tests: TensorFlow keeps 2 boxes where greedy keeps 3);
- selected: the boxes with a coordinate ``> 0`` (a kept box without one still suppresses), the
  first ``max_output`` in visiting order; the original (cached) scores are output;
- ``u == 0``: every box of a later tile is suppressed (IoU ``>= 0`` with the first tile's
  boxes) and nothing within the first tile is (no column maximum is ``< 0``, so every row is
  cleared); ``u < 0``: TensorFlow's loop never ends (rejected here).

``soft_nms_sigma: 0.0`` -> `greedy_nms_v1`: ``tf.image.non_max_suppression_with_scores``, the C++
kernel ``NonMaxSuppressionV5`` without decay: greedy NMS in visiting order (its priority queue
pops the highest score, equal scores the lower index), suppression at the kernel's IoU ``> u``
(strictly), the kernel's IoU (each box's corners min/max'ed on its own, no epsilon, 0 when
either area is ``<= 0``). Not the same NMS as ``None``.

``soft_nms_sigma > 0`` -> `soft_nms_v1`: the same kernel with Gaussian decay, not greedy: a
popped candidate is multiplied, in float32, by ``expf(scale * sim * sim)`` (``scale = -0.5 /
sigma`` in float32, ``(scale * sim) * sim``) for each box selected since its last pop, newest
first, stopping as soon as its score is ``<= t`` (then dropped); it is selected when its score
is still ``==`` the score it was popped with, otherwise pushed back if ``> t``. The selected
(decayed) scores are output. ``expf`` is the C library's: NumPy's float32 ``np.exp`` differs
from glibc's on a large share of these arguments (43% in our check, 60 of 150 kernel outputs
in the tests), ``float32(np.exp(float64))`` on ~0.07%; the compiled kernel (`v5_groups`, numba)
calls LLVM's ``exp.f32``, which is the C library's ``expf`` (a test holds it against
``libm.expf`` called through ctypes).

Both run in one compiled pass over every list of a sweep (`v5_groups`): the kernel's loop
itself, with a binary heap in its queue order and its lazy decay (only the boxes selected
since a candidate's last pop are applied, newest first).

Properties the sweep needs (checked against the code above, and by the tests):

(a) *Score thresholds* (``0 <= t < t'``; scores ``>= 0``).

- ``None``: the candidates above ``t'`` are a prefix of those above ``t`` (visiting order is by
  descending score; the masked ones sort after them, the first box is the same), the rest are
  dots. Whether a box of the prefix is cleared, can suppress or is suppressed in an iteration
  depends on earlier boxes only, and cross-tile suppression likewise; only the loop's stop (a
  sum over the whole tile) sees later boxes. Hence when no entry of a tile's ``M`` equals ``u``
  exactly, every prefix runs to its fixed point, greedy NMS, and the selection at ``t'`` is the
  one at ``t`` restricted to scores ``> t'``. With such an entry the stop can differ between
  prefixes (the chain in the tests: at ``t`` a later box's entries keep the loop going), and
  a prefix's selection need not even be a subset of the full one (a box suppressed in one tile
  no longer suppresses in later tiles): `padded_nms_v1_checked` says whether restriction
  holds, `padded_nms_v1_by_prefix` runs each prefix on its own where it does not.
- ``0.0``: greedy NMS decides each box from earlier boxes only: restriction holds.
- ``> 0``: decay weights are ``<= 1`` so a score never rises, and the popped scores are
  non-increasing (the queue's top is its maximum; a pushed-back candidate is lower). By
  induction over the pops at ``t``: while the top at ``t`` scores ``> t'``, it is also the top
  at ``t'`` (the queue at ``t'`` is the queue at ``t`` less its entries ``<= t'``, with the same
  scores and suppress-begin indices, and the same selected list), its decay loop multiplies the
  same weights in the same order, and the only difference, the break at ``<= t`` vs ``<= t'``,
  happens once its score is ``<= t'``: then it is dropped at ``t'`` and at ``t`` it ends
  ``<= t'`` (dropped, or pushed back below ``t'``). Selection (``==``) and push-back ``> t'``
  agree, and so does the cap count. Once the top at ``t`` scores ``<= t'`` the queue at ``t'``
  is empty. So the selection at ``t'`` is the selection at ``t`` restricted to decayed scores
  ``> t'``, same order, same decayed scores, and (scores non-increasing) a prefix of it: one
  pass at the grid's lowest threshold answers every threshold. (With negative scores the decay
  raises a score and this fails.)

(b) *Caps.* Each NMS fills its output in order and stops at the cap (the padded one stops its
tile loop once the cap is reached, and tiles do not depend on later tiles), so a class's
output at cap ``c`` is the first ``c`` of its output at ``C > c``. In every mode a class's
output scores are non-increasing (``None`` and ``0.0`` select in visiting order, ``> 0`` pops
non-increasing scores), so in the merge (descending score, ties by (class, position)) an entry
at class position ``>= c`` has ``c`` entries of its own class before it: the merge's first
``c`` at cap ``C`` use class positions ``< c`` only, which are the lists at cap ``c`` in the
same order. Hence the output at cap ``c`` is the first ``c`` of the output at cap ``C``
(valid entries; the -1 padding differs).

(c) *IoU threshold under soft NMS.* With ``sigma > 0`` the kernel never reads ``u``
(``suppress_weight`` returns the weight when ``is_soft_nms``, the hard suppression test starts
with ``!is_soft_nms``); it only checks ``0 <= u <= 1``. A sweep varies ``iou_threshold`` for
``None`` and ``0.0`` only.

Limits: boxes whose IoUs are not NaN. The transcription sums the padded loop's IoU in float64
(exact for ``u >= 2**-12``) where TensorFlow sums a 512 x 512 float32 matrix in Eigen's order;
an iteration that removes a single entry within that rounding of ``u`` (we saw -3e-5 for 300
entries) can be judged otherwise by TensorFlow, on some machines.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from detsearch.detection.nms_v2 import pairwise_overlap

__all__ = [
    "TILE_SIZE",
    "greedy_nms_v1",
    "merge_classes",
    "nms_v1",
    "padded_nms_v1",
    "padded_nms_v1_by_prefix",
    "padded_nms_v1_checked",
    "soft_nms_v1",
    "v5_groups",
]

TILE_SIZE = 512
"""``tf.image.non_max_suppression_padded``'s default ``tile_size`` (Model Garden passes none)."""

_F32 = np.float32


# ---------------------------------------------------------------------------------------------
# soft_nms_sigma None: non_max_suppression_padded_v2


def _canonical(boxes: np.ndarray) -> np.ndarray:
    """``canonicalize_coordinates``: every box's y (x) coordinates swapped when the first box
    has ``y1 > y2`` (``x1 > x2``)."""
    if len(boxes) == 0:
        return boxes
    swap_y, swap_x = not boxes[0, 0] <= boxes[0, 2], not boxes[0, 1] <= boxes[0, 3]
    if swap_y or swap_x:
        boxes = boxes[:, [2 if swap_y else 0, 3 if swap_x else 1, 0 if swap_y else 2, 1 if swap_x else 3]]
    return boxes


def _tile_loop(edges: np.ndarray, at_threshold: np.ndarray) -> np.ndarray:
    """``_self_suppression`` iterated as TensorFlow's while loop does, for a threshold ``t > 0``:
    ``edges`` (bool, ``i < j``) are the nonzero entries of the masked IoU matrix (all ``>= t``),
    ``at_threshold`` those exactly ``== t``. An iteration clears the rows of the boxes
    suppressed by boxes whose column is empty; the loop goes on while the entries removed sum
    to more than ``t``: two or more, or one above ``t``. Returns which boxes end suppressed (a
    row not cleared holds an entry for them)."""
    n = len(edges)
    involved = np.flatnonzero(edges.any(0) | edges.any(1))
    if not len(involved):
        return np.zeros(n, bool)
    edges = edges[np.ix_(involved, involved)]
    at_threshold = at_threshold[np.ix_(involved, involved)]
    row_count = edges.sum(1)
    active = np.ones(len(involved), bool)
    while True:
        live = edges & active[:, None]
        can = ~live.any(0)
        cleared = (live & can[:, None]).any(0) & active
        removed = int(row_count[cleared].sum())
        active &= ~cleared
        if removed == 0 or (removed == 1 and at_threshold[cleared].any()):
            break
    suppressed = np.zeros(n, bool)
    suppressed[involved] = (edges & active[:, None]).any(0)
    return suppressed


def padded_nms_v1_checked(boxes, iou_threshold: float, max_output: int) -> tuple[np.ndarray, bool]:
    """`padded_nms_v1`, and whether its selection answers every prefix (every higher score
    threshold) by restriction: False when a tile's masked IoU matrix has an entry exactly at
    the threshold, so that a prefix's loop may stop elsewhere (property (a)); then use
    `padded_nms_v1_by_prefix`."""
    positions, tie = _padded(boxes, iou_threshold, max_output)
    return positions, not tie


def _padded(boxes: np.ndarray, iou_threshold: float, max_output: int) -> tuple[np.ndarray, bool]:
    """`padded_nms_v1` and whether a tile's masked IoU matrix has an entry exactly at the
    threshold (then prefixes may stop the loop elsewhere, property (a))."""
    boxes = _canonical(np.asarray(boxes, _F32).reshape(-1, 4))
    threshold = _F32(iou_threshold)
    n = len(boxes)
    if not threshold >= 0:
        raise ValueError("iou_threshold must be >= 0 (TensorFlow's self-suppression loop never ends below 0)")
    if n == 0 or max_output <= 0:
        return np.zeros(0, np.int64), False
    if threshold == 0:
        # Every box of a later tile has IoU >= 0 with the first tile's boxes; within the first
        # tile no column maximum is < 0, so every row is cleared and nothing is suppressed.
        return np.flatnonzero((boxes[:TILE_SIZE] > 0).any(1))[:max_output], False
    alive = np.ones(n, bool)  # not suppressed: may suppress later boxes
    selected = np.zeros(n, bool)  # alive with a coordinate > 0
    tie = False
    for lo in range(0, n, TILE_SIZE):
        if selected.sum() >= max_output:
            break
        hi = min(n, lo + TILE_SIZE)
        earlier = boxes[:lo][alive[:lo]]  # suppressed boxes are dots: IoU 0 < threshold
        if len(earlier):
            alive[lo:hi] &= ~(pairwise_overlap(earlier, boxes[lo:hi]) >= threshold).any(0)
        inside = lo + np.flatnonzero(alive[lo:hi])
        tile = boxes[inside]
        iou = pairwise_overlap(tile, tile)
        edges = np.triu(iou >= threshold, 1)
        at_threshold = edges & (iou == threshold)
        tie = tie or bool(at_threshold.any())
        alive[inside[_tile_loop(edges, at_threshold)]] = False
        selected[lo:hi] = alive[lo:hi] & (boxes[lo:hi] > 0).any(1)
    return np.flatnonzero(selected)[:max_output], tie


def padded_nms_v1(boxes, iou_threshold: float, max_output: int) -> np.ndarray:
    """``soft_nms_sigma: None``: ``non_max_suppression_padded_v2`` for one image and class given
    its candidates above the score threshold in visiting order (float32 yxyx boxes). Returns
    the selected positions in output order (visiting order), at most ``max_output``."""
    return _padded(boxes, iou_threshold, max_output)[0]


def padded_nms_v1_by_prefix(boxes, iou_threshold: float, max_output: int, lengths) -> list[np.ndarray]:
    """`padded_nms_v1` of each prefix ``boxes[:length]`` (the candidates above each score
    threshold): the full selection cut at ``length``, unless an IoU exactly at the threshold
    lets a prefix's loop stop elsewhere (property (a)); then that prefix runs on its own."""
    boxes = np.asarray(boxes, _F32).reshape(-1, 4)
    full, tie = _padded(boxes, iou_threshold, max_output)
    out = []
    for length in lengths:
        length = int(length)
        if not tie or length >= len(boxes):
            out.append(full[full < length])
        else:
            out.append(_padded(boxes[:length], iou_threshold, max_output)[0])
    return out


# ---------------------------------------------------------------------------------------------
# soft_nms_sigma set: NonMaxSuppressionV5


def greedy_nms_v1(boxes, iou_threshold: float, max_output: int) -> np.ndarray:
    """``soft_nms_sigma: 0.0``: the kernel's hard NMS for one image and class given its
    candidates above the score threshold in visiting order: greedy, suppressed at IoU ``>
    iou_threshold``. Returns the selected positions (visiting order), at most ``max_output``."""
    boxes = np.asarray(boxes, _F32).reshape(-1, 4)
    positions, _, counts = v5_groups(boxes, np.ones(len(boxes), _F32), np.array([0, len(boxes)]), 0.0,
                                     iou_threshold, -1.0, max_output)
    return positions[: counts[0]]


def soft_nms_v1(boxes, scores, sigma: float, score_threshold: float, max_output: int) -> tuple[np.ndarray, np.ndarray]:
    """``soft_nms_sigma > 0``: the kernel's soft NMS for one image and class given its
    candidates (boxes and float32 scores) in visiting order; those scoring ``<=
    score_threshold`` are ignored, as the kernel ignores them. Returns the selected positions in
    output order and their decayed float32 scores (non-increasing), at most ``max_output``."""
    if not _F32(sigma) > 0:
        raise ValueError("soft_nms_v1 needs sigma > 0 (sigma 0.0 is greedy_nms_v1)")
    boxes = np.asarray(boxes, _F32).reshape(-1, 4)
    positions, decayed, counts = v5_groups(boxes, np.asarray(scores, _F32).reshape(-1), np.array([0, len(boxes)]),
                                           sigma, 1.0, score_threshold, max_output)
    return positions[: counts[0]], decayed[: counts[0]]


def v5_groups(boxes, scores, offsets, sigma: float, iou_threshold: float, score_threshold: float,
              max_output: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``NonMaxSuppressionV5`` (``sigma`` 0: hard NMS at IoU ``> iou_threshold``; above 0: soft
    NMS, which reads no IoU threshold) on many lists at once: list ``g`` is
    ``boxes[offsets[g]:offsets[g + 1]]`` with its float32 scores, in visiting order.

    Returns ``(positions, scores, counts)``: list ``g`` selected ``counts[g]`` candidates, their
    positions in the list at ``positions[offsets[g]:offsets[g] + counts[g]]`` in output order,
    their (decayed) float32 scores at the same places; the rest of both arrays is unset."""
    boxes = np.ascontiguousarray(boxes, _F32).reshape(-1, 4)
    scores = np.ascontiguousarray(scores, _F32).reshape(-1)
    offsets = np.asarray(offsets, np.int64)
    sigma = _F32(sigma)
    scale = _F32(-0.5) / sigma if sigma > 0 else _F32(0)
    positions = np.empty(len(boxes), np.int64)
    out_scores = np.empty(len(boxes), _F32)
    counts = np.zeros(len(offsets) - 1, np.int64)
    _v5(boxes, scores, offsets, bool(sigma > 0), scale, _F32(iou_threshold), _F32(score_threshold), int(max_output),
        positions, out_scores, counts)
    return positions, out_scores, counts


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _kernel_pair_iou(boxes, i, j):
    """The kernel's ``IOU(boxes, i, j)`` in float32: each box's corners min/max'ed on its own,
    no epsilon, 0 when either area is ``<= 0``."""
    ymin_i, ymax_i = min(boxes[i, 0], boxes[i, 2]), max(boxes[i, 0], boxes[i, 2])
    xmin_i, xmax_i = min(boxes[i, 1], boxes[i, 3]), max(boxes[i, 1], boxes[i, 3])
    ymin_j, ymax_j = min(boxes[j, 0], boxes[j, 2]), max(boxes[j, 0], boxes[j, 2])
    xmin_j, xmax_j = min(boxes[j, 1], boxes[j, 3]), max(boxes[j, 1], boxes[j, 3])
    area_i = (ymax_i - ymin_i) * (xmax_i - xmin_i)
    area_j = (ymax_j - ymin_j) * (xmax_j - xmin_j)
    if area_i <= 0 or area_j <= 0:
        return np.float32(0)
    height = max(min(ymax_i, ymax_j) - max(ymin_i, ymin_j), np.float32(0))
    width = max(min(xmax_i, xmax_j) - max(xmin_i, xmin_j), np.float32(0))
    intersection = height * width
    return intersection / (area_i + area_j - intersection)


@numba.njit(cache=True, nogil=True)
def _decay(scale, similarity):
    """The soft weight ``expf((scale * sim) * sim)`` in float32 (LLVM's ``exp.f32``: the C
    library's ``expf``, the function the kernel calls)."""
    return math.exp((scale * similarity) * similarity)


@numba.njit(cache=True, nogil=True)
def _before(score_a, index_a, score_b, index_b):
    """The kernel's queue order: higher score first, equal scores the lower index."""
    return score_a > score_b or (score_a == score_b and index_a < index_b)


@numba.njit(cache=True, nogil=True)
def _push(heap_score, heap_index, size, score, index):
    """Adds (score, index) to the binary heap of ``size`` entries; returns the new size."""
    heap_score[size], heap_index[size] = score, index
    child = size
    while child > 0:
        parent = (child - 1) // 2
        if not _before(heap_score[child], heap_index[child], heap_score[parent], heap_index[parent]):
            break
        heap_score[child], heap_score[parent] = heap_score[parent], heap_score[child]
        heap_index[child], heap_index[parent] = heap_index[parent], heap_index[child]
        child = parent
    return size + 1


@numba.njit(cache=True, nogil=True)
def _pop(heap_score, heap_index, size):
    """Removes the heap's first entry (read it at position 0 before); returns the new size."""
    size -= 1
    heap_score[0], heap_index[0] = heap_score[size], heap_index[size]
    parent = 0
    while True:
        first = parent
        for child in (2 * parent + 1, 2 * parent + 2):
            if child < size and _before(heap_score[child], heap_index[child], heap_score[first], heap_index[first]):
                first = child
        if first == parent:
            return size
        heap_score[first], heap_score[parent] = heap_score[parent], heap_score[first]
        heap_index[first], heap_index[parent] = heap_index[parent], heap_index[first]
        parent = first


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _v5(boxes, scores, offsets, soft, scale, iou_threshold, score_threshold, max_output, positions, out_scores,
        counts):
    """`v5_groups`: ``NonMaxSuppressionV5``'s loop (``non_max_suppression_op.cc``) per list.

    A binary heap in the kernel's queue order; a popped candidate is decayed (soft) or tested
    (hard) against the boxes selected since its last pop, newest first, stopping once its
    score is ``<= score_threshold`` (or, hard, at the first IoU ``> iou_threshold``); selected
    when its score is unchanged, pushed back when still above the threshold."""
    longest = 0
    for g in range(len(offsets) - 1):
        longest = max(longest, offsets[g + 1] - offsets[g])
    heap_score = np.empty(longest, np.float32)
    heap_index = np.empty(longest, np.int64)
    begin = np.empty(longest, np.int64)
    for g in range(len(offsets) - 1):
        start, n = offsets[g], offsets[g + 1] - offsets[g]
        size = 0
        for i in range(n):
            if scores[start + i] > score_threshold:  # push
                size = _push(heap_score, heap_index, size, scores[start + i], i)
            begin[i] = 0
        count = 0
        while count < max_output and size > 0:
            original, k = heap_score[0], heap_index[0]
            size = _pop(heap_score, heap_index, size)
            score = original
            suppressed = False
            for j in range(count - 1, begin[k] - 1, -1):
                similarity = _kernel_pair_iou(boxes, start + k, start + positions[start + j])
                if soft:
                    if similarity > 0:  # expf(0) is 1: the product would not change
                        score = score * _decay(scale, similarity)
                elif similarity > iou_threshold:
                    suppressed = True
                    break
                if score <= score_threshold:
                    break
            begin[k] = count
            if suppressed:
                continue
            if score == original:
                positions[start + count] = k
                out_scores[start + count] = score
                count += 1
            elif score > score_threshold:  # push back
                size = _push(heap_score, heap_index, size, score, k)
        counts[g] = count


def nms_v1(boxes, scores, *, soft_nms_sigma: float | None, iou_threshold: float, score_threshold: float,
           max_output: int) -> tuple[np.ndarray, np.ndarray]:
    """One image and class of Model Garden's v1, given the class's top ``pre_nms_top_k``
    candidates in visiting order: the selected positions in output order and their output
    scores (the cached ones, or the decayed ones under soft NMS)."""
    boxes = np.asarray(boxes, _F32).reshape(-1, 4)
    scores = np.asarray(scores, _F32).reshape(-1)
    if soft_nms_sigma is not None:  # the kernel's checks
        if not 0 <= _F32(iou_threshold) <= 1:
            raise ValueError("iou_threshold must be in [0, 1]")
        if not _F32(soft_nms_sigma) >= 0:
            raise ValueError("soft_nms_sigma must be >= 0")
    if soft_nms_sigma is not None and _F32(soft_nms_sigma) > 0:
        return soft_nms_v1(boxes, scores, soft_nms_sigma, score_threshold, max_output)
    passed = np.flatnonzero(scores > _F32(score_threshold))  # a prefix in visiting order
    if soft_nms_sigma is None:
        chosen = passed[padded_nms_v1(boxes[passed], iou_threshold, max_output)]
    else:
        chosen = passed[greedy_nms_v1(boxes[passed], iou_threshold, max_output)]
    return chosen, scores[chosen]


def merge_classes(class_scores, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Model Garden's merge of one image's classes: ``class_scores`` a list of each class's
    output scores (in output order); returns ``(class, position)`` of the first ``cap``
    entries by descending score, equal scores by (class, position)."""
    sizes = [len(s) for s in class_scores]
    if not sum(sizes):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    score = np.concatenate([np.asarray(s, _F32) for s in class_scores])
    classes = np.repeat(np.arange(len(sizes)), sizes)
    position = np.concatenate([np.arange(size) for size in sizes])
    order = np.lexsort((position, classes, -score))[:cap]
    return classes[order], position[order]
