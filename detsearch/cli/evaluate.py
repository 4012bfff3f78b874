"""``detsearch eval``: COCO bbox evaluation of final (post-NMS) detections, pycocotools'
numbers bit for bit, and an mAP regression check for a CI.

    detsearch eval --detections results.json --annotations instances_val2017.json --out DIR
    detsearch eval ... --expect previous/result.json --max-drop 0.003    # exit 1 on a drop

No NMS and no cap beyond COCO's own maxDets (1, 10, 100 per image and category;
``--max-eval-detections N`` raises the 100 as Model Garden's ``max_num_eval_detections`` does). Writes
``DIR/result.json``: ``stats`` (the 12, in pycocotools' order), ``stat_names`` and
``per_category_ap``. Bad input follows the sweep's rules: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from detsearch.cli.args import BadInput, float_list, read_annotations, read_json

HELP = "COCO evaluation of final detections (pycocotools' numbers), with an mAP regression check"
DESCRIPTION = __doc__
EXIT_REGRESSION = 1

# pycocotools' COCOeval.summarize() lines, in STAT_NAMES order.
_SUMMARY = [
    ("Average Precision", "(AP)", "0.50:0.95", "all", 100),
    ("Average Precision", "(AP)", "0.50", "all", 100),
    ("Average Precision", "(AP)", "0.75", "all", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "small", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "medium", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "large", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 1),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 10),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "small", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "medium", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "large", 100),
]


def summary_lines(stats, max_dets=(1, 10, 100)) -> list[str]:
    """The 12 lines pycocotools' ``summarize()`` prints, character for character (with other
    ``max_dets``, the counts it evaluated at; AP at ``max_dets[2]``, see `cocoeval`)."""
    at = {1: max_dets[0], 10: max_dets[1], 100: max_dets[2]}
    return [f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={at[dets]:>3d} ] = {value:0.3f}"
            for (title, kind, iou, area, dets), value in zip(_SUMMARY, stats)]


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detections", required=True, metavar="FILE",
                        help="final detections in COCO results format (a JSON list of {image_id, category_id, "
                        "bbox [x, y, w, h], score})")
    parser.add_argument("--annotations", required=True, metavar="FILE", help="COCO instances JSON (ground truth)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--max-eval-detections", type=int, default=100, metavar="N",
                        help="COCO's maxDets[2]: detections evaluated per image and category (default 100)")
    parser.add_argument("--expect", metavar="FILE", help="a previous result.json: exit 1 when a stat fell by more than --max-drop")
    parser.add_argument("--max-drop", type=str, default="0.003", metavar="D",
                        help="largest drop of any stat tolerated by --expect (default 0.003)")


def run(args: argparse.Namespace) -> int:
    from detsearch.detection.cocoeval import STAT_NAMES, evaluate_bbox
    from detsearch.detection.results import ResultsError, read_results
    from detsearch.atomic import write_json_atomic

    (max_drop,) = float_list(args.max_drop, "--max-drop", low=0.0)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory")
    expected = _read_expected(args.expect) if args.expect else None
    _, ground_truth = read_annotations(args.annotations)
    try:
        columns = read_results(args.detections, image_ids=ground_truth.image_ids.tolist(),
                               category_ids=ground_truth.category_ids.tolist(), annotations_where=args.annotations)
    except ResultsError as error:
        raise BadInput(str(error)) from None
    if not len(columns):
        raise BadInput(f"{args.detections}: no detections")
    if args.max_eval_detections < 1:
        raise BadInput(f"--max-eval-detections must be >= 1, got {args.max_eval_detections}")
    evaluation = evaluate_bbox(ground_truth, columns.image_id, columns.category_id, columns.bbox, columns.score,
                               max_detections=args.max_eval_detections)
    names = dict(zip(ground_truth.category_ids.tolist(), ground_truth.category_names))
    result = {
        "detections": args.detections,
        "annotations": args.annotations,
        "num_images": int(len(ground_truth.image_ids)),
        "num_detections": int(len(columns)),
        "max_eval_detections": int(args.max_eval_detections),
        "stat_names": list(STAT_NAMES),
        "stats": [float(v) for v in evaluation.stats],
        "per_category_ap": [{"category_id": int(c), "name": names[int(c)], "ap": float(ap)}
                            for c, ap in zip(evaluation.category_ids, evaluation.per_category_ap)],
    }
    print("\n".join(summary_lines(evaluation.stats, evaluation.max_dets)))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "result.json", result)
    print(f"-> {out / 'result.json'}")
    if expected is None:
        return 0
    drops = [(name, before, now) for name, before, now in zip(STAT_NAMES, expected, evaluation.stats)
             if before - now > max_drop]
    for name, before, now in drops:
        print(f"detsearch eval: {name} fell from {before:.4f} to {now:.4f} ({now - before:+.4f}, more than "
              f"--max-drop {max_drop:g})", file=sys.stderr)
    return EXIT_REGRESSION if drops else 0



def _read_expected(path: str) -> list[float]:
    document = read_json(path, "--expect result")
    stats = document.get("stats") if isinstance(document, dict) else None
    if not (isinstance(stats, list) and len(stats) == 12 and all(isinstance(v, (int, float)) for v in stats)
            and all(math.isfinite(v) for v in stats)):
        raise BadInput(f"{path}: not a detsearch eval result.json (needs 'stats', 12 numbers)")
    return [float(v) for v in stats]
