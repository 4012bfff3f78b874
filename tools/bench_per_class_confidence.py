"""Benchmark: does ``--per-class precision:P --confidence C`` hold its precision on unseen images?

A seeded synthetic one-stage set (``--images`` images, five categories of different frequency
and difficulty, a few crowd regions) goes through the sweep's own NMS and COCO matching once, at
one configuration (score_threshold 0.05, iou_threshold 0.5, batched NMS, caps 100). Then, for
each of ``--splits`` seeded half/half splits (`split_images`, as ``--holdout 0.5 --holdout-seed
S``), each category's cut is chosen on one half by ``precision:P`` with the lower bound at C and
without it (the point estimate), and the precision and recall of that cut are measured on the
other half. Printed: per category and pooled over the category-splits, how often the held-out
precision is ``>= P`` where the target was reached on the choosing half, the mean held-out
precision and recall, and the recall the bound gives up.

The cuts are chosen by the code ``detsearch sweep --per-class ... --confidence ...`` runs:
`ScoreCurve.from_detections` of the category's counted detections on the choosing half (what
`class_curves` builds), `choose_cut` and `cut_threshold`; a held-out detection is kept when
``score > float32_cut(threshold)`` (what `PerClassResult.held_out` counts). COCO matching is per
image, so the matches of the whole set restricted to a half are that half's. The first split is
also run through ``sweep(..., per_class=..., holdout=0.5)`` itself, and its thresholds and
held-out figures must equal the ones computed here (the exit status is 1 otherwise).

    python tools/bench_per_class_confidence.py                      # 200 splits of 4000 images: seconds
    python tools/bench_per_class_confidence.py --splits 1000 --images 20000 --precision 0.8 --confidence 0.99
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detsearch.detection.boxes import iou_xywh_pairs  # noqa: E402
from detsearch.detection.cache import CACHE_VERSION, CacheKind, CacheMeta, DetectionCache  # noqa: E402
from detsearch.detection.cocoeval import load_ground_truth  # noqa: E402
from detsearch.detection.sweep import PostProcessing, sweep  # noqa: E402
from detsearch.detection.sweep.cuts import float32_cut  # noqa: E402
from detsearch.detection.sweep.engine import SweepEngine  # noqa: E402
from detsearch.detection.sweep.grid import Grid  # noqa: E402
from detsearch.detection.sweep.holdout import split_images  # noqa: E402
from detsearch.detection.sweep.per_class import PerClassRule, ScoreCurve, choose_cut, cut_threshold  # noqa: E402
from detsearch.detection.sweep.settings import cache_kind  # noqa: E402
from detsearch.params import ParamSpec  # noqa: E402

# name, ground truth boxes per image, share detected, score logit per unit of IoU above 0.55,
# false positives per image, their mean score logit, localization jitter
CATEGORIES = (
    ("car (easy)", 1.2, 0.95, 10.0, 0.8, -3.5, 0.07),
    ("person (many)", 2.5, 0.90, 8.0, 2.5, -2.8, 0.11),
    ("bicycle (hard)", 0.5, 0.80, 6.0, 1.2, -2.2, 0.15),
    ("dog (rare)", 0.15, 0.90, 8.0, 0.3, -3.0, 0.10),
    ("kite (rare, hard)", 0.06, 0.75, 6.0, 0.4, -2.4, 0.14),
)
HEIGHT, WIDTH = 480, 640
SCORE_FLOOR = 0.01
PARAMS = {"score_threshold": 0.05, "iou_threshold": 0.5}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _clip(boxes: np.ndarray) -> np.ndarray:
    x0 = np.clip(boxes[:, 0], 0, WIDTH - 2)
    y0 = np.clip(boxes[:, 1], 0, HEIGHT - 2)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], x0 + 1, WIDTH)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], y0 + 1, HEIGHT)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def _jitter(rng, boxes: np.ndarray, scale) -> np.ndarray:
    scale = np.broadcast_to(np.asarray(scale, np.float64), (len(boxes),))
    cx = boxes[:, 0] + boxes[:, 2] * (0.5 + rng.normal(0, 1, len(boxes)) * scale)
    cy = boxes[:, 1] + boxes[:, 3] * (0.5 + rng.normal(0, 1, len(boxes)) * scale)
    w = boxes[:, 2] * np.exp(rng.normal(0, 1, len(boxes)) * scale * 1.4)
    h = boxes[:, 3] * np.exp(rng.normal(0, 1, len(boxes)) * scale * 1.4)
    return _clip(np.stack([cx - w / 2, cy - h / 2, w, h], axis=1))


def _random_boxes(rng, n: int) -> np.ndarray:
    side = np.exp(rng.normal(np.log(60.0), 0.7, n))
    aspect = np.exp(rng.normal(0.0, 0.4, n))
    w, h = np.clip(side * np.sqrt(aspect), 4, WIDTH * 0.9), np.clip(side / np.sqrt(aspect), 4, HEIGHT * 0.9)
    return np.round(np.stack([rng.uniform(0, 1, n) * (WIDTH - w), rng.uniform(0, 1, n) * (HEIGHT - h), w, h], axis=1), 2)


def make_set(seed: int, num_images: int) -> tuple[dict, DetectionCache]:
    """COCO instances and a one-stage cache: per category, ground truth boxes (1 % crowd), a
    candidate near each detected one scored by its IoU with it, duplicates around it scored
    lower (NMS removes most), and background false positives."""
    rng = np.random.default_rng(seed)
    image_ids = np.arange(1, num_images + 1)
    annotations, row_image, row_boxes, row_class, row_score = [], [], [], [], []
    for k, (_, rate, detected, slope, fp_rate, fp_logit, jitter) in enumerate(CATEGORIES):
        count = rng.poisson(rate, num_images)
        image = np.repeat(np.arange(num_images), count)
        boxes = _random_boxes(rng, len(image))
        crowd = rng.random(len(image)) < 0.01
        for i in range(len(image)):
            annotations.append({"image_id": int(image_ids[image[i]]), "category_id": k + 1, "bbox": boxes[i].tolist(),
                                "area": float(boxes[i, 2] * boxes[i, 3] * 0.8), "iscrowd": int(crowd[i])})
        hit = (~crowd) & (rng.random(len(image)) < detected)
        near = _jitter(rng, boxes[hit], jitter)
        quality = iou_xywh_pairs(near, boxes[hit], False)
        near_score = _sigmoid(slope * (quality - 0.55) + rng.normal(0, 1.0, len(near)))
        copies = rng.poisson(1.5, len(near))
        source = np.repeat(np.arange(len(near)), copies)
        duplicate = _jitter(rng, boxes[hit][source], jitter * 2.5)
        duplicate_score = near_score[source] * rng.uniform(0.2, 0.9, len(source))
        fp_count = rng.poisson(fp_rate, num_images)
        fp_image = np.repeat(np.arange(num_images), fp_count)
        fp_score = _sigmoid(rng.normal(fp_logit, 1.3, len(fp_image)))
        for images, group_boxes, scores in ((image[hit], near, near_score), (image[hit][source], duplicate, duplicate_score),
                                            (fp_image, _random_boxes(rng, len(fp_image)), fp_score)):
            row_image.append(images)
            row_boxes.append(group_boxes)
            row_class.append(np.full(len(images), k))
            row_score.append(scores)
    for number, annotation in enumerate(annotations, 1):
        annotation["id"] = number
    row_image, row_boxes = np.concatenate(row_image), np.concatenate(row_boxes)
    row_class, row_score = np.concatenate(row_class), np.clip(np.concatenate(row_score), 0.0, 0.999)
    keep = row_score >= SCORE_FLOOR
    order = np.lexsort((rng.random(int(keep.sum())), row_image[keep]))
    row_image, row_boxes = row_image[keep][order], row_boxes[keep][order]
    row_class, row_score = row_class[keep][order], row_score[keep][order]
    dataset = {
        "images": [{"id": int(i), "height": HEIGHT, "width": WIDTH} for i in image_ids],
        "categories": [{"id": k + 1, "name": c[0]} for k, c in enumerate(CATEGORIES)],
        "annotations": annotations,
    }
    meta = CacheMeta(version=CACHE_VERSION, kind=CacheKind.ONE_STAGE, image_ids=tuple(int(i) for i in image_ids),
                     image_sizes=((HEIGHT, WIDTH),) * num_images, category_ids=tuple(range(1, len(CATEGORIES) + 1)),
                     score_floor=SCORE_FLOOR, source={"synthetic": "tools/bench_per_class_confidence.py", "seed": seed})
    offsets = np.searchsorted(row_image, np.arange(num_images + 1)).astype(np.int64)
    yxyx = np.stack([row_boxes[:, 1], row_boxes[:, 0], row_boxes[:, 1] + row_boxes[:, 3], row_boxes[:, 0] + row_boxes[:, 2]], axis=1)
    cache = DetectionCache.from_arrays(meta, row_offsets=offsets, row_boxes=yxyx.astype(np.float32), entry_offsets=offsets,
                                       entry_row=np.arange(len(row_image), dtype=np.int32), entry_class=row_class.astype(np.int32),
                                       entry_score=row_score.astype(np.float32))
    return dataset, cache


def whole_set_matches(cache: DetectionCache, gt):
    """The configuration's output on every image: its matches, above its score threshold."""
    spec = ParamSpec(score_threshold=[PARAMS["score_threshold"]], iou_threshold=[PARAMS["iou_threshold"]])
    post = PostProcessing()
    grid = Grid.build(cache_kind(cache), spec, post)
    post = grid.nms_post_processing(post).checked(cache, spec)
    engine = SweepEngine(cache, gt, grid, post)
    matches = engine.output(grid.key_of(PARAMS), None).matches
    cut = engine.score_cut(PARAMS["score_threshold"])
    return matches.select(matches.scores > cut, np.arange(len(matches.scores))), engine.matcher


