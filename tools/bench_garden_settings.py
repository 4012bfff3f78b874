"""Benchmark: each Model Garden post-processing setting the sweep reproduces, on the demo (the
shipped ``retinanet_demo`` RetinaNet, or the demo's Faster R-CNN; the demo's validation images),
as a user runs it: one ``detsearch search-det ... --params-override ... --verify`` process per
setting.

Per setting it prints, from the run's ``summary.json``:

- the configurations swept and the rows held against Model Garden's own evaluation (the task's
  ``validation_step`` and ``COCOEvaluator`` at the row's thresholds, the config as written), the
  stats compared and the largest ``|float32(sweep) - Model Garden|`` over them (0 means equal
  to the bit);
- the time to record the cache (one pass of the model without NMS), the sweep's time (every
  configuration), and Model Garden's own evaluation per configuration (``--verify``'s time over
  its rows: the model, its NMS and pycocotools on every image); their ratio is what one cached
  pass costs against evaluating one configuration the way Model Garden does.

The settings: Model Garden's default v2 with its bfloat16 validation data; v2 under the
ResNet-FPN experiments' mixed bfloat16; v2 class-agnostic; v1 with soft NMS (the sigma an axis,
0 being TensorFlow's hard NMS kernel); a crowded scene (300 detections per image, COCO's maxDets
300). v1 loops over a static batch size, so its run drops the last partial batch. And a Faster
R-CNN (``fasterrcnn_resnet18_demo``) at ``fasterrcnn_resnetfpn_coco``'s default precisions
(bfloat16 validation data, mixed bfloat16), all four thresholds swept: ``search-det --model
faster_rcnn``'s demo detector, trained first by Model Garden's trainer in float32 (its steps on
the demo's TFRecords, a few minutes; mixed precision keeps float32 weights) unless
``--fasterrcnn-model-dir`` names such a run.

Usage:
  python tools/bench_garden_settings.py                 # about 20 minutes on 2 cores
  python tools/bench_garden_settings.py --only v1_soft  # one setting
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from detsearch.detection.cocoeval import STAT_NAMES

GENERATOR = "task.model.detection_generator"
SETTINGS = {
    "v2_bf16_data": (f"{GENERATOR}.nms_version=v2,task.validation_data.dtype=bfloat16", []),
    "v2_mixed_bf16": (f"{GENERATOR}.nms_version=v2,runtime.mixed_precision_dtype=bfloat16", []),
    "v2_class_agnostic": (f"{GENERATOR}.nms_version=v2,{GENERATOR}.use_class_agnostic_nms=true", []),
    "v1_soft": (f"{GENERATOR}.nms_version=v1,{GENERATOR}.soft_nms_sigma=0.5,task.validation_data.drop_remainder=true",
                ["--soft-nms-sigmas", "0,0.3"]),
    "v2_crowded": (f"{GENERATOR}.nms_version=v2,{GENERATOR}.max_num_detections=300,task.max_num_eval_detections=300",
                   []),
}
FASTER_RCNN = "fasterrcnn_default_precisions"
SETTINGS[FASTER_RCNN] = ("runtime.mixed_precision_dtype=bfloat16,task.validation_data.dtype=bfloat16",
                         ["--nms-score-thresholds", "0,0.05,0.3", "--nms-iou-thresholds", "0.5,0.7"])
GRID = ["--score-thresholds", "0.05,0.1,0.3,0.5", "--iou-thresholds", "0.4,0.5,0.6,0.7"]


def train_faster_rcnn(model_dir: Path) -> Path:
    """The demo's Faster R-CNN (``search-det --model faster_rcnn``'s config: the demo's TFRecords,
    its steps) trained by Model Garden's own trainer in float32, in a process of its own."""
    code = ("import sys; from detsearch.models import pipeline; "
            "name, config = pipeline.demo_config('faster_rcnn'); pipeline.train(config, sys.argv[1])")
    done = subprocess.run([sys.executable, "-c", code, str(model_dir)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training the Faster R-CNN: exit {done.returncode}\n{done.stderr[-2000:]}")
    return model_dir


def run(name: str, out: Path, verify_rows: int, fasterrcnn_model_dir: Path | None = None) -> dict:
    override, extra = SETTINGS[name]
    if name == FASTER_RCNN:
        detector = ["--model", "faster_rcnn", "--model-dir", str(fasterrcnn_model_dir)]
    else:
        detector = ["--model-dir", "retinanet_demo"]
    command = [sys.executable, "-m", "detsearch", "search-det", *detector, "--params-override",
               override, *GRID, *extra, "--verify", "--verify-rows", str(verify_rows), "--out", str(out / name)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    summary = json.loads((out / name / "summary.json").read_text())
    verification = summary["model_garden_verification"]
    diffs = [abs(float(np.float32(ours)) - float(np.float32(theirs)))
             for row in verification["rows"]
             for stat, ours, theirs in zip(STAT_NAMES, row["ours"], row["theirs"]) if stat not in row["not_compared"]]
    seconds = summary["stage_seconds"]
    rows = len(verification["rows"])
    return {"name": name, "images": summary["images"], "configurations": summary["configurations"], "rows": rows,
            "compared": verification["stats_compared"], "max_diff": max(diffs), "mismatches": len(verification["mismatches"]),
            "record": seconds["record"], "sweep": seconds["sweep"], "garden_per_row": seconds["verify"] / rows,
            "wall": wall, "map": summary["chosen"]["map"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SETTINGS), action="append", help="run only these settings")
    parser.add_argument("--verify-rows", type=int, default=4, help="rows held against Model Garden per setting (default 4)")
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--fasterrcnn-model-dir", default=None,
                        help="a trained run of the demo's Faster R-CNN to use (default: train one)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_garden_"))
    names = args.only or list(SETTINGS)
    fasterrcnn = Path(args.fasterrcnn_model_dir) if args.fasterrcnn_model_dir else None
    if FASTER_RCNN in names and fasterrcnn is None:
        started = time.perf_counter()
        fasterrcnn = train_faster_rcnn(out / "fasterrcnn_run")
        print(f"Faster R-CNN trained in {time.perf_counter() - started:.0f} s: {fasterrcnn}", flush=True)
    results = []
    for name in names:
        result = run(name, out, args.verify_rows, fasterrcnn)
        results.append(result)
        print(f"{name}: done in {result['wall']:.0f} s", flush=True)
    print(f"\n{'setting':<29} {'images':>6} {'configs':>7} {'rows':>4} {'stats':>5} {'max|diff|':>9} {'record s':>8} "
          f"{'sweep s':>7} {'MG eval s/config':>16} {'record/MG':>9} {'mAP':>6}")
    for r in results:
        print(f"{r['name']:<29} {r['images']:>6} {r['configurations']:>7} {r['rows']:>4} {r['compared']:>5} "
              f"{r['max_diff']:>9.3g} {r['record']:>8.1f} {r['sweep']:>7.1f} {r['garden_per_row']:>16.1f} "
              f"{r['record'] / r['garden_per_row']:>9.2f} {r['map']:>6.4f}")
    print(f"\nruns in {out}")
    return 1 if any(r["mismatches"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
