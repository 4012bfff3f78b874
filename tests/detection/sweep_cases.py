"""Seeded random detection caches with their ground truth, for the sweep's tests."""

import numpy as np
from hypothesis import strategies as st

from detsearch.detection.cache import CACHE_VERSION, CacheMeta, DetectionCache


SCORE_LISTS = st.lists(st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.5, 0.7]), min_size=1, max_size=3, unique=True)
"""Hypothesis: a score-threshold axis (1-3 values)."""
IOU_LISTS = st.lists(st.sampled_from([0.0, 0.3, 0.45, 0.5, 0.6, 0.75, 1.0]), min_size=1, max_size=3, unique=True)
"""Hypothesis: an IoU-threshold axis (1-3 values, 0 and 1 among the candidates)."""


def random_case(seed, kind="one_stage", num_images=5, num_classes=3, max_rows=30, floor=0.05, levels=True, ties=False,
                num_proposals=12) -> tuple[DetectionCache, dict]:
    """A COCO ground-truth dict and a real (validated) `DetectionCache` whose rows crowd around
    the ground truth, with crowd regions, a category without ground truth, images without rows
    and optional score ties; the same for the same arguments (``np.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    image_ids = tuple(int(i) for i in rng.choice(1000, num_images, replace=False))
    category_ids = tuple(int(c) for c in np.sort(rng.choice(90, num_classes, replace=False)))
    annotations, objects = [], {}
    for image_id in image_ids:
        objects[image_id] = []
        for _ in range(int(rng.integers(0, 5))):
            xy, wh, c = rng.uniform(0, 150, 2), rng.uniform(3, 80, 2), int(rng.integers(num_classes))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[c],
                    "bbox": [float(xy[0]), float(xy[1]), float(wh[0]), float(wh[1])],
                    "area": float(wh[0] * wh[1] * rng.uniform(0.6, 1.0)),
                    "iscrowd": int(rng.random() < 0.1),
                }
            )
            objects[image_id].append((xy, wh, c))
    dataset = {
        "images": [{"id": i, "height": 200, "width": 200} for i in image_ids],
        "categories": [{"id": c, "name": str(c)} for c in category_ids] + [{"id": 99, "name": "no ground truth"}],
        "annotations": annotations,
    }
    row_boxes, objectness, row_level, row_offsets = [], [], [], [0]
    entry_row, entry_class, entry_score, entry_boxes, entry_offsets = [], [], [], [], [0]
    for image_id in image_ids:
        first_row = len(row_boxes)
        for _ in range(int(rng.integers(0, max_rows))):
            if objects[image_id] and rng.random() < 0.7:
                xy, wh, c = objects[image_id][int(rng.integers(len(objects[image_id])))]
                xy, wh = xy + rng.normal(0, 4, 2), np.abs(wh + rng.normal(0, 4, 2)) + 1
            else:
                xy, wh, c = rng.uniform(0, 150, 2), rng.uniform(3, 80, 2), int(rng.integers(num_classes))
            box = np.array([xy[1], xy[0], xy[1] + wh[1], xy[0] + wh[0]], np.float32)
            row = len(row_boxes)
            row_boxes.append(box)
            objectness.append(rng.random())
            row_level.append(int(rng.integers(0, 3)))
            for cls in sorted({c} | {int(x) for x in rng.integers(0, num_classes, int(rng.integers(0, 3)))}):
                score = rng.uniform(floor, 1.0)
                if ties:
                    score = max(floor, round(score, 1))
                entry_row.append(row)
                entry_class.append(cls)
                entry_score.append(score)
                jitter = rng.normal(0, 2, 4) if kind == "two_stage" else np.zeros(4)
                entry_boxes.append(np.r_[np.minimum(box[:2] + jitter[:2], box[2:] + jitter[2:]), np.maximum(box[:2] + jitter[:2], box[2:] + jitter[2:])])
        del first_row
        row_offsets.append(len(row_boxes))
        entry_offsets.append(len(entry_row))
    objectness = np.asarray(objectness, np.float32)
    if ties:
        objectness = np.round(objectness, 1).astype(np.float32)
    two = kind == "two_stage"
    meta = CacheMeta(
        version=CACHE_VERSION,
        kind=kind,
        image_ids=image_ids,
        image_sizes=tuple((200, 200) for _ in image_ids),
        category_ids=category_ids,
        score_floor=floor,
        num_proposals=num_proposals if two else None,
    )
    cache = DetectionCache.from_arrays(
        meta,
        row_offsets=np.asarray(row_offsets, np.int64),
        row_boxes=np.asarray(row_boxes, np.float32).reshape(-1, 4),
        row_objectness=objectness if two else None,
        row_level=np.asarray(row_level, np.int32) if (two and levels) else None,
        entry_offsets=np.asarray(entry_offsets, np.int64),
        entry_row=np.asarray(entry_row, np.int32),
        entry_class=np.asarray(entry_class, np.int32),
        entry_score=np.asarray(entry_score, np.float32),
        entry_boxes=np.asarray(entry_boxes, np.float32).reshape(-1, 4) if two else None,
    )
    return cache, dataset


def table_dicts(result):
    return [row.to_dict() for row in result.table]


def outcome(result):
    """What a sweep decides, to compare with the reference's: its table, the chosen row (the
    tolerance rule) and the row with the highest objective."""
    return table_dicts(result), result.best_row.to_dict(), (result.top_row or result.best_row).to_dict()


def clustered(seed, batch, anchors, classes, quantize=False, per_class_boxes=False):
    """Boxes crowding around a few centres (many IoUs near any threshold), clipped to a 128 px
    image, and squared uniform scores (rounded to 1/50 with ``quantize``: ties, within an anchor's
    classes too); ``[B, N, 1 or C, 4]`` boxes."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(10, 120, (batch, 8, 2))
    picked = rng.integers(0, 8, (batch, anchors))
    centre = np.take_along_axis(centres, picked[..., None], 1) + rng.normal(0, 4, (batch, anchors, 2))
    half = rng.uniform(4, 15, (batch, anchors, 2))
    boxes = np.concatenate([centre - half, centre + half], -1).clip(0, 128).astype(np.float32)[:, :, None, :]
    if per_class_boxes:  # per-class regression: each class's box jittered
        boxes = (boxes + rng.normal(0, 2, (batch, anchors, classes, 4))).clip(0, 128).astype(np.float32)
        boxes = np.concatenate([np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])], -1)
    scores = rng.uniform(0, 1, (batch, anchors, classes)) ** 2
    if quantize:
        scores = np.round(scores * 50) / 50
    return boxes, scores.astype(np.float32)


