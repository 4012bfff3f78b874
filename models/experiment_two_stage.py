"""The forward pass that records a Model Garden Faster R-CNN experiment (two-stage cache).

The experiment's own restored model (``task.build_model()``, its detection generator with
``apply_nms`` off), taken apart where NMS would run:

- rows (`rank_proposals`): per FPN level (Model Garden's order, ``sorted`` level names), the
  proposals Model Garden's first stage ranks before its NMS: its own ``_multilevel_propose_rois``
  (sigmoid, decoding, clipping, ``top_k``) with NMS skipped, the top ``test_pre_nms_top_k`` by
  objectness (``use_batched_nms: false``, its default) or every anchor (``use_batched_nms:
  true``, whose NMS has no top-k);
- entries: the second stage on every row: ROI align, box head and the detection generator's
  decoding (per-class boxes, softmax scores without the background), on chunks of
  ``test_num_proposals`` ROIs, the shape it has at inference. The box head treats each ROI on
  its own, so any first-stage setting selects rows whose second stage is already recorded.

Under Model Garden's mixed precision (``runtime.mixed_precision_dtype``) the RPN's outputs and the
first stage's sigmoid, decoding, clipping, score filter and top-k are in the reduced dtype; its
tiled NMS casts the proposals to float32, and the second stage decodes in float32 (its ROIs'
dtype) with softmax scores in the reduced dtype. The rows and entries are those values, which
float32 holds exactly; the sweep filters them at the thresholds as that dtype
(`detsearch.detection.sweep.PostProcessing.proposal_cut`, ``threshold_cut``).

Model Garden also sends all-zero padding ROIs to the second stage when fewer proposals survive;
their decoded boxes are all zero, which v2 NMS never selects (`detsearch.detection.nms_v2`), so
they are not recorded (`experiment.check_supported` requires v2 for two-stage experiments).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TwoStageForward", "rank_proposals"]


def rank_proposals(rpn_boxes, rpn_scores, anchors, image_shape, *, top_k: int | None):
    """The rows of a two-stage cache: per FPN level (Model Garden's order, ``sorted`` level
    names) the proposals Model Garden's first stage ranks before its NMS, by its own
    ``_multilevel_propose_rois`` (sigmoid, decoding, clipping, ``tf.nn.top_k``: descending
    objectness, equal ones lower anchor first) with NMS skipped.

    Args:
      rpn_boxes, rpn_scores, anchors: per level (name -> tensor) the RPN head's ``[B, H, W,
        A * 4]`` box deltas and ``[B, H, W, A]`` logits, and the ``[B, H * W * A, 4]`` yxyx anchors.
      image_shape: ``[B, 2]`` the resized image's (height, width) the boxes are clipped to.
      top_k: the proposals kept per level (``test_pre_nms_top_k`` of the tiled first stage), or
        None for every anchor (``use_batched_nms: true``, whose NMS has no top-k).

    Returns:
      ``(rois [B, R, 4] float32 yxyx, objectness [B, R] float32, levels [B, R] int32)``, R the sum
      over levels of ``min(anchors of the level, top_k)``, levels one after the other.
    """
    import tensorflow as tf
    from official.vision.modeling.layers import roi_generator

    batch = tf.shape(image_shape)[0]
    rois, objectness, levels = [], [], []
    for level in sorted(rpn_scores):  # Model Garden's order
        _, height, width, per_location = rpn_scores[level].get_shape().as_list()
        count = height * width * per_location
        if top_k is not None:
            count = min(count, top_k)
        level_rois, level_scores = roi_generator._multilevel_propose_rois(  # pylint: disable=protected-access
            {level: rpn_boxes[level]}, {level: rpn_scores[level]}, {level: anchors[level]}, image_shape,
            pre_nms_top_k=count, pre_nms_score_threshold=0.0, pre_nms_min_size_threshold=0.0,
            nms_iou_threshold=0.0, num_proposals=count, use_batched_nms=top_k is None)
        rois.append(level_rois)
        objectness.append(tf.reshape(level_scores, [batch, count]))
        levels.append(tf.fill([batch, count], int(level)))
    return tf.concat(rois, 1), tf.concat(objectness, 1), tf.concat(levels, 1)


class TwoStageForward:
    """Per-batch recording of a Faster R-CNN (`records`), two traced functions (`call_traced`
    with ``batch_size``)."""

    def __init__(self, model, model_config, batch_size: int | None):
        import tensorflow as tf

        self.model = model
        self.batch_size = batch_size
        proposals = model_config.roi_generator
        self.chunk = int(proposals.test_num_proposals)
        self.every_anchor = bool(proposals.use_batched_nms)
        self.top_k = int(proposals.test_pre_nms_top_k)
        self.weights = list(model._cascade_layer_to_weights[0])  # pylint: disable=protected-access
        self._proposals = tf.function(self._proposals_fn, autograph=False, reduce_retracing=True)
        self._second_stage = tf.function(self._second_stage_fn, autograph=False, reduce_retracing=True)

    def _proposals_fn(self, images, anchors, image_shape):
        model = self.model
        features = model.decoder(model.backbone(images, training=False), training=False)
        rpn_scores, rpn_boxes = model.rpn_head(features, training=False)
        return (features, *rank_proposals(rpn_boxes, rpn_scores, anchors, image_shape,
                                          top_k=None if self.every_anchor else self.top_k))

    def _second_stage_fn(self, features, rois, image_shape):
        model = self.model
        class_outputs, box_outputs = model.detection_head[0](model.roi_aligner(features, rois), training=False)
        decoded = model.detection_generator(box_outputs, class_outputs, rois, image_shape, self.weights,
                                            bbox_per_class=True)
        return decoded["decoded_boxes"], decoded["decoded_box_scores"]

    def records(self, images, labels, floor: np.float32, scale: np.ndarray) -> tuple[list[dict[str, Any]], int]:
        """Per image of the batch: rows (``row_boxes`` divided by ``scale`` as Model Garden's
        evaluator maps boxes back, ``row_objectness``, ``row_level``) and entries with score >=
        ``floor`` (``entry_row``, ``entry_class`` = score column, ``entry_score``,
        ``entry_boxes``); and the number of score columns."""
        import tensorflow as tf

        from detsearch.models.experiment import call_traced

        image_shape = labels["image_info"][:, 1, :]
        features, rois, objectness, levels = call_traced(self._proposals, images, labels["anchor_boxes"], image_shape,
                                                         batch_size=self.batch_size)
        # Under mixed precision the first stage gives the RPN's dtype (bfloat16, float16), whose
        # values float32 holds exactly; Model Garden's NMS casts them to float32 too.
        rois, objectness, levels = rois.numpy().astype(np.float32), objectness.numpy().astype(np.float32), levels.numpy()
        total = rois.shape[1]
        padded = -(-total // self.chunk) * self.chunk
        chunks = np.zeros((rois.shape[0], padded, 4), np.float32)
        chunks[:, :total] = rois
        parts = [call_traced(self._second_stage, features, tf.constant(chunks[:, start:start + self.chunk]), image_shape,
                             batch_size=self.batch_size)
                 for start in range(0, padded, self.chunk)]
        boxes = np.concatenate([p[0].numpy().astype(np.float32) for p in parts], 1)[:, :total]
        scores = np.concatenate([p[1].numpy().astype(np.float32) for p in parts], 1)[:, :total]
        records = []
        for i in range(rois.shape[0]):
            rows, classes = np.nonzero(scores[i] >= floor)  # row-major: by (proposal, class)
            records.append({
                "row_boxes": (rois[i] / scale[i]).astype(np.float32),
                "row_objectness": objectness[i].astype(np.float32),
                "row_level": levels[i].astype(np.int64),
                "entry_row": rows.astype(np.int64),
                "entry_class": classes.astype(np.int64),
                "entry_score": scores[i][rows, classes],
                "entry_boxes": (boxes[i][rows, classes] / scale[i]).astype(np.float32),
            })
        return records, scores.shape[-1]
