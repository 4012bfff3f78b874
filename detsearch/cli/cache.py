"""Record a detection cache: a trained Model Garden detector's raw predictions before NMS on its
validation records.

    detsearch cache --model-dir retinanet_demo --out runs/cache_val          # the shipped demo RetinaNet
    detsearch cache --model faster_rcnn --model-dir runs/frcnn --out runs/frcnn/cache_val --score-floor 0.01
    detsearch cache --experiment retinanet_resnetfpn_coco --config-file my.yaml --model-dir runs/mine \\
        --out runs/mine/cache --executor ray --ray-address auto

The detector is a registered Model Garden experiment (the demo's by ``--model``, or
``--experiment`` with its overrides), restored from the latest checkpoint of ``--model-dir`` (or
``--checkpoint``). The cache (docs/cache_format.md) is recorded one shard per validation record
file, each committed on its own and on ``--executor``: an interrupted run, started again with the
same arguments, keeps the committed shards and goes on; the shards are merged at the end. The
ground truth goes next to it (``OUT.annotations.json``). Then ``detsearch sweep`` chooses the
thresholds from it without running the model again.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from detsearch.cli.args import BadInput
from detsearch.cli.detector import add_detector_arguments, experiment_config
from detsearch.executor import add_executor_arguments, executor_from_args

HELP = "record a Model Garden detector's raw predictions on its validation records (resumable, sharded)"
DESCRIPTION = __doc__


def directory_bytes(path: Path) -> int:
    """Bytes of the merged cache's files (shards excluded)."""
    return sum(entry.stat().st_size for entry in path.iterdir() if entry.is_file())


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    add_detector_arguments(parser, model_dir_help="the trained model directory (its latest checkpoint), or "
                                                  "retinanet_demo: the demo RetinaNet shipped with the package")
    parser.add_argument("--out", required=True, help="cache directory")
    parser.add_argument("--score-floor", type=float, default=0.01,
                        help="keep candidates with score >= this (default 0.01)")
    add_executor_arguments(parser, gpus=True)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tqdm import tqdm

    from detsearch.atomic import write_json_atomic
    from detsearch.models import pipeline

    if args.model_dir is None and args.checkpoint is None:
        raise BadInput("--model-dir or --checkpoint: the trained detector to record")
    if not 0 <= args.score_floor <= 1:
        raise BadInput(f"--score-floor must be in [0, 1], got {args.score_floor}")
    out = Path(args.out)
    name, config = experiment_config(args, out.parent / f"{out.name}_records")
    executor = executor_from_args(args)
    experiment = pipeline.trained_experiment(name, config, checkpoint=args.checkpoint, model_dir=args.model_dir)
    print(f"{name} from {experiment.checkpoint} -> {out}")
    bar = tqdm(unit="img", dynamic_ncols=True)
    started = time.perf_counter()
    try:
        cache, ground_truth = pipeline.record_cache(experiment, out, args.score_floor, executor=executor,
                                                    progress=bar.update)
    finally:
        bar.close()
    annotations = write_json_atomic(out.with_name(out.name + ".annotations.json"), ground_truth)
    num_images = len(cache.meta.image_ids)
    size = directory_bytes(out)
    print(json.dumps({
        "cache": str(out),
        "annotations": str(annotations),
        "kind": str(cache.meta.kind),
        "images": num_images,
        "rows": int(cache.row_boxes.shape[0]),
        "entries": int(cache.entry_score.shape[0]),
        "bytes": size,
        "bytes_per_image": round(size / max(1, num_images)),
        "score_floor": cache.meta.score_floor,
        "num_proposals": cache.meta.num_proposals,
        "seconds": round(time.perf_counter() - started, 1),
    }))
    return 0
