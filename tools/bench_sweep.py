"""Benchmark: the threshold sweep against re-running NMS + COCO evaluation per configuration.

Generates (`detsearch.detection.synthetic`) a seeded synthetic evaluation set at COCO val
scale (default 5000 images, 80 categories with COCO's ids, about 7 ground-truth boxes per image
with COCO-like sizes: about 41% small, 34% medium, 24% large; 1% crowd regions; the ``area``
field smaller than the box, as polygon areas are), and raw predictions for it:

- one-stage: 1000 candidate boxes per image; candidates near a ground-truth box score by
  their IoU with it (a few high), the rest are background with low scores; 1-3 class scores
  per candidate above the score floor 0.01;
- two-stage: 1000 RPN proposals per image (objectness, FPN level 0-4), and for every proposal
  1-3 second-stage (class score, refined box) entries; num_proposals 500.

Then, in one run, it measures:

1. our sweep over a 5x5 one-stage grid and a 5x5x5x5 two-stage grid (total and per
   configuration) with ``--workers`` processes (default 2, the reference machine's cores; the
   one-stage grid also in one process, and the two tables compared); peak memory right after
   the sweeps;
2. the naive baseline for a few configurations: NMS with TensorFlow ops
   (``tf.image.combined_non_max_suppression``; two-stage: first-stage
   ``non_max_suppression_with_scores`` per image and level, then combined NMS) and
   pycocotools ``evaluate()`` + ``accumulate()``, and the same NMS with faster-coco-eval; only
   the op calls and evaluate/accumulate are timed (not building dense inputs, results lists
   or ``loadRes``), so the baseline is if anything flattered; the per-configuration cost is
   the mean over the timed configurations;
3. whether every timed configuration's 12 stats are identical (bitwise) between pycocotools
   and the sweep's table (and, reported apart, faster-coco-eval, which can differ from
   pycocotools in the last bit).

The naive grid totals are extrapolated, not measured: the mean cost of the timed
configurations times the grid's size; every line that prints one says so. The exit status is 1
when a correctness check fails (the one-process and the multi-process tables differ, or a timed
configuration's stats differ from pycocotools'), and the failed checks are named.

Scores are made unique within an image: ``combined_non_max_suppression`` orders equal scores
with an unstable sort, which would make the baseline differ on ties only.

Usage:
  python tools/bench_sweep.py                  # full size (several minutes on 2 cores)
  python tools/bench_sweep.py --quick          # small smoke run
  python tools/bench_sweep.py --images 1000 --two-stage-images 500
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detsearch.detection import cocoeval, pycoco  # noqa: E402
from detsearch.detection.boxes import yxyx_to_xywh  # noqa: E402
from detsearch.detection.synthetic import (  # noqa: E402
    COCO_CATEGORY_IDS,
    make_ground_truth,
    make_one_stage_cache,
    make_two_stage_cache,
)
from detsearch.executor import ProcessExecutor  # noqa: E402
from detsearch.params import ParamSpec  # noqa: E402

ONE_STAGE_GRID = ParamSpec(score_threshold=[0.01, 0.05, 0.1, 0.3, 0.5], iou_threshold=[0.3, 0.4, 0.5, 0.6, 0.7])
TWO_STAGE_GRID = ParamSpec(
    nms_score_threshold=[0.0, 0.05, 0.1, 0.2, 0.3],
    nms_iou_threshold=[0.5, 0.6, 0.7, 0.8, 0.9],
    score_threshold=[0.01, 0.05, 0.1, 0.3, 0.5],
    iou_threshold=[0.3, 0.4, 0.5, 0.6, 0.7],
)
ONE_STAGE_BASELINE = [(0.05, 0.5), (0.3, 0.6), (0.01, 0.4)]  # (score_threshold, iou_threshold)
TWO_STAGE_BASELINE = [(0.0, 0.7, 0.05, 0.5), (0.1, 0.8, 0.3, 0.6), (0.05, 0.6, 0.01, 0.4)]


def peak_memory_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def _results_from_nms(gt, boxes, scores, classes, valid, image_start: int, results: list) -> None:
    category_ids = np.array(COCO_CATEGORY_IDS)
    for b in range(len(valid)):
        n = int(valid[b])
        if n == 0:
            continue
        xywh = yxyx_to_xywh(boxes[b, :n])
        image_id = gt["images"][image_start + b]["id"]
        for box, score, cls in zip(xywh.tolist(), scores[b, :n].tolist(), classes[b, :n].astype(np.int64).tolist()):
            results.append({"image_id": image_id, "category_id": int(category_ids[cls]), "bbox": box, "score": score})


def one_stage_baseline_nms(tf, cache, gt, score_threshold, iou_threshold, chunk: int = 50):
    """combined_non_max_suppression on dense per-image [1000, 80] scores; returns (results, seconds)."""
    num_images = cache.num_images()
    num_classes = len(cache.meta.category_ids)
    rows = np.diff(cache.row_offsets)
    width = int(rows.max()) if len(rows) else 0
    results, seconds = [], 0.0
    entry_image = np.repeat(np.arange(num_images), np.diff(cache.entry_offsets))
    for start in range(0, num_images, chunk):
        stop = min(num_images, start + chunk)
        dense_boxes = np.zeros((stop - start, width, 1, 4), np.float32)
        dense_scores = np.zeros((stop - start, width, num_classes), np.float32)
        for i in range(start, stop):
            lo, hi = cache.row_offsets[i], cache.row_offsets[i + 1]
            dense_boxes[i - start, : hi - lo, 0] = cache.row_boxes[lo:hi]
        e = slice(cache.entry_offsets[start], cache.entry_offsets[stop])
        local_row = cache.entry_row[e] - cache.row_offsets[entry_image[e]]
        dense_scores[entry_image[e] - start, local_row, cache.entry_class[e]] = cache.entry_score[e]
        started = time.perf_counter()
        out = tf.image.combined_non_max_suppression(
            dense_boxes, dense_scores, 100, 100, iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False
        )
        nmsed = (out.nmsed_boxes.numpy(), out.nmsed_scores.numpy(), out.nmsed_classes.numpy(), out.valid_detections.numpy())
        seconds += time.perf_counter() - started
        _results_from_nms(gt, *nmsed, start, results)
    return results, seconds


def two_stage_baseline_nms(tf, cache, gt, nms_score, nms_iou, score_threshold, iou_threshold, chunk: int = 25):
    """First stage per image and level with non_max_suppression_with_scores, top num_proposals,
    then combined_non_max_suppression on dense [num_proposals, 80] per-class boxes and scores."""
    num_images = cache.num_images()
    num_classes = len(cache.meta.category_ids)
    proposals = cache.meta.num_proposals
    results, seconds = [], 0.0
    for start in range(0, num_images, chunk):
        stop = min(num_images, start + chunk)
        dense_boxes = np.zeros((stop - start, proposals, num_classes, 4), np.float32)
        dense_scores = np.zeros((stop - start, proposals, num_classes), np.float32)
        for i in range(start, stop):
            lo, hi = int(cache.row_offsets[i]), int(cache.row_offsets[i + 1])
            boxes, objectness, levels = cache.row_boxes[lo:hi], cache.row_objectness[lo:hi], cache.row_level[lo:hi]
            started = time.perf_counter()
            kept = []
            for level in np.unique(levels):
                members = np.flatnonzero(levels == level)
                selected, _ = tf.image.non_max_suppression_with_scores(
                    boxes[members], objectness[members], proposals, iou_threshold=nms_iou, score_threshold=nms_score
                )
                kept.append(members[selected.numpy()])
            kept = np.concatenate(kept)
            kept = kept[np.lexsort((kept, -objectness[kept]))][:proposals]
            seconds += time.perf_counter() - started
            rank = np.full(hi - lo, -1)
            rank[kept] = np.arange(len(kept))
            e = slice(int(cache.entry_offsets[i]), int(cache.entry_offsets[i + 1]))
            r = rank[cache.entry_row[e] - lo]
            alive = r >= 0
            cls = cache.entry_class[e][alive]
            dense_scores[i - start, r[alive], cls] = cache.entry_score[e][alive]
            dense_boxes[i - start, r[alive], cls] = cache.entry_boxes[e][alive]
        started = time.perf_counter()
        out = tf.image.combined_non_max_suppression(
            dense_boxes, dense_scores, 100, 100, iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False
        )
        nmsed = (out.nmsed_boxes.numpy(), out.nmsed_scores.numpy(), out.nmsed_classes.numpy(), out.valid_detections.numpy())
        seconds += time.perf_counter() - started
        _results_from_nms(gt, *nmsed, start, results)
    return results, seconds


def pycocotools_eval(gt_coco, results):
    """pycocotools' 12 stats and the seconds of its evaluation (not ``loadRes``)."""
    dt = pycoco.load_results(gt_coco, results)
    started = time.perf_counter()
    evaluator = pycoco.pycocotools_eval(gt_coco, dt)
    return evaluator.stats, time.perf_counter() - started


