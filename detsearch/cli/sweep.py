"""``detsearch sweep``: thresholds chosen on cached raw predictions (NumPy only).

Bad input (unreadable or malformed files, detections that do not fit the annotations,
thresholds outside [0, 1], ...) ends with one line on stderr, ``detsearch sweep: error: ...``,
and exit status 2; nothing is written to the output directory then.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from detsearch.checks import optional_positive_int
from detsearch.cli.args import (BadInput, check_objective, objective_arguments, operating_point_arguments,
                                operating_point_options, progress_bar, read_annotations, thresholds)
from detsearch.detection.cache import CacheKind
from detsearch.errors import BadSetting
from detsearch.executor import ProcessExecutor, add_executor_arguments, executor_from_args

HELP = "choose NMS score/IoU thresholds on cached raw predictions"

JOURNAL_FILE = ".sweep.journal.jsonl"
"""In --out while a sweep runs: its finished NMS settings (a killed sweep started again reuses
them); removed once result.json is written."""

DESCRIPTION = """\
Chooses detection post-processing thresholds on raw (pre-NMS) predictions: for every
configuration it runs NMS (TensorFlow's semantics) and COCO evaluation (pycocotools' numbers,
bit for bit), then picks the best by --objective.

One-stage (SSD, RetinaNet): give --score-thresholds and --iou-thresholds.
Two-stage (Faster R-CNN, needs a two-stage --cache): also --nms-score-thresholds and
--nms-iou-thresholds (first-stage RPN NMS).

The choice is the configuration with the fewest detections per image among those within
--tolerance of the best objective (mAP alone always prefers the lowest score threshold).
--per-class adds per-class score thresholds on top of it; --holdout chooses on part of the
images and reports the choice on the rest; --max-detections and --class-agnostic sweep more of
the post-processing.

Writes OUT/result.json (best, objective, tolerance, table; per_class and holdout when asked),
OUT/report.md, OUT/per_class_thresholds.json (with --per-class) and the pictures heatmap.png,
pr_curve.png, f1_curve.png, pareto.png and per_class.png; with --errors also errors.png,
confusion.png and calibration.png. While it runs, OUT/.sweep.journal.jsonl
records each finished NMS setting: killed and started again with the same arguments, a sweep
computes only the rest, and its outputs are the uninterrupted run's.
"""

EPILOG = """\
example:
  python -m detsearch sweep --detections raw.json --annotations instances_val2017.json \\
      --score-thresholds 0.001,0.05,0.3 --iou-thresholds 0.4,0.5,0.6 --out runs/sweep

