"""Train a TF Model Garden detector (SSD = RetinaNet, or Faster R-CNN) with given hyperparameters.

    detsearch train --model ssd --preset tiny --dataset demo --out runs/ssd_tiny
    detsearch train --model faster_rcnn --preset tiny --dataset demo --out runs/frcnn_tiny \\
        --steps 1500 --learning-rate 0.02 --momentum 0.9 --weight-decay 1e-4
    detsearch train --model ssd --preset standard --dataset coco \\
        --annotations coco/annotations/instances_train2017.json --images coco/train2017 --out runs/ssd_coco

Momentum SGD (``slot = momentum * slot + gradient; w -= learning_rate * slot``) with weight decay
``weight_decay * sum(l2_loss(kernel))`` over kernels, a linear warm-up over ``--warmup-steps``,
then a constant learning rate. Checkpoints go to ``OUT/checkpoints/`` every
``--checkpoint-every`` steps and at the end; running the same command again resumes from the
latest one (weights, momentum, step, data order) up to ``--steps``. ``OUT/detector.json`` records
the model, preset, categories, hyperparameters and last metrics; ``detsearch cache`` rebuilds
the detector from it. The demo set is built first when its directory is empty.

``--params FILE`` takes the hyperparameters (and thresholds) from a JSON ParamSpec, such as the
``selected`` entry of ``detsearch search-det --search-training``'s ``summary.json`` (that file
itself is accepted); ``--export DIR`` then writes a SavedModel whose post-processing runs at
those thresholds (Model Garden's defaults where none is given):

    detsearch train --model ssd --out runs/ssd --params out/search_det_ssd_training/summary.json \\
        --export runs/ssd/export

``--per-class-thresholds FILE`` (with ``--export``) takes the ``per_class_thresholds.json`` that
``detsearch sweep`` or ``detsearch search-det`` writes next to its results: the SavedModel then
keeps a detection of category ``c`` only when its score is > ``c``'s threshold (float32), after
the NMS; categories the file does not list keep what the NMS keeps. The thresholds were chosen
on top of the file's ``"configuration"``, so the export's NMS thresholds (``--params``, else
Model Garden's defaults) must be those; a file that names other categories than the dataset's,
or another configuration, is an error before any training step:

    detsearch train --model ssd --out runs/ssd --params out/search_det_ssd/summary.json \\
        --export runs/ssd/export --per-class-thresholds out/search_det_ssd/per_class_thresholds.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from detsearch.cli.args import BadInput
from detsearch.cli.data import add_dataset_arguments, dataset_from_args



HELP = "train a TF Model Garden detector (SSD or Faster R-CNN) with given hyperparameters"
DESCRIPTION = __doc__


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=("ssd", "faster_rcnn"), required=True)
    parser.add_argument("--preset", default="tiny", help="tiny (CPU, 128 px) or standard (default tiny)")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, detector.json); resumed if present")
    add_dataset_arguments(parser, "train")
    parser.add_argument("--steps", type=int, default=1500, help="total training steps (default 1500)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default: the preset's)")
    parser.add_argument("--learning-rate", type=float, default=0.02, help="default 0.02")
    parser.add_argument("--momentum", type=float, default=0.9, help="default 0.9")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="default 1e-4")
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps (default 100)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="default 500")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and data order (default 0)")
    parser.add_argument("--log-every", type=int, default=50, help="print metrics every N steps (default 50)")
    parser.add_argument("--init-checkpoint", default=None,
                        help="initial weights when the run starts: a checkpoint of this model, or one of Model "
                             "Garden's published module checkpoints (backbone only, or the whole detector)")
    parser.add_argument("--params", default=None,
                        help="JSON ParamSpec file (or a search_det summary.json): overrides the flags above")
    parser.add_argument("--export", default=None, help="write a SavedModel here after training")
    parser.add_argument("--per-class-thresholds", default=None, metavar="FILE",
                        help="per_class_thresholds.json of detsearch sweep or search-det: the export keeps a "
                             "detection of category c when its score > c's threshold (needs --export)")


def run(args: argparse.Namespace) -> int:
    class_thresholds, configuration = read_class_thresholds(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tqdm import tqdm

    from detsearch.models.data import dataset_categories
    from detsearch.models.detector import build_detector
    from detsearch.models.export import export_detector
    from detsearch.models.restore import latest_checkpoint, load_detector, restore_checkpoint
    from detsearch.models.train import train_detector

    try:
        thresholds = read_params(args)
        dataset = dataset_from_args(args)
        ids, names = dataset_categories(dataset)
        detector = build_detector(args.model, args.preset, ids, names, seed=args.seed)
        unknown = sorted(set(thresholds) - set(detector.thresholds))
        if unknown:
            raise ValueError(f"--params: {', '.join(unknown)} do not apply to {args.model}")
        if args.init_checkpoint and latest_checkpoint(args.out) is None:  # a resumed run has its own
            restored = restore_checkpoint(detector, args.init_checkpoint)
            print(f"initial weights: {', '.join(restored)} from {args.init_checkpoint}")
    except (ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if class_thresholds is not None:
        check_class_thresholds(args, detector, class_thresholds, configuration, thresholds)
    batch_size = args.batch_size or detector.preset.batch_size
    print(f"{args.model}/{args.preset}: {detector.num_parameters():,} parameters, {detector.image_size} px input, "
          f"{len(dataset)} images, {len(ids)} categories, batch {batch_size}")
    start = 0
    latest = latest_checkpoint(args.out)
    if latest:
        start = int(latest.rsplit("-", 1)[-1])
    bar = tqdm(total=args.steps, initial=min(start, args.steps), unit="step", dynamic_ncols=True)

    def on_step(step: int, metrics: dict) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        if args.log_every and step % args.log_every == 0:
            bar.write(f"step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    started = time.perf_counter()
    try:
        result = train_detector(
            detector, dataset, args.out, steps=args.steps, batch_size=batch_size, learning_rate=args.learning_rate,
            momentum=args.momentum, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, seed=args.seed,
            checkpoint_every=args.checkpoint_every, on_step=on_step,
            extra_meta={"dataset": {"name": args.dataset, "split": args.split, "images": len(dataset)}},
        )
    except (ValueError, FloatingPointError) as error:
        bar.close()
        print(f"error: {error}", file=sys.stderr)
        return 1
    bar.close()
    summary = {
        "step": result["step"],
        "checkpoint": result["checkpoint"],
        "resumed_from": result["resumed_from"],
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_per_step": None if result["seconds_per_step"] is None else round(result["seconds_per_step"], 4),
        "metrics": {k: round(v, 5) for k, v in result["metrics"].items()},
    }
    if args.export:
        exported, _ = load_detector(args.out, result["checkpoint"], thresholds=thresholds)
        summary["export"] = str(export_detector(exported, args.export, class_score_thresholds=class_thresholds))
        summary["thresholds"] = exported.thresholds
        if class_thresholds is not None:
            summary["class_score_thresholds"] = {str(k): v for k, v in class_thresholds.items()}
    print(json.dumps(summary))
    return 0


def read_params(args) -> dict[str, float]:
    """Applies ``--params`` to ``args``; returns its thresholds (single values).

    Raises:
      ValueError: unreadable JSON, unknown names, values out of range, or a list.
    """
    from detsearch.params import THRESHOLD_PARAMS, TRAINING_PARAMS, ParamSpec

    if args.params is None:
        return {}
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
    for name in TRAINING_PARAMS:
        if name in spec:
            setattr(args, name, getattr(spec, name))
    return {name: getattr(spec, name) for name in THRESHOLD_PARAMS if name in spec}


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


def check_class_thresholds(args, detector, class_thresholds: dict[int, float], configuration: dict[str, float],
                           thresholds: dict[str, float]) -> None:
    """Raises `BadInput` unless the file's categories are the detector's and its configuration
    is the NMS the export will run (``--params`` over the detector's defaults), compared in float32
    as the model compares them."""
    import numpy as np

    from detsearch.models.class_thresholds import check_class_score_thresholds

    try:
        check_class_score_thresholds(class_thresholds, detector.category_ids)
    except ValueError as error:
        raise BadInput(f"--per-class-thresholds {args.per_class_thresholds}: {error}") from None
    from detsearch.models.thresholds import MAX_NUM_DETECTIONS

    exported = {**detector.thresholds, **thresholds}
    differ = [f"{name} {value:g} (the export runs {exported[name]:g})" for name, value in configuration.items()
              if name in exported and np.float32(value) != np.float32(exported[name])]
    if configuration.get("max_detections", MAX_NUM_DETECTIONS) != MAX_NUM_DETECTIONS:
        differ.append(f"max_detections {configuration['max_detections']:g} (the export runs {MAX_NUM_DETECTIONS})")
    if configuration.get("class_agnostic", False):
        differ.append("class-agnostic NMS (the export runs class-aware NMS)")
    if differ:
        raise BadInput(f"--per-class-thresholds {args.per_class_thresholds}: chosen on top of {', '.join(differ)}; "
                       f"pass that configuration with --params")
