"""The sweep's slow, obviously correct oracle: every configuration from scratch, NMS by the
NumPy reference and COCO evaluation by pycocotools. The tests compare `sweep` with it."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from detsearch.detection import nms as nms_ops
from detsearch.detection import nms_v2
from detsearch.detection.boxes import yxyx_to_xywh
from detsearch.detection.cache import CacheKind, DetectionCache
from detsearch.detection.cocoeval import GroundTruth, load_ground_truth
from detsearch.detection.pycoco import coco_ground_truth, load_results, pycocotools_eval, pycocotools_f1
from detsearch.detection.sweep.grid import (check_axes, check_cache, check_floor, check_nms_version, check_options,
                                            grid_axes, threshold_names)
from detsearch.detection.sweep.result import (DEFAULT_TOLERANCE, SweepResult, check_objective, make_row, row_sort_key,
                                              select_best, thresholds_of)
from detsearch.params import ParamSpec

__all__ = ["reference_detections", "reference_detections_v2", "sweep_reference"]


def sweep_reference(
    cache: DetectionCache,
    ground_truth,
    param_list_spec: ParamSpec,
    *,
    objective: str = "map",
    budget: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_detections: int | Sequence[int] | None = None,
    class_agnostic: bool | Sequence[bool] | None = None,
    max_detections_per_class: int | None = None,
    max_total_detections: int | None = None,
    num_proposals: int | None = None,
    per_level: bool | None = None,
    nms_version: str = "batched",
    pre_nms_top_k: int | None = None,
) -> SweepResult:
    """`sweep` (grid strategy) the obvious way: for every configuration, NMS from scratch with
    the NumPy reference, then pycocotools' COCOeval. Slow; the tests' oracle.

    Candidates reach the reference NMS in the fast path's tie order: one-stage entries by
    (row, class); two-stage entries by (proposal rank after the first stage, class).
    The arguments are `sweep`'s (grid strategy, this process); pycocotools must be installed.
    """
    kind = check_cache(cache)
    axes = grid_axes(param_list_spec, kind)
    check_objective(objective, budget)
    caps, agnostic = check_axes(max_detections, class_agnostic)
    per_class_cap, total_cap, num_proposals, per_level = check_options(
        cache, kind, max_detections_per_class, max_total_detections, num_proposals, per_level, caps)
    pre_nms_top_k = check_nms_version(nms_version, kind, agnostic, per_class_cap, total_cap, pre_nms_top_k)
    check_floor(cache, axes)
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    coco_gt = coco_ground_truth(gt)
    image_ids = list(cache.meta.image_ids)
    names = threshold_names(kind)
    table = []
    extra = {}
    if caps is not None:
        extra["max_detections"] = caps
    if class_agnostic is not None:
        extra["class_agnostic"] = agnostic
    for values in itertools.product(*(axes[name] for name in names), *extra.values()):
        params = dict(zip(names + tuple(extra), values))
        if nms_version == "v2":
            results = reference_detections_v2(cache, params, pre_nms_top_k=pre_nms_top_k, max_num_detections=total_cap)
        else:
            results = reference_detections(cache, params, num_proposals=num_proposals, per_level=per_level,
                                           max_detections_per_class=per_class_cap, max_total_detections=total_cap)
        evaluator = pycocotools_eval(coco_gt, load_results(coco_gt, results), image_ids)
        f1, f1_max, f1_max_score = pycocotools_f1(evaluator)
        table.append(make_row(params, evaluator.stats, len(results), len(image_ids), f1, f1_max, f1_max_score))
    table = tuple(sorted(table, key=row_sort_key))
    best_row = select_best(table, objective, budget, tolerance)
    return SweepResult(
        kind=kind,
        objective=objective,
        budget=budget,
        strategy="grid",
        best=thresholds_of(best_row.params),
        best_row=best_row,
        table=table,
        num_images=len(image_ids),
        tolerance=float(tolerance),
        top_row=select_best(table, objective, budget),
    )


def reference_detections(cache: DetectionCache, params, *, num_proposals: int, per_level: bool,
                         max_detections_per_class: int, max_total_detections: int) -> list[dict]:
    """COCO results of one configuration (``params`` as a row's), NMS from scratch with the
    NumPy reference; ``max_detections`` in ``params`` sets both caps, ``class_agnostic`` keeps
    each box's best class (ties: the lower class) and runs one NMS per image."""
    kind = CacheKind(cache.meta.kind)
    meta = cache.meta
    category_ids = list(meta.category_ids)
    agnostic = bool(params.get("class_agnostic", False))
    if "max_detections" in params:
        max_detections_per_class = max_total_detections = int(params["max_detections"])
    if agnostic:
        max_detections_per_class = max_total_detections
    results = []
    for i, image_id in enumerate(meta.image_ids):
        rows = slice(int(cache.row_offsets[i]), int(cache.row_offsets[i + 1]))
        entries = np.arange(int(cache.entry_offsets[i]), int(cache.entry_offsets[i + 1]))
        entry_row = np.asarray(cache.entry_row)[entries]
        entry_class = np.asarray(cache.entry_class)[entries]
        if kind == CacheKind.ONE_STAGE:
            order = np.lexsort((entry_class, entry_row))
            entries = entries[order]
            boxes = np.asarray(cache.row_boxes)[np.asarray(cache.entry_row)[entries]]
        else:
            row_boxes = np.asarray(cache.row_boxes)[rows]
            objectness = np.asarray(cache.row_objectness)[rows]
            levels = np.asarray(cache.row_level)[rows] if per_level else None
            survivors = nms_ops.class_agnostic_nms_reference(
                row_boxes,
                objectness,
                iou_threshold=params["nms_iou_threshold"],
                score_threshold=params["nms_score_threshold"],
                max_output_size=num_proposals,
                levels=levels,
            )
            rank = np.full(rows.stop - rows.start, -1)
            rank[survivors] = np.arange(len(survivors))
            local_rank = rank[entry_row - rows.start]
            alive = local_rank >= 0
            entries, local_rank, entry_class = entries[alive], local_rank[alive], entry_class[alive]
            order = np.lexsort((entry_class, local_rank))
            entries = entries[order]
            boxes = np.asarray(cache.entry_boxes)[entries]
        scores = np.asarray(cache.entry_score)[entries]
        classes = np.asarray(cache.entry_class)[entries]
        if agnostic:
            # Each box's best class: the highest float32 score of its row, ties the lower class.
            rows_of = np.asarray(cache.entry_row)[entries]
            best = {}
            for position in range(len(entries)):
                row, score = int(rows_of[position]), np.float32(scores[position])
                if row not in best or score > np.float32(scores[best[row]]) or (
                        score == np.float32(scores[best[row]]) and classes[position] < classes[best[row]]):
                    best[row] = position
            chosen = np.sort(np.fromiter(best.values(), np.int64, len(best)))
            entries, boxes, scores, classes = entries[chosen], boxes[chosen], scores[chosen], classes[chosen]
        kept = nms_ops.per_class_nms_reference(
            boxes,
            scores,
            np.zeros(len(classes), np.int64) if agnostic else classes,
            iou_threshold=params["iou_threshold"],
            score_threshold=params["score_threshold"],
            max_detections_per_class=max_detections_per_class,
            max_total_detections=max_total_detections,
        )
        if kind == CacheKind.ONE_STAGE and cache.row_xywh is not None:  # the boxes as given
            xywh = np.asarray(cache.row_xywh)[np.asarray(cache.entry_row)[entries[kept]]]
        else:
            xywh = yxyx_to_xywh(boxes[kept])
        for k, box in zip(kept, xywh):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[int(classes[k])]),
                    "bbox": [float(v) for v in box],
                    "score": float(scores[k]),
                }
            )
    return results


