"""A user's TF Model Garden experiment as the detector: its config, its checkpoint, its
validation TFRecords, and Model Garden's own evaluation as the proof.

The config is built as ``official.vision.train`` builds it (`load_config`: the registered
experiment, then each YAML file and ``--params_override``, strictly). The model is the task's
own (``task_factory.get_task(config.task).build_model()``), restored from the user's
checkpoint. Images and ground truth come through the task's own input pipeline
(``task.build_inputs(config.task.validation_data)``: decoder, parser, ``image_info``), the
ground truth from ``task.annotation_file`` or, when that is empty, from the records as Model
Garden's evaluator builds it; image ids are the records' ``source_id``; boxes go back to the
original image the evaluator's way (divided by ``image_info``'s scale, float32).

Supported now: RetinaNet experiments whose post-processing is Model Garden's default
``detection_generator.nms_version: v2`` (`detsearch.detection.nms_v2`; class-aware or
class-agnostic), ``batched`` or ``v1`` (`detsearch.detection.nms_v1`; soft NMS too), and Faster
and Mask R-CNN experiments (Mask R-CNN's boxes; its masks are not evaluated) with a v2 second
stage and either first stage (``roi_generator.use_batched_nms``); in float32 or Model Garden's
mixed precision (not with batched NMS in either stage, which fails on the reduced scores in Model
Garden itself); anything else is refused with one line naming the setting
(`check_supported`). `write_thresholds_yaml` writes the choice as a params override
that Model Garden reads with ``is_strict=True``; `evaluate_with_model_garden` runs the task's
``validation_step`` and its ``COCOEvaluator`` at given thresholds, which
`detsearch.models.experiment_verify` holds rows of the sweep's table against, each of the 12
stats as float32 (the proof the sweep's rows are Model Garden's own numbers).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from detsearch.detection.cache import CacheKind
from detsearch.detection.sweep.cuts import REDUCED_DTYPES
from detsearch.detection.sweep.settings import NmsVersion
from detsearch.errors import BadSetting

__all__ = [
    "Experiment",
    "MAX_DETECTIONS_KEY",
    "RECORD_FEATURES",
    "Recorder",
    "SHIPPED_CONFIGS",
    "THRESHOLD_KEYS",
    "cache_source",
    "with_categories",
    "config_path",
    "check_records",
    "create_variables",
    "check_supported",
    "evaluate_settings_with_model_garden",
    "evaluate_with_model_garden",
    "export_experiment",
    "filter_by_class",
    "keep_above_class_thresholds",
    "load_config",
    "load_experiment",
    "model_garden_seed",
    "record",
    "thresholds_override",
    "write_thresholds_yaml",
]

THRESHOLD_KEYS: Mapping[str, Mapping[str, str]] = {
    CacheKind.ONE_STAGE: {
        "score_threshold": "task.model.detection_generator.pre_nms_score_threshold",
        "iou_threshold": "task.model.detection_generator.nms_iou_threshold",
    },
    CacheKind.TWO_STAGE: {
        "nms_score_threshold": "task.model.roi_generator.test_pre_nms_score_threshold",
        "nms_iou_threshold": "task.model.roi_generator.test_nms_iou_threshold",
        "score_threshold": "task.model.detection_generator.pre_nms_score_threshold",
        "iou_threshold": "task.model.detection_generator.nms_iou_threshold",
    },
}
"""MoXing threshold name -> the Model Garden config key it sets, per detector kind."""

logger = logging.getLogger(__name__)

MAX_DETECTIONS_KEY = "task.model.detection_generator.max_num_detections"
"""Where the sweep's ``max_detections`` axis goes (the cap per class and per image)."""
SOFT_NMS_SIGMA_KEY = "task.model.detection_generator.soft_nms_sigma"
"""Where the sweep's ``soft_nms_sigma`` axis goes (v1)."""


SHIPPED_CONFIGS = Path(__file__).parent / "experiments"
"""YAML overrides installed with the package (``models/experiments/NAME.yaml``)."""


def config_path(value: str | os.PathLike) -> Path:
    """A ``--config_file`` value: a path, or the name of a shipped override (`SHIPPED_CONFIGS`)
    when no such file exists."""
    path = Path(value)
    shipped = SHIPPED_CONFIGS / f"{value}.yaml"
    return shipped if not path.exists() and shipped.is_file() else path


def load_config(experiment: str, config_files: Sequence[str | os.PathLike] = (), params_override: str | None = None):
    """The experiment's config, as ``official.vision.train`` builds it: the registered
    ``experiment``, then each YAML file (`config_path`: a path or a shipped name), then
    ``params_override`` (a YAML/JSON string or ``a.b=1,c=2``), every override strict.

    Raises:
      ValueError: an unknown experiment name (the registered ones listed), a missing YAML file,
        a key Model Garden rejects (named with its source), a config that fails validation.
    """
    from official.core import exp_factory
    from official.modeling import hyperparams
    from official.vision import registry_imports  # noqa: F401 - registers the vision experiments

    try:
        config = exp_factory.get_exp_config(experiment)
    except (KeyError, LookupError):
        known = ", ".join(sorted(name for name in exp_factory._REGISTERED_CONFIGS  # pylint: disable=protected-access
                                 if any(word in name for word in ("retinanet", "rcnn"))))
        raise ValueError(f"unknown experiment {experiment!r}; registered detection experiments: {known}") from None
    for path in map(config_path, config_files):
        if not path.is_file():
            raise ValueError(f"--config-file {path}: no such file")
        try:
            config = hyperparams.override_params_dict(config, str(path), is_strict=True)
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"--config-file {path}: Model Garden rejects it: {_first_line(error)}") from None
    if params_override:
        try:
            config = hyperparams.override_params_dict(config, params_override, is_strict=True)
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"--params-override: Model Garden rejects it: {_first_line(error)}") from None
    try:
        config.validate()
    except (KeyError, ValueError) as error:
        raise ValueError(f"experiment {experiment}: {_first_line(error)}") from None
    return config


