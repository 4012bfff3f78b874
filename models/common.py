"""What the TF Model Garden detectors (`detsearch.models.ssd`, `detsearch.models.faster_rcnn`) share.

- `Detector`: a Model Garden detection model built from a named preset for a dataset's
  categories, with its losses, its inference and its cache recording (`cache_records`).
- The MoXing threshold names and the Model Garden config fields they set (`THRESHOLD_FIELDS`,
  `apply_thresholds`, `read_thresholds`).
- `TrainLoop`: one traced training step (momentum SGD, weight decay as
  ``weight_decay * sum(l2_loss(kernel))`` over kernels only, as `detsearch.training` does), and
  `train` around it: checkpoints, resume, a deterministic data order.
- `load_detector` / `restore_checkpoint`: rebuild a trained detector from its run directory;
  a checkpoint that does not fit the model raises `CheckpointMismatchError` naming both.
- `write_cache`: records a `detsearch.detection.cache` cache of a dataset, shard by shard
  (resumable).

Coordinates. Images reach the model letterboxed (`detsearch.datasets.detection.make_tf_dataset`: scaled by
``scale``, placed at the top-left corner), so Model Garden works in resized pixels and clips boxes
to the resized image (``image_shape``). Boxes leave this package in ORIGINAL image pixels:
``box_original = float32(float64(box_resized) / scale)`` with the float64 letterbox scale
(`to_original`), for the cache and for inference alike.

Model Garden is written against ``tf_keras`` (Keras 2); TensorFlow 2.20's ``tf.keras`` is Keras 3.
This module sets ``TF_USE_LEGACY_KERAS=1`` before importing TensorFlow (so that ``tf.keras``, if
anything uses it, is the same Keras) and imports ``tf_keras`` explicitly.

Building a `Detector` turns Grappler's arithmetic optimizer off for the process
(`pin_box_arithmetic`): with it, cache recording and inference decode boxes with different
float operations.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import copy
import importlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras  # noqa: F401  (Model Garden's Keras; imported here so that it loads first)

from detsearch.datasets.detection import DetectionDataset, letterbox_scale, make_tf_dataset, write_json_atomic
from detsearch.detection import cache as cache_lib
from detsearch.training.base import is_decayed

__all__ = [
    "CheckpointMismatchError",
    "DETECTOR_FILE",
    "Detector",
    "MAX_NUM_DETECTIONS",
    "MODELS",
    "THRESHOLD_FIELDS",
    "TrainLoop",
    "apply_thresholds",
    "build_detector",
    "checkpoint_layout",
    "dataset_categories",
    "export_saved_model",
    "image_shapes",
    "latest_checkpoint",
    "load_dataset",
    "load_detector",
    "padded_batch",
    "pin_box_arithmetic",
    "predict_results",
    "read_thresholds",
    "restore_checkpoint",
    "to_original",
    "train",
    "training_batches",
    "write_cache",
    "write_cache_sharded",
]

logger = logging.getLogger(__name__)

MODELS = ("ssd", "faster_rcnn")
"""Detector names; ``models.<name>`` is the module."""

MAX_NUM_DETECTIONS = 100
"""Model Garden ``detection_generator.max_num_detections``: the per-class and the total cap of
the batched NMS (``combined_non_max_suppression(max_output_size_per_class=100,
max_total_size=100)``), the same caps as the sweep's defaults."""

DETECTOR_FILE = "detector.json"
"""Written by `train` into its output directory: what `load_detector` rebuilds."""
CHECKPOINT_DIR = "checkpoints"

THRESHOLD_FIELDS: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "one_stage": {
        "score_threshold": ("detection_generator", "pre_nms_score_threshold"),
        "iou_threshold": ("detection_generator", "nms_iou_threshold"),
    },
    "two_stage": {
        "nms_score_threshold": ("roi_generator", "test_pre_nms_score_threshold"),
        "nms_iou_threshold": ("roi_generator", "test_nms_iou_threshold"),
        "score_threshold": ("detection_generator", "pre_nms_score_threshold"),
        "iou_threshold": ("detection_generator", "nms_iou_threshold"),
    },
}
"""MoXing threshold name -> (Model Garden model config section, field), per detector kind.

The semantics are Model Garden's with ``nms_version='batched'`` / ``use_batched_nms=True``
(``tf.image.combined_non_max_suppression``): a candidate is kept when its score is
``> score_threshold`` (objectness ``> nms_score_threshold`` in the first stage), and suppressed
when its IoU with a kept box of its class (first stage: of its FPN level) is ``> iou_threshold``,
both compared in float32; exactly `detsearch.detection.nms`'s semantics. One exception: Model
Garden skips first-stage NMS altogether when ``nms_iou_threshold`` is 0 (docs/models.md)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model it is restored into."""


def pin_box_arithmetic() -> None:
    """Turns off Grappler's arithmetic optimizer, process-wide (called by every `Detector`).

    The optimizer rewrites Model Garden's box decoding (``dy * h + (ymin + 0.5 * h)`` and the
    like: sums of products regrouped, common factors hoisted) in ways that depend on the graph
    around it, so the same weights and inputs give boxes that differ in their last bits between
    two traced functions (and between graph and eager execution). Cache recording and inference
    are different functions and must compute the same bits (docs/models.md). Functions traced
    and run before this call keep their optimised graphs.
    """
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})


# --------------------------------------------------------------------------------------------
# thresholds


