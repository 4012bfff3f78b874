"""What every subcommand of ``detsearch`` shares: one-line errors, list and number flags,
progress bars. NumPy-free and TensorFlow-free, so ``detsearch --help`` is instant."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Callable, Sequence

from detsearch.checks import positive_int

EXIT_BAD_INPUT = 2
"""Exit status of every bad-input error (argparse's own)."""


class BadInput(Exception):
    """A user error: reported as one line, ``detsearch COMMAND: error: ...``, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit status 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def dashed(argv: Sequence[str]) -> list[str]:
    """``--score_floor`` -> ``--score-floor``: every flag is spelled with dashes, and the
    underscore spelling that older scripts use is accepted for it."""
    out = []
    for token in argv:
        if token == "--":
            out.extend(argv[len(out):])
            break
        if token.startswith("--"):
            name, sep, value = token.partition("=")
            token = name.replace("_", "-") + sep + value
        out.append(token)
    return out


def float_list(text: str | None, flag: str, *, low: float = -math.inf, high: float = math.inf,
               low_open: bool = False, what: str = "values") -> list[float] | None:
    """A comma-separated list of finite numbers (None stays None), each within ``[low, high]``
    (``(low, high]`` with ``low_open``). Raises `BadInput` naming the flag and the item."""
    if text is None:
        return None
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise BadInput(f"{flag}: {item!r} is not a number") from None
        inside = (low < value if low_open else low <= value) and value <= high
        if not (math.isfinite(value) and inside):
            raise BadInput(f"{flag}: {item} is outside {interval}" if math.isfinite(low) or math.isfinite(high)
                           else f"{flag}: {item} is not a finite number")
        values.append(value)
    if not values:
        raise BadInput(f"{flag}: no {what} given")
    return values


def thresholds(text: str | None, flag: str) -> list[float] | None:
    """Threshold candidates: numbers in [0, 1]."""
    return float_list(text, flag, low=0.0, high=1.0, what="thresholds")


def positives(text: str | None, flag: str) -> list[float] | None:
    """Hyperparameter candidates that must be > 0 (learning rates)."""
    return float_list(text, flag, low=0.0, low_open=True)


def non_negatives(text: str | None, flag: str) -> list[float] | None:
    """Hyperparameter candidates that must be >= 0 (weight decays, momentums)."""
    return float_list(text, flag, low=0.0)


def objective_arguments(parser: argparse.ArgumentParser) -> None:
    """``--objective`` (the sweep's objectives) and ``--budget``."""
    from detsearch.detection.sweep.result import OBJECTIVES

    parser.add_argument(
        "--objective", default="map", choices=list(OBJECTIVES),
        help="what to maximize: map = COCO AP@[.5:.95] (default); ap50 = AP@.5; f1 = F1 at IoU 0.5 of the "
        "configuration's detections; map_at_budget = AP@[.5:.95] among configurations with at most "
        "--budget detections per image")
    parser.add_argument("--budget", type=float, metavar="N", help="mean detections per image allowed by --objective map_at_budget")


def operating_point_arguments(parser: argparse.ArgumentParser) -> None:
    """How the sweep chooses and confirms: ``--tolerance``, ``--per-class``, ``--holdout``,
    ``--seed``, ``--replicates``, the ``--max-detections`` / ``--class-agnostic`` /
    ``--soft-nms-sigmas`` axes, and ``--errors``."""
    from detsearch.detection.sweep.holdout import DEFAULT_REPLICATES
    from detsearch.detection.sweep.result import DEFAULT_TOLERANCE

    parser.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="T",
        help=f"choose the configuration with the fewest detections per image among those within T of the best "
        f"objective (default {DEFAULT_TOLERANCE:g}: the last digit pycocotools prints; 0 takes the best)")
    parser.add_argument(
        "--per-class", metavar="RULE",
        help="per-class score thresholds on top of the chosen configuration: f1 (highest F1 at IoU 0.5), "
        "precision:P (most recall with precision >= P) or recall:R (fewest detections with recall >= R); "
        "writes per_class_thresholds.json")
    parser.add_argument(
        "--confidence", type=float, metavar="C",
        help="with --per-class precision:P or recall:R: the target must be met by the one-sided lower "
        "confidence bound at level C (exact Clopper-Pearson, e.g. 0.95) of the precision or recall, not by "
        "the figure itself; adds precision_lower and recall_lower")
    parser.add_argument("--holdout", type=float, metavar="FRACTION",
                        help="hold out this fraction of the images: choose on the rest, report the choice on these "
                        "with bootstrap 95%% intervals")
    parser.add_argument("--holdout-seed", type=int, default=0, metavar="N", help="seed of the holdout split and the bootstrap (default 0)")
    parser.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES, metavar="N",
                        help=f"bootstrap replicates of the holdout intervals (default {DEFAULT_REPLICATES})")
    parser.add_argument("--max-detections", metavar="LIST",
                        help="comma-separated caps per class and per image to sweep (Model Garden's max_num_detections), "
                        "e.g. 100,300; one NMS pass covers every cap")
    parser.add_argument("--class-agnostic", metavar="LIST",
                        help="false, true or false,true: sweep class-agnostic NMS (each box keeps its best class, one NMS "
                        "over all classes)")
    parser.add_argument("--soft-nms-sigmas", metavar="LIST",
                        help="nms_version v1: comma-separated soft_nms_sigma values to sweep (0: TensorFlow's hard NMS "
                        "kernel; soft NMS decays overlapping boxes' scores and ignores the IoU threshold); one pass "
                        "per sigma covers every score threshold")
    parser.add_argument("--errors", action="store_true",
                        help="TIDE's error anatomy (hotcoco's tide_errors: Cls, Loc, Both, Dupe, Bkg, Miss, FP, FN) in "
                        "every row of the table, errors.png along the score and IoU axes, and the chosen "
                        "configuration's confusion.png and calibration.png")