def _first_line(error: BaseException) -> str:
    text = str(error).strip().strip("'\"")
    return " ".join(text.split()) or type(error).__name__


def kind_of(config) -> CacheKind:
    """One-stage for a RetinaNet task, two-stage for Mask/Faster R-CNN."""
    name = type(config.task).__name__
    if name == "RetinaNetTask":
        return CacheKind.ONE_STAGE
    if name == "MaskRCNNTask":
        return CacheKind.TWO_STAGE
    raise ValueError(f"task {name}: only RetinaNet and Faster/Mask R-CNN experiments have detection thresholds")


UNREPRODUCED_NMS = {
    "v3": " (the Edge TPU NMS, which orders in the scores' dtype)",
    "tflite": " (TFLite's post-processing: in TensorFlow its function returns zeros, so it cannot be evaluated)",
}
"""Why a Model Garden ``nms_version`` the sweep does not run is refused (its line says it)."""


def check_supported(config) -> CacheKind:
    """The experiment's `CacheKind` when the sweep reproduces its post-processing exactly;
    otherwise ValueError naming the setting and the value that would make it so."""
    kind = kind_of(config)
    model = config.task.model
    if kind == CacheKind.TWO_STAGE:
        _check_two_stage(model)
        if model.include_mask and not config.task.annotation_file:
            raise ValueError("task.model.include_mask true with an empty task.annotation_file: Model Garden's evaluator "
                             "then takes the mask ground truth from the records, which is not reproduced; set "
                             "task.annotation_file (a COCO json with the masks)")
    generator = model.detection_generator
    if generator.nms_version not in tuple(NmsVersion):
        why = UNREPRODUCED_NMS.get(generator.nms_version, "")
        raise ValueError(f"task.model.detection_generator.nms_version {generator.nms_version!r}{why}: the sweep "
                         f"reproduces {', '.join(NmsVersion)} (v2 is Model Garden's default); set one of them")
    if not generator.apply_nms:
        raise ValueError("task.model.detection_generator.apply_nms false: the model runs no NMS to choose thresholds for")
    if getattr(generator, "use_class_agnostic_nms", False) and generator.nms_version != NmsVersion.V2:
        raise ValueError(f"task.model.detection_generator.use_class_agnostic_nms true with nms_version "
                         f"{generator.nms_version!r}: Model Garden runs class-agnostic NMS with v2 only (its generator "
                         "refuses the rest); set nms_version v2 or use_class_agnostic_nms false")
    sigma = getattr(generator, "soft_nms_sigma", None)
    if sigma is not None and generator.nms_version != NmsVersion.V1:
        raise ValueError(f"task.model.detection_generator.soft_nms_sigma {sigma}: Model Garden reads it with "
                         f"nms_version v1 only, not {generator.nms_version!r}; set it to null or nms_version v1")
    if generator.nms_version == NmsVersion.V1 and sigma is None:
        raise ValueError("task.model.detection_generator.nms_version 'v1' with soft_nms_sigma null: Model Garden then "
                         "fills each image's output up to max_num_detections with copies of the first class's "
                         "highest-scoring box at score -1, which its evaluator counts as detections (they can match), "
                         "and which the cache does not reproduce; set soft_nms_sigma (0.0 is TensorFlow's hard NMS "
                         "kernel, which pads with empty boxes) or nms_version v2")
    if generator.nms_version == NmsVersion.V1 and not config.task.validation_data.drop_remainder:
        raise ValueError("task.model.detection_generator.nms_version 'v1' with task.validation_data.drop_remainder "
                         "false: Model Garden's v1 loops over the batch's static size, which a dataset keeping its last "
                         "partial batch does not have (its own evaluation fails there too); set drop_remainder true")
    if sigma is not None and not sigma >= 0:
        raise ValueError(f"task.model.detection_generator.soft_nms_sigma {sigma}: TensorFlow's kernel needs a sigma >= 0")
    if getattr(model, "head", None) is not None and getattr(model.head, "attribute_heads", None):
        raise ValueError("task.model.head.attribute_heads: attribute heads are not supported")
    evaluated = getattr(config.task, "max_num_eval_detections", 100)
    if isinstance(evaluated, bool) or not isinstance(evaluated, int) or evaluated < 1:
        raise ValueError(f"task.max_num_eval_detections {evaluated!r}: COCO's maxDets needs an int >= 1")
    # task.validation_data.dtype (bfloat16 in every registered experiment) rounds the images the
    # input pipeline gives; the model casts them to its compute dtype: any dtype is taken.
    # runtime.mixed_precision_dtype is the compute dtype Model Garden's training script sets
    # (`precision_policy`): the model's scores come in it, which the sweep reproduces where its
    # NMS takes them (`PostProcessing.score_dtype`).
    data = config.task.validation_data
    precision = config.runtime.mixed_precision_dtype
    if precision not in (None, "", "float32", *REDUCED_DTYPES):
        raise ValueError(f"runtime.mixed_precision_dtype {precision!r}: Model Garden's training script takes "
                         "float32, bfloat16 or float16")
    if mixed_precision(config):
        if generator.nms_version == NmsVersion.BATCHED:
            raise ValueError(f"runtime.mixed_precision_dtype {precision!r} with task.model.detection_generator."
                             f"nms_version 'batched': Model Garden's combined_non_max_suppression takes float32 scores "
                             f"only and fails on {precision} ones; set nms_version v2 (its default) or v1")
        if kind == CacheKind.TWO_STAGE and model.roi_generator.use_batched_nms:
            raise ValueError(f"runtime.mixed_precision_dtype {precision!r} with task.model.roi_generator.use_batched_nms "
                             f"true: Model Garden's first stage then runs combined_non_max_suppression, which takes "
                             f"float32 scores only and fails on {precision} ones; set use_batched_nms false (its default)")
    if not data.input_path:
        raise ValueError("task.validation_data.input_path is empty: the validation TFRecords are read from it")
    return kind