def reference_detections_v2(cache: DetectionCache, params, *, pre_nms_top_k: int, max_num_detections: int) -> list[dict]:
    """COCO results of one configuration under Model Garden's ``nms_version: v2``: each image as
    the dense ``[1, anchors, classes]`` scores Model Garden's generator sees (entries under the
    floor as 0: they pass no threshold), through `nms_v2.generate_detections_v2_reference`."""
    meta = cache.meta
    if "max_detections" in params:
        max_num_detections = int(params["max_detections"])
    category_ids = list(meta.category_ids)
    row_offsets, entry_offsets = np.asarray(cache.row_offsets), np.asarray(cache.entry_offsets)
    row_boxes, entry_score = np.asarray(cache.row_boxes), np.asarray(cache.entry_score)
    results = []
    for i, image_id in enumerate(meta.image_ids):
        rows = slice(int(row_offsets[i]), int(row_offsets[i + 1]))
        entries = np.arange(int(entry_offsets[i]), int(entry_offsets[i + 1]))
        num_rows = max(rows.stop - rows.start, 1)
        scores = np.zeros((1, num_rows, len(category_ids)), np.float32)
        entry_of = np.full(scores.shape[1:], -1, np.int64)
        local_row, local_class = np.asarray(cache.entry_row)[entries] - rows.start, np.asarray(cache.entry_class)[entries]
        scores[0, local_row, local_class] = entry_score[entries]
        entry_of[local_row, local_class] = entries
        boxes = np.zeros((1, num_rows, 1, 4), np.float32)
        boxes[0, :rows.stop - rows.start, 0] = row_boxes[rows]
        _, _, classes, valid, anchors = nms_v2.generate_detections_v2_reference(
            boxes, scores, pre_nms_top_k=pre_nms_top_k, pre_nms_score_threshold=params["score_threshold"],
            nms_iou_threshold=params["iou_threshold"], max_num_detections=max_num_detections)
        for k in range(int(valid[0])):
            row = rows.start + int(anchors[0, k])
            box = np.asarray(cache.row_xywh)[row] if cache.row_xywh is not None else yxyx_to_xywh(row_boxes[row:row + 1])[0]
            results.append({
                "image_id": int(image_id),
                "category_id": int(category_ids[int(classes[0, k])]),
                "bbox": [float(v) for v in box],
                "score": float(entry_score[entry_of[anchors[0, k], classes[0, k]]]),
            })
    return results
