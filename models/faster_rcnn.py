"""Faster R-CNN: TF Model Garden's two-stage detector (its Mask R-CNN model without the mask branch).

Built with ``official.vision.modeling.factory.build_maskrcnn`` from an
``official.vision.configs.maskrcnn.MaskRCNN`` config with ``include_mask=False``, made from a
named preset (`PRESETS`): ResNet + FPN, an RPN, ``MultilevelROIGenerator`` with
``use_batched_nms=True``, ROI align, the box head and a ``DetectionGenerator`` with
``nms_version='batched'``.

Thresholds (MoXing name -> Model Garden field):

- ``nms_score_threshold`` -> ``roi_generator.test_pre_nms_score_threshold``: a proposal is kept
  when its objectness is > it;
- ``nms_iou_threshold`` -> ``roi_generator.test_nms_iou_threshold``: per FPN level, a proposal
  is suppressed when its IoU with a kept one is > it; at most ``test_num_proposals`` (per level
  and after merging the levels by objectness) go to the second stage;
- ``score_threshold`` -> ``detection_generator.pre_nms_score_threshold`` (kept: score > it);
- ``iou_threshold`` -> ``detection_generator.nms_iou_threshold`` (per class; suppressed: IoU > it),
  at most 100 per class and 100 in total.

Cache (kind ``two_stage``, `FasterRcnnDetector.cache_records`):

- rows: the RPN proposals BEFORE first-stage NMS, per FPN level the top
  ``cache_proposals_per_level`` by objectness (every anchor when None), decoded and clipped by
  Model Garden's own ``_multilevel_propose_rois`` with NMS skipped (``nms_iou_threshold=0``), with
  their objectness (sigmoid) and level; levels in Model Garden's order, each by descending
  objectness;
- entries: the second stage run on EVERY recorded proposal (ROI align, box head,
  ``DetectionGenerator(apply_nms=False)`` decoding: softmax scores with the background dropped,
  class-specific boxes), one entry per (proposal, class) with ``score >= float32(score_floor)``.
  The box head treats each ROI on its own, so any first-stage setting selects a subset of rows
  whose second-stage outputs are already recorded. The second stage runs on chunks of
  ``test_num_proposals`` ROIs, the shape it has at inference. With `set_first_stage`
  (``record_cache(first_stage=...)``) it runs only on the proposals the declared first-stage
  settings can keep, and the sweep is exact for exactly those settings (docs/models.md).

Where a re-run of the model can still differ from the sweep on its cache (Model Garden's all-zero
padding ROIs, tied scores, ``nms_iou_threshold = 0``, capped proposals): docs/models.md.
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

__all__ = ["DETECTOR", "FasterRcnnDetector", "FasterRcnnPreset", "PRESETS", "REGRESSION_WEIGHTS", "build"]

REGRESSION_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
"""Model Garden's box coder weights of the (first) Fast R-CNN head."""