def apply_thresholds(model_config, kind: str, thresholds: Mapping[str, float] | None):
    """A copy of a Model Garden model config with MoXing-named thresholds set.

    Args:
      model_config: ``official.vision.configs.retinanet.RetinaNet`` (kind ``"one_stage"``) or
        ``official.vision.configs.maskrcnn.MaskRCNN`` (``"two_stage"``); not modified.
      kind: ``"one_stage"`` or ``"two_stage"``.
      thresholds: MoXing name -> value in [0, 1] (see `THRESHOLD_FIELDS`); None or missing names
        keep the config's values.

    Raises:
      ValueError: an unknown kind, a name that is not a threshold of that kind, a value outside
        [0, 1].
    """
    if kind not in THRESHOLD_FIELDS:
        raise ValueError(f"kind must be one of {sorted(THRESHOLD_FIELDS)}, got {kind!r}")
    fields = THRESHOLD_FIELDS[kind]
    config = copy.deepcopy(model_config)
    for name, value in (thresholds or {}).items():
        if name not in fields:
            raise ValueError(f"{name!r} is not a {kind} threshold; known: {', '.join(fields)}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        section, field = fields[name]
        setattr(getattr(config, section), field, value)
    return config


def read_thresholds(model_config, kind: str) -> dict[str, float]:
    """The MoXing-named thresholds a Model Garden model config holds (`THRESHOLD_FIELDS`)."""
    if kind not in THRESHOLD_FIELDS:
        raise ValueError(f"kind must be one of {sorted(THRESHOLD_FIELDS)}, got {kind!r}")
    return {
        name: float(getattr(getattr(model_config, section), field))
        for name, (section, field) in THRESHOLD_FIELDS[kind].items()
    }


# --------------------------------------------------------------------------------------------
# coordinates


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


# --------------------------------------------------------------------------------------------
# the detector


class Detector:
    """A Model Garden detector for one dataset's categories; subclassed by each model.

    Class indices: model class ``c`` (1..K; 0 is Model Garden's background) is category
    ``category_ids[c - 1]``; cache class ``c - 1`` is the same category (the cache's
    ``category_ids`` are these ``category_ids``, sorted).

    Subclasses set `name`, `kind`, ``PRESETS`` and implement `make_model_config`,
    `build_model`, `losses`, `_predict`, `_cache_outputs`, `cache_records` and `cache_meta`.

    Attributes:
      preset: the model's preset (a frozen dataclass of the model module).
      category_ids: sorted dataset category ids (tuple of int).
      category_names: names in the same order, or None.
      num_classes: Model Garden ``num_classes`` = K + 1 (background included).
      model_config: the Model Garden model config the model was built from.
      model: the ``tf_keras`` model.
      image_size: input side in pixels (square inputs).
    """

    name = ""
    kind = ""
    PRESETS: Mapping[str, Any] = {}

    def __init__(
        self,
        preset: str | Any,
        category_ids: Sequence[int],
        category_names: Sequence[str] | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        pin_box_arithmetic()
        if isinstance(preset, str):
            if preset not in self.PRESETS:
                raise ValueError(f"unknown {self.name} preset {preset!r}; known: {', '.join(self.PRESETS)}")
            preset = self.PRESETS[preset]
        self.preset = preset
        ids = [int(i) for i in category_ids]
        if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"category_ids must be distinct non-negative ints, got {list(category_ids)!r}")
        if category_names is not None and len(category_names) != len(ids):
            raise ValueError(f"{len(category_names)} category_names for {len(ids)} category ids")
        order = sorted(range(len(ids)), key=lambda i: ids[i])
        self.category_ids = tuple(ids[i] for i in order)
        self.category_names = None if category_names is None else tuple(str(category_names[i]) for i in order)
        self.num_classes = len(ids) + 1
        self.image_size = int(preset.image_size)
        lookup = np.full(max(self.category_ids) + 2, -1, dtype=np.int32)
        lookup[list(self.category_ids)] = np.arange(1, self.num_classes, dtype=np.int32)
        self._class_lookup = lookup
        self.model_config = self.make_model_config(thresholds)
        self.model = self.build_model(self.model_config)
        self._predict_fns: dict[int, Callable] = {}
        self._cache_fns: dict[int, Callable] = {}

    # ----------------------------------------------------------------------------- to override

    def make_model_config(self, thresholds: Mapping[str, float] | None):
        raise NotImplementedError

    def build_model(self, model_config):
        raise NotImplementedError

    def losses(self, batch: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Training losses of a model batch (`model_batch`); ``"model_loss"`` is the total."""
        raise NotImplementedError

    def cache_meta(self) -> dict[str, Any]:
        """Keyword arguments of `CacheWriter` besides kind, categories, floor, source."""
        raise NotImplementedError

    def cache_records(self, batch: Mapping[str, np.ndarray], score_floor: float) -> list[dict[str, Any]]:
        """One `CacheWriter.add_image` keyword dict per image of a dataset batch."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- shared

    @property
    def thresholds(self) -> dict[str, float]:
        """The MoXing-named thresholds the model runs with."""
        return read_thresholds(self.model_config, self.kind)

    def num_parameters(self) -> int:
        return int(sum(int(np.prod(v.shape)) for v in self.model.trainable_variables))

    def class_indices(self, category_ids: np.ndarray) -> np.ndarray:
        """Model class index (1..K) of each category id; -1 (padding) and unknown ids give -1."""
        ids = np.asarray(category_ids, dtype=np.int64)
        valid = (ids >= 0) & (ids < len(self._class_lookup))
        out = np.full(ids.shape, -1, dtype=np.int32)
        out[valid] = self._class_lookup[ids[valid]]
        return out

    def model_batch(self, batch: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """Model inputs from a `make_tf_dataset` batch (tensors or arrays).

        Returns:
          ``image`` float32 [B, S, S, 3] 0..255, ``image_shape`` float32 [B, 2] (resized content
          size), ``boxes`` float32 [B, M, 4] resized pixels padded -1, ``classes`` int32 [B, M]
          model class indices padded -1.
        """
        classes = self.class_indices(np.asarray(batch["classes"]))
        unknown = (classes < 0) & (np.asarray(batch["classes"]) >= 0)
        if unknown.any():
            bad = sorted(set(np.asarray(batch["classes"])[unknown].tolist()))
            raise ValueError(f"category ids {bad} are not among the detector's {list(self.category_ids)}")
        images = tf.convert_to_tensor(batch["image"], tf.float32)
        if tuple(images.shape[1:]) != (self.image_size, self.image_size, 3):
            raise ValueError(f"images must be {self.image_size}x{self.image_size}x3, got {tuple(images.shape[1:])}")
        return {
            "image": images,
            "image_shape": tf.constant(image_shapes(np.asarray(batch["original_size"]), self.image_size)),
            "boxes": tf.convert_to_tensor(batch["boxes"], tf.float32),
            "classes": tf.constant(classes),
        }

    def batch_signature(self, batch_size: int, max_boxes: int) -> dict[str, tf.TensorSpec]:
        size = self.image_size
        return {
            "image": tf.TensorSpec([batch_size, size, size, 3], tf.float32),
            "image_shape": tf.TensorSpec([batch_size, 2], tf.float32),
            "boxes": tf.TensorSpec([batch_size, max_boxes, 4], tf.float32),
            "classes": tf.TensorSpec([batch_size, max_boxes], tf.int32),
        }

    def normalized(self, images: tf.Tensor) -> tf.Tensor:
        """Model Garden's input normalisation (ImageNet mean and stddev on 0..255 RGB)."""
        from official.vision.ops import preprocess_ops

        return preprocess_ops.normalize_image(images, preprocess_ops.MEAN_RGB, preprocess_ops.STDDEV_RGB)

    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
        """Final detections of a dataset batch through Model Garden's own post-processing.

        The model runs with `thresholds` (its generators' settings). One traced function per
        batch size.

        Returns:
          Per image: ``boxes`` float32 [n, 4] yxyx ORIGINAL pixels, ``scores`` float32 [n],
          ``category_ids`` int64 [n], in Model Garden's output order (descending score).
        """
        images = tf.convert_to_tensor(batch["image"], tf.float32)
        sizes = np.asarray(batch["original_size"])
        shapes = tf.constant(image_shapes(sizes, self.image_size))
        function = self._predict_fns.get(int(images.shape[0]))
        if function is None:
            function = tf.function(self._predict)
            self._predict_fns[int(images.shape[0])] = function
        outputs = {k: v.numpy() for k, v in function(images, shapes).items()}
        results = []
        for i in range(len(sizes)):
            n = int(outputs["num_detections"][i])
            classes = outputs["detection_classes"][i, :n].astype(np.int64)
            results.append({
                "boxes": to_original(outputs["detection_boxes"][i, :n], sizes[i], self.image_size),
                "scores": outputs["detection_scores"][i, :n].astype(np.float32),
                "category_ids": np.asarray(self.category_ids, dtype=np.int64)[classes - 1],
            })
        return results

    def _predict(self, images: tf.Tensor, image_shape: tf.Tensor) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What `build_detector` needs to rebuild this detector (JSON-ready)."""
        return {
            "model": self.name,
            "preset": self.preset.name,
            "image_size": self.image_size,
            "category_ids": list(self.category_ids),
            "category_names": None if self.category_names is None else list(self.category_names),
            "num_parameters": self.num_parameters(),
        }


def build_detector(
    model: str,
    preset: str,
    category_ids: Sequence[int],
    category_names: Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    seed: int | None = 0,
) -> Detector:
    """Builds ``models.<model>``'s detector (weights initialised from ``seed``).

    Raises:
      ValueError: an unknown model or preset, bad categories or thresholds.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    module = importlib.import_module(f"detsearch.models.{model}")
    tf.random.set_seed(0 if seed is None else int(seed))
    tf_keras.utils.set_random_seed(0 if seed is None else int(seed))
    return module.DETECTOR(preset, category_ids, category_names, thresholds)


def dataset_categories(dataset: DetectionDataset) -> tuple[list[int], list[str]]:
    """``(category ids, names)`` of a dataset, sorted by id."""
    categories = sorted(dataset.categories, key=lambda c: c["id"])
    return [c["id"] for c in categories], [c["name"] for c in categories]


DATASETS = ("demo", "coco", "voc")


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    annotations: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    max_images: int | None = None,
) -> DetectionDataset:
    """A dataset by name, as the tools take it.

    - ``demo``: the MNIST detection demo at ``data_dir`` (default
      `detsearch.datasets.demo.default_demo_dir`), built there first when missing; ``split`` is
      ``train`` or ``val``.
    - ``coco``: ``annotations`` (an instances json) with images under ``images``.
    - ``voc``: Pascal VOC XML under ``data_dir`` (a VOCdevkit year directory or a directory of
      XML files), images under ``images`` (default: VOC's layout), ``class_names`` in id order
      (default: the sorted names found).

    ``max_images`` keeps the first images only.
    """
    from detsearch.datasets import coco, demo, voc

    if name == "demo":
        root = demo.default_demo_dir() if data_dir is None else Path(data_dir)
        if not (root / "manifest.json").is_file():
            demo.build_demo(root)
        dataset = demo.load_demo(root, split)
    elif name == "coco":
        if annotations is None or images is None:
            raise ValueError("the coco dataset needs an annotations json and an images directory")
        dataset = coco.load_coco(annotations, images)
    elif name == "voc":
        if data_dir is None:
            raise ValueError("the voc dataset needs a data directory (VOCdevkit year directory or XML files)")
        dataset = voc.load_voc(data_dir, images, class_names)
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        dataset = DetectionDataset(dataset.examples[:max_images], dataset.categories, dataset.image_dir)
    return dataset


# --------------------------------------------------------------------------------------------
# checkpoints


def latest_checkpoint(run_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint prefix written by `train` into ``run_dir``, or None."""
    return tf.train.latest_checkpoint(str(Path(run_dir) / CHECKPOINT_DIR))


def _describe_checkpoint(path: str) -> str:
    meta = Path(path).parent.parent / DETECTOR_FILE
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
            return (f"written by {info.get('model')}/{info.get('preset')} with "
                    f"{len(info.get('category_ids', []))} categories")
        except (OSError, ValueError):
            pass
    return "of unknown origin"


def checkpoint_layout(path: str | os.PathLike) -> tuple[str, ...]:
    """The top-level object names of a TF2 checkpoint: ``("model", ...)`` for `train`'s (and
    Model Garden's trainer) checkpoints, module names such as ``("backbone", "decoder", "head")``
    for Model Garden's published ``init_checkpoint`` files (``tf.train.Checkpoint(
    **model.checkpoint_items)``, or ``backbone`` alone for an ImageNet backbone)."""
    names = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(str(path))}
    return tuple(sorted(names - {"_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"}))


def restore_checkpoint(detector: Detector, path: str | os.PathLike, **extra: Any) -> tuple[str, ...]:
    """Restores a checkpoint into ``detector`` (and into ``extra`` trackables); returns the
    modules restored (``("model",)`` for a whole-model checkpoint).

    Two layouts are read: `train`'s (and Model Garden's trainer's) ``model/...`` checkpoints,
    which must fit the whole model; and Model Garden's published module checkpoints
    (``backbone/...``, ``decoder/...``, ``head/...``: what its tasks' ``initialize`` reads with
    ``init_checkpoint_modules``), of which every module present must fit, while the others keep
    their weights (fine-tuning from an ImageNet backbone restores the backbone only).

    Raises:
      CheckpointMismatchError: the checkpoint lacks some of the model's variables (of the
        modules it holds), holds variables of other shapes, names no module of the model, or is
        unreadable; the message names the checkpoint, what wrote it (from its run's
        ``detector.json``) and the model.
      FileNotFoundError: no checkpoint at ``path``.
    """
    path = str(path)
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"no checkpoint at {path} (expected {path}.index)")
    wanted = f"{detector.name}/{detector.preset.name} with {len(detector.category_ids)} categories"
    try:
        layout = checkpoint_layout(path)
    except (ValueError, tf.errors.OpError) as error:
        raise CheckpointMismatchError(f"checkpoint {path} is unreadable: {str(error).strip()[:300]}") from None
    items = dict(detector.model.checkpoint_items)
    if "model" in layout:
        modules, checkpoint = ("model",), tf.train.Checkpoint(model=detector.model, **extra)
    else:
        modules = tuple(name for name in layout if name in items)
        if not modules:
            raise CheckpointMismatchError(
                f"checkpoint {path} holds {list(layout)}: neither a whole model ('model') nor a module of the model "
                f"{wanted} ({', '.join(sorted(items))})")
        checkpoint = tf.train.Checkpoint(**{name: items[name] for name in modules}, **extra)
    try:
        status = checkpoint.read(path)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        detail = str(error).strip().splitlines()
        detail = detail[0] if detail else type(error).__name__
        raise CheckpointMismatchError(
            f"checkpoint {path} ({_describe_checkpoint(path)}) does not fit the model {wanted}: {detail[:500]}"
        ) from None
    status.expect_partial()
    if modules != ("model",):
        logger.info("restored %s from %s (Model Garden module checkpoint)", ", ".join(modules), path)
    return modules


def load_detector(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> tuple[Detector, str]:
    """Rebuilds the detector `train` wrote into ``run_dir`` and restores a checkpoint.

    Args:
      run_dir: `train`'s output directory (holds ``detector.json`` and ``checkpoints/``).
      checkpoint: a checkpoint prefix; None means the latest in ``run_dir``.
      thresholds: MoXing-named thresholds for the rebuilt model's generators.

    Returns:
      ``(detector, checkpoint_path)``.

    Raises:
      FileNotFoundError: no ``detector.json`` or no checkpoint.
      CheckpointMismatchError: the checkpoint does not fit the rebuilt model.
    """
    run_dir = Path(run_dir)
    meta_path = run_dir / DETECTOR_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {run_dir} is not a tools/train_det.py output directory")
    info = json.loads(meta_path.read_text())
    path = str(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / CHECKPOINT_DIR}")
    detector = build_detector(info["model"], info["preset"], info["category_ids"], info.get("category_names"), thresholds)
    restore_checkpoint(detector, path)
    return detector, path


# --------------------------------------------------------------------------------------------
# training


class TrainLoop:
    """One traced momentum-SGD step with weight decay, for a fixed batch shape.

    Update (the same as `detsearch.training.keras.KerasTrainer`)::

        total = model_loss + weight_decay * sum(l2_loss(kernel) for kernels)   # rank >= 2
        slot = momentum * slot + gradient
        variable -= learning_rate * slot

    ``learning_rate``, ``momentum`` and ``weight_decay`` are variables: changing them (even at
    every step, for a learning-rate schedule) never retraces.

    Args:
      detector: the detector to train.
      batch_size: images per step (static).
      max_boxes: padded boxes per image (static).
    """

    def __init__(self, detector: Detector, batch_size: int, max_boxes: int) -> None:
        self.detector = detector
        self.batch_size = int(batch_size)
        self.max_boxes = int(max_boxes)
        model = detector.model
        self._variables = list(model.trainable_variables)
        self._decayed = [v for v in self._variables if is_decayed(v.name, v.shape)]
        self.slots = [tf.Variable(tf.zeros_like(v), trainable=False, name="momentum") for v in self._variables]
        self.learning_rate = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="learning_rate")
        self.momentum = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="momentum_value")
        self.weight_decay = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="weight_decay")
        self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._step = tf.function(self._step_fn, input_signature=[detector.batch_signature(batch_size, max_boxes)])

    def trackables(self) -> dict[str, Any]:
        """Optimizer state for a checkpoint (besides the model)."""
        return {"slots": self.slots, "step": self.step_count}

    def _step_fn(self, batch):
        with tf.GradientTape() as tape:
            losses = self.detector.losses(batch)
            model_loss = losses["model_loss"]
            l2 = tf.add_n([tf.nn.l2_loss(v) for v in self._decayed]) if self._decayed else tf.constant(0.0)
            total = model_loss + self.weight_decay * l2
        gradients = tape.gradient(total, self._variables)
        for variable, slot, gradient in zip(self._variables, self.slots, gradients):
            if gradient is None:
                continue
            slot.assign(self.momentum * slot + gradient)
            variable.assign_sub(self.learning_rate * slot)
        self.step_count.assign_add(1)
        metrics = {name: value for name, value in losses.items() if name != "model_loss"}
        metrics.update({"loss": model_loss, "l2_loss": l2, "total_loss": total})
        return metrics

    def set_hyperparameters(self, *, learning_rate: float | None = None, momentum: float | None = None,
                            weight_decay: float | None = None) -> None:
        if learning_rate is not None:
            self.learning_rate.assign(float(learning_rate))
        if momentum is not None:
            self.momentum.assign(float(momentum))
        if weight_decay is not None:
            self.weight_decay.assign(float(weight_decay))

    def step(self, batch: Mapping[str, Any], learning_rate: float | None = None) -> dict[str, float]:
        """Runs one step on a `make_tf_dataset` batch; returns its metrics as floats."""
        if learning_rate is not None:
            self.learning_rate.assign(float(learning_rate))
        inputs = self.detector.model_batch(batch)
        return {name: float(value) for name, value in self._step(inputs).items()}


def _dataset_max_boxes(dataset: DetectionDataset) -> int:
    return max(1, max(int((~example.is_crowd).sum()) for example in dataset.examples))


def training_batches(
    dataset: DetectionDataset,
    image_size: int,
    batch_size: int,
    *,
    seed: int = 0,
    start_step: int = 0,
    max_boxes: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches in a deterministic order that a resumed run continues exactly.

    Epoch ``e`` visits the images in the order ``numpy.random.default_rng([seed, e])
    .permutation(N)`` and yields ``N // batch_size`` full batches (the rest is dropped). Batch
    ``s`` (0-based over all epochs) is the same whatever ``start_step`` the iteration began at.

    Raises:
      ValueError: fewer images than ``batch_size``.
    """
    examples = dataset.examples
    steps_per_epoch = len(examples) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(examples)} images cannot fill one batch of {batch_size}")
    max_boxes = _dataset_max_boxes(dataset) if max_boxes is None else int(max_boxes)
    epoch, offset = divmod(int(start_step), steps_per_epoch)
    while True:
        order = np.random.default_rng([int(seed), epoch]).permutation(len(examples))
        chosen = order[offset * batch_size: steps_per_epoch * batch_size]
        part = DetectionDataset(tuple(examples[i] for i in chosen), dataset.categories, dataset.image_dir)
        data = make_tf_dataset(part, image_size, batch_size, training=True, shuffle=False, max_boxes=max_boxes)
        for batch in data.as_numpy_iterator():
            yield batch
        epoch, offset = epoch + 1, 0


