"""Letterbox coordinates: resized (model) pixels and original image pixels.

Images reach the model letterboxed (`detsearch.datasets.detection.make_tf_dataset`: scaled by
``scale``, placed at the top-left corner), so Model Garden works in resized pixels and clips boxes
to the resized image (``image_shape``). Boxes leave `detsearch.models` in ORIGINAL image pixels:
``box_original = float32(float64(box_resized) / scale)`` with the float64 letterbox scale
(`to_original`), for the cache and for inference alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detsearch.datasets.detection import letterbox_scale

__all__ = ["image_shapes", "to_original"]


def image_shapes(original_sizes: np.ndarray, image_size: int) -> np.ndarray:
    """The resized (letterboxed) content size of each image, as Model Garden's ``image_shape``.

    Args:
      original_sizes: int ``[B, 2]`` (height, width) of the original images.
      image_size: the model's square input size.

    Returns:
      float32 ``[B, 2]``: ``min(image_size, max(1, round(side * scale)))`` per side, exactly the
      size `detsearch.datasets.detection.make_tf_dataset` resizes to (Python's round, float64 scale).
    """
    sizes = np.asarray(original_sizes).reshape(-1, 2)
    out = np.empty(sizes.shape, dtype=np.float32)
    for i, (height, width) in enumerate(sizes.tolist()):
        scale = letterbox_scale(height, width, image_size)
        out[i] = (min(image_size, max(1, round(height * scale))), min(image_size, max(1, round(width * scale))))
    return out


def to_original(boxes: np.ndarray, original_size: Sequence[int], image_size: int) -> np.ndarray:
    """Maps yxyx boxes from resized to original image pixels: ``float32(box / scale)``.

    Args:
      boxes: ``[..., 4]`` yxyx in resized pixels.
      original_size: (height, width) of the original image.
      image_size: the model's square input size.

    Returns:
      float32 array of the same shape; divided in float64 by the float64 letterbox scale, then
      rounded once to float32 (the identity when the scale is 1).
    """
    scale = letterbox_scale(int(original_size[0]), int(original_size[1]), image_size)
    return (np.asarray(boxes, dtype=np.float64) / scale).astype(np.float32)