def faster_coco_eval_eval(gt_dict, results):
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_dict)
        dt = gt.loadRes(results)
        evaluator = COCOeval_faster(gt, dt, "bbox")
        started = time.perf_counter()
        evaluator.evaluate()
        evaluator.accumulate()
        seconds = time.perf_counter() - started
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12], np.float64), seconds


def _row_for(table, params: dict):
    for row in table:
        if all(abs(row.params[k] - v) == 0 for k, v in params.items()):
            return row
    raise KeyError(params)


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import detsearch.detection.sweep as sweep_module

    rng = np.random.default_rng(args.seed)
    print(f"generating {args.images} images of ground truth and the one-stage cache (seed {args.seed}) ...", flush=True)
    started = time.perf_counter()
    gt = make_ground_truth(rng, args.images)
    one = make_one_stage_cache(rng, gt)
    ground_truth = cocoeval.load_ground_truth(gt)
    print(
        f"  {len(gt['annotations'])} ground-truth boxes, {one.num_rows()} candidates, {one.num_entries()} class scores "
        f"({time.perf_counter() - started:.1f}s)",
        flush=True,
    )
    two_images = args.two_stage_images if args.two_stage_images is not None else args.images
    gt_two = gt if two_images == args.images else make_ground_truth(rng, two_images)
    two = make_two_stage_cache(rng, gt_two)
    ground_truth_two = ground_truth if gt_two is gt else cocoeval.load_ground_truth(gt_two)
    print(f"  two-stage: {two_images} images, {two.num_rows()} proposals, {two.num_entries()} class entries", flush=True)

    report = {}
    # --- our sweeps (first, so that the peak memory is theirs) ---
    started = time.perf_counter()
    single = sweep_module.sweep(one, ground_truth, ONE_STAGE_GRID)
    single_seconds = time.perf_counter() - started
    print(f"sweep one-stage {len(single.table)} configs, 1 process: {single_seconds:.1f}s = {single_seconds / len(single.table):.3f}s/config", flush=True)
    started = time.perf_counter()
    one_result = sweep_module.sweep(one, ground_truth, ONE_STAGE_GRID, executor=ProcessExecutor(args.workers))
    one_seconds = time.perf_counter() - started
    same = [r.to_dict() for r in single.table] == [r.to_dict() for r in one_result.table]
    print(
        f"sweep one-stage {len(one_result.table)} configs, {args.workers} processes: {one_seconds:.1f}s = "
        f"{one_seconds / len(one_result.table):.3f}s/config (table identical to 1 process: {same})",
        flush=True,
    )
    started = time.perf_counter()
    last = [0.0]

    def progress(done, total):
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  two-stage sweep: {done}/{total} NMS settings ({time.perf_counter() - started:.0f}s)", flush=True)

    two_result = sweep_module.sweep(two, ground_truth_two, TWO_STAGE_GRID, executor=ProcessExecutor(args.workers),
                                    progress=progress)
    two_seconds = time.perf_counter() - started
    print(
        f"sweep two-stage {len(two_result.table)} configs, {args.workers} processes: {two_seconds:.1f}s = "
        f"{two_seconds / len(two_result.table):.3f}s/config",
        flush=True,
    )
    sweep_peak = peak_memory_gb()
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1 << 20)
    print(f"peak memory after the sweeps: {sweep_peak:.2f} GB (main process), {child_peak:.2f} GB (largest worker)", flush=True)
    failures = [] if same else ["one-stage sweep table: 1 process and the worker processes differ"]
    identical = True  # every timed configuration's stats equal pycocotools'
    identical_fast = True
    fast_difference = 0.0

    # --- the naive baselines ---
    import tensorflow as tf

    gt_coco = pycoco.coco_ground_truth(gt)
    gt_coco_two = gt_coco if gt_two is gt else pycoco.coco_ground_truth(gt_two)

    for label, configs, table, cache, gdict, gcoco, sweep_per_config in (
        ("one-stage", ONE_STAGE_BASELINE[: args.baseline_configs], one_result.table, one, gt, gt_coco, one_seconds / len(one_result.table)),
        ("two-stage", TWO_STAGE_BASELINE[: args.baseline_configs], two_result.table, two, gt_two, gt_coco_two, two_seconds / len(two_result.table)),
    ):
        nms_times, coco_times, fast_times = [], [], []
        for config in configs:
            if label == "one-stage":
                params = {"score_threshold": config[0], "iou_threshold": config[1]}
                results, nms_seconds = one_stage_baseline_nms(tf, cache, gdict, config[0], config[1])
            else:
                params = dict(zip(("nms_score_threshold", "nms_iou_threshold", "score_threshold", "iou_threshold"), config))
                results, nms_seconds = two_stage_baseline_nms(tf, cache, gdict, *config)
            stats_coco, coco_seconds = pycocotools_eval(gcoco, results)
            stats_fast, fast_seconds = faster_coco_eval_eval(gdict, results)
            row = _row_for(table, params)
            same_coco = np.array_equal(np.asarray(row.stats), stats_coco)
            same_fast = np.array_equal(np.asarray(row.stats), stats_fast)
            identical &= same_coco
            if not same_coco:
                failures.append(f"{label} {params}: the sweep's 12 stats differ from pycocotools' "
                                f"(max |diff| {float(np.abs(np.asarray(row.stats) - stats_coco).max()):.3g})")
            identical_fast &= same_fast
            fast_difference = max(fast_difference, float(np.abs(np.asarray(row.stats) - stats_fast).max()))
            nms_times.append(nms_seconds)
            coco_times.append(coco_seconds)
            fast_times.append(fast_seconds)
            print(
                f"{label} baseline {params}: {len(results)} detections, NMS {nms_seconds:.1f}s, pycocotools {coco_seconds:.1f}s, "
                f"faster-coco-eval {fast_seconds:.1f}s; AP {stats_coco[0]:.4f}; stats identical to the sweep: "
                f"pycocotools {same_coco}, faster-coco-eval {same_fast}",
                flush=True,
            )
        naive = float(np.mean(nms_times) + np.mean(coco_times))
        naive_fast = float(np.mean(nms_times) + np.mean(fast_times))
        report[label] = (naive, naive_fast, sweep_per_config)
    report["one-stage, 1 process"] = (report["one-stage"][0], report["one-stage"][1], single_seconds / len(single.table))

    print()
    print("=" * 78)
    print(f"per configuration (naive: mean of the {args.baseline_configs} timed configuration(s); sweep: its measured "
          f"total / configurations):")
    print(f"{'':22s}{'naive+pycocotools':>20s}{'naive+faster-coco':>20s}{'sweep':>12s}{'x pycoco':>10s}{'x fce':>8s}")
    for label, (naive, naive_fast, ours) in report.items():
        name = label if "process" in label else f"{label}, {args.workers} proc."
        print(f"{name:22s}{naive:17.2f} s {naive_fast:17.2f} s {ours:9.3f} s {naive / ours:9.0f}x {naive_fast / ours:6.0f}x")
    total_one = report["one-stage"][0] * len(one_result.table)
    total_two = report["two-stage"][0] * len(two_result.table)
    print(
        f"grid totals: one-stage {len(one_result.table)} configs naive {total_one / 60:.1f} min (extrapolated: "
        f"{args.baseline_configs} timed x {len(one_result.table)}) vs sweep {one_seconds:.1f} s (measured); "
        f"two-stage {len(two_result.table)} configs naive {total_two / 3600:.1f} h (extrapolated: "
        f"{args.baseline_configs} timed x {len(two_result.table)}) vs sweep {two_seconds / 60:.1f} min (measured)"
    )
    print(
        f"peak memory: {sweep_peak:.2f} GB main process + {child_peak:.2f} GB largest worker after the sweeps; "
        f"{peak_memory_gb():.2f} GB main process overall (with the baselines)"
    )
    print(f"every compared configuration's 12 stats identical to pycocotools (bitwise): {identical}")
    print(f"... and to faster-coco-eval: {identical_fast} (largest difference {fast_difference:.3g}; "
          "faster-coco-eval may differ in the last bit, not a check)")
    print(f"best one-stage {one_result.best_params} AP {one_result.best_row.stats[0]:.4f}")
    print(f"best two-stage {two_result.best_params} AP {two_result.best_row.stats[0]:.4f}")
    return report_checks(failures)


