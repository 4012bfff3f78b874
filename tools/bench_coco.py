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

Usage:
  python tools/bench_coco.py                    # about 10 minutes on 2 cores, 1st run + cache
  python tools/bench_coco.py --images 500       # a smaller set
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


def build(work: Path, images: int, rows_per_image: int, seed: int) -> tuple[Path, Path]:
    """The cache and annotations under ``work``, made unless a finished pair for these
    parameters is there."""
    name = f"coco_{images}x{rows_per_image}_seed{seed}"
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
    write_cache(cache, synthetic.make_one_stage_cache(rng, gt, rows_per_image=rows_per_image))
    annotations.write_text(json.dumps(gt))
    print(f"made {cache} in {time.perf_counter() - start:.0f} s", flush=True)
    return cache, annotations


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="images (default 5000, COCO val)")
    parser.add_argument("--rows-per-image", type=int, default=6100, help="candidate boxes per image (default 6100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "detsearch_bench_coco",
                        help="where the cache is made and kept (default: the temp folder)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cache, annotations = build(args.work, args.images, args.rows_per_image, args.seed)
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
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
