"""Benchmark: the threshold sweep against re-running NMS + COCO evaluation per configuration.

Generates a seeded synthetic evaluation set at COCO val scale (default 5000 images, 80
categories with COCO's ids, about 7 ground-truth boxes per image with COCO-like sizes: about
41% small, 34% medium, 24% large; 1% crowd regions; the ``area`` field smaller than the box,
as polygon areas are), and raw predictions for it:

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

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detsearch.detection import cocoeval  # noqa: E402
from detsearch.detection.boxes import yxyx_to_xywh  # noqa: E402
from detsearch.detection.cache import CacheMeta, DetectionCache  # noqa: E402
from detsearch.params import ParamSpec  # noqa: E402

COCO_CATEGORY_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
]
IMAGE_SIZES = [(480, 640), (640, 480), (427, 640), (640, 427), (375, 500), (500, 375), (512, 640)]
SCORE_FLOOR = 0.01
NUM_PROPOSALS = 500

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


# --------------------------------------------------------------------------------------------
# synthetic data


def make_ground_truth(rng: np.random.Generator, num_images: int) -> dict:
    """COCO instances dict with COCO-like statistics."""
    image_ids = np.sort(rng.choice(600_000, num_images, replace=False)) + 1
    sizes = np.array(IMAGE_SIZES)[rng.integers(0, len(IMAGE_SIZES), num_images)]
    counts = rng.poisson(7.3, num_images)
    image_of = np.repeat(np.arange(num_images), counts)
    total = int(counts.sum())
    weights = 1.0 / np.arange(1, 81) ** 0.9
    weights[0] = 8.0 * weights[1]  # person dominates, as in COCO
    weights /= weights.sum()
    category = rng.choice(80, total, p=weights)
    side = np.exp(rng.normal(np.log(45.0), 0.95, total))
    aspect = np.exp(rng.normal(0.0, 0.5, total))
    height_img, width_img = sizes[image_of, 0], sizes[image_of, 1]
    w = np.clip(side * np.sqrt(aspect), 2.0, width_img * 0.98)
    h = np.clip(side / np.sqrt(aspect), 2.0, height_img * 0.98)
    x = rng.uniform(0, 1, total) * (width_img - w)
    y = rng.uniform(0, 1, total) * (height_img - h)
    boxes = np.round(np.stack([x, y, w, h], axis=1), 2)
    crowd = rng.random(total) < 0.01
    area = np.round(boxes[:, 2] * boxes[:, 3] * rng.uniform(0.45, 0.95, total), 2)
    annotations = [
        {
            "id": int(i + 1),
            "image_id": int(image_ids[image_of[i]]),
            "category_id": COCO_CATEGORY_IDS[int(category[i])],
            "bbox": boxes[i].tolist(),
            "area": float(area[i]),
            "iscrowd": int(crowd[i]),
        }
        for i in range(total)
    ]
    return {
        "images": [{"id": int(i), "height": int(s[0]), "width": int(s[1])} for i, s in zip(image_ids, sizes)],
        "categories": [{"id": c, "name": f"category_{c}"} for c in COCO_CATEGORY_IDS],
        "annotations": annotations,
    }


def _gt_arrays(gt: dict):
    image_index = {image["id"]: i for i, image in enumerate(gt["images"])}
    anns = gt["annotations"]
    image = np.array([image_index[a["image_id"]] for a in anns], np.int64)
    category = np.array([COCO_CATEGORY_IDS.index(a["category_id"]) for a in anns], np.int64)
    boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    crowd = np.array([a["iscrowd"] for a in anns], bool)
    sizes = np.array([(im["height"], im["width"]) for im in gt["images"]], np.float64)
    return image, category, boxes, crowd, sizes


def _iou_xywh_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    width = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    height = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)


def _jitter(rng, boxes: np.ndarray, scale: float, sizes: np.ndarray) -> np.ndarray:
    cx = boxes[:, 0] + boxes[:, 2] / 2 + rng.normal(0, scale, len(boxes)) * boxes[:, 2]
    cy = boxes[:, 1] + boxes[:, 3] / 2 + rng.normal(0, scale, len(boxes)) * boxes[:, 3]
    w = boxes[:, 2] * np.exp(rng.normal(0, scale * 1.4, len(boxes)))
    h = boxes[:, 3] * np.exp(rng.normal(0, scale * 1.4, len(boxes)))
    return _clip_xywh(np.stack([cx - w / 2, cy - h / 2, w, h], axis=1), sizes)


def _clip_xywh(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    x0 = np.clip(boxes[:, 0], 0, sizes[:, 1] - 1)
    y0 = np.clip(boxes[:, 1], 0, sizes[:, 0] - 1)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], x0 + 1, sizes[:, 1])
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], y0 + 1, sizes[:, 0])
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def _random_boxes(rng, n: int, sizes: np.ndarray) -> np.ndarray:
    side = np.exp(rng.normal(np.log(60.0), 1.0, n))
    aspect = np.exp(rng.normal(0.0, 0.5, n))
    w = np.clip(side * np.sqrt(aspect), 2.0, sizes[:, 1] * 0.98)
    h = np.clip(side / np.sqrt(aspect), 2.0, sizes[:, 0] * 0.98)
    x = rng.uniform(0, 1, n) * (sizes[:, 1] - w)
    y = rng.uniform(0, 1, n) * (sizes[:, 0] - h)
    return np.stack([x, y, w, h], axis=1)


def _xywh_to_yxyx32(boxes: np.ndarray) -> np.ndarray:
    return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 1] + boxes[:, 3], boxes[:, 0] + boxes[:, 2]], axis=1).astype(np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _rows(rng, gt, rows_per_image: int, near_mean: float, near_cap: float, jitter: float):
    """Candidate boxes per image: jittered copies of ground truth, then background boxes."""
    gt_image, gt_category, gt_boxes, gt_crowd, sizes = _gt_arrays(gt)
    num_images = len(gt["images"])
    near_count = rng.poisson(near_mean, len(gt_image)) * (~gt_crowd)
    source = np.repeat(np.arange(len(gt_image)), near_count)
    image = gt_image[source]
    # cap near rows per image (keep a random subset)
    key = rng.random(len(source))
    order = np.lexsort((key, image))
    source, image = source[order], image[order]
    first = np.searchsorted(image, np.arange(num_images))
    rank = np.arange(len(image)) - first[image]
    keep = rank < int(rows_per_image * near_cap)
    source, image = source[keep], image[keep]
    near_per_image = np.bincount(image, minlength=num_images)
    near_boxes = _jitter(rng, gt_boxes[source], jitter, sizes[image])
    quality = _iou_xywh_rows(near_boxes, gt_boxes[source])
    background_per_image = rows_per_image - near_per_image
    bg_image = np.repeat(np.arange(num_images), background_per_image)
    bg_boxes = _random_boxes(rng, len(bg_image), sizes[bg_image])
    row_image = np.concatenate([image, bg_image])
    row_boxes = np.concatenate([near_boxes, bg_boxes])
    row_source = np.concatenate([source, np.full(len(bg_image), -1)])
    row_quality = np.concatenate([quality, np.zeros(len(bg_image))])
    order = np.lexsort((rng.random(len(row_image)), row_image))  # anchors in arbitrary order
    return (
        row_image[order],
        row_boxes[order],
        row_source[order],
        row_quality[order],
        (gt_image, gt_category, gt_boxes, sizes),
    )


def _class_entries(rng, primary_class, primary_score, num_classes: int):
    """Entries (row, class, score, is_primary): the primary class plus ~1.3 weaker other classes
    per row, scores below the floor dropped, one entry per (row, class), sorted by (row, class)."""
    n = len(primary_class)
    extra = rng.poisson(1.3, n)
    extra_row = np.repeat(np.arange(n), extra)
    extra_class = rng.integers(0, num_classes, len(extra_row))
    extra_score = primary_score[extra_row] * rng.uniform(0.02, 0.45, len(extra_row))
    row = np.concatenate([np.arange(n), extra_row])
    cls = np.concatenate([primary_class, extra_class])
    score = np.concatenate([primary_score, extra_score])
    primary = np.r_[np.ones(n, bool), np.zeros(len(extra_row), bool)]
    keep = score >= SCORE_FLOOR
    row, cls, score, primary = row[keep], cls[keep], score[keep], primary[keep]
    # one entry per (row, class), the highest score
    order = np.lexsort((-score, cls, row))
    row, cls, score, primary = row[order], cls[order], score[order], primary[order]
    first = np.r_[True, (row[1:] != row[:-1]) | (cls[1:] != cls[:-1])]
    return row[first], cls[first], score[first], primary[first]


def _unique_per_image(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float32)
    for _ in range(50):
        order = np.lexsort((values, image))
        v, im = values[order], image[order]
        duplicate = (v[1:] == v[:-1]) & (im[1:] == im[:-1])
        if not duplicate.any():
            return values
        bump = order[1:][duplicate]
        values[bump] = np.nextafter(values[bump], np.float32(2.0))
    raise RuntimeError("could not make scores unique")


def make_one_stage_cache(rng, gt: dict, rows_per_image: int = 1000) -> DetectionCache:
    row_image, row_boxes, source, quality, (gt_image, gt_category, _, _) = _rows(rng, gt, rows_per_image, 25.0, 0.7, 0.12)
    num_classes = len(COCO_CATEGORY_IDS)
    near = source >= 0
    primary = rng.integers(0, num_classes, len(row_image))
    correct = near & (rng.random(len(row_image)) < 0.92)
    primary[correct] = gt_category[source[correct]]
    score = np.where(
        near,
        _sigmoid(10.0 * (quality - 0.6) + rng.normal(0, 1.2, len(row_image))),
        SCORE_FLOOR + rng.exponential(0.03, len(row_image)),
    )
    surprise = (~near) & (rng.random(len(row_image)) < 0.03)
    score[surprise] = rng.uniform(0.05, 0.7, int(surprise.sum()))
    score = np.clip(score, 0.0, 0.999)
    entry_row, entry_class, entry_score, _ = _class_entries(rng, primary, score, num_classes)
    entry_image = row_image[entry_row]
    entry_score = _unique_per_image(entry_image, entry_score)
    return _cache("one_stage", gt, row_image, _xywh_to_yxyx32(row_boxes), entry_row, entry_class, entry_score)


def make_two_stage_cache(rng, gt: dict, rows_per_image: int = 1000, num_proposals: int = NUM_PROPOSALS) -> DetectionCache:
    row_image, row_boxes, source, quality, (gt_image, gt_category, gt_boxes, sizes) = _rows(rng, gt, rows_per_image, 40.0, 0.8, 0.2)
    num_classes = len(COCO_CATEGORY_IDS)
    n = len(row_image)
    near = source >= 0
    objectness = np.where(near, _sigmoid(7.0 * (quality - 0.5) + rng.normal(0, 1.0, n)), rng.beta(1.0, 12.0, n))
    objectness = _unique_per_image(row_image, np.clip(objectness, 0.0, 0.999))
    level = np.clip(np.floor(4 + np.log2(np.sqrt(row_boxes[:, 2] * row_boxes[:, 3]) / 224.0)), 2, 6).astype(np.int32) - 2
    primary = rng.integers(0, num_classes, n)
    correct = near & (rng.random(n) < 0.9)
    primary[correct] = gt_category[source[correct]]
    # placeholder scores: second-stage scores of refined boxes are set from their quality below
    score = np.where(near, 0.5, SCORE_FLOOR + rng.exponential(0.03, n))
    entry_row, entry_class, entry_score, entry_primary = _class_entries(rng, primary, score, num_classes)
    # second-stage boxes: the proposal, refined toward the ground truth for the right class
    e_source = source[entry_row]
    refine = (e_source >= 0) & (entry_class == gt_category[np.maximum(e_source, 0)])
    proposal = row_boxes[entry_row]
    target = gt_boxes[np.maximum(e_source, 0)]
    pull = np.where(refine, rng.uniform(0.4, 0.95, len(entry_row)), 0.0)[:, None]
    boxes = proposal + (target - proposal) * pull + rng.normal(0, 1.5, (len(entry_row), 4))
    boxes = _clip_xywh(boxes, sizes[row_image[entry_row]])
    refined_quality = _iou_xywh_rows(boxes, target)
    second = _sigmoid(9.0 * (refined_quality - 0.55) + rng.normal(0, 1.2, len(entry_row)))
    wrong_class = entry_primary & near[entry_row] & ~refine  # a near proposal, the wrong class
    background = SCORE_FLOOR + rng.exponential(0.04, len(entry_row))
    entry_score = np.where(refine, second, np.where(wrong_class, background, entry_score))
    entry_score = np.clip(entry_score, SCORE_FLOOR, 0.999)
    entry_score = _unique_per_image(row_image[entry_row], entry_score)
    return _cache(
        "two_stage",
        gt,
        row_image,
        _xywh_to_yxyx32(row_boxes),
        entry_row,
        entry_class,
        entry_score,
        objectness=objectness,
        level=level,
        entry_boxes=_xywh_to_yxyx32(boxes),
        num_proposals=num_proposals,
    )


def _cache(kind, gt, row_image, row_boxes, entry_row, entry_class, entry_score, *, objectness=None, level=None, entry_boxes=None, num_proposals=None):
    num_images = len(gt["images"])
    row_offsets = np.searchsorted(row_image, np.arange(num_images + 1)).astype(np.int64)
    entry_image = row_image[entry_row]
    entry_offsets = np.searchsorted(entry_image, np.arange(num_images + 1)).astype(np.int64)
    meta = CacheMeta(
        version=1,
        kind=kind,
        image_ids=tuple(image["id"] for image in gt["images"]),
        image_sizes=tuple((image["height"], image["width"]) for image in gt["images"]),
        category_ids=tuple(COCO_CATEGORY_IDS),
        score_floor=SCORE_FLOOR,
        top_k=None,
        num_proposals=num_proposals,
        source={"synthetic": "tools/bench_sweep.py"},
    )
    cache = DetectionCache(
        meta=meta,
        row_offsets=row_offsets,
        row_boxes=np.ascontiguousarray(row_boxes, np.float32),
        row_objectness=None if objectness is None else objectness.astype(np.float32),
        row_level=None if level is None else level.astype(np.int32),
        entry_offsets=entry_offsets,
        entry_row=entry_row.astype(np.int32),
        entry_class=entry_class.astype(np.int32),
        entry_score=entry_score.astype(np.float32),
        entry_boxes=None if entry_boxes is None else np.ascontiguousarray(entry_boxes, np.float32),
    )
    cache.validate()
    return cache


# --------------------------------------------------------------------------------------------
# the naive baseline


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
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt_coco.loadRes(results)
        evaluator = COCOeval(gt_coco, dt, "bbox")
        started = time.perf_counter()
        evaluator.evaluate()
        evaluator.accumulate()
        seconds = time.perf_counter() - started
        evaluator.summarize()
    return evaluator.stats, seconds


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


# --------------------------------------------------------------------------------------------
# main


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
    one_result = sweep_module.sweep(one, ground_truth, ONE_STAGE_GRID, workers=args.workers)
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

    two_result = sweep_module.sweep(two, ground_truth_two, TWO_STAGE_GRID, workers=args.workers, progress=progress)
    two_seconds = time.perf_counter() - started
    print(
        f"sweep two-stage {len(two_result.table)} configs, {args.workers} processes: {two_seconds:.1f}s = "
        f"{two_seconds / len(two_result.table):.3f}s/config",
        flush=True,
    )
    sweep_peak = peak_memory_gb()
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1 << 20)
    print(f"peak memory after the sweeps: {sweep_peak:.2f} GB (main process), {child_peak:.2f} GB (largest worker)", flush=True)
    identical = same
    identical_fast = True
    fast_difference = 0.0

    # --- the naive baselines ---
    import tensorflow as tf
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt_coco = COCO()
        gt_coco.dataset = gt
        gt_coco.createIndex()
        if gt_two is gt:
            gt_coco_two = gt_coco
        else:
            gt_coco_two = COCO()
            gt_coco_two.dataset = gt_two
            gt_coco_two.createIndex()

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
    print("per configuration:")
    print(f"{'':22s}{'naive+pycocotools':>20s}{'naive+faster-coco':>20s}{'sweep':>12s}{'x pycoco':>10s}{'x fce':>8s}")
    for label, (naive, naive_fast, ours) in report.items():
        name = label if "process" in label else f"{label}, {args.workers} proc."
        print(f"{name:22s}{naive:17.2f} s {naive_fast:17.2f} s {ours:9.3f} s {naive / ours:9.0f}x {naive_fast / ours:6.0f}x")
    total_one = report["one-stage"][0] * len(one_result.table)
    total_two = report["two-stage"][0] * len(two_result.table)
    print(
        f"grid totals: one-stage {len(one_result.table)} configs naive {total_one / 60:.1f} min vs sweep {one_seconds:.1f} s; "
        f"two-stage {len(two_result.table)} configs naive {total_two / 3600:.1f} h vs sweep {two_seconds / 60:.1f} min"
    )
    print(
        f"peak memory: {sweep_peak:.2f} GB main process + {child_peak:.2f} GB largest worker after the sweeps; "
        f"{peak_memory_gb():.2f} GB main process overall (with the baselines)"
    )
    print(f"every compared configuration's 12 stats identical to pycocotools (bitwise): {identical}")
    print(f"... and to faster-coco-eval: {identical_fast} (largest difference {fast_difference:.3g})")
    print(f"best one-stage {one_result.best_params} AP {one_result.best_row.stats[0]:.4f}")
    print(f"best two-stage {two_result.best_params} AP {two_result.best_row.stats[0]:.4f}")
    return 0 if identical else 1


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
    args = parser.parse_args(argv)
    if args.quick:
        args.images = min(args.images, 200)
        args.two_stage_images = min(args.two_stage_images or args.images, 200)
        args.baseline_configs = 1
    if not 1 <= args.baseline_configs <= 3:
        parser.error("--baseline-configs must be 1, 2 or 3")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
