"""SSD: TF Model Garden's one-stage detector (RetinaNet: ResNet + FPN + dense heads, focal loss).

Built with ``official.vision.modeling.factory.build_retinanet`` from an
``official.vision.configs.retinanet.RetinaNet`` config made from a named preset (`PRESETS`).
Post-processing is Model Garden's ``MultilevelDetectionGenerator`` with ``nms_version='batched'``
(``tf.image.combined_non_max_suppression``; the default ``'v2'`` is a TPU-style algorithm that
dominates inference on a CPU) and ``return_decoded=True``.

Thresholds (MoXing name -> Model Garden ``detection_generator`` field):
``score_threshold`` -> ``pre_nms_score_threshold`` (kept: score > it), ``iou_threshold`` ->
``nms_iou_threshold`` (suppressed: IoU > it); at most 100 per class and 100 in total.

Cache (kind ``one_stage``, `SsdDetector.cache_records`): the decoded, clipped anchor boxes
(``decoded_boxes``) and their per-class sigmoid scores (``decoded_box_scores``, background
dropped) before NMS. An entry is an (anchor, class) pair with ``score >= float32(score_floor)``;
a row is an anchor with at least one entry, in Model Garden's anchor order (level, then position,
then anchor shape). The batched NMS sees every anchor (it has no pre-NMS top-k), so the cache
holds every candidate a score threshold ``>= score_floor`` can keep.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

import tensorflow as tf
import tf_keras

from detsearch.models.coordinates import image_shapes, to_original
from detsearch.models.detector import Detector, build_detector
from detsearch.models.thresholds import MAX_NUM_DETECTIONS, apply_thresholds
from detsearch.detection.cache import CacheKind

__all__ = ["DETECTOR", "PRESETS", "SsdDetector", "SsdPreset", "build"]


@dataclasses.dataclass(frozen=True)
class SsdPreset:
    """Architecture and input size of an SSD (RetinaNet) preset.

    Attributes:
      name: preset name.
      image_size: square input side in pixels (images are letterboxed into it).
      resnet_id: ResNet depth of the backbone (``official.vision`` ``ResNet.model_id``).
      depth_multiplier: ResNet width multiplier.
      min_level, max_level: FPN levels (stride ``2**level``).
      fpn_filters: FPN channels.
      head_convs, head_filters: convolutions and channels of each RetinaNet head tower.
      num_scales, aspect_ratios, anchor_size: anchors per location (``num_scales *
        len(aspect_ratios)``), base size ``anchor_size * 2**level``.
      batch_size: the default training batch size.
    """

    name: str
    image_size: int
    resnet_id: int
    depth_multiplier: float
    min_level: int
    max_level: int
    fpn_filters: int
    head_convs: int
    head_filters: int
    num_scales: int
    aspect_ratios: tuple[float, ...]
    anchor_size: float
    batch_size: int


PRESETS: Mapping[str, SsdPreset] = {
    # Trains on the 128 px MNIST detection demo on a CPU in minutes.
    "tiny": SsdPreset(
        name="tiny", image_size=128, resnet_id=10, depth_multiplier=0.25, min_level=3, max_level=5,
        fpn_filters=32, head_convs=1, head_filters=32, num_scales=2, aspect_ratios=(0.5, 1.0, 2.0),
        anchor_size=3.0, batch_size=8,
    ),
    # Model Garden's retinanet_resnetfpn_coco architecture.
    "standard": SsdPreset(
        name="standard", image_size=640, resnet_id=50, depth_multiplier=1.0, min_level=3, max_level=7,
        fpn_filters=256, head_convs=4, head_filters=256, num_scales=3, aspect_ratios=(0.5, 1.0, 2.0),
        anchor_size=4.0, batch_size=8,
    ),
}


def model_config(preset: SsdPreset, num_classes: int, thresholds: Mapping[str, float] | None = None):
    """The Model Garden ``RetinaNet`` config of ``preset`` (``num_classes`` includes background)."""
    from official.vision.configs import backbones, common as mg_common, decoders, retinanet

    config = retinanet.RetinaNet(
        num_classes=int(num_classes),
        input_size=[preset.image_size, preset.image_size, 3],
        min_level=preset.min_level,
        max_level=preset.max_level,
        anchor=retinanet.Anchor(num_scales=preset.num_scales, aspect_ratios=list(preset.aspect_ratios),
                                anchor_size=preset.anchor_size),
        backbone=backbones.Backbone(
            type="resnet", resnet=backbones.ResNet(model_id=preset.resnet_id, depth_multiplier=preset.depth_multiplier)
        ),
        decoder=decoders.Decoder(type="fpn", fpn=decoders.FPN(num_filters=preset.fpn_filters)),
        head=retinanet.RetinaNetHead(num_convs=preset.head_convs, num_filters=preset.head_filters),
        detection_generator=retinanet.DetectionGenerator(
            apply_nms=True, nms_version="batched", return_decoded=True,
            max_num_detections=MAX_NUM_DETECTIONS,
        ),
        norm_activation=mg_common.NormActivation(use_sync_bn=False),
    )
    return apply_thresholds(config, CacheKind.ONE_STAGE, thresholds)


class SsdDetector(Detector):
    """Model Garden RetinaNet for a dataset's categories (see `detsearch.models.detector.Detector`)."""

    name = "ssd"
    kind = CacheKind.ONE_STAGE
    PRESETS = PRESETS

    def make_model_config(self, thresholds):
        return model_config(self.preset, self.num_classes, thresholds)

    def build_model(self, config):
        from official.vision.configs import retinanet
        from official.vision.modeling import factory
        from official.vision.modeling.layers import detection_generator
        from official.vision.ops import anchor
        from official.vision.tasks import retinanet as retinanet_task

        size = self.preset.image_size
        model = factory.build_retinanet(tf_keras.layers.InputSpec(shape=[None, size, size, 3]), config)
        self._anchors = anchor.Anchor(
            min_level=config.min_level, max_level=config.max_level, num_scales=config.anchor.num_scales,
            aspect_ratios=config.anchor.aspect_ratios, anchor_size=config.anchor.anchor_size,
            image_size=(size, size),
        ).multilevel_boxes
        # The RetinaNet parser's labeler (match and unmatched thresholds 0.5).
        parser = retinanet.Parser()
        self._labeler = anchor.AnchorLabeler(parser.match_threshold, parser.unmatched_threshold)
        self._task = retinanet_task.RetinaNetTask(retinanet.RetinaNetTask(model=config, losses=retinanet.Losses()))
        # Decoding only (no NMS), the same as the model's generator computes before its NMS.
        generator = config.detection_generator
        self._decoder = detection_generator.MultilevelDetectionGenerator(
            apply_nms=False, nms_version=generator.nms_version, box_coder_weights=generator.box_coder_weights,
        )
        return model

    # ------------------------------------------------------------------------------ training

    def _labels(self, batch: Mapping[str, tf.Tensor]) -> dict[str, Any]:
        per_image = []
        batch_size = batch["image"].shape[0]
        for i in range(batch_size):
            valid = batch["classes"][i] >= 0
            boxes = tf.boolean_mask(batch["boxes"][i], valid)
            classes = tf.boolean_mask(batch["classes"][i], valid)
            cls_targets, box_targets, _, cls_weights, box_weights = self._labeler.label_anchors(
                self._anchors, boxes, tf.expand_dims(classes, axis=1))
            per_image.append((cls_targets, box_targets, cls_weights, box_weights))
        levels = list(self._anchors)
        return {
            "cls_targets": {l: tf.cast(tf.stack([p[0][l] for p in per_image]), tf.int32) for l in levels},
            "box_targets": {l: tf.stack([p[1][l] for p in per_image]) for l in levels},
            "cls_weights": tf.stack([p[2] for p in per_image]),
            "box_weights": tf.stack([p[3] for p in per_image]),
        }

    def losses(self, batch):
        outputs = self.model(self.normalized(batch["image"]), image_shape=batch["image_shape"], training=True)
        _, cls_loss, box_loss, model_loss = self._task.build_losses(outputs, self._labels(batch))
        return {"model_loss": model_loss, "cls_loss": cls_loss, "box_loss": box_loss}

    # ------------------------------------------------------------------------------ inference

    def _predict(self, images, image_shape):
        outputs = self.model(self.normalized(images), image_shape=image_shape, training=False)
        return {k: outputs[k] for k in ("detection_boxes", "detection_scores", "detection_classes", "num_detections")}

    def _cache_outputs(self, images, image_shape):
        model = self.model
        features = model.backbone(self.normalized(images), training=False)
        features = model.decoder(features, training=False)
        raw_scores, raw_boxes, _ = model.head(features, training=False)
        batch_size = tf.shape(images)[0]
        anchors = {level: tf.tile(boxes[None], [batch_size, 1, 1, 1]) for level, boxes in self._anchors.items()}
        decoded = self._decoder(raw_boxes, raw_scores, anchors, image_shape)
        return {"boxes": decoded["decoded_boxes"][:, :, 0, :], "scores": decoded["decoded_box_scores"]}

    def raw_outputs(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Decoded boxes [B, A, 4] (resized pixels) and sigmoid scores [B, A, K] before NMS."""
        images = tf.convert_to_tensor(batch["image"], tf.float32)
        shapes = tf.constant(image_shapes(np.asarray(batch["original_size"]), self.image_size))
        function = self.traced("cache_outputs", self._cache_outputs, int(images.shape[0]))
        return {k: v.numpy() for k, v in function(images, shapes).items()}

    def cache_meta(self) -> dict[str, Any]:
        return {"top_k": None, "num_proposals": None}

    def cache_records(self, batch, score_floor):
        outputs = self.raw_outputs(batch)
        floor = np.float32(score_floor)
        records = []
        for i, image_id in enumerate(np.asarray(batch["image_id"]).tolist()):
            size = tuple(int(v) for v in np.asarray(batch["original_size"])[i])
            scores = outputs["scores"][i]
            rows, classes = np.nonzero(scores >= floor)  # row-major: sorted by (anchor, class)
            anchors, entry_row = np.unique(rows, return_inverse=True)
            records.append({
                "image_id": int(image_id),
                "size": size,
                "row_boxes": to_original(outputs["boxes"][i][anchors], size, self.image_size),
                "entry_row": entry_row.astype(np.int64),
                "entry_class": classes.astype(np.int64),
                "entry_score": scores[rows, classes],
            })
        return records


DETECTOR = SsdDetector


def build(preset: str = "tiny", category_ids=tuple(range(1, 11)), category_names=None, thresholds=None,
          seed: int | None = 0) -> SsdDetector:
    """An SSD for ``category_ids`` (default: the demo's digits 1..10), weights from ``seed``."""
    return build_detector("ssd", preset, category_ids, category_names, thresholds, seed)
