"""From a Model Garden experiment to deployable thresholds, as functions.

Every detector goes one way, the demo's included: a registered Model Garden experiment, its
YAML overrides, TFRecords made by Model Garden's own converter, Model Garden's trainer, then

    record (the raw predictions before NMS, once) -> sweep -> thresholds.yaml -> verify -> export

::

    from detsearch.models import pipeline

    name, config = pipeline.demo_config("retinanet")                  # the demo set, its TFRecords
    experiment = pipeline.trained_experiment(name, config, train_into="out/demo/train")
    outcome = pipeline.search_thresholds(experiment, "out/demo", verify_rows=6)
    outcome.chosen, outcome.thresholds_yaml, outcome.verification.lines()

A user's own experiment comes in through `detsearch.models.experiment.load_experiment` and goes
the same way. `write_records` turns any `DetectionDataset` (the demo, a COCO folder, a VOC set
through its COCO json) into Model Garden's TFRecords once; `demo_config` configures the
shipped demo overrides (``models/experiments/*.yaml``) on such records; `trained_experiment`
finds the checkpoint, or trains one with Model Garden's trainer (`train`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from detsearch.detection.cache import CacheKind
from detsearch.errors import BadSetting

__all__ = [
    "DEFAULT_GRIDS",
    "DEMO_MODELS",
    "DemoModel",
    "Records",
    "SHIPPED_RUNS",
    "ThresholdSearch",
    "demo_config",
    "demo_model",
    "record_cache",
    "search_thresholds",
    "shipped_run",
    "threshold_grid",
    "train",
    "trained_experiment",
    "write_records",
]

DEFAULT_GRIDS: Mapping[CacheKind, Mapping[str, Sequence[float]]] = {
    CacheKind.ONE_STAGE: {
        "score_threshold": (0.01, 0.05, 0.1, 0.2, 0.3, 0.5),
        "iou_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    },
    CacheKind.TWO_STAGE: {
        "nms_score_threshold": (0.0, 0.1, 0.3),
        "nms_iou_threshold": (0.5, 0.6, 0.7, 0.8),
        "score_threshold": (0.01, 0.05, 0.1, 0.3),
        "iou_threshold": (0.4, 0.5, 0.6),
    },
}
"""Candidates per detector kind where none are given; the config's own values are always added."""


@dataclasses.dataclass(frozen=True)
class DemoModel:
    """A shipped demo detector: a registered experiment and its override under
    ``models/experiments/``; ``run``: the name of its shipped trained model directory, if any;
    ``steps``: the demo's training steps (the override's ``trainer.train_steps`` is 400, for the
    walkthrough of docs/garden.md; 1500 reach twice its mAP on the demo)."""

    experiment: str
    config: str
    run: str | None = None
    steps: int = 1500


DEMO_MODELS: Mapping[str, DemoModel] = {
    "retinanet": DemoModel("retinanet_resnetfpn_coco", "retinanet_resnet18_demo", run="retinanet_demo"),
    "faster_rcnn": DemoModel("fasterrcnn_resnetfpn_coco", "fasterrcnn_resnet18_demo"),
}
"""``--model`` -> the demo experiment; ``ssd`` names the RetinaNet too (MoXing's one-stage name)."""

SHIPPED_RUNS = Path(__file__).parent / "checkpoints"
"""Trained model directories installed with the package (``models/checkpoints/NAME``)."""


def demo_model(name: str) -> DemoModel:
    """The `DemoModel` of ``--model`` ``name`` (``ssd`` is the RetinaNet)."""
    key = "retinanet" if name == "ssd" else name
    if key not in DEMO_MODELS:
        raise BadSetting(f"model {name!r}: the demo detectors are {', '.join(DEMO_MODELS)} (ssd is the retinanet)")
    return DEMO_MODELS[key]


RETIRED_RUNS = {"ssd_tiny_demo": "retinanet_demo"}
"""Shipped runs of earlier versions -> the shipped run that took their place."""


