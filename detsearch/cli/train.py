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
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

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


def run(args: argparse.Namespace) -> int:
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
        summary["export"] = str(export_detector(exported, args.export))
        summary["thresholds"] = exported.thresholds
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