def operating_point_options(args: argparse.Namespace) -> dict:
    """The sweep's keyword arguments from `operating_point_arguments`' flags; `BadInput` (or
    `detsearch.errors.BadSetting`) for bad values (one line each)."""
    from detsearch.detection.sweep.per_class import PerClassRule

    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise BadInput(f"--tolerance must be a number >= 0, got {args.tolerance}")
    rule = None
    if args.per_class is not None:
        try:
            rule = PerClassRule.parse(args.per_class)
        except ValueError as error:
            raise BadInput(f"--per-class: {error}") from None
    if args.confidence is not None:
        if not 0 < args.confidence < 1:  # nan too
            raise BadInput(f"--confidence must be a number in (0, 1), got {args.confidence:g}")
        if rule is None or rule.kind not in ("precision", "recall"):
            given = "no --per-class" if rule is None else f"--per-class {rule}"
            raise BadInput(f"--confidence needs a --per-class precision:P or recall:R rule, got {given}")
        rule = PerClassRule.parse(rule, confidence=args.confidence)
    if args.holdout is not None and not 0 < args.holdout < 1:
        raise BadInput(f"--holdout must be a fraction in (0, 1), got {args.holdout:g}")
    positive_int(args.replicates, "--replicates")
    caps = None
    if args.max_detections is not None:
        values = float_list(args.max_detections, "--max-detections", low=1)
        if any(v != int(v) for v in values):
            raise BadInput(f"--max-detections: {args.max_detections!r} must be whole numbers >= 1")
        caps = [int(v) for v in values]
    agnostic = None
    if args.class_agnostic is not None:
        words = [word.strip().lower() for word in args.class_agnostic.split(",") if word.strip()]
        known = {"true": True, "false": False}
        if not words or any(word not in known for word in words):
            raise BadInput(f"--class-agnostic: {args.class_agnostic!r}; use false, true or false,true")
        agnostic = [known[word] for word in words]
    sigmas = None if args.soft_nms_sigmas is None else float_list(args.soft_nms_sigmas, "--soft-nms-sigmas", low=0)
    return dict(tolerance=args.tolerance, per_class=rule, holdout=args.holdout, seed=args.holdout_seed,
                replicates=args.replicates, max_detections=caps, class_agnostic=agnostic, soft_nms_sigma=sigmas,
                errors=args.errors)


def check_objective(args: argparse.Namespace) -> None:
    if args.objective == "map_at_budget" and args.budget is None:
        raise BadInput("--objective map_at_budget needs --budget (mean detections per image)")
    if args.budget is not None and (not math.isfinite(args.budget) or args.budget < 0):
        raise BadInput(f"--budget must be a number >= 0, got {args.budget}")


def progress_bar(disabled: bool, unit: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr, and its ``close``."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None, lambda: None
    bar = tqdm(total=0, unit=unit, disable=disabled or None, file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return progress, bar.close


def read_json(path: str, what: str):
    """The JSON document in ``path``; a missing, unreadable or malformed file is one `BadInput` line."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} file not found") from None
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}: malformed JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"{path}: cannot read {what}: {error}") from None


def read_annotations(path: str):
    """``(document, GroundTruth)`` of a COCO instances file, with one-line errors."""
    from detsearch.detection.cocoeval import load_ground_truth

    document = read_json(path, "annotations")
    if not isinstance(document, dict):
        raise BadInput(f"{path}: COCO annotations must be a JSON object, got a JSON {type(document).__name__}")
    return document, load_ground_truth(document, name=path)
