"""A seeded synthetic evaluation set at COCO scale and raw detector predictions for it.

For benchmarks and scale tests (`tools/bench_sweep.py`, `tools/bench_scale.py`): everything is
drawn from the ``np.random.Generator`` passed in, so one seed gives one data set.

- `make_ground_truth`: a COCO instances dict with COCO-like statistics;
- `make_one_stage_cache`: a one-stage `DetectionCache` of candidate boxes before NMS;
- `make_two_stage_cache`: a two-stage `DetectionCache` (RPN proposals and second-stage
  entries for every proposal).

Scores are unique within an image: ``tf.image.combined_non_max_suppression`` orders equal
scores with an unstable sort, which would make a TensorFlow baseline differ on ties only.
"""

from __future__ import annotations

import numpy as np

from detsearch.detection.boxes import iou_xywh_pairs
from detsearch.detection.cache import CACHE_VERSION, CacheKind, CacheMeta, DetectionCache

__all__ = [
    "COCO_CATEGORY_IDS",
    "NUM_PROPOSALS",
    "SCORE_FLOOR",
    "make_ground_truth",
    "make_one_stage_cache",
    "make_two_stage_cache",
]

COCO_CATEGORY_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
]
IMAGE_SIZES = [(480, 640), (640, 480), (427, 640), (640, 427), (375, 500), (500, 375), (512, 640)]
SCORE_FLOOR = 0.01
"""The caches' score floor."""
NUM_PROPOSALS = 500
"""``num_proposals`` of the two-stage cache."""


def make_ground_truth(rng: np.random.Generator, num_images: int) -> dict:
    """COCO instances dict with COCO-like statistics: 80 categories with COCO's ids, about 7.3
    boxes per image (person dominating), about 41% small, 34% medium and 24% large boxes, 1%
    crowd regions, and an ``area`` smaller than the box, as polygon areas are."""
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
    quality = iou_xywh_pairs(near_boxes, gt_boxes[source], False)
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


def make_one_stage_cache(rng: np.random.Generator, gt: dict, rows_per_image: int = 1000) -> DetectionCache:
    """One-stage candidates for ``gt`` (from `make_ground_truth`): ``rows_per_image`` boxes per
    image, jittered copies of the ground truth scored by their IoU with it (a few high) and
    background boxes with low scores; 1-3 class scores per box above `SCORE_FLOOR`, unique
    within an image."""
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
    return _cache(CacheKind.ONE_STAGE, gt, row_image, _xywh_to_yxyx32(row_boxes), entry_row, entry_class, entry_score)


def make_two_stage_cache(rng: np.random.Generator, gt: dict, rows_per_image: int = 1000,
                         num_proposals: int = NUM_PROPOSALS) -> DetectionCache:
    """Two-stage predictions for ``gt``: ``rows_per_image`` RPN proposals per image (objectness,
    FPN level 0-4) and, for every proposal, 1-3 second-stage (class score, refined box) entries;
    scores and objectness unique within an image."""
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
    refined_quality = iou_xywh_pairs(boxes, target, False)
    second = _sigmoid(9.0 * (refined_quality - 0.55) + rng.normal(0, 1.2, len(entry_row)))
    wrong_class = entry_primary & near[entry_row] & ~refine  # a near proposal, the wrong class
    background = SCORE_FLOOR + rng.exponential(0.04, len(entry_row))
    entry_score = np.where(refine, second, np.where(wrong_class, background, entry_score))
    entry_score = np.clip(entry_score, SCORE_FLOOR, 0.999)
    entry_score = _unique_per_image(row_image[entry_row], entry_score)
    return _cache(
        CacheKind.TWO_STAGE,
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
        version=CACHE_VERSION,
        kind=kind,
        image_ids=tuple(image["id"] for image in gt["images"]),
        image_sizes=tuple((image["height"], image["width"]) for image in gt["images"]),
        category_ids=tuple(COCO_CATEGORY_IDS),
        score_floor=SCORE_FLOOR,
        top_k=None,
        num_proposals=num_proposals,
        source={"synthetic": "detsearch.detection.synthetic"},
    )
    return DetectionCache.from_arrays(
        meta,
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
