"""Benchmark: what ``detsearch sweep --errors`` costs against the same sweep without it.

Each run is a whole process (``python -m detsearch sweep``, as a user runs it) on the same
inputs, timed with ``/usr/bin/time`` (wall, peak RSS):

- the COCO-size one-stage cache of ``tools/bench_coco.py`` (the project's seeded generator,
  5000 images, 80 categories, 44M entries; made once under ``--work`` and reused), Model Garden's
  default v2 NMS, the 20-configuration grid score 0.05,0.1,0.2,0.3,0.5 x IoU 0.4,0.5,0.6,0.7;
- the real COCO fixture (100 val2014 images, the fake-bbox results as raw candidates), the grid
  0.001,0.05,0.3,0.5 x 0.4,0.5,0.6,1.0.

Compiled kernels are warmed first (one small run with ``--errors``), so neither side pays the
compile. Printed: wall and peak RSS of each run and the ratios with/without; whether the
tables' 12 stats are identical (``--errors`` must not change them; exit status 1 otherwise).

Usage:
  python tools/bench_errors.py                    # about 3 minutes on 2 cores once the cache exists
  python tools/bench_errors.py --images 500       # a smaller synthetic set
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_coco import IOUS, SCORES, build_one_stage, disk_bytes, run  # noqa: E402

FIXTURE = HERE.parent / "tests" / "data" / "coco_val2014_100"


def sweep_twice(label: str, inputs: list[str], grid: list[str], out: Path, env: dict) -> bool:
    """Runs the sweep without and with --errors; prints both and their ratio; True when the
    tables' stats are identical."""
    figures = {}
    for errors in (False, True):
        target = out / f"{label}_{'errors' if errors else 'plain'}"
        argv = [sys.executable, "-m", "detsearch", "sweep", *inputs, *grid, "--out", str(target), "--no-progress"]
        figures[errors] = run(f"{label} {'--errors' if errors else 'plain'}", argv + (["--errors"] if errors else []), env)
    (plain_wall, plain_rss), (errors_wall, errors_rss) = figures[False], figures[True]
    tables = [json.loads((out / f"{label}_{name}" / "result.json").read_text())["table"] for name in ("plain", "errors")]
    same = [row["stats"] for row in tables[0]] == [row["stats"] for row in tables[1]]
    print(f"{label}: without --errors {plain_wall:.2f} s, {plain_rss:.2f} GB; with --errors {errors_wall:.2f} s, "
          f"{errors_rss:.2f} GB: {errors_wall / plain_wall:.2f}x the time (+{errors_wall - plain_wall:.2f} s), "
          f"{errors_rss / plain_rss:.2f}x the peak RSS; 12 stats identical: {same}", flush=True)
    return same


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "detsearch_bench_coco",
                        help="where the COCO-size cache is made once and reused (tools/bench_coco.py's)")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--rows-per-image", type=int, default=6100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    fixture = ["--detections", str(FIXTURE / "instances_val2014_fakebbox100_results.json"),
               "--annotations", str(FIXTURE / "instances_val2014_100.json")]
    fixture_grid = ["--score-thresholds", "0.001,0.05,0.3,0.5", "--iou-thresholds", "0.4,0.5,0.6,1.0"]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        # Warm the compiled kernels (NMS, matching, TIDE, the plots' imports) once.
        run("warm-up", [sys.executable, "-m", "detsearch", "sweep", *fixture, *fixture_grid, "--nms-version", "v2",
                        "--out", str(out / "warm"), "--no-progress", "--errors"], env)
        same = sweep_twice("COCO fixture (100 images, batched)", fixture, fixture_grid, out, env)
        cache, annotations = build_one_stage(args.work, args.images, args.rows_per_image, args.seed)
        print(f"cache {cache}: {disk_bytes(cache) / 1e9:.2f} GB on disk", flush=True)
        same &= sweep_twice(f"COCO-size cache ({args.images} images, v2)",
                            ["--cache", str(cache), "--annotations", str(annotations), "--nms-version", "v2"],
                            ["--score-thresholds", SCORES, "--iou-thresholds", IOUS], out, env)
    print(f"command: python tools/bench_errors.py --work {args.work} --images {args.images}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
