"""Benchmark: ``detsearch sweep`` on a COCO-size one-stage cache, Model Garden's v2 against batched NMS.

The cache: the project's seeded generator (`detsearch.detection.synthetic`) at COCO val's size,
5000 images and 80 categories, with ``--rows-per-image`` candidate boxes per image (default
6100, about 8,900 entries per image: 44M entries), written once in the documented on-disk format
under ``--work`` (reused while its parameters match; the annotations JSON beside it).

Then, in one run, each as a whole process (``python -m detsearch sweep``, as a user runs it),
the same 20-configuration grid (score 0.05,0.1,0.2,0.3,0.5 x IoU 0.4,0.5,0.6,0.7):

- batched NMS (``--nms-version batched``);
- Model Garden's default v2 (``--nms-version v2``), first with an empty compiled-kernel cache
  (``NUMBA_CACHE_DIR`` a new folder: the JIT compile counts), then with the kernels cached.

Printed: wall time and peak RSS (``/usr/bin/time``) of each, the ratios v2 / batched and peak RSS
/ the cache's bytes on disk, and whether the two v2 tables are identical. Exit status 1 when they
are not.

The baseline (``--baseline-images N``, default 10; 0 skips it): Model Garden's own v2 function
(``detection_generator._generate_detections_v2_class_aware``, traced, on this CPU) at one
configuration (score 0.05, IoU 0.5, Model Garden's top-k 5000 and 100 detections) on the first N
images, each as its dense ``[rows, 80]`` score matrix (absent entries 0). Its time per image times
the cache's images is one configuration's NMS alone; the grid's 20 configurations against the v2
sweep give the ratio. COCO evaluation per configuration is not added to the baseline, so the
ratio is a lower bound.

With ``--two-stage``, also a two-stage cache of the same generator at the same size (1000 RPN
proposals per image, 1-3 second-stage entries each) and, as one whole process, the 5x5x5x5
grid (nms_score_threshold 0,0.05,0.1,0.2,0.3 x nms_iou_threshold 0.5,...,0.9 x score
0.01,0.05,0.1,0.3,0.5 x IoU 0.3,...,0.7: 625 configurations, 125 NMS settings) with batched NMS
in both stages; printed: its wall time and peak RSS against the 60 s target.

Usage:
  python tools/bench_coco.py                    # about 10 minutes on 2 cores, 1st run + cache
  python tools/bench_coco.py --images 500       # a smaller set
  python tools/bench_coco.py --two-stage --baseline-images 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detsearch.detection import synthetic  # noqa: E402
from detsearch.detection.cache import read_cache, write_cache  # noqa: E402

SCORES = "0.05,0.1,0.2,0.3,0.5"
IOUS = "0.4,0.5,0.6,0.7"


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build(work: Path, name: str, seed: int, images: int, make) -> tuple[Path, Path]:
    """The cache ``name`` and its annotations under ``work``, made (``make(rng, gt)``, on ``images``
    images of seeded ground truth) unless a finished pair is there."""
    cache, annotations = work / name, work / f"{name}.json"
    try:
        read_cache(cache)
        if annotations.exists():
            return cache, annotations
    except Exception:  # absent or unfinished: made anew
        pass
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    gt = synthetic.make_ground_truth(rng, images)
    write_cache(cache, make(rng, gt))
    annotations.write_text(json.dumps(gt))
    print(f"made {cache} in {time.perf_counter() - start:.0f} s", flush=True)
    return cache, annotations


def build_one_stage(work: Path, images: int, rows_per_image: int, seed: int) -> tuple[Path, Path]:
    """The one-stage cache (``rows_per_image`` candidates per image) and its annotations."""
    return build(work, f"coco_{images}x{rows_per_image}_seed{seed}", seed, images,
                 lambda rng, gt: synthetic.make_one_stage_cache(rng, gt, rows_per_image=rows_per_image))


def run(label: str, argv: list[str], env: dict) -> tuple[float, float]:
    """Runs ``argv`` as a process under ``/usr/bin/time``: (wall s, peak RSS GB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-o", timing.name, "-f", "%M", *argv], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"{label} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        peak_kb = int(timing.read().split()[-1])
    return wall, peak_kb / 1e6


def model_garden_v2_seconds_per_image(cache: Path, images: int) -> float:
    """Seconds per image of Model Garden's traced v2 function on the first ``images`` images (the
    first call, which traces, not counted)."""
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator

    loaded = read_cache(cache)
    rows, entries = np.asarray(loaded.row_offsets), np.asarray(loaded.entry_offsets)
    width = int(np.diff(rows)[:images + 1].max())
    classes = len(loaded.meta.category_ids)
    function = tf.function(detection_generator._generate_detections_v2_class_aware)  # pylint: disable=protected-access
    seconds = []
    for i in range(images + 1):
        boxes = np.zeros((1, width, 1, 4), np.float32)
        scores = np.zeros((1, width, classes), np.float32)
        boxes[0, :rows[i + 1] - rows[i], 0] = loaded.row_boxes[rows[i]:rows[i + 1]]
        part = slice(entries[i], entries[i + 1])
        scores[0, np.asarray(loaded.entry_row[part]) - rows[i], np.asarray(loaded.entry_class[part])] = loaded.entry_score[part]
        start = time.perf_counter()
        outputs = function(tf.constant(boxes), tf.constant(scores), 5000, 0.05, 0.5, 100)
        outputs[0].numpy()
        seconds.append(time.perf_counter() - start)
    return float(np.mean(seconds[1:]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="images (default 5000, COCO val)")
    parser.add_argument("--rows-per-image", type=int, default=6100, help="candidate boxes per image (default 6100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-images", type=int, default=10,
                        help="images of the Model Garden v2 baseline (default 10; 0: no baseline)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "detsearch_bench_coco",
                        help="where the cache is made and kept (default: the temp folder)")
    parser.add_argument("--two-stage", action="store_true", help="also the two-stage 5x5x5x5 grid (see above)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cache, annotations = build_one_stage(args.work, args.images, args.rows_per_image, args.seed)
    loaded = read_cache(cache)
    entries, rows, on_disk = len(loaded.entry_score), len(loaded.row_boxes), disk_bytes(cache)
    del loaded
    print(f"cache: {args.images} images, {rows / 1e6:.1f}M rows, {entries / 1e6:.1f}M entries "
          f"({entries / args.images:,.0f} per image), {on_disk / 1e9:.2f} GB on disk")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [("batched", "batched", {}), ("v2, kernels compiled in the run", "v2", {"NUMBA_CACHE_DIR": str(tmp / "jit")}),
                ("v2, kernels cached", "v2", {"NUMBA_CACHE_DIR": str(tmp / "jit")})]
        for i, (label, version, extra) in enumerate(runs):
            out = tmp / f"out{i}"
            argv_ = [sys.executable, "-m", "detsearch", "sweep", "--cache", str(cache), "--annotations", str(annotations),
                     "--score-thresholds", SCORES, "--iou-thresholds", IOUS, "--nms-version", version,
                     "--out", str(out), "--no-progress"]
            wall, peak = run(label, argv_, {**os.environ, **extra})
            table = json.loads((out / "result.json").read_text())["table"]
            results[label] = (wall, peak, table)
            print(f"  {label:34s} {wall:7.1f} s   peak RSS {peak:5.2f} GB ({peak * 1e9 / on_disk:4.1f}x the cache)",
                  flush=True)
    batched = results["batched"][0]
    cold, warm = results["v2, kernels compiled in the run"], results["v2, kernels cached"]
    print(f"v2 / batched: {cold[0] / batched:.2f}x with the compile, {warm[0] / batched:.2f}x cached "
          f"(target: at most 2x)")
    same = cold[2] == warm[2]
    print(f"the two v2 tables identical: {same}")
    if args.baseline_images > 0:
        per_image = model_garden_v2_seconds_per_image(cache, args.baseline_images)
        grid = per_image * args.images * len(warm[2])
        print(f"Model Garden's v2 function: {per_image:.2f} s per image ({args.baseline_images} images), so "
              f"{per_image * args.images:,.0f} s per configuration and {grid:,.0f} s for the {len(warm[2])} configurations; "
              f"the v2 sweep is {grid / warm[0]:,.0f}x faster ({grid / cold[0]:,.0f}x with the compile; target: at least 100x, "
              f"COCO evaluation not counted in the baseline)")
    if args.two_stage:
        two, two_annotations = build(args.work, f"coco_two_stage_{args.images}_seed{args.seed}", args.seed, args.images,
                                     synthetic.make_two_stage_cache)
        with tempfile.TemporaryDirectory() as tmp:
            argv_ = [sys.executable, "-m", "detsearch", "sweep", "--cache", str(two), "--annotations", str(two_annotations),
                     "--nms-score-thresholds", "0,0.05,0.1,0.2,0.3", "--nms-iou-thresholds", "0.5,0.6,0.7,0.8,0.9",
                     "--score-thresholds", "0.01,0.05,0.1,0.3,0.5", "--iou-thresholds", "0.3,0.4,0.5,0.6,0.7",
                     "--out", str(Path(tmp) / "out"), "--no-progress"]
            wall, peak = run("two-stage", argv_, dict(os.environ))
            rows = len(json.loads((Path(tmp) / "out" / "result.json").read_text())["table"])
        print(f"two-stage: {args.images} images x 1000 proposals ({disk_bytes(two) / 1e9:.2f} GB on disk), {rows} "
              f"configurations: {wall:.1f} s, peak RSS {peak:.2f} GB (target: within 60 s)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