def _check_two_stage(model) -> None:
    """The Faster R-CNN settings the two-stage sweep reproduces (ValueError naming any other).
    Mask R-CNN (``include_mask``) is its boxes: the mask head runs on the detections after NMS
    and changes none of them; its masks are not evaluated."""
    prefix = "task.model"
    if model.roi_sampler.cascade_iou_thresholds:
        raise ValueError(f"{prefix}.roi_sampler.cascade_iou_thresholds {model.roi_sampler.cascade_iou_thresholds}: "
                         "Cascade R-CNN heads are not reproduced")
    if getattr(model, "outer_boxes_scale", 1.0) != 1.0:
        raise ValueError(f"{prefix}.outer_boxes_scale {model.outer_boxes_scale}: outer boxes are not reproduced")
    if model.detection_head.class_agnostic_bbox_pred:
        raise ValueError(f"{prefix}.detection_head.class_agnostic_bbox_pred true: per-class boxes are reproduced")
    generator, proposals = model.detection_generator, model.roi_generator
    if generator.nms_version != NmsVersion.V2:
        raise ValueError(f"{prefix}.detection_generator.nms_version {generator.nms_version!r}: a two-stage experiment "
                         "is reproduced with v2 (Model Garden's default; other versions also report the all-zero "
                         "padding proposals as detections)")
    if generator.pre_nms_top_k < proposals.test_num_proposals:
        raise ValueError(f"{prefix}.detection_generator.pre_nms_top_k {generator.pre_nms_top_k} < "
                         f"roi_generator.test_num_proposals {proposals.test_num_proposals}: not reproduced")
    if proposals.test_pre_nms_min_size_threshold > 0:
        raise ValueError(f"{prefix}.roi_generator.test_pre_nms_min_size_threshold "
                         f"{proposals.test_pre_nms_min_size_threshold}: the size filter is not reproduced; set it to 0")
    if proposals.use_batched_nms and proposals.test_pre_nms_top_k < proposals.test_num_proposals:
        raise ValueError(f"{prefix}.roi_generator.test_pre_nms_top_k {proposals.test_pre_nms_top_k} < test_num_proposals "
                         f"{proposals.test_num_proposals} with use_batched_nms: not reproduced")


def thresholds_override(kind: CacheKind, thresholds: Mapping[str, float]) -> dict[str, Any]:
    """The nested params-override dict that sets ``thresholds`` (MoXing names, and
    ``max_detections``) in a config."""
    override: dict[str, Any] = {}
    for name, value in thresholds.items():
        if name == "max_detections":
            key, value = MAX_DETECTIONS_KEY, int(value)
        elif name == "soft_nms_sigma":
            key, value = SOFT_NMS_SIGMA_KEY, float(value)
        elif name in THRESHOLD_KEYS[kind]:
            key, value = THRESHOLD_KEYS[kind][name], float(value)
        else:
            raise ValueError(f"{name!r} is not a {kind} threshold; known: {', '.join(THRESHOLD_KEYS[kind])}, "
                             "max_detections, soft_nms_sigma")
        node = override
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return override


