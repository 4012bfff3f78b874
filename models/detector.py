"""`Detector`: a TF Model Garden detection model built from a named preset for a dataset's
categories, with its losses, its inference and its cache recording (`Detector.cache_records`);
`build_detector` builds one by model name.

Model Garden is written against ``tf_keras`` (Keras 2; TensorFlow 2.20's ``tf.keras`` is
Keras 3). Model Garden imports ``tf_keras`` itself, and so does this package wherever it builds
a model: no environment variable is set.

Two TensorFlow settings are scoped, never set for the process:

- `pinned_box_arithmetic`: every traced function of a detector runs with Grappler's arithmetic
  optimizer off (so that cache recording and inference decode boxes with the same float
  operations), through the calling thread's function-call options;
- `model_garden_seed`: the weights a build draws, and the random ops its traced training step
  holds, come from ``seed`` through TensorFlow's global seed and tf_keras's seed generator, set
  for the build (and the trace) only and restored after.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras  # noqa: F401  (Model Garden's Keras: loaded before Model Garden)
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context as tf_context
from tf_keras.src import backend as keras_backend

from detsearch.models.coordinates import image_shapes, to_original
from detsearch.models.thresholds import read_thresholds

__all__ = ["Detector", "MODELS", "build_detector", "model_garden_seed", "pinned_box_arithmetic"]

MODELS = ("ssd", "faster_rcnn")
"""Detector names; ``detsearch.models.<name>`` is the module."""


@contextlib.contextmanager
def pinned_box_arithmetic() -> Iterator[None]:
    """Runs the traced functions called in the block with Grappler's arithmetic optimizer off.

    The optimizer rewrites Model Garden's box decoding (``dy * h + (ymin + 0.5 * h)`` and the
    like: sums of products regrouped, common factors hoisted) in ways that depend on the graph
    around it, so the same weights and inputs give boxes that differ in their last bits between
    two traced functions (and between graph and eager execution). Cache recording and inference
    are different functions and must compute the same bits (docs/models.md).

    Grappler optimises a function when it is instantiated for a call, with the ``config_proto``
    the call carries; eager calls take it from the calling thread's function-call options. This
    block replaces those options with a copy whose rewriter config has the arithmetic optimizer
    off, and restores them after (the same mechanism as TensorFlow's own
    ``context.function_executor_type``). Nothing process-wide changes:
    ``tf.config.optimizer.get_experimental_options()`` is the same inside and after, other
    threads are not affected, and a function called outside the block runs its default-optimised
    instantiation.
    """
    ctx = tf_context.context()
    current = ctx.function_call_options
    config = config_pb2.ConfigProto()
    config.ParseFromString(current.config_proto_serialized)
    config.graph_options.rewrite_options.arithmetic_optimization = rewriter_config_pb2.RewriterConfig.OFF
    pinned = copy.copy(current)
    pinned.config_proto_serialized = config
    ctx.function_call_options = pinned
    try:
        yield
    finally:
        ctx.function_call_options = current


@contextlib.contextmanager
def model_garden_seed(seed: int) -> Iterator[None]:
    """Draws Model Garden's random numbers from ``seed`` in the block.

    Model Garden's layers take no seed: their initializers ask tf_keras for one (its
    thread-local seed generator, else Python's global ``random``), and their samplers (anchors,
    ROIs) are stateful TF ops seeded from TensorFlow's global seed when traced. Within the block
    the generator is ``random.Random(seed)`` and the global seed is ``seed``; both are restored
    after (the global seed to its previous value, from the start of its sequence), so a build is
    repeatable without changing the process's seeds. Python's and NumPy's global generators are
    never touched.
    """
    previous_seed = tf_context.global_seed()
    previous_generator = getattr(keras_backend._SEED_GENERATOR, "generator", None)  # pylint: disable=protected-access
    tf.random.set_seed(int(seed))
    keras_backend._SEED_GENERATOR.generator = random.Random(int(seed))  # pylint: disable=protected-access
    try:
        yield
    finally:
        keras_backend._SEED_GENERATOR.generator = previous_generator  # pylint: disable=protected-access
        tf.random.set_seed(previous_seed)

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
      seed: the seed the weights were drawn from (`model_garden_seed`); `TrainLoop` traces its
        step under it too.
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
        *,
        seed: int | None = 0,
    ) -> None:
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
        self.seed = 0 if seed is None else int(seed)
        self.model_config = self.make_model_config(thresholds)
        with model_garden_seed(self.seed):
            self.model = self.build_model(self.model_config)
        self._traced_fns: dict[tuple[str, int], Callable] = {}

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

    def traced(self, name: str, function: Callable, batch_size: int) -> Callable:
        """``function`` traced once per ``(name, batch_size)``, called under `pinned_box_arithmetic`."""
        key = (name, int(batch_size))
        if key not in self._traced_fns:
            compiled = tf.function(function)

            def call(*args, **kwargs):
                with pinned_box_arithmetic():
                    return compiled(*args, **kwargs)

            self._traced_fns[key] = call
        return self._traced_fns[key]

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
        function = self.traced("predict", self._predict, int(images.shape[0]))
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
    """Builds ``detsearch.models.<model>``'s detector (weights drawn from ``seed``, None: 0,
    within `model_garden_seed`).

    Raises:
      ValueError: an unknown model or preset, bad categories or thresholds.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    module = importlib.import_module(f"detsearch.models.{model}")
    return module.DETECTOR(preset, category_ids, category_names, thresholds, seed=seed)

