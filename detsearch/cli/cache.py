"""Record a detection cache: a trained detector's raw pre-NMS predictions on a dataset.

    detsearch cache --run runs/ssd_tiny --dataset demo --split val --out runs/ssd_tiny/cache_val
    detsearch cache --run runs/frcnn_tiny --checkpoint runs/frcnn_tiny/checkpoints/ckpt-1000 \\
        --dataset demo --split val --out runs/frcnn_tiny/cache_val --score-floor 0.01

The detector is rebuilt from ``RUN/detector.json`` (written by ``detsearch train``) and restored
from the latest checkpoint (or ``--checkpoint``). The cache (docs/cache_format.md; what rows and
entries hold for each model: docs/models.md) is written shard by shard (``--images-per-shard``):
an interrupted run, started again with the same arguments, keeps the committed shards and goes
on; the shards are merged at the end. Then ``python -m detsearch sweep`` (or
``detsearch.detection.sweep.sweep``) chooses the thresholds from it without running the model
again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


from detsearch.cli.data import add_dataset_arguments, dataset_from_args

from detsearch.executor import add_executor_arguments, executor_from_args


def directory_bytes(path: Path) -> int:
    """Bytes of the merged cache's files (shards excluded)."""
    return sum(entry.stat().st_size for entry in path.iterdir() if entry.is_file())


HELP = "record a trained detector's raw pre-NMS predictions (resumable, sharded)"
DESCRIPTION = __doc__


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="detsearch train output directory")
    parser.add_argument("--checkpoint", default=None, help="checkpoint prefix (default: the run's latest)")
    parser.add_argument("--out", required=True, help="cache directory")
    add_dataset_arguments(parser, "val")
    parser.add_argument("--score-floor", type=float, default=0.01,
                        help="record (candidate, class) scores >= this; the sweep's lowest score_threshold must be "
                             ">= it (default 0.01)")
    parser.add_argument("--nms-iou-thresholds", dest="nms_iou_thresholds", default=None,
                        help="faster_rcnn: the nms_iou_threshold values the sweep will try (comma-separated); the "
                             "second stage then runs only on the proposals they can keep (much faster); default: "
                             "on every proposal, for any first-stage setting")
    parser.add_argument("--min-nms-score-threshold", dest="min_nms_score", type=float, default=0.0,
                        help="faster_rcnn, with --nms-iou-thresholds: the lowest nms_score_threshold to sweep "
                             "(default 0)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--images-per-shard", type=int, default=500, help="default 500")
    add_executor_arguments(parser, gpus=True)  # ray: one task per shard, each rebuilding the detector from --run


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from tqdm import tqdm

    from detsearch.models.record import record_cache, record_cache_sharded
    from detsearch.models.restore import CHECKPOINT_DIR, DETECTOR_FILE, latest_checkpoint, load_detector

    try:
        first_stage = None
        if args.nms_iou_thresholds is not None:
            try:
                first_stage = ([float(v) for v in args.nms_iou_thresholds.split(",") if v.strip()], args.min_nms_score)
            except ValueError:
                raise ValueError(f"--nms-iou-thresholds: not a comma-separated list of numbers: "
                                 f"{args.nms_iou_thresholds!r}") from None
        dataset = dataset_from_args(args)
        executor = executor_from_args(args)
        if executor.name == "local":
            detector, checkpoint = load_detector(args.run, args.checkpoint)
            name = f"{detector.name}/{detector.preset.name}"
        else:  # the workers build the detector; this process only plans and merges
            detector, checkpoint = None, args.checkpoint or latest_checkpoint(args.run)
            if checkpoint is None:
                raise FileNotFoundError(f"no checkpoint in {Path(args.run) / CHECKPOINT_DIR}")
            info = json.loads((Path(args.run) / DETECTOR_FILE).read_text())
            name = f"{info['model']}/{info['preset']} on {executor!r}"
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{name} from {checkpoint}: {len(dataset)} images -> {args.out}")
    bar = tqdm(total=len(dataset), unit="img", dynamic_ncols=True)
    started = time.perf_counter()
    source = {"checkpoint": str(Path(checkpoint).resolve()),
              "dataset": {"name": args.dataset, "split": args.split, "images": len(dataset)}}
    padding_scores = []
    try:
        if detector is not None:
            cache = record_cache(
                detector, dataset, args.out, score_floor=args.score_floor, batch_size=args.batch_size,
                images_per_shard=args.images_per_shard, source=source, progress=bar.update, first_stage=first_stage,
            )
        else:
            cache = record_cache_sharded(
                args.run, dataset, args.out, score_floor=args.score_floor, executor=executor, checkpoint=checkpoint,
                batch_size=args.batch_size, images_per_shard=args.images_per_shard, source=source,
                progress=bar.update, on_shard=lambda index, info: padding_scores.append(info["max_padding_score"]),
                first_stage=first_stage,
            )
    except ValueError as error:
        bar.close()
        print(f"error: {error}", file=sys.stderr)
        return 1
    bar.close()
    num_images = len(cache.meta.image_ids)
    size = directory_bytes(Path(args.out))
    extra = {}
    if hasattr(detector, "max_padding_score"):
        # Model Garden's all-zero padding ROIs (docs/models.md): the sweep equals a re-run of the
        # model for every score_threshold at or above this (over the images recorded now).
        extra["padding_roi_max_score"] = detector.max_padding_score
    elif any(score is not None for score in padding_scores):  # the same, from the workers' shards
        extra["padding_roi_max_score"] = max(score for score in padding_scores if score is not None)
    print(json.dumps({
        "cache": str(args.out),
        "kind": str(cache.meta.kind),
        "images": num_images,
        "rows": int(cache.row_boxes.shape[0]),
        "entries": int(cache.entry_score.shape[0]),
        "bytes": size,
        "bytes_per_image": round(size / num_images),
        "score_floor": cache.meta.score_floor,
        "num_proposals": cache.meta.num_proposals,
        "seconds": round(time.perf_counter() - started, 1),
        **extra,
    }))
    return 0