def write_thresholds_yaml(path: str | os.PathLike, kind: CacheKind, thresholds: Mapping[str, float]) -> Path:
    """Writes ``thresholds`` as a Model Garden params override (YAML), atomically:
    ``official.vision.train --config_file A.yaml,PATH`` then runs them."""
    import yaml

    from detsearch.atomic import write_bytes_atomic

    text = ("# detsearch: the chosen post-processing thresholds, a Model Garden params override\n"
            + yaml.safe_dump(thresholds_override(kind, thresholds), default_flow_style=False, sort_keys=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, text.encode("utf-8"))
    return path


def _config_value(config, key: str):
    node = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def mixed_precision(config) -> str | None:
    """``"bfloat16"`` or ``"float16"`` when ``runtime.mixed_precision_dtype`` asks for mixed
    precision, else None."""
    precision = config.runtime.mixed_precision_dtype
    return precision if precision in REDUCED_DTYPES else None


@contextlib.contextmanager
def precision_policy(config):
    """The global Keras policy Model Garden's training script (``official.vision.train``,
    ``performance.set_mixed_precision_policy``) sets for ``runtime.mixed_precision_dtype``
    (``mixed_bfloat16``, ``mixed_float16``), for the block: layers built in it compute in that
    dtype (their variables stay float32). The previous policy is restored after. Nothing
    changes for float32."""
    import tf_keras

    precision = mixed_precision(config)
    if precision is None:
        yield
        return
    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(f"mixed_{precision}")
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


def read_thresholds(config, kind: CacheKind) -> dict[str, float]:
    """The MoXing-named thresholds a config holds."""
    return {name: float(_config_value(config, key)) for name, key in THRESHOLD_KEYS[kind].items()}


def _with_thresholds(config, kind: CacheKind, thresholds: Mapping[str, float] | None, *, decoded_only: bool):
    """A copy of ``config`` with ``thresholds`` set; with ``decoded_only`` the detection generator
    returns the decoded boxes and scores and runs no NMS (the same decoding: NMS comes after)."""
    from official.modeling import hyperparams

    config = copy.deepcopy(config)
    override = thresholds_override(kind, thresholds or {})
    if decoded_only:
        model = override.setdefault("task", {}).setdefault("model", {})
        model.setdefault("detection_generator", {}).update(apply_nms=False)
        if kind == CacheKind.ONE_STAGE:
            model["detection_generator"].update(return_decoded=True)
        elif config.task.model.include_mask:  # the mask head would run on the detections NMS no longer gives
            model["include_mask"] = False
    return hyperparams.override_params_dict(config, override, is_strict=True)


@dataclasses.dataclass
class Experiment:
    """A loaded experiment: its config, kind, task, the model restored from ``checkpoint``."""

    name: str
    config: Any
    kind: CacheKind
    checkpoint: str
    task: Any = None
    model: Any = None

    @property
    def thresholds(self) -> dict[str, float]:
        """The config's own thresholds (MoXing names)."""
        return read_thresholds(self.config, self.kind)

    @property
    def traced_batch_size(self) -> int | None:
        """The batch size Model Garden's trainer traces its evaluation with, its validation
        dataset's: ``global_batch_size`` when the last, partial batch is dropped
        (``validation_data.drop_remainder``), else unknown (None)."""
        data = self.config.task.validation_data
        return int(data.global_batch_size) if data.drop_remainder else None

    @property
    def max_detections(self) -> int:
        """The config's ``max_num_detections``."""
        return int(_config_value(self.config, MAX_DETECTIONS_KEY))

    @property
    def post_processing(self):
        """The config's post-processing as the sweep runs it (`PostProcessing`): its
        ``nms_version`` (v2 with its ``pre_nms_top_k`` and ``use_class_agnostic_nms``), its cap
        ``max_num_detections`` per class and per image, COCO's ``maxDets[2]``
        (``task.max_num_eval_detections``); two-stage also the first stage's (``roi_generator``:
        NMS, per-level top-k, ``test_num_proposals``)."""
        from detsearch.detection.sweep.settings import PostProcessing, ProposalNms

        model = self.config.task.model
        generator = model.detection_generator
        fields: dict[str, Any] = {"nms_version": NmsVersion(generator.nms_version),
                                  "max_detections_per_class": self.max_detections,
                                  "max_total_detections": self.max_detections}
        if fields["nms_version"] == NmsVersion.V1:
            fields["pre_nms_top_k"] = int(generator.pre_nms_top_k)
            sigma = getattr(generator, "soft_nms_sigma", None)
            fields["soft_nms_sigma"] = None if sigma is None else float(sigma)
        if fields["nms_version"] == NmsVersion.V2:
            fields["pre_nms_top_k"] = int(generator.pre_nms_top_k)
            # use_class_agnostic_nms (RetinaNet's generator only): TensorFlow's padded NMS per image.
            fields["class_agnostic"] = bool(getattr(generator, "use_class_agnostic_nms", False))
        # RetinaNet's task sets COCO's maxDets[2] to it; Model Garden's Mask R-CNN task (Faster
        # R-CNN too) has no such setting and evaluates 100.
        fields["max_eval_detections"] = int(getattr(self.config.task, "max_num_eval_detections", 100))
        fields["score_dtype"] = mixed_precision(self.config) or "float32"
        if self.kind == CacheKind.TWO_STAGE:
            proposals = model.roi_generator
            fields.update(num_proposals=int(proposals.test_num_proposals), per_level=True)
            if not proposals.use_batched_nms:
                fields.update(proposal_nms=ProposalNms.TILED, proposal_top_k=int(proposals.test_pre_nms_top_k))
        return PostProcessing(**fields)

    def build(self, thresholds: Mapping[str, float] | None = None, *, decoded_only: bool = False,
              restore: bool = True):
        """(task, model) at ``thresholds`` (None: the config's), the checkpoint restored; with
        ``decoded_only`` the model returns the decoded boxes and scores before NMS instead.
        With ``restore`` False the model is as the task builds it, its variables not yet
        created (Keras creates them on the first call or trace): `restore` it after that. The
        model is built under the config's precision (`precision_policy`), as Model Garden's
        training script builds it."""
        from official.core import task_factory

        config = _with_thresholds(self.config, self.kind, thresholds, decoded_only=decoded_only)
        task = task_factory.get_task(config.task)
        with precision_policy(config):
            model = task.build_model()
        if restore:
            create_variables(model, config.task.model)  # every variable exists, so a misfit is found now
            self.restore(model)
        return task, model

    def restore(self, model) -> None:
        """Reads the checkpoint into ``model``, whose variables exist; ValueError when a variable
        of the model has no value in it."""
        import tensorflow as tf

        checkpoint = tf.train.Checkpoint(model=model)
        try:
            checkpoint.read(self.checkpoint).expect_partial().assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise ValueError(f"checkpoint {self.checkpoint} does not fit experiment {self.name} as configured: "
                             f"{_first_line(error)[:400]}") from None

    def batches(self, task) -> Iterator[tuple[Any, Any]]:
        """The validation data through the task's own decoder and parser."""
        return iter(task.build_inputs(self.config.task.validation_data))


def create_variables(model, model_config) -> None:
    """One call of the model on zeros: Keras creates the heads' variables on first call."""
    import tensorflow as tf
    from official.vision.ops import anchor

    height, width = model_config.input_size[:2]
    boxes = anchor.Anchor(min_level=model_config.min_level, max_level=model_config.max_level,
                          num_scales=model_config.anchor.num_scales, aspect_ratios=model_config.anchor.aspect_ratios,
                          anchor_size=model_config.anchor.anchor_size, image_size=(height, width)).multilevel_boxes
    model(tf.zeros([1, height, width, 3]), anchor_boxes={level: value[None] for level, value in boxes.items()},
          image_shape=tf.constant([[height, width]], tf.float32), training=False)


def resolve_checkpoint(model_dir: str | None, checkpoint: str | None) -> str:
    """The checkpoint prefix: ``checkpoint``, else the latest in ``model_dir``."""
    import tensorflow as tf

    if checkpoint:
        if not tf.io.gfile.exists(f"{checkpoint}.index"):
            raise BadSetting(f"checkpoint {checkpoint}: no such checkpoint ({checkpoint}.index is missing)")
        return str(checkpoint)
    if not model_dir:
        raise BadSetting("an experiment needs a model_dir or a checkpoint")
    latest = tf.train.latest_checkpoint(str(model_dir))
    if latest is None:
        raise BadSetting(f"model_dir {model_dir}: no checkpoint in it")
    return latest


RECORD_FEATURES = ("image/encoded", "image/source_id", "image/height", "image/width", "image/object/bbox/xmin",
                   "image/object/bbox/ymin", "image/object/bbox/xmax", "image/object/bbox/ymax",
                   "image/object/class/label")
"""The features of a validation record the task's decoder and the ground truth read (all
written by ``official/vision/data/create_coco_tf_record.py``)."""


def check_records(config) -> list[str]:
    """The validation record files; ValueError, naming the file and what is wrong, when there
    are none, when the first record lacks a feature of `RECORD_FEATURES`, or when a record's
    ``source_id`` is not an image of ``task.annotation_file``."""
    import json

    import tensorflow as tf

    data = config.task.validation_data
    patterns = data.input_path if isinstance(data.input_path, (list, tuple)) else str(data.input_path).split(",")
    files = sorted(f for pattern in patterns if pattern.strip() for f in tf.io.gfile.glob(pattern.strip()))
    if not files:
        raise ValueError(f"task.validation_data.input_path {data.input_path}: no such files")
    for first in tf.data.TFRecordDataset(files[:1]).take(1):
        features = tf.train.Example.FromString(first.numpy()).features.feature
        missing = [name for name in RECORD_FEATURES if name not in features]
        if missing:
            raise ValueError(f"{files[0]}: the records lack {', '.join(missing)} (write them with Model Garden's "
                             "create_coco_tf_record)")
    annotation_file = config.task.annotation_file
    if annotation_file:
        with open(annotation_file, encoding="utf-8") as handle:
            known = {int(image["id"]) for image in json.load(handle).get("images", [])}
        ids = tf.data.TFRecordDataset(files).map(
            lambda record: tf.io.parse_single_example(record, {"image/source_id": tf.io.FixedLenFeature((), tf.string)})
            ["image/source_id"])
        unknown = [int(value) for value in ids.as_numpy_iterator() if int(value) not in known]
        if unknown:
            raise ValueError(f"task.annotation_file {annotation_file}: image id {unknown[0]} of the records (source_id) "
                             f"is not among its images ({len(unknown)} such records)")
    return files


def load_experiment(name: str, config_files: Sequence[str] = (), params_override: str | None = None, *,
                    model_dir: str | None = None, checkpoint: str | None = None,
                    trained: bool = True) -> Experiment:
    """Loads and checks an experiment (`load_config`, `check_supported`, `check_records`) and
    finds its checkpoint (``trained`` False: none yet, ``checkpoint`` is empty)."""
    config = load_config(name, config_files, params_override)
    kind = check_supported(config)
    check_records(config)
    found = resolve_checkpoint(model_dir, checkpoint) if trained else ""
    return Experiment(name=name, config=config, kind=kind, checkpoint=found)


def call_traced(function, *args, batch_size: int | None):
    """``function(*args)``, the tf.function ``function`` traced with ``batch_size`` (None:
    unknown) as the first dimension of every argument, the batch dimension Model Garden's
    trainer traces its evaluation with (`Experiment.traced_batch_size`). The same model traced
    for a known and for an unknown batch size rounds differently: on a Faster R-CNN of the
    tests, 11 % of the decoded RPN boxes' coordinates moved by a float32 step or two (at most
    1.5e-5 px), and AP in its seventh decimal. So the cache is recorded with the graphs Model
    Garden's own evaluation runs."""
    import tensorflow as tf

    specs = tf.nest.map_structure(lambda t: tf.TensorSpec([batch_size, *t.shape[1:]], t.dtype), args)
    function.get_concrete_function(*specs)
    return function(*args)


class OneStageForward:
    """Per-batch recording of a RetinaNet: the model returning its decoded boxes and scores
    before NMS, one traced function (`call_traced` with ``batch_size``)."""

    def __init__(self, model, batch_size: int | None):
        import tensorflow as tf

        self.batch_size = batch_size

        @tf.function(autograph=False, reduce_retracing=True)
        def decoded(images, anchors, image_shape):
            outputs = model(images, anchor_boxes=anchors, image_shape=image_shape, training=False)
            return outputs["decoded_boxes"], outputs["decoded_box_scores"]

        self._decoded = decoded

    def records(self, images, labels, floor: np.float32, scale: np.ndarray) -> tuple[list[dict[str, Any]], int]:
        """Per image: the anchors with a score >= ``floor`` as rows (boxes divided by ``scale``)
        and their entries; and the number of score columns."""
        boxes, scores = call_traced(self._decoded, images, labels["anchor_boxes"], labels["image_info"][:, 1, :],
                                    batch_size=self.batch_size)
        # Under mixed precision the scores come in bfloat16 or float16: float32 holds them exactly.
        boxes, scores = boxes.numpy()[:, :, 0, :].astype(np.float32), scores.numpy().astype(np.float32)
        records = []
        for i in range(len(boxes)):
            rows, classes = np.nonzero(scores[i] >= floor)  # row-major: sorted by (anchor, class)
            first = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, bool)
            anchors, entry_row = rows[first], np.cumsum(first) - 1
            records.append({
                "row_boxes": (boxes[i][anchors] / scale[i]).astype(np.float32),
                "entry_row": entry_row.astype(np.int64),
                "entry_class": classes.astype(np.int64),
                "entry_score": scores[i][rows, classes],
            })
        return records, scores.shape[-1]


