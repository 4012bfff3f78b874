"""Exporting a trained detector as a SavedModel that runs its post-processing at its
thresholds (`export_detector`)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import tensorflow as tf

from detsearch.atomic import replace_directory
from detsearch.datasets.detection import write_json_atomic
from detsearch.models.detector import Detector

__all__ = ["export_detector"]


def export_detector(detector: Detector, path: str | os.PathLike) -> Path:
    """Exports ``detector`` as a SavedModel whose post-processing runs at its `thresholds`.

    Signature ``serving_default``: inputs ``images`` float32 ``[B, S, S, 3]`` (RGB 0..255,
    letterboxed as `detsearch.datasets.detection.make_tf_dataset` does: scaled by ``min(S / H, S / W)``,
    placed at the top-left) and ``original_size`` int32 ``[B, 2]`` (H, W); outputs
    ``detection_boxes`` float32 ``[B, 100, 4]`` yxyx in original pixels, ``detection_scores``,
    ``detection_category_ids`` int64 (dataset category ids) and ``num_detections``: the same
    numbers as `Detector.predict` when called under
    `detsearch.models.detector.pinned_box_arithmetic` (Grappler's defaults may regroup the box
    arithmetic and move the last bits). Written beside ``path`` and moved into place with
    `detsearch.atomic.replace_directory`, so ``path`` is absent, the previous export, or the
    whole new one.
    """
    size = detector.image_size
    category_ids = tf.constant([0, *detector.category_ids], tf.int64)
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
        return {
            "detection_boxes": boxes,
            "detection_scores": tf.cast(outputs["detection_scores"], tf.float32),
            "detection_category_ids": tf.gather(category_ids, tf.cast(outputs["detection_classes"], tf.int64)),
            "num_detections": tf.cast(outputs["num_detections"], tf.int32),
        }

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier export of this process id
    level = tf.get_logger().level
    tf.get_logger().setLevel(logging.ERROR)  # Keras notes layers it does not serialise; serving does not need them
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": serve})
        write_json_atomic(tmp / "detector.json", {**detector.describe(), "thresholds": detector.thresholds})
        return replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        tf.get_logger().setLevel(level)


