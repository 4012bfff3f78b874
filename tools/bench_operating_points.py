"""What each operating-point output costs, in seconds, on one cache: the plain sweep, then the
same sweep with per-class thresholds, with a holdout (and its bootstrap), with the
max_detections and class_agnostic axes, and the time each file of the report takes to write.

    python tools/bench_operating_points.py --cache out/search_det_ssd/cache --annotations data/demo/instances_val.json
    python tools/bench_operating_points.py --detections tests/data/coco_val2014_100/instances_val2014_fakebbox100_results.json \\
        --annotations tests/data/coco_val2014_100/instances_val2014_100.json --score-thresholds 0,0.05,0.1,0.2,0.3,0.5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from detsearch.detection.cache import import_coco_detections, read_cache
from detsearch.detection.cocoeval import load_ground_truth
from detsearch.detection.report import write_outputs
from detsearch.detection.sweep import sweep
from detsearch.params import ParamSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache")
    source.add_argument("--detections")
    parser.add_argument("--annotations", required=True)
    parser.add_argument("--score-thresholds", default="0.01,0.05,0.1,0.2,0.3,0.5")
    parser.add_argument("--iou-thresholds", default="0.3,0.4,0.5,0.6,0.7")
    parser.add_argument("--nms-score-thresholds", default="0.0,0.1,0.3")
    parser.add_argument("--nms-iou-thresholds", default="0.5,0.6,0.7,0.8")
    parser.add_argument("--per-class", default="f1")
    parser.add_argument("--holdout", type=float, default=0.3)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--max-detections", default="100,300")
    args = parser.parse_args()

    gt = load_ground_truth(args.annotations)
    cache = read_cache(args.cache) if args.cache else import_coco_detections(args.detections, args.annotations)
    grid = {"score_threshold": args.score_thresholds, "iou_threshold": args.iou_thresholds}
    if cache.meta.kind == "two_stage":
        grid.update(nms_score_threshold=args.nms_score_thresholds, nms_iou_threshold=args.nms_iou_thresholds)
    spec = ParamSpec(**{name: [float(v) for v in text.split(",")] for name, text in grid.items()})
    caps = [int(v) for v in args.max_detections.split(",")]
    print(f"{cache}")

    def timed(**options):
        started = time.perf_counter()
        result = sweep(cache, gt, spec, **options)
        return result, time.perf_counter() - started

    timed()  # first call: imports and first-touch of the cache's pages
    plain, base = timed()
    print(f"| run | configurations | seconds | over the plain sweep |\n|---|---:|---:|---:|")
    print(f"| plain sweep | {len(plain.table)} | {base:.2f} | |")
    runs = [
        (f"--per-class {args.per_class}", dict(per_class=args.per_class)),
        (f"--holdout {args.holdout:g} ({args.replicates} bootstrap replicates)", dict(holdout=args.holdout, replicates=args.replicates)),
        (f"--max-detections {args.max_detections}", dict(max_detections=caps)),
        ("--class-agnostic false,true", dict(class_agnostic=[False, True])),
    ]
    results = {}
    for name, options in runs:
        result, seconds = timed(**options)
        results[name] = result
        print(f"| {name} | {len(result.table)} | {seconds:.2f} | {seconds - base:+.2f} |")
    with tempfile.TemporaryDirectory() as out:
        seconds = write_outputs(results[runs[0][0]], Path(out))
    print("\n| file | seconds to write |\n|---|---:|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} |")


if __name__ == "__main__":
    main()