class Recorder:
    """Records an experiment's validation batches through its kind's forward pass
    (`OneStageForward`, `experiment_two_stage.TwoStageForward`): per image, rows and entries
    in original image pixels.

    `add` takes one ``(images, labels)`` batch of the task's pipeline; `cache` builds the
    `DetectionCache` (images by ``source_id``) and the ground truth. `record` is the whole pass.
    """

    def __init__(self, experiment: Experiment, score_floor: float):
        self.experiment = experiment
        self.score_floor = float(score_floor)
        self.floor = np.float32(score_floor)
        self.task, model = experiment.build(decoded_only=True)
        if experiment.kind == CacheKind.TWO_STAGE:
            from detsearch.models.experiment_two_stage import TwoStageForward

            self.forward = TwoStageForward(model, experiment.config.task.model, experiment.traced_batch_size)
        else:
            self.forward = OneStageForward(model, experiment.traced_batch_size)
        self._records: list[dict[str, Any]] = []
        self._groundtruths: list[dict[str, np.ndarray]] = []
        self.num_classes = None

    def add(self, images, labels, *, keep: bool = True) -> int:
        """Records one batch (``keep`` False: runs it only, e.g. to trace); returns its number
        of images."""
        info = labels["image_info"].numpy()
        # As COCOEvaluator maps boxes back: divided by the (y, x) scale, in float32.
        scale = np.tile(info[:, 2, :], [1, 2]).astype(np.float32)
        records, self.num_classes = self.forward.records(images, labels, self.floor, scale)
        if not keep:
            return len(records)
        source_ids = labels["groundtruths"]["source_id"].numpy()
        self._groundtruths.append({k: v.numpy() for k, v in labels["groundtruths"].items()})
        for i, item in enumerate(records):
            item.update(image_id=int(source_ids[i]), size=(int(round(info[i, 0, 0])), int(round(info[i, 0, 1]))))
            self._records.append(item)
        return len(records)

    def trace(self, images, labels) -> None:
        """Runs the forward pass once on a batch, recording nothing (traces the functions)."""
        self.add(images, labels, keep=False)

    def cache(self):
        """``(DetectionCache, ground truth dict)`` of every batch added."""
        from detsearch.detection.cache import CacheBuilder, CacheSettings

        # Score column c is Model Garden class c + 1, the category id of COCO-format records.
        # Every class is kept: one the ground truth does not name still takes places in an
        # image's top max_num_detections (its detections are evaluated by no one).
        keep = list(range(1, self.num_classes + 1))
        ground_truth = with_categories(_ground_truth(self.experiment, self._groundtruths), keep)
        position = np.arange(self.num_classes, dtype=np.int64)
        two_stage = self.experiment.kind == CacheKind.TWO_STAGE
        proposals = self.experiment.config.task.model.roi_generator if two_stage else None
        builder = CacheBuilder(CacheSettings(
            kind=self.experiment.kind, category_ids=tuple(keep), score_floor=self.score_floor,
            num_proposals=int(proposals.test_num_proposals) if two_stage else None,
            source=cache_source(self.experiment)))
        for item in sorted(self._records, key=lambda record: record["image_id"]):
            mapped = position[item["entry_class"]]
            alive = mapped >= 0
            extra = {}
            if two_stage:
                extra = dict(entry_boxes=item["entry_boxes"][alive], row_objectness=item["row_objectness"],
                             row_level=item["row_level"])
            builder.add_image(item["image_id"], item["size"], row_boxes=item["row_boxes"],
                              entry_row=item["entry_row"][alive], entry_class=mapped[alive],
                              entry_score=item["entry_score"][alive], **extra)
        return builder.build(), ground_truth