def shipped_run(value: str | os.PathLike) -> Path:
    """A model directory: ``value``, or the shipped run of that name when no such path exists.

    Raises:
      BadSetting: ``value`` names a retired shipped run (`RETIRED_RUNS`) and no such path exists.
    """
    path = Path(value)
    if not path.exists() and str(value) in RETIRED_RUNS:
        raise BadSetting(f"model_dir {value}: that shipped detector is gone; the shipped demo detector is "
                         f"{RETIRED_RUNS[str(value)]} (Model Garden's RetinaNet on the same demo)")
    shipped = SHIPPED_RUNS / str(value)
    return shipped if not path.exists() and (shipped / "checkpoint").is_file() else path


# ------------------------------------------------------------------------------------------
# data


@dataclasses.dataclass(frozen=True)
class Records:
    """A dataset as Model Garden reads it: ``pattern`` (its TFRecord files, a glob), its COCO
    ground truth ``annotations`` (what ``task.annotation_file`` names) and ``num_classes``
    (``task.model.num_classes``: the highest category id + 1, the converter keeps COCO ids)."""

    pattern: str
    annotations: Path
    num_classes: int
    num_images: int


RECORDS_MANIFEST = "records.json"

_DECODABLE = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
"""The signatures of the files ``tf.io.decode_image`` reads (JPEG, PNG, GIF, BMP; WebP below)."""


def _decodable(path: Path) -> bool:
    with open(path, "rb") as file:
        head = file.read(12)
    return head.startswith(_DECODABLE) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _as_png(source: Path, target: Path) -> None:
    """``source`` (any format OpenCV reads, e.g. a VOC set's TIFF) as an 8-bit, 3-channel PNG,
    the pixels Model Garden's decoder would give for it (``channels=3``)."""
    import cv2

    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise BadSetting(f"image {source}: neither TensorFlow nor OpenCV can read it")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), image):
        raise OSError(f"cannot write {target}")


def write_records(dataset, directory: str | os.PathLike, *, num_shards: int = 1) -> Records:
    """``dataset`` (a `detsearch.datasets.detection.DetectionDataset`) as Model Garden's
    TFRecords in ``directory``: ``instances.json`` (`DetectionDataset.to_coco_json`) converted by
    Model Garden's own converter (``official.vision.data.create_coco_tf_record``: its
    ``generate_annotations`` and ``create_tf_example``, one process), ``records-*``. A directory
    already holding the same conversion (``records.json``: a digest of the json and of the image
    files' sizes) is reused. Written beside and moved into place."""
    import shutil

    from official.vision.data import create_coco_tf_record as converter
    from official.vision.data import tfrecord_lib

    from detsearch.atomic import replace_directory
    from detsearch.datasets.detection import write_json_atomic

    directory = Path(directory)
    coco = dataset.to_coco_json()
    digest = hashlib.sha256(json.dumps(coco, sort_keys=True).encode())
    for image in coco["images"]:
        path = Path(dataset.image_dir) / image["file_name"]
        digest.update(f"{image['file_name']}:{path.stat().st_size}".encode())
    manifest = {"sha256": digest.hexdigest(), "num_shards": int(num_shards), "num_images": len(coco["images"])}
    records = Records(pattern=str(directory / "records-*"), annotations=directory / "instances.json",
                      num_classes=max(int(c["id"]) for c in coco["categories"]) + 1, num_images=len(coco["images"]))
    try:
        if json.loads((directory / RECORDS_MANIFEST).read_text()) == manifest:
            return records
    except (OSError, ValueError):
        pass
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # Model Garden's decoder reads JPEG, PNG, GIF, BMP and WebP; any other image (a TIFF) is
        # stored as a PNG of the same pixels, named FILE.png in a second image directory.
        converted = tmp / "converted"
        image_dirs = [str(dataset.image_dir)]
        for image in coco["images"]:
            path = Path(dataset.image_dir) / image["file_name"]
            if not _decodable(path):
                image["file_name"] = f"{image['file_name']}.png"
                _as_png(path, converted / image["file_name"])
        if converted.exists():
            image_dirs.append(str(converted))
        write_json_atomic(tmp / "instances.json", coco)
        images = converter._load_images_info(str(tmp / "instances.json"))  # pylint: disable=protected-access
        objects, names = converter._load_object_annotations(str(tmp / "instances.json"))  # pylint: disable=protected-access
        examples = converter.generate_annotations(
            images=images, image_dirs=image_dirs, panoptic_masks_dir=None, img_to_obj_annotation=objects,
            img_to_caption_annotation=None, img_to_panoptic_annotation=None, is_category_thing=None,
            id_to_name_map=names, include_panoptic_masks=False, include_masks=False)
        tfrecord_lib.write_tf_record_dataset(str(tmp / "records"), examples, converter.create_tf_example, int(num_shards),
                                             multiple_processes=0)
        shutil.rmtree(converted, ignore_errors=True)
        write_json_atomic(tmp / RECORDS_MANIFEST, manifest)
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return records


