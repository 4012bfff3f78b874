"""Cost of caching raw predictions vs plain inference, for both detectors on the tiny preset.

    python tools/bench_cache.py                        # both models, 200 demo val images
    python tools/bench_cache.py --models ssd --images 400

For each model it uses a trained run (``--ssd_run`` / ``--faster_rcnn_run``, default
``out/search_det_MODEL/train`` as ``tools/search_det.py`` leaves it) or, when there is none,
trains one for ``--train_steps`` steps in a temporary directory. The val images are decoded into
batches first, so neither side pays for input. Then, in one run:

- plain inference: ``Detector.predict`` (Model Garden's post-processing at its default
  thresholds), images per second;
- caching: ``Detector.cache_records`` (SSD: decoded candidates and per-class scores before NMS;
  Faster R-CNN: every pre-NMS RPN proposal, with the second stage run on every one of them, and
  again with the second stage only on the proposals that ``--first-stage-ious`` (the
  ``nms_iou_threshold`` values ``tools/search_det.py`` sweeps by default) at any
  ``nms_score_threshold >= 0`` can keep) plus ``CacheWriter`` to disk, images per second, and
  cache bytes per image.

Prints the figures and the ratio (target: caching costs at most 1.5x plain inference).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH_SIZE = 8


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def batches(detector, dataset, count: int):
    from detsearch.datasets.detection import make_tf_dataset

    data = make_tf_dataset(dataset, detector.image_size, BATCH_SIZE, training=False, shuffle=False)
    out = []
    for batch in data.take(count // BATCH_SIZE):
        out.append({k: v.numpy() for k, v in batch.items()})
    return out


def detector_for(model: str, run: Path | None, train_steps: int, work: Path):
    from detsearch.models.data import dataset_categories, load_dataset
    from detsearch.models.detector import build_detector
    from detsearch.models.restore import latest_checkpoint, load_detector
    from detsearch.models.train import train_detector

    if run is not None and latest_checkpoint(run) is not None:
        return load_detector(run)[0], str(run)
    train_set = load_dataset("demo", "train")
    ids, names = dataset_categories(train_set)
    detector = build_detector(model, "tiny", ids, names)
    train_detector(detector, train_set, work / model, steps=train_steps, batch_size=detector.preset.batch_size,
                   learning_rate=0.02, momentum=0.9, weight_decay=1e-4, warmup_steps=min(100, train_steps // 10))
    return load_detector(work / model)[0], f"trained {train_steps} steps"


def bench(model: str, args, work: Path) -> list[dict]:
    from detsearch.detection.cache import CacheWriter
    from detsearch.models.data import load_dataset

    run = getattr(args, f"{model}_run") or f"out/search_det_{model}/train"
    detector, origin = detector_for(model, Path(run), args.train_steps, work)
    val = load_dataset("demo", "val", max_images=args.images)
    data = batches(detector, val, args.images)
    images = sum(len(b["image_id"]) for b in data)

    detector.predict(data[0])  # trace
    started = time.perf_counter()
    for batch in data:
        detector.predict(batch)
    plain = time.perf_counter() - started

    variants = [("all proposals" if model == "faster_rcnn" else "", None)]
    if model == "faster_rcnn":
        ious = [float(v) for v in args.first_stage_ious.split(",")]
        variants.append((f"nms_iou {','.join(f'{v:g}' for v in ious)}", ious))
    results = []
    for name, ious in variants:
        if ious is not None:
            detector.set_first_stage(ious, 0.0)
        meta = detector.cache_meta()
        detector.cache_records(data[0], args.score_floor)  # trace
        path = work / f"{model}_cache_{len(results)}"
        started = time.perf_counter()
        writer = CacheWriter(path, kind=detector.kind, category_ids=detector.category_ids,
                             score_floor=args.score_floor, **meta)
        for batch in data:
            for record in detector.cache_records(batch, args.score_floor):
                writer.add_image(**record)
        writer.close()
        caching = time.perf_counter() - started
        results.append({"model": f"{model} {name}".strip(), "origin": origin, "images": images,
                        "plain_ips": images / plain, "cache_ips": images / caching, "ratio": caching / plain,
                        "bytes_per_image": directory_bytes(path) / images})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="ssd,faster_rcnn")
    parser.add_argument("--images", type=int, default=200, help="demo val images (a multiple of 8)")
    parser.add_argument("--score_floor", type=float, default=0.01)
    parser.add_argument("--train_steps", type=int, default=300, help="when no trained run is found")
    parser.add_argument("--ssd_run", default=None)
    parser.add_argument("--faster_rcnn_run", default=None)
    parser.add_argument("--first-stage-ious", dest="first_stage_ious", default="0.5,0.6,0.7,0.8",
                        help="faster_rcnn: the nms_iou_threshold values of the narrowed cache (default: "
                             "tools/search_det.py's grid)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        results = [r for model in args.models.split(",") for r in bench(model, args, Path(tmp))]
    print(f"\n{'model':<36} {'detector':<28} {'images':>6} {'plain img/s':>12} {'cache img/s':>12} "
          f"{'cost ratio':>10} {'bytes/image':>12}")
    for r in results:
        verdict = "MET" if r["ratio"] <= 1.5 else "MISSED"
        print(f"{r['model']:<36} {r['origin'][-28:]:<28} {r['images']:>6} {r['plain_ips']:>12.1f} "
              f"{r['cache_ips']:>12.1f} {r['ratio']:>9.2f}x {r['bytes_per_image']:>12,.0f}  (target <= 1.5x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