@dataclasses.dataclass(frozen=True)
class FasterRcnnPreset:
    """Architecture and input size of a Faster R-CNN preset.

    Attributes:
      name: preset name.
      image_size: square input side in pixels (images are letterboxed into it).
      resnet_id, depth_multiplier: ResNet backbone depth and width multiplier.
      min_level, max_level: FPN levels (stride ``2**level``).
      fpn_filters: FPN channels.
      rpn_convs, rpn_filters: RPN head tower.
      head_convs, head_filters, head_fcs, fc_dims: Fast R-CNN box head.
      num_scales, aspect_ratios, anchor_size: anchors (base size ``anchor_size * 2**level``).
      num_sampled_rois: ROIs sampled per image for the box head in training.
      rpn_batch_size_per_im: anchors sampled per image for the RPN loss.
      test_pre_nms_top_k: Model Garden ``roi_generator.test_pre_nms_top_k``; with batched NMS it
        caps the proposals kept per level after NMS. Must be >= ``test_num_proposals`` (then the
        per-level cap is ``test_num_proposals``, as the sweep assumes).
      test_num_proposals: ``roi_generator.test_num_proposals``: proposals kept after first-stage
        NMS (per level, then in total).
      cache_proposals_per_level: proposals recorded per level in a cache; None records every
        anchor (needed for exactness with batched NMS, which has no pre-NMS top-k).
      rpn_match_threshold, rpn_unmatched_threshold: anchors with IoU >= the first are RPN
        positives, < the second negatives (Model Garden: 0.7 and 0.3). The tiny preset uses 0.5:
        a digit on its coarse anchor grid seldom reaches IoU 0.7 with any anchor, and an RPN
        with only force-matched positives learns too slowly for a few hundred steps.
      norm_momentum: batch normalisation moving-average momentum. Model Garden's 0.997 needs
        about a thousand steps before the moving statistics used at inference are right; the
        tiny preset trains for a few hundred.
      batch_size: the default training batch size.
    """

    name: str
    image_size: int
    resnet_id: int
    depth_multiplier: float
    min_level: int
    max_level: int
    fpn_filters: int
    rpn_convs: int
    rpn_filters: int
    head_convs: int
    head_filters: int
    head_fcs: int
    fc_dims: int
    num_scales: int
    aspect_ratios: tuple[float, ...]
    anchor_size: float
    num_sampled_rois: int
    rpn_batch_size_per_im: int
    test_pre_nms_top_k: int
    test_num_proposals: int
    cache_proposals_per_level: int | None
    rpn_match_threshold: float
    rpn_unmatched_threshold: float
    norm_momentum: float
    batch_size: int

    def __post_init__(self) -> None:
        if self.test_pre_nms_top_k < self.test_num_proposals:
            raise ValueError(f"test_pre_nms_top_k ({self.test_pre_nms_top_k}) must be >= test_num_proposals "
                             f"({self.test_num_proposals})")


PRESETS: Mapping[str, FasterRcnnPreset] = {
    # Trains on the 128 px MNIST detection demo on a CPU in minutes.
    "tiny": FasterRcnnPreset(
        name="tiny", image_size=128, resnet_id=10, depth_multiplier=0.25, min_level=2, max_level=5,
        fpn_filters=32, rpn_convs=1, rpn_filters=32, head_convs=0, head_filters=32, head_fcs=1, fc_dims=128,
        num_scales=1, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=4.0, num_sampled_rois=128,
        rpn_batch_size_per_im=128, test_pre_nms_top_k=300, test_num_proposals=300,
        cache_proposals_per_level=None, rpn_match_threshold=0.5, rpn_unmatched_threshold=0.3, norm_momentum=0.99,
        batch_size=8,
    ),
    # Model Garden's fasterrcnn_resnetfpn_coco architecture (1024 px, ResNet-50 FPN, levels 2-6).
    "standard": FasterRcnnPreset(
        name="standard", image_size=1024, resnet_id=50, depth_multiplier=1.0, min_level=2, max_level=6,
        fpn_filters=256, rpn_convs=1, rpn_filters=256, head_convs=4, head_filters=256, head_fcs=1, fc_dims=1024,
        num_scales=1, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=8.0, num_sampled_rois=512,
        rpn_batch_size_per_im=256, test_pre_nms_top_k=1000, test_num_proposals=1000,
        cache_proposals_per_level=4000, rpn_match_threshold=0.7, rpn_unmatched_threshold=0.3, norm_momentum=0.997,
        batch_size=2,
    ),
}