def _first(dataset, count: int):
    from detsearch.checks import positive_int
    from detsearch.datasets.detection import DetectionDataset

    return DetectionDataset(dataset.examples[:positive_int(count, "max_images")], dataset.categories,
                            dataset.image_dir)


def data_override(train: Records | None, validation: Records) -> dict[str, Any]:
    """The params override that reads ``validation`` (and ``train``) records: input paths, the
    annotation file, ``num_classes``."""
    num_classes = max(validation.num_classes, train.num_classes if train is not None else 0)
    task: dict[str, Any] = {"annotation_file": str(validation.annotations), "model": {"num_classes": num_classes},
                            "validation_data": {"input_path": validation.pattern}}
    if train is not None:
        task["train_data"] = {"input_path": train.pattern}
    return {"task": task}


# ------------------------------------------------------------------------------------------
# training


def train(config, model_dir: str | os.PathLike, *, seed: int = 0, on_start: Callable[[], None] | None = None) -> str:
    """Model Garden's own trainer (``train_lib.run_experiment``, mode ``train``) on ``config``
    into ``model_dir`` up to ``trainer.train_steps``; it resumes from the latest checkpoint
    there. The initial weights and, where ``task.train_data.seed`` is unset, the data order are
    drawn from ``seed`` (`experiment.model_garden_seed`), so a run is repeatable. Returns the
    latest checkpoint."""
    import copy

    import tensorflow as tf
    from official.core import task_factory, train_lib

    from detsearch.models.experiment import model_garden_seed, precision_policy

    model_dir = str(model_dir)
    latest = tf.train.latest_checkpoint(model_dir)
    if latest is not None and int(latest.rsplit("-", 1)[-1]) >= int(config.trainer.train_steps):
        return latest
    if on_start is not None:
        on_start()
    config = copy.deepcopy(config)
    if config.task.train_data.seed is None:
        config.task.train_data.seed, config.task.train_data.deterministic = int(seed), True
    device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
    strategy = tf.distribute.OneDeviceStrategy(device)
    with model_garden_seed(seed), precision_policy(config):  # as official.vision.train sets it
        with strategy.scope():
            task = task_factory.get_task(config.task, logging_dir=model_dir)
        train_lib.run_experiment(distribution_strategy=strategy, task=task, mode="train", params=config,
                                 model_dir=model_dir)
    return tf.train.latest_checkpoint(model_dir)