def with_categories(ground_truth: dict, category_ids) -> dict:
    """``ground_truth`` with a category (no annotations) for each of ``category_ids`` it does not
    name. COCO evaluation then gives those categories no precision or recall (-1, left out of
    every mean), so the 12 stats are those of the original ground truth."""
    known = {int(c["id"]) for c in ground_truth["categories"]}
    missing = [{"id": int(c), "name": f"class {int(c)} (not in the ground truth)"} for c in category_ids
               if int(c) not in known]
    return {**ground_truth, "categories": [*ground_truth["categories"], *missing]} if missing else ground_truth


def cache_source(experiment: Experiment) -> dict[str, str]:
    """A cache's provenance: the experiment, its checkpoint, and a digest of the config's model
    and validation data settings that the recorded predictions depend on (not the thresholds,
    not the record files)."""
    import hashlib
    import json

    task = experiment.config.task
    model = task.model.as_dict()
    model.pop("detection_generator", None)  # applied after the recorded predictions
    for key in ("test_pre_nms_score_threshold", "test_nms_iou_threshold"):
        model.get("roi_generator", {}).pop(key, None)
    data = {k: v for k, v in task.validation_data.as_dict().items() if k != "input_path"}  # shards differ there
    recorded = {"model": model, "validation_data": data}
    digest = hashlib.sha256(json.dumps(recorded, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"experiment": experiment.name, "checkpoint": experiment.checkpoint, "config": digest}


def record(experiment: Experiment, score_floor: float, progress: Callable[[int], None] | None = None):
    """The cache of the validation set and its COCO ground truth dict (`Recorder`).

    Returns ``(cache, ground_truth)``: a `DetectionCache` of the raw predictions before NMS
    (one-stage: decoded boxes and sigmoid scores; two-stage: proposals and the second stage of
    each, see `experiment_two_stage`) with score >= ``score_floor``, boxes in original image
    pixels as Model Garden's evaluator maps them, and the ground truth (``task.annotation_file``,
    else built from the records).
    """
    recorder = Recorder(experiment, score_floor)
    for images, labels in experiment.batches(recorder.task):
        count = recorder.add(images, labels)
        if progress is not None:
            progress(count)
    return recorder.cache()


def _ground_truth(experiment: Experiment, groundtruths: list[dict[str, np.ndarray]]) -> dict:
    annotation_file = experiment.config.task.annotation_file
    if annotation_file:
        import json

        with open(annotation_file, encoding="utf-8") as handle:
            return json.load(handle)
    from official.vision.evaluation import coco_utils

    merged = {key: [g[key] for g in groundtruths] for key in groundtruths[0]}
    # The parser gives num_detections as [B, 1]; Model Garden's converter takes int() of each
    # row, which NumPy 2 refuses for 1-element arrays: the same counts, as [B].
    merged["num_detections"] = [np.reshape(n, [-1]) for n in merged["num_detections"]]
    return coco_utils.convert_groundtruths_to_coco_dataset(merged)


def evaluate_with_model_garden(experiment: Experiment, thresholds: Mapping[str, float] | None = None, *,
                               ground_truth_file: str | os.PathLike | None = None) -> dict[str, float]:
    """Model Garden's own evaluation at ``thresholds`` (None: the config's): the task's
    ``validation_step``, ``aggregate_logs`` and ``reduce_aggregated_logs`` with its
    ``COCOEvaluator``; the 12 stats by `detsearch.detection.cocoeval.STAT_NAMES`
    (`evaluate_settings_with_model_garden` with one setting)."""
    return evaluate_settings_with_model_garden(experiment, [thresholds], ground_truth_file=ground_truth_file)[0]


def evaluate_settings_with_model_garden(experiment: Experiment, settings: Sequence[Mapping[str, float] | None], *,
                                        ground_truth_file: str | os.PathLike | None = None,
                                        progress: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """Model Garden's own evaluation at each of ``settings`` (thresholds by MoXing name and
    ``max_detections``; None: the config's), in one pass over the validation data.

    Each setting gets what Model Garden builds from the config at those thresholds: its task,
    its model (restored from the checkpoint), its traced ``validation_step`` and its
    ``COCOEvaluator`` (``aggregate_logs``, ``reduce_aggregated_logs``). Model Garden's layers
    take their thresholds as Python values when built and branch on them when traced, so no
    model or traced step serves two settings unless the layers' private state is edited, which
    a proof should not do. What the settings share is the data: each batch of the task's
    pipeline is read once and goes through every setting's step (reading the batches costs
    more than a step on the demo; nothing is held beyond one batch).

    ``ground_truth_file`` stands in for an empty ``task.annotation_file``: the evaluator's own
    conversion of the records' ground truth fails under NumPy 2 (see `_ground_truth`), so the
    ground truth `record` built from them that way is given to it as a file. ``progress`` is
    called with each batch's number of images.

    Returns:
      Per setting, the 12 stats by `detsearch.detection.cocoeval.STAT_NAMES`, each the float32
      value Model Garden's evaluator reports.
    """
    from detsearch.detection.cocoeval import STAT_NAMES

    if ground_truth_file is not None:
        config = copy.deepcopy(experiment.config)
        config.task.annotation_file = str(ground_truth_file)
        experiment = dataclasses.replace(experiment, config=config)
    evaluations = []
    for thresholds in settings:
        task, model = experiment.build(thresholds, restore=False)
        with _printed_to_log():  # the COCOEvaluator loads the annotation file
            step = _validation_step(task, model)
        evaluations.append([task, model, step, None])
    dataset = evaluations[0][0].build_inputs(experiment.config.task.validation_data)
    for task, model, step, _ in evaluations:
        # One trace per setting for every batch, with the dataset's own spec (as Model Garden's
        # trainer traces its evaluation; see `call_traced`); it creates the model's variables,
        # and the checkpoint is read into them (an eager call to create them would run the NMS
        # loops eagerly: slow). Traced here, not by a call: TensorFlow would warn of "excessive
        # retracing" when several settings' steps trace in a row.
        step.get_concrete_function(dataset.element_spec)
        experiment.restore(model)
    for inputs in dataset:
        for evaluation in evaluations:
            task, _, step, state = evaluation
            evaluation[3] = task.aggregate_logs(state=state, step_outputs=step(inputs))  # the evaluator takes the tensors
        if progress is not None:
            progress(int(inputs[1]["image_info"].shape[0]))
    results = []
    for task, _, _, state in evaluations:
        with _printed_to_log():  # pycocotools' tables, once per setting
            logs = task.reduce_aggregated_logs(state)
        # The evaluator's names (AP, ..., ARmax1, ARmax10, ARmax100, ...) in pycocotools' order.
        names = task.coco_metric._metric_names[: len(STAT_NAMES)]  # pylint: disable=protected-access
        results.append({ours: float(logs[theirs]) for ours, theirs in zip(STAT_NAMES, names)})
    return results


@contextlib.contextmanager
def _printed_to_log():
    """What Model Garden's evaluator prints (pycocotools' progress and tables) goes to this
    module's log at DEBUG instead of stdout, for the block's duration."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        if buffer.getvalue():
            logger.debug("%s", buffer.getvalue().rstrip())


def _validation_step(task, model):
    """The task's ``validation_step`` on ``model`` with its own metrics, traced."""
    import tensorflow as tf

    metrics = task.build_metrics(training=False)
    return tf.function(lambda inputs: task.validation_step(inputs, model, metrics), autograph=False, reduce_retracing=True)


def export_experiment(experiment: Experiment, thresholds: Mapping[str, float], path: str | os.PathLike, *,
                      class_score_thresholds: Mapping[int, float] | None = None) -> Path:
    """A SavedModel of the experiment at ``thresholds`` through Model Garden's own serving
    module (``export_saved_model_lib.export_inference_graph``, ``image_tensor`` input: uint8
    ``[B, H, W, 3]``): ``path/saved_model``, ``path/checkpoint``, ``path/params.yaml``. Written
    beside ``path`` and moved into place (`detsearch.atomic.replace_directory`).

    With ``class_score_thresholds`` (category id = Model Garden class -> threshold), the
    SavedModel is Model Garden's wrapped by a filter after its post-processing
    (`filter_by_class`): a detection of class ``c`` is kept when ``score > threshold[c]``
    (float32), kept ones move to the front in order, ``num_detections`` counts them; the
    mapping goes to ``path/class_score_thresholds.json``."""
    import json
    import shutil

    from official.vision.serving import export_saved_model_lib

    from detsearch.atomic import replace_directory, write_bytes_atomic

    config = _with_thresholds(experiment.config, experiment.kind, thresholds, decoded_only=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with precision_policy(config):  # the model as it was evaluated
            export_saved_model_lib.export_inference_graph(
                input_type="image_tensor", batch_size=None, input_image_size=list(config.task.model.input_size[:2]),
                params=config, checkpoint_path=experiment.checkpoint, export_dir=str(tmp),
                export_saved_model_subdir="saved_model", export_checkpoint_subdir="checkpoint")
        if class_score_thresholds:
            filter_by_class(tmp / "saved_model", class_score_thresholds, int(config.task.model.num_classes))
            write_bytes_atomic(tmp / "class_score_thresholds.json", json.dumps(
                {str(k): float(v) for k, v in sorted(class_score_thresholds.items())}, indent=2).encode("utf-8"))
        return replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def filter_by_class(saved_model: Path, class_score_thresholds: Mapping[int, float], num_classes: int) -> None:
    """Rewrites Model Garden's detection SavedModel at ``saved_model`` as itself followed by a
    per-class score filter (`keep_above_class_thresholds`); every other output passes through."""
    import shutil

    import tensorflow as tf

    limited = np.zeros(num_classes, bool)
    limits = np.zeros(num_classes, np.float32)
    for category_id, threshold in class_score_thresholds.items():
        if not 0 < int(category_id) < num_classes:
            raise ValueError(f"class {category_id} is not a class of the model (1..{num_classes - 1})")
        limited[int(category_id)], limits[int(category_id)] = True, np.float32(threshold)
    inner = tf.saved_model.load(str(saved_model))
    signature = inner.signatures["serving_default"]
    module = tf.Module()
    module.inner = inner
    limited, limits = tf.constant(limited), tf.constant(limits)

    @tf.function(autograph=False)
    def serve(**inputs):
        outputs = dict(signature(**inputs))
        filtered = keep_above_class_thresholds(
            {"detection_boxes": outputs["detection_boxes"], "detection_scores": outputs["detection_scores"],
             "detection_category_ids": outputs["detection_classes"],
             "num_detections": tf.cast(outputs["num_detections"], tf.int32)},
            tf.cast(outputs["detection_classes"], tf.int32), limited, limits)
        outputs.update(detection_boxes=filtered["detection_boxes"], detection_scores=filtered["detection_scores"],
                       detection_classes=filtered["detection_category_ids"],
                       num_detections=tf.cast(filtered["num_detections"], outputs["num_detections"].dtype))
        return outputs

    spec = signature.structured_input_signature[1]
    concrete = serve.get_concrete_function(**spec)
    filtered = saved_model.with_name(saved_model.name + ".filtered")
    tf.saved_model.save(module, str(filtered), signatures={"serving_default": concrete})
    shutil.rmtree(saved_model)
    filtered.rename(saved_model)


def keep_above_class_thresholds(
    detections: Mapping[str, Any], classes, limited, limits
) -> dict[str, Any]:
    """Keeps the detections whose score is > their class's threshold, at the front, stably.

    Args:
      detections: ``detection_boxes`` float32 ``[B, N, 4]``, ``detection_scores`` float32
        ``[B, N]``, ``detection_category_ids`` int64 ``[B, N]``, ``num_detections`` int32 ``[B]``;
        the first ``num_detections`` rows of an image are its detections.
      classes: int64 ``[B, N]`` model class index of each row.
      limited, limits: per model class index, whether it has a threshold (bool) and the
        threshold (float32, 0 where none).

    Returns:
      The same keys and shapes: per image the kept rows in their original order, then zeros;
      ``num_detections`` the number kept.
    """
    import tensorflow as tf

    scores = detections["detection_scores"]
    positions = tf.range(tf.shape(scores)[1])[None, :]
    valid = positions < detections["num_detections"][:, None]
    passes = scores > tf.gather(limits, classes)
    keep = valid & (passes | ~tf.gather(limited, classes))
    # Kept rows sort before the others; a stable sort keeps each group in its order.
    order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)
    kept = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    front = positions < kept[:, None]

    def compact(values):
        moved = tf.gather(values, order, axis=1, batch_dims=1)
        mask = front if values.shape.rank == 2 else front[:, :, None]
        return tf.where(mask, moved, tf.zeros_like(moved))

    return {
        "detection_boxes": compact(detections["detection_boxes"]),
        "detection_scores": compact(scores),
        "detection_category_ids": compact(detections["detection_category_ids"]),
        "num_detections": kept,
    }


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
    import random

    import tensorflow as tf
    from tensorflow.python.eager import context as tf_context
    from tf_keras.src import backend as keras_backend

    previous_seed = tf_context.global_seed()
    previous_generator = getattr(keras_backend._SEED_GENERATOR, "generator", None)  # pylint: disable=protected-access
    tf.random.set_seed(int(seed))
    keras_backend._SEED_GENERATOR.generator = random.Random(int(seed))  # pylint: disable=protected-access
    try:
        yield
    finally:
        keras_backend._SEED_GENERATOR.generator = previous_generator  # pylint: disable=protected-access
        tf.random.set_seed(previous_seed)