def model_config(preset: FasterRcnnPreset, num_classes: int, thresholds: Mapping[str, float] | None = None):
    """The Model Garden ``MaskRCNN`` config (no mask) of ``preset``; ``num_classes`` includes background."""
    from official.vision.configs import backbones, common as mg_common, decoders, maskrcnn

    config = maskrcnn.MaskRCNN(
        num_classes=int(num_classes),
        input_size=[preset.image_size, preset.image_size, 3],
        min_level=preset.min_level,
        max_level=preset.max_level,
        include_mask=False,
        mask_head=None,
        mask_sampler=None,
        mask_roi_aligner=None,
        anchor=maskrcnn.Anchor(num_scales=preset.num_scales, aspect_ratios=list(preset.aspect_ratios),
                               anchor_size=preset.anchor_size),
        backbone=backbones.Backbone(
            type="resnet", resnet=backbones.ResNet(model_id=preset.resnet_id, depth_multiplier=preset.depth_multiplier)
        ),
        decoder=decoders.Decoder(type="fpn", fpn=decoders.FPN(num_filters=preset.fpn_filters)),
        rpn_head=maskrcnn.RPNHead(num_convs=preset.rpn_convs, num_filters=preset.rpn_filters),
        detection_head=maskrcnn.DetectionHead(num_convs=preset.head_convs, num_filters=preset.head_filters,
                                              num_fcs=preset.head_fcs, fc_dims=preset.fc_dims),
        roi_generator=maskrcnn.ROIGenerator(
            use_batched_nms=True, test_pre_nms_top_k=preset.test_pre_nms_top_k,
            test_num_proposals=preset.test_num_proposals,
        ),
        roi_sampler=maskrcnn.ROISampler(num_sampled_rois=preset.num_sampled_rois),
        detection_generator=maskrcnn.DetectionGenerator(nms_version="batched",
                                                        max_num_detections=MAX_NUM_DETECTIONS),
        norm_activation=mg_common.NormActivation(use_sync_bn=False, norm_momentum=preset.norm_momentum,
                                                 norm_epsilon=1e-4),
    )
    return apply_thresholds(config, CacheKind.TWO_STAGE, thresholds)


