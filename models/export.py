"""Exporting a trained detector as a SavedModel that runs its post-processing at its
thresholds, and optionally per-category score thresholds after it (`export_detector`)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from detsearch.atomic import replace_directory
from detsearch.datasets.detection import write_json_atomic
from detsearch.models.class_thresholds import check_class_score_thresholds
from detsearch.models.detector import Detector

__all__ = ["class_threshold_tables", "export_detector", "keep_above_class_thresholds"]


def export_detector(
    detector: Detector,
    path: str | os.PathLike,
    *,
    class_score_thresholds: Mapping[int, float] | None = None,
) -> Path:
    """Exports ``detector`` as a SavedModel whose post-processing runs at its `thresholds`.

    Signature ``serving_default``: inputs ``images`` float32 ``[B, S, S, 3]`` (RGB 0..255,
    letterboxed as `detsearch.datasets.detection.make_tf_dataset` does: scaled by ``min(S / H, S / W)``,
    placed at the top-left) and ``original_size`` int32 ``[B, 2]`` (H, W); outputs
    ``detection_boxes`` float32 ``[B, 100, 4]`` yxyx in original pixels, ``detection_scores``,
    ``detection_category_ids`` int64 (dataset category ids) and ``num_detections`` int32
    ``[B]``, the rows past an image's ``num_detections`` all zeros (Model Garden pads RetinaNet's
    classes with class 1, a real category, and the export does not pass that on): the same
    numbers as `Detector.predict` when called under
    `detsearch.models.detector.pinned_box_arithmetic` (Grappler's defaults may regroup the box
    arithmetic and move the last bits). Written beside ``path`` and moved into place with
    `detsearch.atomic.replace_directory`, so ``path`` is absent, the previous export, or the
    whole new one.

    With ``class_score_thresholds`` (category id -> threshold in [0, 1]), the detections of
    that post-processing are filtered after it: one of category ``c`` is kept when
    ``float32(score) > float32(class_score_thresholds[c])``; categories absent from the mapping
    keep all their detections. Kept detections move to the front in their original order
    (stable), the rest of the 100 rows are zeros (boxes, scores and category ids 0, as without
    the mapping), and ``num_detections`` counts the kept ones. The mapping is
    recorded in ``detector.json`` as ``"class_score_thresholds": {"<id>": threshold}``.

    Raises:
      ValueError: a category id of ``class_score_thresholds`` that is not among the detector's
        `category_ids`, a threshold that is not a number in [0, 1]; nothing is written then.
    """
    class_thresholds = None
    if class_score_thresholds is not None:
        class_thresholds = check_class_score_thresholds(class_score_thresholds, detector.category_ids)
    size = detector.image_size
    category_ids = tf.constant([0, *detector.category_ids], tf.int64)
    # Without a mapping no class is limited, and the filter only zeroes the padding rows.
    class_limits = class_threshold_tables(detector, class_thresholds or {})
    module = tf.Module()
    module.model = detector.model

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images"),
                                  tf.TensorSpec([None, 2], tf.int32, name="original_size")], autograph=False)
    def serve(images, original_size):
        sides = tf.cast(original_size, tf.float64)
        scale = tf.reduce_min(tf.cast(size, tf.float64) / sides, axis=1)
        shape = tf.clip_by_value(tf.round(sides * scale[:, None]), 1.0, float(size))
        outputs = detector._predict(images, tf.cast(shape, tf.float32))  # pylint: disable=protected-access
        boxes = tf.cast(tf.cast(outputs["detection_boxes"], tf.float64) / scale[:, None, None], tf.float32)
        classes = tf.cast(outputs["detection_classes"], tf.int64)
        detections = {
            "detection_boxes": boxes,
            "detection_scores": tf.cast(outputs["detection_scores"], tf.float32),
            "detection_category_ids": tf.gather(category_ids, classes),
            "num_detections": tf.cast(outputs["num_detections"], tf.int32),
        }
        return keep_above_class_thresholds(detections, classes, *class_limits)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier export of this process id
    level = tf.get_logger().level
    tf.get_logger().setLevel(logging.ERROR)  # Keras notes layers it does not serialise; serving does not need them
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": serve})
        info = {**detector.describe(), "thresholds": detector.thresholds}
        if class_thresholds is not None:
            info["class_score_thresholds"] = {str(k): v for k, v in class_thresholds.items()}
        write_json_atomic(tmp / "detector.json", info)
        return replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        tf.get_logger().setLevel(level)


def class_threshold_tables(detector: Detector, class_thresholds: Mapping[int, float]) -> tuple[tf.Tensor, tf.Tensor]:
    """Per model class index (0: padding, 1..K: `Detector.category_ids`): whether the class has
    a threshold (bool ``[K + 1]``) and the threshold (float32 ``[K + 1]``, 0 where none)."""
    limited = np.zeros(detector.num_classes, bool)
    limits = np.zeros(detector.num_classes, np.float32)
    for index, category_id in enumerate(detector.category_ids, start=1):
        if category_id in class_thresholds:
            limited[index] = True
            limits[index] = np.float32(class_thresholds[category_id])
    return tf.constant(limited), tf.constant(limits)


def keep_above_class_thresholds(
    detections: Mapping[str, tf.Tensor], classes: tf.Tensor, limited: tf.Tensor, limits: tf.Tensor
) -> dict[str, tf.Tensor]:
    """Keeps the detections whose score is > their class's threshold, at the front, stably.

    Args:
      detections: ``detection_boxes`` float32 ``[B, N, 4]``, ``detection_scores`` float32
        ``[B, N]``, ``detection_category_ids`` int64 ``[B, N]``, ``num_detections`` int32 ``[B]``;
        the first ``num_detections`` rows of an image are its detections.
      classes: int64 ``[B, N]`` model class index of each row.
      limited, limits: `class_threshold_tables`.

    Returns:
      The same keys and shapes: per image the kept rows in their original order, then zeros;
      ``num_detections`` the number kept.
    """
    scores = detections["detection_scores"]
    positions = tf.range(tf.shape(scores)[1])[None, :]
    valid = positions < detections["num_detections"][:, None]
    passes = scores > tf.gather(limits, classes)
    keep = valid & (passes | ~tf.gather(limited, classes))
    # Kept rows sort before the others; a stable sort keeps each group in its order.
    order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)
    kept = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    front = positions < kept[:, None]

    def compact(values: tf.Tensor) -> tf.Tensor:
        moved = tf.gather(values, order, axis=1, batch_dims=1)
        mask = front if values.shape.rank == 2 else front[:, :, None]
        return tf.where(mask, moved, tf.zeros_like(moved))

    return {
        "detection_boxes": compact(detections["detection_boxes"]),
        "detection_scores": compact(scores),
        "detection_category_ids": compact(detections["detection_category_ids"]),
        "num_detections": kept,
    }
