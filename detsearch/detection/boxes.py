"""Box formats and IoU, named by format.

The internal format is ``yxyx``: float32 ``[N, 4]`` arrays of ``(ymin, xmin, ymax, xmax)`` in
absolute pixels, as TF Model Garden's ``official/vision/ops/box_ops.py``. COCO's
``[x, y, width, height]`` (``xywh``) appears only where COCO json is read or written.

Two IoU functions exist on purpose, each reproducing one reference's arithmetic bit for bit:

- `iou_yxyx`: float32, the formula of TensorFlow's CPU NMS kernels (``non_max_suppression_op.cc``),
  used to decide suppression.
- `iou_xywh`: float64, the formula of pycocotools' ``bbIou`` (``maskApi.c``), used to match
  detections to ground truth. A crowd region's IoU is ``intersection / area(detection)``.

This module imports only NumPy.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "area_yxyx",
    "check_yxyx",
    "iou_xywh",
    "iou_xywh_pairs",
    "iou_yxyx",
    "xywh_to_yxyx",
    "yxyx_to_xywh",
]


def _as_boxes(boxes, dtype) -> np.ndarray:
    array = np.asarray(boxes, dtype=dtype)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {np.shape(boxes)}")
    return array


def yxyx_to_xywh(boxes) -> np.ndarray:
    """Converts ``(ymin, xmin, ymax, xmax)`` boxes to COCO ``[x, y, width, height]``.

    Args:
      boxes: ``[N, 4]`` yxyx, any real dtype (float32 in this package).

    Returns:
      float64 ``[N, 4]``. The subtraction is done in float64 on the input values, so a float32
      box converts without rounding and ``x + width`` gives back ``xmax``.
    """
    boxes = _as_boxes(boxes, np.float64)
    out = np.empty_like(boxes)
    out[:, 0] = boxes[:, 1]
    out[:, 1] = boxes[:, 0]
    out[:, 2] = boxes[:, 3] - boxes[:, 1]
    out[:, 3] = boxes[:, 2] - boxes[:, 0]
    return out


def xywh_to_yxyx(boxes, dtype=np.float32) -> np.ndarray:
    """Converts COCO ``[x, y, width, height]`` boxes to ``(ymin, xmin, ymax, xmax)``.

    Args:
      boxes: ``[N, 4]`` xywh.
      dtype: output dtype (float32 by default, the internal format). The sums are computed in
        float64 and rounded once.

    Returns:
      ``[N, 4]`` yxyx of ``dtype``.
    """
    boxes = _as_boxes(boxes, np.float64)
    out = np.empty_like(boxes)
    out[:, 0] = boxes[:, 1]
    out[:, 1] = boxes[:, 0]
    out[:, 2] = boxes[:, 1] + boxes[:, 3]
    out[:, 3] = boxes[:, 0] + boxes[:, 2]
    return out.astype(dtype, copy=False)


def area_yxyx(boxes) -> np.ndarray:
    """Area ``(ymax - ymin) * (xmax - xmin)`` in the input's floating dtype, ``[N]``."""
    boxes = np.asarray(boxes)
    if not np.issubdtype(boxes.dtype, np.floating):
        boxes = boxes.astype(np.float64)
    boxes = _as_boxes(boxes, boxes.dtype)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def check_yxyx(boxes, what: str = "boxes") -> None:
    """Raises `ValueError` unless every box is finite with ``ymax >= ymin`` and ``xmax >= xmin``.

    The message names the first bad row and its values.
    """
    boxes = _as_boxes(boxes, np.float64)
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{what}: row {row} is not finite: {boxes[row].tolist()}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: row {row} has negative height or width (ymin, xmin, ymax, xmax) = {boxes[row].tolist()}")


def iou_yxyx(boxes_a, boxes_b) -> np.ndarray:
    """Pairwise IoU in float32 with TensorFlow's NMS kernel arithmetic.

    Coordinates of each box are first ordered (``min``/``max`` of the two y and the two x
    values, as the kernel does), areas are ``(ymax - ymin) * (xmax - xmin)``, a pair where
    either area is ``<= 0`` has IoU 0, otherwise
    ``IoU = intersection / (area_a + area_b - intersection)``, every step rounded to float32
    (no fused multiply-add), so a threshold comparison on this value gives the kernel's
    decision exactly.

    Args:
      boxes_a: ``[N, 4]`` yxyx.
      boxes_b: ``[M, 4]`` yxyx.

    Returns:
      float32 ``[N, M]``.
    """
    a = _as_boxes(boxes_a, np.float32)
    b = _as_boxes(boxes_b, np.float32)
    return _iou_yxyx_broadcast(_ordered(a)[:, None, :], _ordered(b)[None, :, :])


def _ordered(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes)
    out[..., 0] = np.minimum(boxes[..., 0], boxes[..., 2])
    out[..., 1] = np.minimum(boxes[..., 1], boxes[..., 3])
    out[..., 2] = np.maximum(boxes[..., 0], boxes[..., 2])
    out[..., 3] = np.maximum(boxes[..., 1], boxes[..., 3])
    return out


def _iou_yxyx_broadcast(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcastable float32 ``[..., 4]`` boxes whose coordinates are already ordered.

    ``a`` plays the kernel's candidate ``i`` and ``b`` the selected box ``j``; the sum
    ``area_i + area_j`` is commutative, so the roles only fix the written order.
    """
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    zero = np.float32(0.0)
    height = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), zero)
    width = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), zero)
    intersection = height * width
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersection / (area_a + area_b - intersection)
    return np.where((area_a <= zero) | (area_b <= zero), zero, iou).astype(np.float32, copy=False)


def iou_xywh(detections, ground_truth, crowd=None) -> np.ndarray:
    """Pairwise IoU of COCO ``[x, y, w, h]`` boxes, in float64, as pycocotools' ``bbIou``.

    ``width = min(x_d + w_d, x_g + w_g) - max(x_d, x_g)`` (likewise height); a pair with
    width or height ``<= 0`` has IoU 0; otherwise ``intersection / union`` where union is
    ``area_d + area_g - intersection``, or ``area_d`` when the ground-truth box is a crowd
    region. Areas are ``w * h``.

    Args:
      detections: ``[D, 4]`` xywh.
      ground_truth: ``[G, 4]`` xywh.
      crowd: optional bool ``[G]``; True marks a crowd (iscrowd) region.

    Returns:
      float64 ``[D, G]``.
    """
    d = _as_boxes(detections, np.float64)
    g = _as_boxes(ground_truth, np.float64)
    crowd_g = np.zeros(len(g), bool) if crowd is None else np.asarray(crowd, bool).reshape(len(g))
    return iou_xywh_pairs(d[:, None, :], g[None, :, :], crowd_g[None, :])


def iou_xywh_pairs(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' bbIou, elementwise on broadcastable arrays (see `iou_xywh`).

    Args:
      d: detections, float64 ``[..., 4]`` COCO ``[x, y, w, h]``.
      g: ground truth, float64 ``[..., 4]``, broadcastable against ``d``.
      crowd: bool, broadcastable against ``d[..., 0]``; a crowd pair's union is the
        detection's own area.

    Returns:
      float64 IoUs of the broadcast shape; 0 where the boxes do not overlap.
    """
    area_d = d[..., 2] * d[..., 3]
    area_g = g[..., 2] * g[..., 3]
    width = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0], g[..., 0])
    height = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1], g[..., 1])
    intersection = width * height
    union = np.where(crowd, area_d, area_d + area_g - intersection)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersection / union
    return np.where((width <= 0) | (height <= 0), 0.0, iou)