class FasterRcnnDetector(Detector):
    """Model Garden Faster R-CNN for a dataset's categories (see `detsearch.models.detector.Detector`)."""

    name = "faster_rcnn"
    kind = CacheKind.TWO_STAGE
    PRESETS = PRESETS

    max_padding_score = 0.0
    """The largest class score of Model Garden's all-zero padding ROI over the images
    `cache_records` has seen (see docs/models.md, "Where a re-run can differ"): the sweep equals
    Model Garden for every score_threshold at or above it."""

    def make_model_config(self, thresholds):
        return model_config(self.preset, self.num_classes, thresholds)

    def build_model(self, config):
        from official.vision.configs import maskrcnn
        from official.vision.modeling import factory
        from official.vision.modeling.layers import detection_generator
        from official.vision.ops import anchor
        from official.vision.tasks import maskrcnn as maskrcnn_task

        size = self.preset.image_size
        model = factory.build_maskrcnn(tf_keras.layers.InputSpec(shape=[None, size, size, 3]), config)
        # The box head's variables are created on its first call; create them now (checkpoints,
        # optimizer slots).
        crop = config.roi_aligner.crop_size
        model.detection_head[0](tf.zeros([1, 1, crop, crop, config.decoder.fpn.num_filters]))
        self._anchors = anchor.Anchor(
            min_level=config.min_level, max_level=config.max_level, num_scales=config.anchor.num_scales,
            aspect_ratios=config.anchor.aspect_ratios, anchor_size=config.anchor.anchor_size,
            image_size=(size, size),
        ).multilevel_boxes
        parser = maskrcnn.Parser(rpn_batch_size_per_im=self.preset.rpn_batch_size_per_im,
                                 rpn_match_threshold=self.preset.rpn_match_threshold,
                                 rpn_unmatched_threshold=self.preset.rpn_unmatched_threshold)
        self._labeler = anchor.RpnAnchorLabeler(parser.rpn_match_threshold, parser.rpn_unmatched_threshold,
                                                parser.rpn_batch_size_per_im, parser.rpn_fg_fraction)
        self._task = maskrcnn_task.MaskRCNNTask(maskrcnn.MaskRCNNTask(model=config, losses=maskrcnn.Losses()))
        self._decoder = detection_generator.DetectionGenerator(
            apply_nms=False, use_sigmoid_probability=config.detection_generator.use_sigmoid_probability)
        return model

    def _batched_anchors(self, batch_size) -> dict[str, tf.Tensor]:
        return {level: tf.tile(boxes[None], [batch_size, 1, 1, 1]) for level, boxes in self._anchors.items()}

    # ------------------------------------------------------------------------------ training

    def losses(self, batch):
        batch_size = batch["image"].shape[0]
        score_targets, box_targets = [], []
        for i in range(batch_size):
            valid = batch["classes"][i] >= 0
            boxes = tf.boolean_mask(batch["boxes"][i], valid)
            classes = tf.cast(tf.boolean_mask(batch["classes"][i], valid), tf.float32)
            scores_i, boxes_i = self._labeler.label_anchors(self._anchors, boxes, tf.expand_dims(classes, axis=-1))
            score_targets.append(scores_i)
            box_targets.append(boxes_i)
        levels = list(self._anchors)
        labels = {
            "rpn_score_targets": {l: tf.stack([t[l] for t in score_targets]) for l in levels},
            "rpn_box_targets": {l: tf.stack([t[l] for t in box_targets]) for l in levels},
        }
        outputs = self.model(
            self.normalized(batch["image"]),
            image_shape=batch["image_shape"],
            anchor_boxes=self._batched_anchors(batch_size),
            gt_boxes=batch["boxes"],
            gt_classes=batch["classes"],
            training=True,
        )
        outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32), outputs)
        losses = self._task.build_losses(outputs, labels)
        return {
            "model_loss": losses["model_loss"],
            "rpn_score_loss": losses["rpn_score_loss"],
            "rpn_box_loss": losses["rpn_box_loss"],
            "frcnn_cls_loss": losses["frcnn_cls_loss"],
            "frcnn_box_loss": losses["frcnn_box_loss"],
        }

    # ------------------------------------------------------------------------------ inference

    def _predict(self, images, image_shape):
        outputs = self.model(self.normalized(images), image_shape=image_shape, training=False)
        return {k: outputs[k] for k in ("detection_boxes", "detection_scores", "detection_classes", "num_detections")}

    def proposals_per_level(self) -> dict[str, int]:
        """Proposals a cache records per FPN level (level name -> count)."""
        cap = self.preset.cache_proposals_per_level
        counts = {}
        for level, boxes in self._anchors.items():
            num_boxes = int(np.prod(boxes.shape[:2])) * (int(boxes.shape[2]) // 4)
            counts[level] = num_boxes if cap is None else min(num_boxes, int(cap))
        return counts

    first_stage: tuple[tuple[float, ...], float] | None = None
    """``(nms_iou_thresholds, min_nms_score)`` set by `set_first_stage`: the cache then runs the
    second stage only on the proposals those first-stage settings can keep; None: on all."""

    def set_first_stage(self, iou_thresholds, min_score: float = 0.0) -> None:
        """Record the second stage only for the first-stage settings a sweep will try.

        With ``iou_thresholds`` (every ``nms_iou_threshold`` to sweep) and ``min_score`` (the
        lowest ``nms_score_threshold``), a cache runs the second stage only on the union, over
        those IoU thresholds, of the proposals first-stage NMS keeps at ``min_score`` (per level,
        then merged, at most ``test_num_proposals``: what Model Garden's first stage passes on),
        computed with the sweep's own first-stage NMS on the recorded rows. Any higher
        ``nms_score_threshold`` keeps a subset of those, so the sweep stays exact for every
        such setting; it refuses others (`CacheMeta.first_stage_iou_thresholds`). None
        records the second stage of every proposal again.
        """
        if iou_thresholds is None:
            self.first_stage = None
            return
        ious = tuple(sorted({float(v) for v in iou_thresholds}))
        if not ious or not all(0.0 < v <= 1.0 for v in ious) or not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"first-stage IoU thresholds must be in (0, 1] and the minimum score in [0, 1]; got "
                             f"{list(iou_thresholds)}, {min_score}")
        self.first_stage = (ious, float(min_score))

    def _proposals(self, images, image_shape):
        """Backbone, FPN, RPN and the proposals before first-stage NMS (Model Garden's own
        ``_multilevel_propose_rois`` with NMS skipped)."""
        from official.vision.modeling.layers import roi_generator

        model = self.model
        batch_size = images.shape[0]
        features = model.backbone(self.normalized(images), training=False)
        features = model.decoder(features, training=False)
        rpn_scores, rpn_boxes = model.rpn_head(features, training=False)
        anchors = self._batched_anchors(batch_size)
        rois, objectness, levels = [], [], []
        # Model Garden's level order (its loop runs over sorted(raw_scores.keys())).
        for level, count in sorted(self.proposals_per_level().items()):
            level_rois, level_scores = roi_generator._multilevel_propose_rois(  # pylint: disable=protected-access
                {level: rpn_boxes[level]}, {level: rpn_scores[level]}, {level: anchors[level]}, image_shape,
                pre_nms_top_k=count, pre_nms_score_threshold=0.0, pre_nms_min_size_threshold=0.0,
                nms_iou_threshold=0.0, num_proposals=count, use_batched_nms=True,
            )
            rois.append(level_rois)
            objectness.append(level_scores)
            levels.append(tf.fill([batch_size, count], int(level)))
        return features, tf.concat(rois, axis=1), tf.concat(objectness, axis=1), tf.concat(levels, axis=1)

    def _second_stage(self, features, rois, image_shape):
        """ROI align, box head and per-class decoding of ``rois`` [B, test_num_proposals, 4]
        (the shape the second stage has at inference)."""
        roi_features = self.model.roi_aligner(features, rois)
        class_outputs, box_outputs = self.model.detection_head[0](roi_features, training=False)
        decoded = self._decoder(box_outputs, class_outputs, rois, image_shape, list(REGRESSION_WEIGHTS),
                                bbox_per_class=True)
        return decoded["decoded_boxes"], decoded["decoded_box_scores"]

    def _evaluated_rows(self, sizes: np.ndarray, rois: np.ndarray, objectness: np.ndarray,
                        levels: np.ndarray) -> list[np.ndarray]:
        """Per image, the rows (sorted) whose second stage the cache records."""
        num_images, total = objectness.shape
        if self.first_stage is None:
            return [np.arange(total) for _ in range(num_images)]
        from detsearch.detection import nms as nms_ops

        # Exactly what the sweep will see: boxes in original pixels, float32.
        boxes = np.concatenate([to_original(rois[i], sizes[i], self.image_size) for i in range(num_images)])
        offsets = np.arange(num_images + 1, dtype=np.int64) * total
        ious, min_score = self.first_stage
        kept = np.zeros(num_images * total, bool)
        for iou in ious:
            rows, _ = nms_ops.class_agnostic_nms_batched(
                boxes, objectness.reshape(-1).astype(np.float32), offsets, iou_threshold=iou,
                score_threshold=min_score, max_output_size=self.preset.test_num_proposals,
                levels=levels.reshape(-1))
            kept[rows] = True
        return [np.flatnonzero(kept[i * total:(i + 1) * total]) for i in range(num_images)]

    def raw_outputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Proposals before first-stage NMS and the second stage on the evaluated ones.

        Returns (resized pixels): ``rois`` [B, R, 4], ``objectness`` [B, R], ``levels`` [B, R];
        ``evaluated``: per image, the row indices the second stage ran on (every row unless
        `set_first_stage` narrowed them); ``boxes`` [B, R, K, 4] and ``scores`` [B, R, K] (zero
        for rows not evaluated); and ``padding_scores`` [B, K]: the class scores of an all-zero
        ROI, which Model Garden's first stage emits to fill ``test_num_proposals`` when fewer
        proposals survive its NMS (docs/models.md).
        """
        images = tf.convert_to_tensor(batch["image"], tf.float32)
        batch_size = int(images.shape[0])
        sizes = np.asarray(batch["original_size"])
        shapes = tf.constant(image_shapes(sizes, self.image_size))
        features, rois, objectness, levels = self.traced("proposals", self._proposals, batch_size)(images, shapes)
        rois, objectness, levels = rois.numpy(), objectness.numpy(), levels.numpy()
        evaluated = self._evaluated_rows(sizes, rois, objectness, levels)
        # The second stage on chunks of test_num_proposals ROIs, with at least one all-zero ROI
        # after each image's evaluated rows: Model Garden's padding ROI.
        chunk = self.preset.test_num_proposals
        padded = -(-(max(len(rows) for rows in evaluated) + 1) // chunk) * chunk
        selected = np.zeros((batch_size, padded, 4), np.float32)
        for i, rows in enumerate(evaluated):
            selected[i, :len(rows)] = rois[i, rows]
        second_stage = self.traced("second_stage", self._second_stage, batch_size)
        parts = [second_stage(features, tf.constant(selected[:, start:start + chunk]), shapes)
                 for start in range(0, padded, chunk)]
        chunk_boxes = np.concatenate([p[0].numpy() for p in parts], axis=1)
        chunk_scores = np.concatenate([p[1].numpy() for p in parts], axis=1)
        num_classes = chunk_scores.shape[-1]
        boxes = np.zeros(rois.shape[:2] + (num_classes, 4), np.float32)
        scores = np.zeros(rois.shape[:2] + (num_classes,), np.float32)
        for i, rows in enumerate(evaluated):
            boxes[i, rows] = chunk_boxes[i, :len(rows)]
            scores[i, rows] = chunk_scores[i, :len(rows)]
        padding = np.stack([chunk_scores[i, len(rows)] for i, rows in enumerate(evaluated)])
        return {"rois": rois, "objectness": objectness, "levels": levels, "evaluated": evaluated, "boxes": boxes,
                "scores": scores, "padding_scores": padding}

    def cache_meta(self) -> dict[str, Any]:
        counts = self.proposals_per_level()
        capped = self.preset.cache_proposals_per_level is not None
        meta = {"top_k": sum(counts.values()) if capped else None, "num_proposals": self.preset.test_num_proposals}
        if self.first_stage is not None:
            meta.update(first_stage_iou_thresholds=list(self.first_stage[0]), first_stage_min_score=self.first_stage[1])
        return meta

    def cache_records(self, batch, score_floor):
        outputs = self.raw_outputs(batch)
        floor = np.float32(score_floor)
        self.max_padding_score = max(self.max_padding_score, float(outputs["padding_scores"].max()))
        records = []
        for i, image_id in enumerate(np.asarray(batch["image_id"]).tolist()):
            size = tuple(int(v) for v in np.asarray(batch["original_size"])[i])
            evaluated = outputs["evaluated"][i]
            scores = outputs["scores"][i][evaluated]
            positions, classes = np.nonzero(scores >= floor)
            rows = evaluated[positions]
            records.append({
                "image_id": int(image_id),
                "size": size,
                "row_boxes": to_original(outputs["rois"][i], size, self.image_size),
                "row_objectness": outputs["objectness"][i].astype(np.float32),
                "row_level": outputs["levels"][i].astype(np.int64),
                "entry_row": rows.astype(np.int64),
                "entry_class": classes.astype(np.int64),
                "entry_score": scores[positions, classes],
                "entry_boxes": to_original(outputs["boxes"][i][rows, classes], size, self.image_size),
            })
        return records


DETECTOR = FasterRcnnDetector


def build(preset: str = "tiny", category_ids=tuple(range(1, 11)), category_names=None, thresholds=None,
          seed: int | None = 0) -> FasterRcnnDetector:
    """A Faster R-CNN for ``category_ids`` (default: the demo's digits 1..10), weights from ``seed``."""
    return build_detector("faster_rcnn", preset, category_ids, category_names, thresholds, seed)