Thresholds keep a detection when score > score_threshold and suppress a box whose IoU with a
kept box is > iou_threshold (both compared in float32, as TensorFlow's NMS ops do).
"""


def add_arguments(name: str, sweep: argparse.ArgumentParser) -> None:
    from detsearch.detection.sweep.settings import NmsVersion

    source = sweep.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--detections",
        metavar="FILE",
        help="raw one-stage candidates in COCO results format (a JSON list of {image_id, category_id, "
        "bbox [x, y, w, h], score}), before NMS; imported into an in-memory cache",
    )
    source.add_argument("--cache", metavar="DIR", help="a detection cache directory (one- or two-stage) written by detsearch")
    sweep.add_argument("--annotations", required=True, metavar="FILE", help="COCO instances JSON (ground truth; images and categories)")
    sweep.add_argument(
        "--score-thresholds", required=True, metavar="LIST", help="comma-separated score_threshold candidates in [0, 1], e.g. 0.001,0.05,0.3"
    )
    sweep.add_argument("--iou-thresholds", required=True, metavar="LIST", help="comma-separated iou_threshold candidates in [0, 1]")
    sweep.add_argument(
        "--nms-score-thresholds", metavar="LIST", help="two-stage only: first-stage (RPN) nms_score_threshold candidates in [0, 1]"
    )
    sweep.add_argument(
        "--nms-iou-thresholds", metavar="LIST", help="two-stage only: first-stage (RPN) nms_iou_threshold candidates in [0, 1]"
    )
    sweep.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    objective_arguments(sweep)
    sweep.add_argument(
        "--strategy",
        default="grid",
        choices=["grid", "coordinate"],
        help="grid = every combination (default); coordinate = one parameter at a time, the others held, "
        "until nothing changes (for large grids)",
    )
    sweep.add_argument("--max-detections-per-class", type=int, metavar="N", help="NMS cap per class and image (default 100)")
    sweep.add_argument("--max-total-detections", type=int, metavar="N", help="NMS cap per image (default 100)")
    sweep.add_argument("--nms-version", choices=list(NmsVersion), default=NmsVersion.BATCHED,
                       help="the Model Garden post-processing to reproduce: batched (greedy NMS, default), "
                       "v2 (Model Garden's default: per-class pre-NMS top-k, tiled NMS suppressing at IoU >= the "
                       "threshold) or v1 (per-class pre-NMS top-k, TensorFlow's padded NMS, or with "
                       "--soft-nms-sigma its NMS kernel); v1 and v2 cap classes and images alike (--max-detections)")
    sweep.add_argument("--pre-nms-top-k", type=int, metavar="N", help="with --nms-version v1 or v2: candidates per "
                       "image and class (default 5000, Model Garden's)")
    sweep.add_argument("--score-dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                       help="the dtype the model's scores came in (Model Garden's runtime.mixed_precision_dtype; "
                       "default float32): v2 then compares them with the score threshold in it, and a two-stage "
                       "cache's tiled first stage its objectness with the nms_score_threshold")
    sweep.add_argument("--soft-nms-sigma", type=float, metavar="S", help="with --nms-version v1: Model Garden's "
                       "soft_nms_sigma (0: the kernel's hard NMS; above 0 soft NMS); --soft-nms-sigmas sweeps several")
    sweep.add_argument("--max-eval-detections", type=int, metavar="N",
                       help="COCO's maxDets[2]: detections evaluated per image and category (default 100; Model "
                       "Garden's task.max_num_eval_detections, raised for crowded scenes)")
    operating_point_arguments(sweep)
    sweep.add_argument(
        "--num-proposals", type=int, metavar="N", help="two-stage: first-stage top-N (default: the cache's num_proposals, else 1000)"
    )
    sweep.add_argument(
        "--score-floor",
        type=float,
        default=0.0,
        metavar="F",
        help="with --detections: drop candidates with score < F when importing (default 0, keep all)",
    )
    sweep.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes for the grid strategy (default 1); the results do not depend on it",
    )
    sweep.add_argument(
        "--shards",
        type=int,
        default=None,
        metavar="N",
        help="split the images into N ranges, one task per NMS setting and range (default: 1 in this process, "
             "else twice the workers' slots); a task holds one range in memory; the results do not depend on it",
    )
    add_executor_arguments(sweep)
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from detsearch.detection import cache as cache_module
    from detsearch.params import ParamSpec

    grid = {
        "score_threshold": thresholds(args.score_thresholds, "--score-thresholds"),
        "iou_threshold": thresholds(args.iou_thresholds, "--iou-thresholds"),
    }
    if args.nms_score_thresholds is not None:
        grid["nms_score_threshold"] = thresholds(args.nms_score_thresholds, "--nms-score-thresholds")
    if args.nms_iou_thresholds is not None:
        grid["nms_iou_threshold"] = thresholds(args.nms_iou_thresholds, "--nms-iou-thresholds")
    check_objective(args)
    for flag in ("--workers", "--shards", "--max-detections-per-class", "--max-total-detections", "--num-proposals"):
        optional_positive_int(getattr(args, flag[2:].replace("-", "_")), flag)
    options = operating_point_options(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory")

    _, ground_truth = read_annotations(args.annotations)
    if args.detections is not None:
        if ("nms_score_threshold" in grid) or ("nms_iou_threshold" in grid):
            raise BadInput("--nms-score-thresholds/--nms-iou-thresholds need a two-stage --cache; --detections is one-stage")
        # The path, not the document read above: the importer's messages name the file it reads.
        cache = cache_module.import_coco_detections(args.detections, args.annotations, score_floor=args.score_floor)
        if cache.num_entries() == 0:
            floor = f" with score >= --score-floor {args.score_floor:g}" if args.score_floor > 0 else ""
            raise BadInput(f"{args.detections}: no detections{floor}")
    else:
        cache = cache_module.read_cache(args.cache)
        if cache.num_entries() == 0:
            raise BadInput(f"{args.cache}: the cache holds no detections")
    kind = cache.meta.kind
    if kind == CacheKind.TWO_STAGE and len(grid) != 4:
        raise BadInput(f"{args.cache}: a two-stage cache needs --nms-score-thresholds and --nms-iou-thresholds too")
    if kind == CacheKind.ONE_STAGE and len(grid) != 2:
        raise BadInput(f"{args.cache}: a one-stage cache takes no --nms-score-thresholds/--nms-iou-thresholds")
    unknown_images = sorted(set(cache.meta.image_ids) - set(int(i) for i in ground_truth.image_ids))
    if unknown_images:
        raise BadInput(f"{args.cache or args.detections}: image id {unknown_images[0]} is not in {args.annotations}")
    unknown_categories = sorted(set(cache.meta.category_ids) - set(int(c) for c in ground_truth.category_ids))
    if unknown_categories:
        raise BadInput(f"{args.cache or args.detections}: category id {unknown_categories[0]} is not in {args.annotations}")

    import detsearch.detection.sweep as sweep_module

    post_processing = sweep_module.PostProcessing(
        nms_version=args.nms_version,
        max_detections_per_class=args.max_detections_per_class,
        max_total_detections=args.max_total_detections,
        pre_nms_top_k=args.pre_nms_top_k,
        soft_nms_sigma=args.soft_nms_sigma,
        score_dtype=args.score_dtype,
        num_proposals=args.num_proposals,
        max_eval_detections=args.max_eval_detections,
    )
    try:  # before any work: the score floor, the settings that do not apply to the cache's kind
        post_processing.checked(cache, ParamSpec(**grid))
    except BadSetting as error:
        raise BadInput(f"{args.cache or args.detections}: {error}") from None

    if args.holdout is not None:
        from detsearch.detection.sweep.holdout import split_images

        try:
            split_images(cache.meta.image_ids, args.holdout, args.holdout_seed, ground_truth)
        except ValueError as error:
            raise BadInput(f"--holdout: {error}") from None

    if args.workers > 1 and args.executor != "local":
        raise BadInput(f"--workers {args.workers} runs forked local processes; --executor {args.executor} spreads the work itself")
    executor = executor_from_args(args)
    if args.workers > 1 and args.strategy == "grid":
        executor = ProcessExecutor(args.workers)
    journal = out / JOURNAL_FILE
    out_existed, journal_existed = out.exists(), journal.exists()
    if journal_existed:
        print(f"detsearch sweep: {journal} holds an unfinished sweep's progress: its finished NMS settings are reused "
              f"where the inputs and settings are the same", file=sys.stderr)
    progress, close = progress_bar(args.no_progress, "NMS setting")
    try:
        result = sweep_module.sweep(
            cache,
            ground_truth,
            ParamSpec(**grid),
            post_processing,
            objective=args.objective,
            budget=args.budget,
            strategy=args.strategy,
            executor=executor,
            shards=args.shards,
            progress=progress,
            journal=journal,
            **options,
        )
    except ValueError:  # bad input found by the sweep itself (a budget no configuration meets, ...)
        if not journal_existed:  # it leaves nothing behind, not even its own journal
            journal.unlink(missing_ok=True)
            if not out_existed:
                with contextlib.suppress(OSError):
                    out.rmdir()
        raise
    finally:
        close()
        executor.close()
    from detsearch.detection.report import print_summary, write_outputs

    write_outputs(result, out)
    journal.unlink(missing_ok=True)  # result.json is in place: nothing to resume
    print_summary(result, out)
    return 0
