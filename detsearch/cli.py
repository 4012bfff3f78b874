"""Command line: ``python -m detsearch sweep ...`` (see ``python -m detsearch sweep --help``).

Bad input (unreadable or malformed files, detections that do not fit the annotations,
thresholds outside [0, 1], ...) ends with one line on stderr, ``detsearch sweep: error: ...``,
and exit status 2; nothing is written to the output directory then.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Sequence

from detsearch.detection.report import write_outputs  # also imported from here by tools/search_det.py
from detsearch.executor import ProcessExecutor, add_executor_arguments, executor_from_args

EXIT_BAD_INPUT = 2

_SWEEP_DESCRIPTION = """\
Chooses detection post-processing thresholds on raw (pre-NMS) predictions: for every
configuration it runs NMS (TensorFlow's semantics) and COCO evaluation (pycocotools' numbers,
bit for bit), then picks the best by --objective.

One-stage (SSD, RetinaNet): give --score-thresholds and --iou-thresholds.
Two-stage (Faster R-CNN, needs a two-stage --cache): also --nms-score-thresholds and
--nms-iou-thresholds (first-stage RPN NMS).

Writes OUT/result.json (best, objective, table), OUT/report.md (trade-off table) and
OUT/heatmap.png.
"""

_SWEEP_EPILOG = """\
example:
  python -m detsearch sweep --detections raw.json --annotations instances_val2017.json \\
      --score-thresholds 0.001,0.05,0.3 --iou-thresholds 0.4,0.5,0.6 --out runs/sweep

Thresholds keep a detection when score > score_threshold and suppress a box whose IoU with a
kept box is > iou_threshold (both compared in float32, as TensorFlow's NMS ops do).
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit status 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


class BadInput(Exception):
    """A user error: reported as one line, exit status 2."""


def _threshold_list(text: str, flag: str) -> list[float]:
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise BadInput(f"{flag}: {item!r} is not a number") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise BadInput(f"{flag}: {item} is outside [0, 1]")
        values.append(value)
    if not values:
        raise BadInput(f"{flag}: no thresholds given")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="detsearch", description="detsearch: hyperparameter and detection-threshold search.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sweep = commands.add_parser(
        "sweep",
        help="choose NMS score/IoU thresholds on cached raw predictions",
        description=_SWEEP_DESCRIPTION,
        epilog=_SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    sweep.add_argument(
        "--objective",
        default="map",
        choices=["map", "ap50", "f1", "map_at_budget"],
        help="what to maximize: map = COCO AP@[.5:.95] (default); ap50 = AP@.5; f1 = F1 at IoU 0.5 of the "
        "configuration's detections; map_at_budget = AP@[.5:.95] among configurations with at most "
        "--budget detections per image",
    )
    sweep.add_argument("--budget", type=float, metavar="N", help="mean detections per image allowed by --objective map_at_budget")
    sweep.add_argument(
        "--strategy",
        default="grid",
        choices=["grid", "coordinate"],
        help="grid = every combination (default); coordinate = one parameter at a time, the others held, "
        "until nothing changes (for large grids)",
    )
    sweep.add_argument("--max-detections-per-class", type=int, default=100, metavar="N", help="NMS cap per class and image (default 100)")
    sweep.add_argument("--max-total-detections", type=int, default=100, metavar="N", help="NMS cap per image (default 100)")
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
    add_executor_arguments(sweep)
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_argument("-v", "--verbose", action="store_true", help="log timings to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "sweep":
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return _sweep(args)
    except (BadInput, ValueError, TypeError, OSError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"detsearch sweep: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} file not found") from None
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}: malformed JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"{path}: cannot read {what}: {error}") from None