def choose(scores, true_positive, counted, ground_truth: int, rule: PerClassRule) -> float:
    """One category's per-class threshold on the choosing half, as `per_class_thresholds` makes
    it: the cut `choose_cut` picks on the counted detections, written by `cut_threshold` over
    all the category's output there."""
    curve = ScoreCurve.from_detections(scores[counted], true_positive[counted], ground_truth)
    index, reached = choose_cut(curve, rule)
    if rule.kind == "recall" and not reached:
        return PARAMS["score_threshold"], reached
    return cut_threshold(curve.scores[index] if index >= 0 else None, scores, PARAMS["score_threshold"]), reached


def held_figures(scores, true_positive, counted, ground_truth: int, threshold: float) -> tuple[float | None, float]:
    """(precision, recall) of the held-out half's counted detections with ``score >
    float32_cut(threshold)``."""
    kept = counted & (scores > float32_cut(threshold))
    tp = int(np.count_nonzero(true_positive[kept]))
    return (tp / int(kept.sum()) if kept.any() else None), tp / ground_truth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=200, help="seeded half/half splits (default 200)")
    parser.add_argument("--images", type=int, default=4000, help="synthetic images (default 4000)")
    parser.add_argument("--precision", type=float, default=0.9, help="the precision target P (default 0.9)")
    parser.add_argument("--confidence", type=float, default=0.95, help="the confidence C (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="the synthetic set's seed (default 0)")
    args = parser.parse_args()
    started = time.perf_counter()
    print("$ " + shlex.join(["python", "tools/bench_per_class_confidence.py", *sys.argv[1:]]))
    dataset, cache = make_set(args.seed, args.images)
    gt = load_ground_truth(dataset)
    matches, matcher = whole_set_matches(cache, gt)
    image = matches.image_pos
    category = matches.category_pos
    scores = matches.scores
    counted = matches.counted[:, 0, 0]
    true_positive = matches.true_positive[:, 0, 0]
    # non-ignored ground truth (area all: every non-crowd box) per image and category position
    per_image = np.zeros((len(cache.meta.image_ids), len(CATEGORIES)), np.int64)
    image_position = {int(i): p for p, i in enumerate(matcher.image_ids)}
    category_position = {int(c): p for p, c in enumerate(matcher.category_ids)}
    for annotation in dataset["annotations"]:
        if not annotation["iscrowd"]:
            per_image[image_position[annotation["image_id"]], category_position[annotation["category_id"]]] += 1
    assert (per_image.sum(axis=0) == matcher.ground_truth_counts()).all()
    names = [next(c["name"] for c in dataset["categories"] if c["id"] == int(i)) for i in matcher.category_ids]
    print(f"{args.images} synthetic images (seed {args.seed}), {len(matches)} detections at {PARAMS} "
          f"({time.perf_counter() - started:.1f} s to build and match)")
    rules = {"point": PerClassRule.parse(f"precision:{args.precision:g}"),
             "bound": PerClassRule.parse(f"precision:{args.precision:g}", confidence=args.confidence)}
    # outcome[method][k]: per split (reached on the choosing half, held-out precision, held-out recall)
    outcome = {method: [[] for _ in names] for method in rules}
    mismatches = 0
    for split in range(args.splits):
        chosen_positions, _ = split_images(cache.meta.image_ids, 0.5, split, gt)
        choosing = np.zeros(len(cache.meta.image_ids), bool)
        choosing[chosen_positions] = True
        on_choosing = choosing[image]
        gt_choosing = per_image[choosing].sum(axis=0)
        gt_held = per_image[~choosing].sum(axis=0)
        thresholds = {}
        for k in range(len(names)):
            mine = category == k
            a, b = mine & on_choosing, mine & ~on_choosing
            for method, rule in rules.items():
                threshold, reached = choose(scores[a], true_positive[a], counted[a], int(gt_choosing[k]), rule)
                precision, recall = held_figures(scores[b], true_positive[b], counted[b], int(gt_held[k]), threshold)
                outcome[method][k].append((reached, precision, recall))
                thresholds[method, k] = (threshold, precision, recall)
        if split == 0:  # the sweep itself, --holdout 0.5 --holdout-seed 0
            for method, rule in rules.items():
                result = sweep(cache, gt, ParamSpec(score_threshold=[PARAMS["score_threshold"]],
                                                    iou_threshold=[PARAMS["iou_threshold"]]),
                               per_class=rule, holdout=0.5, seed=0, replicates=2)
                for k, entry in enumerate(result.per_class.classes):
                    if (entry.score_threshold, entry.holdout_precision, entry.holdout_recall) != thresholds[method, k]:
                        mismatches += 1
                        print(f"MISMATCH with sweep(): {method} {names[k]}: {entry} vs {thresholds[method, k]}")
            print("split 0 against sweep(per_class=..., holdout=0.5, seed=0): "
                  + ("thresholds and held-out figures identical" if not mismatches else f"{mismatches} differences"))
    target = args.precision
    print(f"\nprecision:{target:g}, point estimate vs Clopper-Pearson lower bound at {args.confidence:g}; "
          f"{args.splits} half/half splits; held out: the other half")
    print("| category | gt boxes | method | reached (choosing half) | held-out precision >= P | mean held-out precision "
          "| mean held-out recall |")
    print("|---|---:|---|---:|---:|---:|---:|")
    pooled = {method: [0, 0] for method in rules}
    for k, name in enumerate(names):
        for method in rules:
            rows = outcome[method][k]
            reached = [(p, r) for ok, p, r in rows if ok and p is not None]
            met = sum(p >= target for p, _ in reached)
            pooled[method][0] += met
            pooled[method][1] += len(reached)
            rate = f"{met / len(reached):.3f} ({met}/{len(reached)})" if reached else "-"
            mean_precision = f"{np.mean([p for p, _ in reached]):.4f}" if reached else "-"
            mean_recall = f"{np.mean([r for _, r in reached]):.4f}" if reached else "-"
            print(f"| {name} | {int(per_image[:, k].sum())} | {method} | {sum(ok for ok, _, _ in rows)}/{len(rows)} | {rate} | "
                  f"{mean_precision} | {mean_recall} |")
    print("\npooled over category-splits where the target was reached on the choosing half:")
    for method in rules:
        met, total = pooled[method]
        print(f"  {method}: held-out precision >= {target:g} in {met}/{total} = {met / total:.3f}" if total else f"  {method}: none reached")
    print("recall given up for the bound (mean held-out recall, point minus bound, splits where both reached):")
    for k, name in enumerate(names):
        pairs = [(p[2], b[2]) for p, b in zip(outcome["point"][k], outcome["bound"][k]) if p[0] and b[0]]
        if pairs:
            given = np.mean([p - b for p, b in pairs])
            print(f"  {name}: {given:+.4f} ({np.mean([p for p, _ in pairs]):.4f} -> {np.mean([b for _, b in pairs]):.4f}, "
                  f"{len(pairs)} splits)")
    print(f"\n{time.perf_counter() - started:.1f} s")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