def demo_config(model: str = "retinanet", *, data_dir: str | os.PathLike | None = None, train_set=None,
                validation_set=None, records_dir: str | os.PathLike | None = None, steps: int | None = None,
                params_override: str | None = None, max_images: int | None = None):
    """A shipped demo detector's config (`DEMO_MODELS`): ``(experiment name, config)``.

    The data: the MNIST-detection demo (built under ``data_dir``, default
    `detsearch.datasets.demo.default_demo_dir`), or ``validation_set`` and optionally ``train_set``
    (any `DetectionDataset`; training then uses the validation set when none is given), each
    converted once by `write_records` into ``records_dir/val`` and ``records_dir/train`` (default
    ``<demo dir>/tfrecords``). The config: the registered experiment, the shipped override, the
    records (`data_override`), ``steps`` (default `DemoModel.steps`) as ``trainer.train_steps`` (and
    as a cosine schedule's ``decay_steps``), then ``params_override``.
    """
    from official.modeling import hyperparams

    from detsearch.models.experiment import load_config

    chosen = demo_model(model)
    if validation_set is None:
        from detsearch.datasets import demo

        root = demo.default_demo_dir() if data_dir is None else Path(data_dir)
        demo.build_demo(root)
        train_set, validation_set = demo.load_demo(root, "train"), demo.load_demo(root, "val")
        if max_images is not None:
            train_set, validation_set = _first(train_set, max_images), _first(validation_set, max_images)
        if records_dir is None:
            records_dir = root / ("tfrecords" if max_images is None else f"tfrecords-first{max_images}")
    elif records_dir is None:
        raise BadSetting("records_dir: where the TFRecords of the given sets go")
    records_dir = Path(records_dir)
    validation = write_records(validation_set, records_dir / "val")
    training = write_records(train_set, records_dir / "train") if train_set is not None else validation
    override = data_override(training, validation)
    config = load_config(chosen.experiment, [chosen.config])
    train_steps = int(chosen.steps if steps is None else steps)
    override["trainer"] = {"train_steps": train_steps}
    if config.trainer.optimizer_config.learning_rate.type == "cosine":  # the schedule spans the run
        override["trainer"]["optimizer_config"] = {"learning_rate": {"cosine": {"decay_steps": train_steps}}}
    config = hyperparams.override_params_dict(config, override, is_strict=True)
    if params_override:
        config = hyperparams.override_params_dict(config, params_override, is_strict=True)
    return chosen.experiment, config


def trained_experiment(name: str, config, *, checkpoint: str | None = None,
                       model_dir: str | os.PathLike | None = None, train_into: str | os.PathLike | None = None,
                       on_train: Callable[[], None] | None = None):
    """The `Experiment` of ``config`` (checked: `check_supported`, `check_records`) at a trained
    checkpoint: ``checkpoint``; else the latest in ``model_dir`` (`shipped_run` names work);
    else (no ``model_dir``, or one without a checkpoint) Model Garden's trainer trains or
    resumes into ``train_into`` up to ``trainer.train_steps`` (`train`).

    Raises:
      BadSetting: an unsupported config; no such checkpoint; ``model_dir`` holds none and
        nothing is to be trained.
    """
    from detsearch.models.experiment import Experiment, check_records, check_supported, resolve_checkpoint

    kind = check_supported(config)
    check_records(config)
    if checkpoint is None:
        import tensorflow as tf

        directory = None if model_dir is None else shipped_run(model_dir)
        checkpoint = None if directory is None else tf.train.latest_checkpoint(str(directory))
        if checkpoint is None and train_into is not None:
            checkpoint = train(config, train_into, on_start=on_train)
        elif checkpoint is None:
            raise BadSetting(f"model_dir {model_dir}: no checkpoint in it" if model_dir is not None else
                             f"experiment {name}: give a checkpoint or a model_dir")
    found = resolve_checkpoint(None, checkpoint)
    return Experiment(name=name, config=config, kind=kind, checkpoint=found)


# ------------------------------------------------------------------------------------------
# record, sweep, write, verify, export


def threshold_grid(kind: CacheKind, given: Mapping[str, Sequence[float] | None], config: Mapping[str, float]):
    """The candidate lists: ``given`` (None where not given: `DEFAULT_GRIDS`), each with the
    config's own value added. Raises `BadSetting` for a threshold of the other kind."""
    from detsearch.params import ParamSpec

    extra = [name for name, values in given.items() if values is not None and name not in DEFAULT_GRIDS[kind]]
    if extra:
        raise BadSetting(f"{', '.join(extra)}: not a threshold of a {kind} detector "
                         f"({', '.join(DEFAULT_GRIDS[kind])})")
    grid = {}
    for name, default_values in DEFAULT_GRIDS[kind].items():
        values = given.get(name)
        grid[name] = sorted(set(default_values if values is None else values) | {config[name]})
    return ParamSpec(**grid)