def _sweep(args) -> int:
    import numpy as np

    from detsearch.detection import cache as cache_module
    from detsearch.detection.cocoeval import load_ground_truth
    from detsearch.params import ParamSpec

    thresholds = {
        "score_threshold": _threshold_list(args.score_thresholds, "--score-thresholds"),
        "iou_threshold": _threshold_list(args.iou_thresholds, "--iou-thresholds"),
    }
    if args.nms_score_thresholds is not None:
        thresholds["nms_score_threshold"] = _threshold_list(args.nms_score_thresholds, "--nms-score-thresholds")
    if args.nms_iou_thresholds is not None:
        thresholds["nms_iou_threshold"] = _threshold_list(args.nms_iou_thresholds, "--nms-iou-thresholds")
    if args.objective == "map_at_budget" and args.budget is None:
        raise BadInput("--objective map_at_budget needs --budget (mean detections per image)")
    if args.budget is not None and (not math.isfinite(args.budget) or args.budget < 0):
        raise BadInput(f"--budget must be a number >= 0, got {args.budget}")
    for flag in ("--workers", "--max-detections-per-class", "--max-total-detections", "--num-proposals"):
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None and value < 1:
            raise BadInput(f"{flag} must be >= 1, got {value}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory")

    dataset = _read_json(args.annotations, "annotations")
    if not isinstance(dataset, dict):
        raise BadInput(f"{args.annotations}: COCO annotations must be a JSON object, got a JSON {type(dataset).__name__}")
    ground_truth = load_ground_truth(dataset, name=args.annotations)
    if args.detections is not None:
        if ("nms_score_threshold" in thresholds) or ("nms_iou_threshold" in thresholds):
            raise BadInput("--nms-score-thresholds/--nms-iou-thresholds need a two-stage --cache; --detections is one-stage")
        try:
            cache = cache_module.import_coco_detections(args.detections, dataset, score_floor=args.score_floor)
        except cache_module.CacheError as error:
            raise BadInput(str(error).replace("<annotations>", args.annotations)) from None
        if cache.num_entries() == 0:
            floor = f" with score >= --score-floor {args.score_floor:g}" if args.score_floor > 0 else ""
            raise BadInput(f"{args.detections}: no detections{floor}")
    else:
        try:
            cache = cache_module.read_cache(args.cache)
        except cache_module.CacheError as error:
            raise BadInput(str(error)) from None
        if cache.num_entries() == 0:
            raise BadInput(f"{args.cache}: the cache holds no detections")
    kind = str(getattr(cache.meta.kind, "value", cache.meta.kind))
    if kind == "two_stage" and len(thresholds) != 4:
        raise BadInput(f"{args.cache}: a two-stage cache needs --nms-score-thresholds and --nms-iou-thresholds too")
    if kind == "one_stage" and len(thresholds) != 2:
        raise BadInput(f"{args.cache}: a one-stage cache takes no --nms-score-thresholds/--nms-iou-thresholds")
    if kind == "one_stage" and args.num_proposals is not None:
        raise BadInput(f"{args.cache or args.detections}: --num-proposals applies to a two-stage cache only")
    unknown_images = sorted(set(cache.meta.image_ids) - set(int(i) for i in ground_truth.image_ids))
    if unknown_images:
        raise BadInput(f"{args.cache or args.detections}: image id {unknown_images[0]} is not in {args.annotations}")
    unknown_categories = sorted(set(cache.meta.category_ids) - set(int(c) for c in ground_truth.category_ids))
    if unknown_categories:
        raise BadInput(f"{args.cache or args.detections}: category id {unknown_categories[0]} is not in {args.annotations}")

    floor = cache.meta.score_floor
    lowest = min(thresholds["score_threshold"])
    if np.float32(lowest) < np.float32(floor):  # the sweep's own rule, told with the flag and the file
        if args.detections is not None:
            raise BadInput(f"--score-thresholds {lowest:g} is below --score-floor {floor:g}: detections under it were dropped")
        raise BadInput(f"{args.cache}: --score-thresholds {lowest:g} is below the cache's score floor {floor:g}: "
                       "entries under the floor were not recorded")

    import detsearch.detection.sweep as sweep_module

    if args.workers > 1 and args.executor != "local":
        raise BadInput(f"--workers {args.workers} runs forked local processes; --executor {args.executor} spreads the work itself")
    try:
        executor = executor_from_args(args)
    except ImportError as error:
        raise BadInput(str(error)) from None
    if args.workers > 1 and args.strategy == "grid":
        executor = ProcessExecutor(args.workers)
    progress, close = _progress_bar(disabled=args.no_progress)
    try:
        result = sweep_module.sweep(
            cache,
            ground_truth,
            ParamSpec(**thresholds),
            objective=args.objective,
            budget=args.budget,
            strategy=args.strategy,
            max_detections_per_class=args.max_detections_per_class,
            max_total_detections=args.max_total_detections,
            num_proposals=args.num_proposals,
            executor=executor,
            progress=progress,
        )
    finally:
        close()
        executor.close()
    write_outputs(result, out)
    best = ", ".join(f"{k}={v:g}" for k, v in result.best_params.items())
    print(f"best ({result.objective}): {best}; AP {result.best_row.stats[0]:.4f}, AP50 {result.best_row.stats[1]:.4f}, "
          f"{result.best_row.dets_per_image:.1f} detections/image -> {out / 'result.json'}")
    return 0


def _progress_bar(disabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None, lambda: None
    bar = tqdm(total=0, unit="NMS setting", disable=disabled or None, file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return progress, bar.close
