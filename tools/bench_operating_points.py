"""The operating points' benchmarks, on one cache (or raw COCO results JSON):

- ``tolerance``: how much objective the tolerance rule gives up, what it saves, and whether the
  trade carries over to unseen images: the measurement behind
  `detsearch.detection.sweep.result.DEFAULT_TOLERANCE`. For each random half/half split of the
  images (``--splits``), the grid is swept on both halves; for each tolerance the choice is made
  on one half and scored on the other, against the highest-objective choice of the same half.
  A tolerance is worth taking when what it gives up on the held-out half is as small as where
  it chose, and far below what the printed figures resolve, while it keeps far fewer
  detections.
- ``cost``: the seconds each output costs: the plain sweep, then the same sweep with per-class
  thresholds, with a holdout (and its bootstrap), with the max_detections and class_agnostic
  axes, and the time each file of the report takes to write.

    detsearch search-det --model-dir retinanet_demo     # the demo's cache and the ground truth it was scored against
    python tools/bench_operating_points.py --cache out/search_det_retinanet/cache \\
        --annotations out/search_det_retinanet/annotations.json
    python tools/bench_operating_points.py --detections tests/data/coco_val2014_100/instances_val2014_fakebbox100_results.json \\
        --annotations tests/data/coco_val2014_100/instances_val2014_100.json \\
        --score-thresholds 0,0.05,0.1,0.2,0.3,0.5 --iou-thresholds 0.3,0.4,0.5,0.6,0.7,1.0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from detsearch.detection.cache import import_coco_detections, read_cache
from detsearch.detection.cocoeval import load_ground_truth
from detsearch.detection.report import write_outputs
from detsearch.detection.sweep import select_best, sweep
from detsearch.detection.sweep.holdout import split_images, subset_cache
from detsearch.params import ParamSpec

TOLERANCES = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", help="a one- or two-stage detection cache directory")
    source.add_argument("--detections", help="raw COCO results JSON (one-stage)")
    parser.add_argument("--annotations", required=True)
    parser.add_argument("--score-thresholds", default="0.01,0.05,0.1,0.2,0.3,0.5")
    parser.add_argument("--iou-thresholds", default="0.3,0.4,0.5,0.6,0.7")
    parser.add_argument("--nms-score-thresholds", default="0.0,0.1,0.3")
    parser.add_argument("--nms-iou-thresholds", default="0.5,0.6,0.7,0.8")
    parser.add_argument("--only", choices=("tolerance", "cost"), help="one section (default both)")
    parser.add_argument("--objective", default="map", choices=("map", "ap50", "f1"))
    parser.add_argument("--splits", type=int, default=20, help="tolerance: half/half splits (default 20)")
    parser.add_argument("--per-class", default="f1", help="cost: the per-class rule timed (default f1)")
    parser.add_argument("--holdout", type=float, default=0.3, help="cost: the holdout fraction timed (default 0.3)")
    parser.add_argument("--replicates", type=int, default=1000, help="cost: bootstrap replicates (default 1000)")
    parser.add_argument("--max-detections", default="100,300", help="cost: the caps timed (default 100,300)")
    args = parser.parse_args()

    gt = load_ground_truth(args.annotations)
    cache = read_cache(args.cache) if args.cache else import_coco_detections(args.detections, args.annotations)
    grid = {"score_threshold": args.score_thresholds, "iou_threshold": args.iou_thresholds}
    if cache.meta.kind == "two_stage":
        grid.update(nms_score_threshold=args.nms_score_thresholds, nms_iou_threshold=args.nms_iou_thresholds)
    spec = ParamSpec(**{name: [float(v) for v in text.split(",")] for name, text in grid.items()})
    print(f"{cache}")
    if args.only in (None, "tolerance"):
        tolerance_section(cache, gt, spec, args)
    if args.only in (None, "cost"):
        cost_section(cache, gt, spec, args)


def tolerance_section(cache, gt, spec, args) -> None:
    """The tolerance table: on the whole set, then chosen on one half and scored on the other."""
    started = time.perf_counter()
    whole = sweep(cache, gt, spec, objective=args.objective, tolerance=0)
    print(f"{len(whole.table)} configurations; whole set: highest {args.objective} "
          f"{whole.top_row.stats[0]:.4f} at {dict(whole.top_row.params)}, {whole.top_row.dets_per_image:.1f} dets/image")
    print("\nwhole set (no split):")
    print("| tolerance | chosen | objective given up | detections per image |")
    print("|---:|---|---:|---:|")
    for tolerance in TOLERANCES:
        row = select_best(whole.table, args.objective, tolerance=tolerance)
        given = _value(row, args.objective) - _value(whole.top_row, args.objective)
        saved = (row.dets_per_image / whole.top_row.dets_per_image - 1) * 100
        print(f"| {tolerance:g} | {_short(row.params)} | {given:+.4f} | {row.dets_per_image:.1f} ({saved:+.0f} %) |")

    given, saved, held_gap, held_saved = ({t: [] for t in TOLERANCES} for _ in range(4))
    for seed in range(args.splits):
        first, second = split_images(cache.meta.image_ids, 0.5, seed, gt)
        tables = []
        for positions in (first, second):
            tables.append(sweep(subset_cache(cache, positions), gt, spec, objective=args.objective, tolerance=0).table)
        for choose, score in ((0, 1), (1, 0)):
            held = {tuple(sorted(r.params.items())): r for r in tables[score]}
            top = select_best(tables[choose], args.objective)
            for tolerance in TOLERANCES:
                row = select_best(tables[choose], args.objective, tolerance=tolerance)
                given[tolerance].append(_value(row, args.objective) - _value(top, args.objective))
                saved[tolerance].append(row.dets_per_image / top.dets_per_image - 1)
                chosen_held, top_held = held[tuple(sorted(row.params.items()))], held[tuple(sorted(top.params.items()))]
                held_gap[tolerance].append(_value(chosen_held, args.objective) - _value(top_held, args.objective))
                held_saved[tolerance].append(chosen_held.dets_per_image / top_held.dets_per_image - 1)
    print(f"\n{args.splits} half/half splits, each half choosing and the other scoring ({2 * args.splits} choices):")
    print("| tolerance | given up where chosen | detections where chosen | given up held out (mean ± sd) | detections held out |")
    print("|---:|---:|---:|---:|---:|")
    for tolerance in TOLERANCES:
        gap = np.asarray(held_gap[tolerance])
        print(f"| {tolerance:g} | {np.mean(given[tolerance]):+.4f} | {100 * np.mean(saved[tolerance]):+.0f} % | "
              f"{gap.mean():+.4f} ± {gap.std():.4f} | {100 * np.mean(held_saved[tolerance]):+.0f} % |")
    print(f"\n{time.perf_counter() - started:.1f} s\n")


def cost_section(cache, gt, spec, args) -> None:
    """Seconds of the plain sweep, of each operating-point option, and of each output file."""
    caps = [int(v) for v in args.max_detections.split(",")]

    def timed(**options):
        started = time.perf_counter()
        result = sweep(cache, gt, spec, **options)
        return result, time.perf_counter() - started

    timed()  # first call: imports and first-touch of the cache's pages
    plain, base = timed()
    print("| run | configurations | seconds | over the plain sweep |\n|---|---:|---:|---:|")
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


def _value(row, objective: str) -> float:
    return {"map": row.stats[0], "ap50": row.stats[1], "f1": row.f1}[objective]


def _short(params) -> str:
    return ", ".join(f"{k.replace('_threshold', '')} {v:g}" for k, v in params.items())


if __name__ == "__main__":
    main()