def check_lists_in_one_call(seed, expected_of, run, tweak=None):
    """A kernel's call on many lists laid end to end (the sweep's call: 12 lists, some empty, some
    past a 512-box tile, scores with ties), checked list by list. Each list is `clustered`'s
    boxes for one image and class, sorted by descending score (ties
    by position), changed in place by ``tweak(boxes)`` if given; ``run(boxes, offsets, cap)``
    returns a bool mask whose part for each list must select ``expected_of(boxes, scores, cap)``."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([0, 1, 7, 300, 513, 1100], 12)
    cap = int(rng.choice([3, 100, 600]))
    lists = []
    for size in sizes:
        boxes, scores = clustered(int(rng.integers(1 << 30)), batch=1, anchors=max(int(size), 1), classes=1,
                                  quantize=True)
        boxes, scores = boxes[0, :size, 0], scores[0, :size, 0]
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
        if tweak is not None:
            tweak(boxes)
        lists.append((boxes, scores))
    offsets = np.r_[0, np.cumsum(sizes)]
    selected = run(np.concatenate([boxes for boxes, _ in lists]), offsets, cap)
    for g, (boxes, scores) in enumerate(lists):
        np.testing.assert_array_equal(np.flatnonzero(selected[offsets[g]:offsets[g + 1]]), expected_of(boxes, scores, cap))
