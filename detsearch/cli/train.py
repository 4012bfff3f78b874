"""Train a Model Garden detector with Model Garden's own trainer, optionally at given training
parameters, and export it at given thresholds.

    detsearch train --model-dir runs/retinanet                 # the demo RetinaNet, the config's schedule
    detsearch train --model faster_rcnn --model-dir runs/frcnn --steps 800
    detsearch train --experiment retinanet_resnetfpn_coco --config-file my.yaml --model-dir runs/mine

The detector is a registered Model Garden experiment: the demo's (``--model``, on ``--dataset``
converted once to TFRecords) or ``--experiment`` with its overrides. ``train_lib.run_experiment``
trains it into ``--model-dir`` up to ``trainer.train_steps`` (``--steps``); running the same
command again resumes from the latest checkpoint there.

``--params FILE`` takes the training parameters (and thresholds) from a JSON ParamSpec, such as
the ``selected`` entry of ``detsearch search-det --search-training``'s ``summary.json`` (that file
itself is accepted): learning_rate, momentum and weight_decay become a params override (a
constant learning rate, SGD with the momentum, the L2 weight decay; the config's warm-up kept).
``--export DIR`` then writes a SavedModel through Model Garden's serving module whose
post-processing runs at those thresholds (the config's where none is given):

    detsearch train --model-dir runs/retinanet --params out/search_det_retinanet_training/summary.json \
        --export runs/retinanet/export

``--per-class-thresholds FILE`` (with ``--export``) takes the ``per_class_thresholds.json`` that
``detsearch sweep`` or ``detsearch search-det`` writes next to its results: the SavedModel then
keeps a detection of category ``c`` only when its score is > ``c``'s threshold (float32), after
the NMS. The thresholds were chosen on top of the file's ``"configuration"``, so the export's
thresholds (``--params``, else the config's) must be those; a file that names classes the model
does not have, or another configuration, is an error before any training step.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from detsearch.cli.args import BadInput
from detsearch.cli.detector import add_detector_arguments, experiment_config

HELP = "train a Model Garden detector with Model Garden's trainer (the demo RetinaNet by default)"
DESCRIPTION = __doc__


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    add_detector_arguments(parser, model_dir_help="the model directory trained into (resumed if it holds checkpoints)")
    parser.add_argument("--params", default=None,
                        help="JSON ParamSpec file (or a search-det summary.json): training parameters and thresholds")
    parser.add_argument("--export", default=None, help="write a SavedModel here after training")
    parser.add_argument("--per-class-thresholds", default=None, metavar="FILE",
                        help="per_class_thresholds.json of detsearch sweep or search-det: the export keeps a "
                             "detection of category c when its score > c's threshold (needs --export)")


def run(args: argparse.Namespace) -> int:
    class_thresholds, configuration = read_class_thresholds(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from official.modeling import hyperparams

    from detsearch.models import pipeline
    from detsearch.models.experiment import THRESHOLD_KEYS, check_supported, export_experiment, read_thresholds
    from detsearch.models.experiment_training import config_training, training_override

    if args.model_dir is None:
        raise BadInput("--model-dir: the directory to train into")
    if args.checkpoint is not None:
        raise BadInput("--checkpoint: train resumes from --model-dir's latest checkpoint; give an initial one with "
                       "--params-override 'task.init_checkpoint=PREFIX'")
    model_dir = Path(args.model_dir)
    name, config = experiment_config(args, model_dir.parent / f"{model_dir.name}_records")
    kind = check_supported(config)
    training, thresholds = read_params(args)
    unknown = sorted(set(thresholds) - set(THRESHOLD_KEYS[kind]))
    if unknown:
        raise BadInput(f"--params: {', '.join(unknown)} are not thresholds of a {kind} experiment")
    if training:
        values = {**config_training(config), **training}
        config = hyperparams.override_params_dict(
            config, training_override(values["learning_rate"], values.get("momentum") or 0.0,
                                      values.get("weight_decay") or 0.0), is_strict=True)
    exported_thresholds = {**read_thresholds(config, kind), **thresholds}
    if class_thresholds is not None:
        check_class_thresholds(args, int(config.task.model.num_classes), class_thresholds, configuration,
                               exported_thresholds, int(config.task.model.detection_generator.max_num_detections))
    steps = int(config.trainer.train_steps)
    print(f"{name}: training with Model Garden's trainer into {model_dir} ({steps} steps)")
    started = time.perf_counter()
    experiment = pipeline.trained_experiment(name, config, train_into=model_dir)
    summary = {"experiment": name, "checkpoint": experiment.checkpoint, "steps": steps,
               "training": {**config_training(config)}, "seconds": round(time.perf_counter() - started, 1)}
    if args.export:
        summary["export"] = str(export_experiment(experiment, exported_thresholds, args.export,
                                                  class_score_thresholds=class_thresholds))
        summary["thresholds"] = exported_thresholds
        if class_thresholds is not None:
            summary["class_score_thresholds"] = {str(k): v for k, v in class_thresholds.items()}
    print(json.dumps(summary))
    return 0


def read_params(args) -> tuple[dict[str, float], dict[str, float]]:
    """``--params``: its training parameters and its thresholds (single values each).

    Raises:
      ValueError: unreadable JSON, unknown names, values out of range, or a list.
    """
    from detsearch.params import THRESHOLD_PARAMS, TRAINING_PARAMS, ParamSpec

    if args.params is None:
        return {}, {}
    try:
        payload = json.loads(Path(args.params).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--params {args.params}: {error}") from None
    if isinstance(payload, dict) and isinstance(payload.get("selected"), dict):
        payload = payload["selected"]
    try:
        spec = ParamSpec.from_dict(payload)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--params {args.params}: {error}") from None
    for name in spec.names():
        if isinstance(getattr(spec, name), tuple):
            raise ValueError(f"--params {args.params}: {name} must be one value, got a list")
    return ({name: getattr(spec, name) for name in TRAINING_PARAMS if name in spec},
            {name: getattr(spec, name) for name in THRESHOLD_PARAMS if name in spec})


def read_class_thresholds(args) -> tuple[dict[int, float] | None, dict[str, float]]:
    """``--per-class-thresholds``: (category id -> threshold, the file's configuration), or
    ``(None, {})`` without the flag.

    Raises:
      BadInput: the flag without ``--export``, an unreadable or malformed file (one line).
    """
    from detsearch.models.class_thresholds import read_per_class_configuration, read_per_class_thresholds

    if args.per_class_thresholds is None:
        return None, {}
    if args.export is None:
        raise BadInput("--per-class-thresholds needs --export: the thresholds apply to the exported SavedModel")
    try:
        return (read_per_class_thresholds(args.per_class_thresholds),
                read_per_class_configuration(args.per_class_thresholds))
    except ValueError as error:
        raise BadInput(f"--per-class-thresholds {error}") from None


def check_class_thresholds(args, num_classes: int, class_thresholds: dict[int, float], configuration: dict[str, float],
                           thresholds: dict[str, float], max_detections: int) -> None:
    """Raises `BadInput` unless the file's categories are classes of the model and its
    configuration is the post-processing the export will run (``thresholds``, its cap of
    ``max_detections``, class-aware), compared in float32 as the model compares them."""
    import numpy as np

    from detsearch.models.class_thresholds import check_class_score_thresholds

    try:
        check_class_score_thresholds(class_thresholds, range(1, num_classes))
    except ValueError as error:
        raise BadInput(f"--per-class-thresholds {args.per_class_thresholds}: {error}") from None
    differ = [f"{name} {value:g} (the export runs {thresholds[name]:g})" for name, value in configuration.items()
              if name in thresholds and np.float32(value) != np.float32(thresholds[name])]
    if configuration.get("max_detections", max_detections) != max_detections:
        differ.append(f"max_detections {configuration['max_detections']:g} (the export runs {max_detections})")
    if configuration.get("class_agnostic", False):
        differ.append("class-agnostic NMS (the export runs class-aware NMS)")
    if differ:
        raise BadInput(f"--per-class-thresholds {args.per_class_thresholds}: chosen on top of {', '.join(differ)}; "
                       f"pass that configuration with --params")
