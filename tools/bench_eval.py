"""Benchmark: one COCO bbox evaluation at COCO val scale, detsearch against the other exact
evaluators, in one run.

Data (seeded, `detsearch.detection.synthetic.make_ground_truth`): 5000 images, about 36k
ground-truth boxes with COCO's categories and size mix, and 100 final detections per image
(500k; boxes jittered from the ground truth and background boxes, scores with ties), written as
a COCO results JSON file. The ground truth is loaded once per evaluator and not timed; what is
timed is the evaluator's own path from the results file on disk to the 12 stats:

- detsearch: `detsearch.detection.results.read_results` + `cocoeval.evaluate_bbox` (what
  ``detsearch eval`` runs);
- pycocotools, faster-coco-eval, hotcoco, ultrafast-pycocotools: ``gt.loadRes(path)``, then
  ``COCOeval(gt, dt, "bbox")``, ``evaluate()``, ``accumulate()``, ``summarize()``.

Each evaluator runs ``--repeat`` times (best time kept). "identical" compares all 12 stats
bitwise with pycocotools' (so pycocotools always runs); the exit status is 1 when an
evaluator's stats are not identical, and each such evaluator is named: its time is then not the
time of the same evaluation. An evaluator that is not installed is reported and skipped
(``pip install 'detsearch[bench]'``).

Usage:
  python tools/bench_eval.py                 # 5000 images, 500k detections
  python tools/bench_eval.py --quick         # 500 images
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from detsearch.detection.cocoeval import evaluate_bbox, load_ground_truth
from detsearch.detection.results import read_results
from detsearch.detection.synthetic import make_ground_truth

EVALUATORS = {  # name -> (module with COCO and COCOeval, how COCOeval is reached)
    "pycocotools": ("pycocotools.coco", "pycocotools.cocoeval"),
    "faster-coco-eval": ("faster_coco_eval", "faster_coco_eval"),
    "hotcoco": ("hotcoco", "hotcoco"),
    "ultrafast-pycocotools": ("ultrafast_pycocotools", "ultrafast_pycocotools"),
}


def make_results(rng: np.random.Generator, gt: dict, per_image: int) -> list[dict]:
    """``per_image`` detections per image: jittered copies of its ground truth, then background."""
    by_image: dict[int, list[dict]] = {}
    for annotation in gt["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    categories = [c["id"] for c in gt["categories"]]
    results = []
    for image in gt["images"]:
        own = by_image.get(image["id"], [])
        height, width = image["height"], image["width"]
        for k in range(per_image):
            if own and k < 4 * len(own):
                source = own[k % len(own)]
                x, y, w, h = np.asarray(source["bbox"]) + rng.normal(0, 0.1, 4) * max(source["bbox"][2:])
                category = source["category_id"] if rng.random() < 0.9 else int(rng.choice(categories))
                score = rng.uniform(0.3, 1.0)
            else:
                w, h = rng.uniform(4, width / 3), rng.uniform(4, height / 3)
                x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
                category, score = int(rng.choice(categories)), rng.uniform(0.0, 0.4)
            results.append({"image_id": image["id"], "category_id": int(category),
                            "bbox": [round(float(x), 2), round(float(y), 2), round(abs(float(w)), 2), round(abs(float(h)), 2)],
                            "score": round(float(score), 3)})  # 3 decimals: ties, as real detectors give
    return results


def run_detsearch(gt_dict, results_path: Path):
    ground_truth = load_ground_truth(gt_dict)

    def evaluate():
        columns = read_results(results_path, image_ids=ground_truth.image_ids.tolist(),
                               category_ids=ground_truth.category_ids.tolist())
        return evaluate_bbox(ground_truth, columns.image_id, columns.category_id, columns.bbox, columns.score).stats

    return evaluate


def run_cocoapi(name: str, gt_path: Path, results_path: Path):
    coco_module, eval_module = EVALUATORS[name]
    COCO = importlib.import_module(coco_module).COCO
    module = importlib.import_module(eval_module)
    COCOeval = getattr(module, "COCOeval_faster", None) if name == "faster-coco-eval" else None
    COCOeval = COCOeval or module.COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))

    def evaluate():
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(str(results_path))
            evaluator = COCOeval(gt, dt, "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return np.asarray(evaluator.stats, np.float64)

    return evaluate


def best_time(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--per-image", type=int, default=100, help="detections per image (default 100)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per evaluator, the best kept (default 2)")
    parser.add_argument("--skip", default="", help="comma-separated evaluators not to run")
    parser.add_argument("--quick", action="store_true", help="500 images, one run each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeat = 500, 1
    rng = np.random.default_rng(args.seed)
    gt = make_ground_truth(rng, args.images)
    results = make_results(rng, gt, args.per_image)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if "pycocotools" in skip:
        parser.error("pycocotools cannot be skipped: it is the reference of the identical column")
    with tempfile.TemporaryDirectory() as scratch:
        gt_path, results_path = Path(scratch) / "gt.json", Path(scratch) / "results.json"
        gt_path.write_text(json.dumps(gt))
        results_path.write_text(json.dumps(results))
        print(f"{args.images} images, {len(gt['annotations'])} ground-truth boxes, {len(results)} detections "
              f"({results_path.stat().st_size / 1e6:.0f} MB of results JSON)")
        rows = {}
        seconds, stats = best_time(run_detsearch(gt, results_path), args.repeat)
        rows["detsearch (detsearch eval)"] = (seconds, stats)
        for name in EVALUATORS:
            if name in skip:
                continue
            try:
                evaluate = run_cocoapi(name, gt_path, results_path)
            except ImportError as error:
                print(f"{name}: not installed ({error}); pip install 'detsearch[bench]'")
                continue
            rows[name] = best_time(evaluate, args.repeat)
    if "pycocotools" not in rows:
        print("pycocotools is not installed: nothing to compare the stats with")
        return 1
    reference = rows["pycocotools"][1]
    anchor = rows.get("hotcoco", (None, None))[0]
    print(f"\n{'evaluator':<28} {'seconds':>8} {'vs hotcoco':>11}  identical to pycocotools (12 stats)")
    failures = []
    for name, (seconds, stats) in sorted(rows.items(), key=lambda item: item[1][0]):
        ratio = f"{seconds / anchor:.2f}x" if anchor else "-"
        diff = float(np.max(np.abs(np.asarray(stats) - reference)))
        same = bool(np.array_equal(np.asarray(stats), reference))
        if not same:
            failures.append(f"{name}: 12 stats not identical to pycocotools' (max |diff| {diff:.2e})")
        print(f"{name:<28} {seconds:>8.2f} {ratio:>11}  {'yes' if same else f'no (max |diff| {diff:.2e})'}")
    print(f"\nAP {rows['detsearch (detsearch eval)'][1][0]:.4f}")
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