def record_cache(experiment, directory: str | os.PathLike, score_floor: float, *, executor=None,
                 progress: Callable[[int], None] | None = None):
    """The cache of ``experiment``'s validation records at ``directory`` and its ground truth:
    one shard per record file, resumable, on ``executor`` when ``task.annotation_file`` is set
    (`detsearch.models.experiment_shards.record_sharded`), else one pass in this process. With
    ``validation_data.drop_remainder`` the pass is one too: Model Garden drops the last partial
    batch of the whole set, which no shard of it can tell."""
    from detsearch.detection.cache import write_cache
    from detsearch.executor import LocalExecutor, as_executor
    from detsearch.models.experiment import record
    from detsearch.models.experiment_shards import record_sharded

    data = experiment.config.task.validation_data
    if experiment.config.task.annotation_file and not data.drop_remainder:
        return record_sharded(experiment, directory, score_floor, executor=executor, progress=progress)
    if executor is not None and not isinstance(as_executor(executor), LocalExecutor):
        raise BadSetting("a Ray executor records in shards, which needs task.annotation_file (the ground truth of each "
                         "shard's records would name its own categories) and task.validation_data.drop_remainder "
                         "false (Model Garden drops the last partial batch of the whole set)")
    cache, ground_truth = record(experiment, score_floor, progress=progress)
    write_cache(directory, cache)
    return cache, ground_truth


@dataclasses.dataclass(frozen=True)
class ThresholdSearch:
    """What `search_thresholds` did.

    Attributes:
      experiment: the experiment searched (its checkpoint).
      result: the sweep (`detsearch.detection.sweep.SweepResult`).
      config_thresholds: the config's own thresholds (MoXing names; ``max_detections`` where
        that axis was swept).
      chosen: the thresholds written to ``thresholds_yaml`` (``result.best_params``' thresholds).
      cache: the cache directory; annotations: the ground truth the sweep scored against.
      thresholds_yaml: the Model Garden params override that runs ``chosen``.
      verification: Model Garden's own evaluation of rows of the table, or None.
      export: the SavedModel directory, or None.
      seconds: wall time per stage (record, sweep, verify, export).
      post_processing: the settings the sweep ran (`PostProcessing`, checked against the
        cache: defaults filled in; the caps None where ``max_detections`` was an axis).
    """

    experiment: Any
    result: Any
    config_thresholds: dict[str, float]
    chosen: dict[str, float]
    cache: Path
    annotations: Path
    thresholds_yaml: Path
    verification: Any = None
    export: Path | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    post_processing: Any = None