def report_checks(failures: list[str]) -> int:
    """Prints each failed correctness check; the exit status: 0 when none failed, else 1."""
    for failure in failures:
        print(f"CHECK FAILED: {failure}", flush=True)
    if failures:
        print(f"{len(failures)} correctness check(s) failed: the timings above compare different results")
        return 1
    print("all correctness checks passed")
    return 0


END_TO_END_GRID = {"score_threshold": [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5],
                   "iou_threshold": [0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7]}
END_TO_END_BASELINE = [(0.05, 0.5), (0.3, 0.6), (0.01, 0.4)]


def hotcoco_eval(gt_dict, results):
    """hotcoco's 12 stats and the seconds of loadRes + evaluate + accumulate + summarize."""
    import hotcoco

    with contextlib.redirect_stdout(io.StringIO()):
        gt = hotcoco.COCO(gt_dict)
        started = time.perf_counter()
        dt = gt.loadRes(results)
        evaluator = hotcoco.COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        seconds = time.perf_counter() - started
    return np.asarray(evaluator.stats[:12], np.float64), seconds


def records_of(cache, gt) -> list[dict]:
    """The cache's candidates as raw COCO results records: one per (row, class) entry, the bbox
    the float64 ``[x, y, w, h]`` of the float32 yxyx row (so ``x + w`` gives the row back)."""
    entry_image = np.repeat(np.arange(cache.num_images()), np.diff(cache.entry_offsets))
    image_ids = np.array([image["id"] for image in gt["images"]])[entry_image]
    categories = np.array(COCO_CATEGORY_IDS)[np.asarray(cache.entry_class)]
    xywh = yxyx_to_xywh(np.asarray(cache.row_boxes)[np.asarray(cache.entry_row)])
    scores = np.asarray(cache.entry_score, np.float64)
    return [{"image_id": int(i), "category_id": int(c), "bbox": b, "score": float(v)}
            for i, c, b, v in zip(image_ids.tolist(), categories.tolist(), xywh.tolist(), scores.tolist())]