def train(
    detector: Detector,
    dataset: DetectionDataset,
    out_dir: str | os.PathLike,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    warmup_steps: int = 0,
    warmup_lr: float | None = None,
    seed: int = 0,
    checkpoint_every: int = 500,
    keep_checkpoints: int = 3,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains ``detector`` to ``steps`` steps, checkpointing into ``out_dir``; resumes there.

    The learning rate is ``learning_rate`` after ``warmup_steps`` of warm-up: linear from 0, or
    constant at ``warmup_lr`` when given (the selector's trials warm up that way).
    A directory holding a run of the same model, preset and categories resumes from its latest
    checkpoint (weights, momentum slots, step; the data order continues exactly, see
    `training_batches`; random ROI/anchor sampling restarts its sequence). ``out_dir`` gets
    ``detector.json`` (what `load_detector` rebuilds, plus the hyperparameters and the last
    metrics) and ``checkpoints/ckpt-<step>``.

    Returns:
      ``{"step", "checkpoint", "metrics", "seconds_per_step", "resumed_from"}``.

    Raises:
      ValueError: bad hyperparameters, or ``out_dir`` holds a run of another detector.
      CheckpointMismatchError: its checkpoint does not fit.
    """
    for name, value, low in (("learning_rate", learning_rate, 0.0), ("weight_decay", weight_decay, 0.0)):
        if not (math.isfinite(value) and value >= low):
            raise ValueError(f"{name} must be finite and >= {low}, got {value!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if warmup_lr is not None and not (math.isfinite(warmup_lr) and warmup_lr > 0):
        raise ValueError(f"warmup_lr must be finite and > 0, got {warmup_lr!r}")
    if steps < 0 or batch_size < 1 or checkpoint_every < 1:
        raise ValueError(f"steps >= 0, batch_size >= 1 and checkpoint_every >= 1 needed; got "
                         f"{steps}, {batch_size}, {checkpoint_every}")
    ids, _ = dataset_categories(dataset)
    if tuple(sorted(ids)) != detector.category_ids:
        raise ValueError(f"dataset categories {sorted(ids)} differ from the detector's {list(detector.category_ids)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / DETECTOR_FILE
    description = detector.describe()
    if meta_path.is_file():
        previous = json.loads(meta_path.read_text())
        for key in ("model", "preset", "category_ids"):
            if previous.get(key) != description[key]:
                raise ValueError(
                    f"{out_dir} holds a run of {previous.get('model')}/{previous.get('preset')} with categories "
                    f"{previous.get('category_ids')}; this is {description['model']}/{description['preset']} with "
                    f"{description['category_ids']}: choose another --out"
                )
        # The data order a resumed run continues depends on these two.
        recorded = previous.get("hyperparameters", {})
        for key, value in (("batch_size", batch_size), ("seed", seed)):
            if key in recorded and recorded[key] != value:
                raise ValueError(f"{out_dir} was trained with {key} {recorded[key]}; resuming needs the same, "
                                 f"got {value}")
    max_boxes = _dataset_max_boxes(dataset)
    loop = TrainLoop(detector, batch_size, max_boxes)
    loop.set_hyperparameters(momentum=momentum, weight_decay=weight_decay)
    checkpoint = tf.train.Checkpoint(model=detector.model, **loop.trackables())
    manager = tf.train.CheckpointManager(checkpoint, str(out_dir / CHECKPOINT_DIR), max_to_keep=keep_checkpoints,
                                         checkpoint_name="ckpt")
    resumed_from = None
    if manager.latest_checkpoint:
        restore_checkpoint(detector, manager.latest_checkpoint, **loop.trackables())
        resumed_from = manager.latest_checkpoint
        logger.info("resuming from %s at step %d", resumed_from, int(loop.step_count))
    start = int(loop.step_count)

    def write_meta(metrics: Mapping[str, float], path: str | None) -> None:
        payload = dict(description)
        payload.update({
            "hyperparameters": {"learning_rate": learning_rate, "momentum": momentum, "weight_decay": weight_decay,
                                "warmup_steps": warmup_steps, "warmup_lr": warmup_lr, "batch_size": batch_size,
                                "seed": seed},
            "step": int(loop.step_count),
            "checkpoint": None if path is None else Path(path).name,
            "metrics": dict(metrics),
            **dict(extra_meta or {}),
        })
        write_json_atomic(meta_path, payload)

    if not meta_path.is_file():
        write_meta({}, None)
    batches = training_batches(dataset, detector.image_size, batch_size, seed=seed, start_step=start,
                               max_boxes=max_boxes)
    metrics: dict[str, float] = {}
    path = manager.latest_checkpoint
    started = time.perf_counter()
    timed_from, timed_steps = None, 0
    for step in range(start, steps):
        if step < warmup_steps:
            lr = warmup_lr if warmup_lr is not None else learning_rate * (step + 1) / warmup_steps
        else:
            lr = learning_rate
        metrics = loop.step(next(batches), lr)
        if step == start:
            timed_from = time.perf_counter()  # the first step includes tracing
        else:
            timed_steps += 1
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"loss became {metrics['loss']} at step {step + 1} (learning_rate {lr:g})")
        if on_step is not None:
            on_step(step + 1, metrics)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            path = manager.save(checkpoint_number=step + 1)
            write_meta(metrics, path)
    if path is None or int(loop.step_count) != int(Path(path).name.split("-")[-1]):
        path = manager.save(checkpoint_number=int(loop.step_count))
        write_meta(metrics, path)
    seconds = (time.perf_counter() - timed_from) / timed_steps if timed_steps else None
    logger.info("trained %d steps in %.1f s", steps - start, time.perf_counter() - started)
    return {"step": int(loop.step_count), "checkpoint": path, "metrics": metrics, "seconds_per_step": seconds,
            "resumed_from": resumed_from}


# --------------------------------------------------------------------------------------------
# cache recording


def write_cache(
    detector: Detector,
    dataset: DetectionDataset,
    path: str | os.PathLike,
    *,
    score_floor: float,
    batch_size: int = 8,
    images_per_shard: int = 500,
    source: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    first_stage: tuple[Sequence[float], float] | None = None,
) -> cache_lib.DetectionCache:
    """Records ``detector``'s raw predictions on ``dataset`` as a cache at ``path``.

    Writes shard by shard (`detsearch.detection.cache.plan_shards`); shards already committed
    with the same settings are kept, so an interrupted run resumes where it stopped; then merges.
    What each row and entry holds is the model's `cache_records` (see docs/models.md).

    Args:
      detector: the (trained) detector.
      dataset: the images, in cache order.
      path: cache directory.
      score_floor: entries with ``score >= float32(score_floor)`` are recorded.
      batch_size: images per forward pass.
      images_per_shard: images per shard.
      source: provenance stored in the cache meta (besides the model's description).
      progress: ``progress(images_done)`` after each batch (images of skipped shards count).
      first_stage: two-stage detectors: ``(nms_iou_thresholds, min_nms_score_threshold)`` of
        the sweep to come; the second stage then runs only on the proposals those settings can
        keep (`detsearch.models.faster_rcnn.FasterRcnnDetector.set_first_stage`), and the sweep accepts
        only such settings. None: the second stage of every proposal.

    Raises:
      ValueError: a committed shard was written with other settings (another checkpoint,
        floor, model, first stage): remove ``path`` or write elsewhere.
    """
    floor = float(score_floor)
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"score_floor must be in [0, 1], got {score_floor!r}")
    _set_first_stage(detector, first_stage)
    infos = [_write_shard(detector, dataset, path, spec, floor, batch_size, source, progress)
             for spec in cache_lib.plan_shards(len(dataset), images_per_shard)]
    if hasattr(detector, "max_padding_score"):  # over the shards recorded now
        detector.max_padding_score = max((i["max_padding_score"] for i in infos if i["recorded"]), default=0.0)
    return cache_lib.merge_shards(path)


def _set_first_stage(detector: Detector, first_stage) -> None:
    if first_stage is None:
        if hasattr(detector, "set_first_stage"):
            detector.set_first_stage(None)
        return
    if not hasattr(detector, "set_first_stage"):
        raise ValueError(f"first_stage applies to two-stage detectors; {detector.name} has no first stage")
    iou_thresholds, min_score = first_stage
    detector.set_first_stage(iou_thresholds, min_score)


def _write_shard(detector: Detector, dataset: DetectionDataset, path, spec, floor: float, batch_size: int,
                 source: Mapping[str, Any] | None, progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Records shard ``spec`` of ``dataset`` unless it is committed with the same settings (then
    kept); returns ``{"images", "recorded", "max_padding_score"}`` (the last for detectors that
    track it, Faster R-CNN: the shard's largest padding-ROI score; None otherwise).

    Raises:
      ValueError: other categories, or a committed shard recorded with other settings.
    """
    ids, _ = dataset_categories(dataset)
    if tuple(sorted(ids)) != detector.category_ids:
        raise ValueError(f"dataset categories {sorted(ids)} differ from the detector's {list(detector.category_ids)}")
    info = detector.describe()
    info.pop("num_parameters", None)
    writer_args = dict(
        kind=detector.kind,
        category_ids=list(detector.category_ids),
        score_floor=floor,
        category_names=None if detector.category_names is None else list(detector.category_names),
        source={**info, **dict(source or {})},
        **detector.cache_meta(),
    )
    images = spec.image_stop - spec.image_start
    shard_dir = Path(path) / "shards" / f"{spec.index:05d}"
    if spec.index in set(cache_lib.completed_shards(path)):
        meta = cache_lib.read_cache(shard_dir, verify=False).meta
        expected = cache_lib.CacheMeta(
            version=cache_lib.CACHE_VERSION, image_ids=tuple(e.image_id for e in dataset.examples[spec.image_start:spec.image_stop]),
            image_sizes=meta.image_sizes, **writer_args)
        fields = ("kind", "category_ids", "score_floor", "top_k", "num_proposals", "first_stage_iou_thresholds",
                  "first_stage_min_score", "image_ids")
        if dict(meta.source) != dict(expected.source) or any(getattr(meta, f) != getattr(expected, f) for f in fields):
            raise ValueError(f"{shard_dir} was recorded with other settings or images (source {dict(meta.source)}, "
                             f"floor {meta.score_floor}); remove {path} or choose another path")
        if progress is not None:
            progress(images)
        return {"images": images, "recorded": False, "max_padding_score": None}
    tracks_padding = hasattr(detector, "max_padding_score")
    if tracks_padding:
        detector.max_padding_score = 0.0  # this shard's
    part = DetectionDataset(dataset.examples[spec.image_start:spec.image_stop], dataset.categories, dataset.image_dir)
    data = make_tf_dataset(part, detector.image_size, batch_size, training=False, shuffle=False,
                           max_boxes=_dataset_max_boxes(dataset))
    with cache_lib.CacheWriter(path, shard=spec, **writer_args) as writer:
        for batch in data.as_numpy_iterator():
            for record in detector.cache_records(batch, floor):
                writer.add_image(**record)
            if progress is not None:
                progress(len(batch["image_id"]))
    return {"images": images, "recorded": True,
            "max_padding_score": float(detector.max_padding_score) if tracks_padding else None}


def write_cache_sharded(
    run_dir: str | os.PathLike,
    dataset: DetectionDataset,
    path: str | os.PathLike,
    *,
    score_floor: float,
    executor: Any = None,
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 8,
    images_per_shard: int = 500,
    source: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    on_shard: Callable[[int, dict[str, Any]], None] | None = None,
    first_stage: tuple[Sequence[float], float] | None = None,
) -> cache_lib.DetectionCache:
    """`write_cache` with one task per shard on ``executor`` (`detsearch.executor`).

    Each task's process rebuilds the detector from ``run_dir`` with `load_detector` (once per
    process) and records its shard as `write_cache` does; committed shards with the same
    settings are kept (resume), and the shards are merged here at the end. The cache is the one
    ``write_cache(load_detector(run_dir, checkpoint)[0], dataset, path, ...)`` writes: same
    arrays, same bytes.

    Args:
      run_dir: `train`'s output directory.
      executor: None or ``"local"`` (this process), ``"ray"`` or a ``detsearch.executor.Executor``.
        On a cluster every worker must reach ``run_dir``, ``path`` and the images (a shared
        file system).
      checkpoint: a checkpoint prefix; None means the latest in ``run_dir`` (chosen here, once).
      dataset, path, score_floor, batch_size, images_per_shard, source, first_stage: as in
        `write_cache`.
      progress: ``progress(images)`` after each shard (committed shards count).
      on_shard: ``on_shard(index, info)`` after each shard; ``info`` holds ``images``,
        ``recorded`` (False for a committed shard that was kept) and, for detectors that track
        it (Faster R-CNN), ``max_padding_score`` of the shard's padding ROIs (None otherwise).

    Raises:
      FileNotFoundError: no checkpoint. ValueError: as `write_cache`.
    """
    from detsearch.executor import LocalExecutor, as_executor

    executor = as_executor(executor)
    floor = float(score_floor)
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"score_floor must be in [0, 1], got {score_floor!r}")
    if checkpoint is None:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint in {Path(run_dir) / CHECKPOINT_DIR}")
    plan = cache_lib.plan_shards(len(dataset), images_per_shard)
    shared = dict(run_dir=str(run_dir), checkpoint=str(checkpoint), dataset=dataset, path=str(path), floor=floor,
                  batch_size=batch_size, images_per_shard=images_per_shard, source=dict(source or {}),
                  first_stage=first_stage)

    def shard_done(position: int, info: dict[str, Any]) -> None:
        if progress is not None:
            progress(info["images"])
        if on_shard is not None:
            on_shard(plan[position].index, info)

    try:
        executor.map(_record_shard, [spec.index for spec in plan], shared=shared, on_result=shard_done)
    finally:
        if isinstance(executor, LocalExecutor):
            _SHARD_DETECTOR.clear()  # the in-process copy is not needed any more
    return cache_lib.merge_shards(path)


_SHARD_DETECTOR: dict[tuple[str, str], Detector] = {}
"""The detector this process rebuilt for `write_cache_sharded`, by (run_dir, checkpoint)."""


def _record_shard(shared: Mapping[str, Any], index: int) -> dict[str, Any]:
    """One `write_cache_sharded` task: records shard ``index`` unless committed (then checks
    its settings, as `write_cache`); returns the ``info`` of ``on_shard``."""
    key = (shared["run_dir"], shared["checkpoint"])
    if key not in _SHARD_DETECTOR:
        _SHARD_DETECTOR.clear()
        _SHARD_DETECTOR[key] = load_detector(*key)[0]
    detector = _SHARD_DETECTOR[key]
    _set_first_stage(detector, shared["first_stage"])
    spec = cache_lib.plan_shards(len(shared["dataset"]), shared["images_per_shard"])[index]
    return _write_shard(detector, shared["dataset"], shared["path"], spec, shared["floor"], shared["batch_size"],
                        shared["source"], None)


def export_saved_model(detector: Detector, path: str | os.PathLike) -> Path:
    """Exports ``detector`` as a SavedModel whose post-processing runs at its `thresholds`.

    Signature ``serving_default``: inputs ``images`` float32 ``[B, S, S, 3]`` (RGB 0..255,
    letterboxed as `detsearch.datasets.detection.make_tf_dataset` does: scaled by ``min(S / H, S / W)``,
    placed at the top-left) and ``original_size`` int32 ``[B, 2]`` (H, W); outputs
    ``detection_boxes`` float32 ``[B, 100, 4]`` yxyx in original pixels, ``detection_scores``,
    ``detection_category_ids`` int64 (dataset category ids) and ``num_detections``: the same
    numbers as `Detector.predict`. Written next to ``path`` and renamed into place, so ``path``
    is either absent or complete.
    """
    import shutil

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
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    level = tf.get_logger().level
    tf.get_logger().setLevel(logging.ERROR)  # Keras notes layers it does not serialise; serving does not need them
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": serve})
    finally:
        tf.get_logger().setLevel(level)
    write_json_atomic(tmp / "detector.json", {**detector.describe(), "thresholds": detector.thresholds})
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def predict_results(detector: Detector, dataset: DetectionDataset, batch_size: int = 8) -> list[dict[str, Any]]:
    """COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``) of
    `Detector.predict` (Model Garden's own post-processing at the detector's thresholds) on
    ``dataset``, image by image in dataset order."""
    from detsearch.detection.boxes import yxyx_to_xywh

    results = []
    data = make_tf_dataset(dataset, detector.image_size, batch_size, training=False, shuffle=False)
    for batch in data.as_numpy_iterator():
        batch, count = padded_batch(batch, batch_size)
        for image_id, found in zip(batch["image_id"][:count].tolist(), detector.predict(batch)[:count]):
            for box, score, category in zip(yxyx_to_xywh(found["boxes"]), found["scores"], found["category_ids"]):
                results.append({"image_id": int(image_id), "category_id": int(category),
                                "bbox": [float(v) for v in box], "score": float(score)})
    return results


def padded_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> tuple[dict[str, np.ndarray], int]:
    """Pads a (last, short) batch to ``batch_size`` images by repeating its last image.

    Returns ``(padded, n)`` with ``n`` the number of real images (keep outputs ``[:n]``).
    """
    n = len(batch["image_id"])
    if n == batch_size:
        return dict(batch), n
    if n > batch_size:
        raise ValueError(f"batch of {n} images is larger than {batch_size}")
    padded = {key: np.concatenate([value, np.repeat(value[-1:], batch_size - n, axis=0)]) for key, value in batch.items()}
    return padded, n