def search_thresholds(experiment, out: str | os.PathLike, *, grid=None, score_floor: float = 0.01,
                      objective: str = "map", budget: float | None = None, sweep_options: Mapping[str, Any] | None = None,
                      executor=None, verify_rows: int | None = None, export: str | os.PathLike | None = None,
                      progress: Callable[[str, int], None] | None = None) -> ThresholdSearch:
    """Records ``experiment``'s validation set once (``out/cache``), sweeps ``grid`` (a
    `ParamSpec`; None: `threshold_grid` of the defaults) with the config's own post-processing,
    writes ``out/thresholds.yaml`` and ``out/annotations.json``; with ``verify_rows`` holds that
    many rows of the table against Model Garden's own evaluation (`experiment_verify.verify_rows`); with
    ``export`` writes a SavedModel at the chosen thresholds by Model Garden's serving module.
    ``sweep_options``: the operating-point keywords of `detsearch.detection.sweep.sweep`
    (``tolerance``, ``per_class``, ``holdout``, ``seed``, ``replicates``, ``max_detections``).
    ``progress(stage, images)`` is called as images are recorded (``"cache"``) and verified
    (``"verify"``).

    Raises:
      BadSetting: a grid below the score floor, a ``class_agnostic`` axis (the config says which NMS),
        ``verify_rows`` < 2.
      ModelGardenMismatch: is not raised here: call ``outcome.verification.check()``.
    """
    from detsearch.atomic import write_json_atomic
    from detsearch.detection.sweep import check_score_floor, sweep
    from detsearch.models import experiment as garden
    from detsearch.models import experiment_verify

    out = Path(out)
    options = dict(sweep_options or {})
    if options.get("class_agnostic") is not None:
        raise BadSetting("class_agnostic: the experiment's NMS is class-aware or class-agnostic as its config says "
                         "(detection_generator.use_class_agnostic_nms, with nms_version v2); set it there, or sweep "
                         "both with detsearch sweep on the cache")
    options.pop("class_agnostic", None)
    if verify_rows is not None and verify_rows < 2:
        raise BadSetting(f"verify_rows must be >= 2 (the chosen and the config's rows), got {verify_rows}")
    config_thresholds = experiment.thresholds
    grid = threshold_grid(experiment.kind, {}, config_thresholds) if grid is None else grid
    check_score_floor(grid, score_floor)
    post_processing = experiment.post_processing
    if options.get("max_detections") is not None:  # swept; the config's own cap is a candidate too
        config_thresholds["max_detections"] = experiment.max_detections
        options["max_detections"] = sorted(set(options["max_detections"]) | {experiment.max_detections})
        post_processing = dataclasses.replace(post_processing, max_detections_per_class=None,
                                              max_total_detections=None)
    else:
        options.pop("max_detections", None)
    if options.get("soft_nms_sigma") is not None:  # swept; the config's own sigma is a candidate too
        sigma = post_processing.soft_nms_sigma
        if post_processing.nms_version != "v1" or sigma is None:
            raise BadSetting(f"soft_nms_sigma: swept on a config with nms_version v1 and a soft_nms_sigma (0 is "
                             f"TensorFlow's hard NMS kernel); this one has nms_version {post_processing.nms_version} "
                             f"and soft_nms_sigma {sigma}")
        config_thresholds["soft_nms_sigma"] = sigma
        options["soft_nms_sigma"] = sorted({float(v) for v in options["soft_nms_sigma"]} | {sigma})
        post_processing = dataclasses.replace(post_processing, soft_nms_sigma=None)
    else:
        options.pop("soft_nms_sigma", None)
    seconds = {}
    started = time.perf_counter()
    cache, ground_truth = record_cache(experiment, out / "cache", score_floor, executor=executor,
                                       progress=None if progress is None else lambda n: progress("cache", n))
    seconds["record"] = time.perf_counter() - started
    # The ground truth the sweep scores against (the annotation file, with the model's classes it
    # does not name; or built from the records), for detsearch sweep on out/cache.
    annotations = write_json_atomic(out / "annotations.json", ground_truth)
    started = time.perf_counter()
    result = sweep(cache, ground_truth, grid, post_processing, objective=objective, budget=budget, **options)
    seconds["sweep"] = time.perf_counter() - started
    swept = post_processing.checked(cache)
    if options.get("max_detections") is not None:
        swept = dataclasses.replace(swept, max_detections_per_class=None, max_total_detections=None)
    chosen = {name: value for name, value in result.best_params.items() if name in config_thresholds}
    thresholds_yaml = garden.write_thresholds_yaml(out / "thresholds.yaml", experiment.kind, chosen)
    verification = None
    if verify_rows is not None:
        started = time.perf_counter()
        table = result.table
        if options.get("holdout") is not None:  # the table scores the selection images; Model Garden all of them
            table = sweep(cache, ground_truth, grid, post_processing, objective=objective, budget=budget,
                          **{**options, "holdout": None, "per_class": None}).table
        # the chosen row by its grid values (the thresholds written may have moved off them: `sweep.cuts`)
        chosen_row = {name: result.best_row.params[name] for name in chosen}
        rows = experiment_verify.verification_rows(table, chosen_row, config_thresholds, verify_rows)
        verification = experiment_verify.verify_rows(
            experiment, rows, ground_truth_file=None if experiment.config.task.annotation_file else annotations,
            ties=experiment_verify.TieFinder(cache, post_processing),
            progress=None if progress is None else lambda n: progress("verify", n))
        seconds["verify"] = time.perf_counter() - started
    exported = None
    if export is not None:
        started = time.perf_counter()
        per_class = None if result.per_class is None else result.per_class.thresholds()
        exported = garden.export_experiment(experiment, chosen, export, class_score_thresholds=per_class)
        seconds["export"] = time.perf_counter() - started
    return ThresholdSearch(experiment=experiment, result=result, config_thresholds=config_thresholds, chosen=chosen,
                           cache=out / "cache", annotations=annotations, thresholds_yaml=thresholds_yaml,
                           verification=verification, export=exported,
                           seconds={name: round(value, 2) for name, value in seconds.items()},
                           post_processing=swept)