def end_to_end(args) -> int:
    """The sweep CLI from raw COCO results JSON, against TF NMS + hotcoco (and + pycocotools)
    per configuration, measured in this run."""
    import json
    import subprocess
    import tempfile

    from detsearch.detection.cache import import_coco_detections

    try:
        import hotcoco  # noqa: F401
    except ImportError as error:
        print(f"the end-to-end baseline needs hotcoco ({error}); pip install 'detsearch[bench]'")
        return 2
    rng = np.random.default_rng(args.seed)
    gt = make_ground_truth(rng, args.images)
    cache = make_one_stage_cache(rng, gt, rows_per_image=args.rows_per_image)
    records = records_of(cache, gt)
    configs = len(END_TO_END_GRID["score_threshold"]) * len(END_TO_END_GRID["iou_threshold"])
    with tempfile.TemporaryDirectory() as scratch:
        gt_path, raw_path = Path(scratch) / "gt.json", Path(scratch) / "raw.json"
        gt_path.write_text(json.dumps(gt))
        raw_path.write_text(json.dumps(records))
        megabytes = raw_path.stat().st_size / 1e6
        print(f"{args.images} images, {len(gt['annotations'])} ground-truth boxes, {len(records)} raw candidates "
              f"({megabytes:.0f} MB of COCO results JSON)", flush=True)
        started = time.perf_counter()
        imported = import_coco_detections(raw_path, gt_path)
        import_seconds = time.perf_counter() - started

        def cli(scores, ious, out):
            command = [sys.executable, "-m", "detsearch", "sweep", "--detections", str(raw_path), "--annotations",
                       str(gt_path), "--score-thresholds", ",".join(map(str, scores)), "--iou-thresholds",
                       ",".join(map(str, ious)), "--out", str(Path(scratch) / out), "--no-progress"]
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            return time.perf_counter() - started

        one_seconds = cli([0.05], [0.5], "one")
        grid_seconds = cli(END_TO_END_GRID["score_threshold"], END_TO_END_GRID["iou_threshold"], "grid")
        table = json.loads((Path(scratch) / "grid" / "result.json").read_text())["table"]

    import tensorflow as tf

    from detsearch.detection.pycoco import coco_ground_truth

    coco_gt = coco_ground_truth(gt)
    baseline = []
    failures = []
    for score_threshold, iou_threshold in END_TO_END_BASELINE[: args.baseline_configs]:
        results, nms_seconds = one_stage_baseline_nms(tf, imported, gt, score_threshold, iou_threshold)
        hot_stats, hot_seconds = hotcoco_eval(gt, results)
        py_stats, py_seconds = pycocotools_eval(coco_gt, results)
        row = next(r for r in table if r["params"] == {"score_threshold": score_threshold, "iou_threshold": iou_threshold})
        sweep_same = list(row["stats"]) == [float(v) for v in py_stats]
        hot_same = bool(np.array_equal(hot_stats, py_stats))
        same = sweep_same and hot_same
        if not sweep_same:
            failures.append(f"score {score_threshold:g} iou {iou_threshold:g}: the sweep CLI's 12 stats differ from "
                            "pycocotools'")
        if not hot_same:
            failures.append(f"score {score_threshold:g} iou {iou_threshold:g}: hotcoco's 12 stats differ from "
                            "pycocotools' (the baseline it times is not the same evaluation)")
        baseline.append((nms_seconds, hot_seconds, py_seconds))
        print(f"baseline score {score_threshold:g} iou {iou_threshold:g}: TF NMS {nms_seconds:.2f}s, hotcoco "
              f"{hot_seconds:.2f}s, pycocotools {py_seconds:.2f}s; stats identical (sweep, hotcoco, pycocotools): {same}",
              flush=True)
    nms, hot, py = (float(np.mean(column)) for column in zip(*baseline))
    print("\n" + "=" * 78)
    print(f"import of the {megabytes:.0f} MB JSON (import_coco_detections): {import_seconds:.2f} s")
    print(f"detsearch sweep CLI, 1 configuration, end to end (process start, import, sweep, report): {one_seconds:.2f} s")
    print(f"detsearch sweep CLI, {configs} configurations, end to end: {grid_seconds:.2f} s")
    timed = len(baseline)
    print(f"per configuration (mean of {timed} timed): TF NMS {nms:.2f} s + hotcoco {hot:.2f} s = {nms + hot:.2f} s; "
          f"TF NMS + pycocotools {nms + py:.2f} s")
    print(f"{configs}-configuration grid: sweep {grid_seconds:.1f} s (measured) vs TF NMS + hotcoco "
          f"{configs * (nms + hot):.1f} s ({configs * (nms + hot) / grid_seconds:.1f}x) vs TF NMS + pycocotools "
          f"{configs * (nms + py):.1f} s ({configs * (nms + py) / grid_seconds:.1f}x); both naive totals extrapolated: "
          f"the mean of {timed} timed configuration(s) x {configs}")
    print(f"timed configurations' 12 stats identical (sweep, hotcoco, pycocotools): {not failures}")
    return report_checks(failures)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="images of the synthetic set (default 5000, COCO val)")
    parser.add_argument(
        "--two-stage-images", type=int, default=None, help="images of the two-stage set (default: --images; smaller for a faster run)"
    )
    parser.add_argument("--baseline-configs", type=int, default=2, help="configurations timed for each naive baseline (1-3, default 2)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="sweep processes (default 2, the cores of the reference machine)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 images, one baseline configuration")
    parser.add_argument("--only", choices=("grids", "end-to-end"), default=None,
                        help="grids: the 5x5 and 5x5x5x5 grids on caches (the default run); end-to-end: the sweep "
                        "CLI on a raw COCO results JSON (default --images 1500, 600 rows per image) vs TF NMS + "
                        "hotcoco / pycocotools per configuration")
    parser.add_argument("--rows-per-image", type=int, default=600, help="end-to-end: raw candidate rows per image")
    args = parser.parse_args(argv)
    if args.only == "end-to-end":
        if args.images == 5000:
            args.images = 1500
        if args.quick:
            args.images, args.rows_per_image, args.baseline_configs = 100, 200, 1
        return end_to_end(args)
    if args.quick:
        args.images = min(args.images, 200)
        args.two_stage_images = min(args.two_stage_images or args.images, 200)
        args.baseline_configs = 1
    if not 1 <= args.baseline_configs <= 3:
        parser.error("--baseline-configs must be 1, 2 or 3")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
