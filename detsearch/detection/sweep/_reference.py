"""The sweep's slow, obviously correct oracle: every configuration from scratch, NMS by the
NumPy reference and COCO evaluation by pycocotools. The tests compare `sweep` with it."""

from __future__ import annotations

import itertools

import numpy as np

from detsearch.detection import nms as nms_ops
from detsearch.detection.boxes import yxyx_to_xywh
from detsearch.detection.cache import CacheKind, DetectionCache
from detsearch.detection.cocoeval import GroundTruth, load_ground_truth
from detsearch.detection.pycoco import coco_ground_truth, load_results, pycocotools_eval, pycocotools_f1
from detsearch.detection.sweep.grid import check_cache, check_floor, check_options, grid_axes, threshold_names
from detsearch.detection.sweep.result import SweepResult, check_objective, make_row, row_sort_key, select_best
from detsearch.params import ParamSpec

__all__ = ["sweep_reference"]


def sweep_reference(
    cache: DetectionCache,
    ground_truth,
    param_list_spec: ParamSpec,
    *,
    objective: str = "map",
    budget: float | None = None,
    max_detections_per_class: int = nms_ops.DEFAULT_MAX_DETECTIONS_PER_CLASS,
    max_total_detections: int = nms_ops.DEFAULT_MAX_TOTAL_DETECTIONS,
    num_proposals: int | None = None,
    per_level: bool | None = None,
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
    num_proposals, per_level = check_options(cache, kind, max_detections_per_class, max_total_detections, num_proposals, per_level)
    check_floor(cache, axes)
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    meta = cache.meta
    coco_gt = coco_ground_truth(gt)
    image_ids = list(meta.image_ids)
    category_ids = list(meta.category_ids)
    names = threshold_names(kind)
    table = []
    for values in itertools.product(*(axes[name] for name in names)):
        params = dict(zip(names, values))
        results = []
        for i, image_id in enumerate(image_ids):
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
            kept = nms_ops.per_class_nms_reference(
                boxes,
                scores,
                classes,
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
        evaluator = pycocotools_eval(coco_gt, load_results(coco_gt, results), image_ids)
        f1, f1_max, f1_max_score = pycocotools_f1(evaluator)
        table.append(make_row(params, evaluator.stats, len(results), len(image_ids), f1, f1_max, f1_max_score))
    table = tuple(sorted(table, key=row_sort_key))
    best_row = select_best(table, objective, budget)
    return SweepResult(
        kind=kind,
        objective=objective,
        budget=budget,
        strategy="grid",
        best=ParamSpec(**best_row.params),
        best_row=best_row,
        table=table,
        num_images=len(image_ids),
    )
