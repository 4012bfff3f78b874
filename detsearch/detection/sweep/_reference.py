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

__all__ = ["reference_detections", "sweep_reference"]


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
    proposal_nms: str = "batched",
    proposal_top_k: int | None = None,
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
    pre_nms_top_k, proposal_top_k = check_nms_version(nms_version, kind, agnostic, per_class_cap, total_cap,
                                                      pre_nms_top_k, proposal_nms, proposal_top_k, num_proposals,
                                                      per_level)
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
        results = reference_detections(cache, params, num_proposals=num_proposals, per_level=per_level,
                                       max_detections_per_class=per_class_cap, max_total_detections=total_cap,
                                       nms_version=nms_version, pre_nms_top_k=pre_nms_top_k, proposal_nms=proposal_nms,
                                       proposal_top_k=proposal_top_k)
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
                         max_detections_per_class: int, max_total_detections: int, nms_version: str = "batched",
                         pre_nms_top_k: int = 0, proposal_nms: str = "batched", proposal_top_k: int = 0) -> list[dict]:
    """COCO results of one configuration (``params`` as a row's), NMS from scratch with the
    NumPy references; ``max_detections`` in ``params`` sets both caps, ``class_agnostic`` keeps
    each box's best class (ties: the lower class) and runs one NMS per image. ``nms_version``
    v2 and ``proposal_nms`` tiled run Model Garden's code as transcribed in `nms_v2`."""
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
            local_rank = np.asarray(cache.entry_row)[entries] - rows.start
        else:
            row_boxes = np.asarray(cache.row_boxes)[rows]
            objectness = np.asarray(cache.row_objectness)[rows]
            levels = np.asarray(cache.row_level)[rows] if per_level else None
            if proposal_nms == "tiled":
                survivors = _tiled_proposals(row_boxes, objectness, levels, params, proposal_top_k, num_proposals)
            else:
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
            entries, local_rank = entries[order], local_rank[order]
            boxes = np.asarray(cache.entry_boxes)[entries]
        scores = np.asarray(cache.entry_score)[entries]
        classes = np.asarray(cache.entry_class)[entries]
        if nms_version == "v2":
            kept = _v2_detections(boxes, scores, classes, local_rank, len(category_ids), params, pre_nms_top_k,
                                  max_total_detections)
        else:
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


def _tiled_proposals(boxes, objectness, levels, params, top_k: int, num_proposals: int) -> np.ndarray:
    """Model Garden's ``_multilevel_propose_rois`` with ``use_batched_nms: false`` on one image's
    recorded rows (per level, in its order): per level the score filter, the top ``top_k``, `nms_v2.sorted_nms_padded_reference` keeping ``num_proposals``; the
    levels' outputs merged by ``top_k`` over their concatenation. Returns the local rows kept."""
    threshold = np.float32(params["nms_score_threshold"])
    scores_out, rows_out = [], []
    for level in dict.fromkeys(levels.tolist()):  # the recorded level order
        rows = np.flatnonzero(levels == level)
        scores, level_boxes = objectness[rows].astype(np.float32), boxes[rows].astype(np.float32)
        # Model Garden filters only when the threshold is > 0; here always: a proposal of objectness
        # exactly 0 (a sigmoid underflow) is dropped at 0 too (its ties with the padding need
        # counts the cache does not hold).
        passed = scores > threshold
        scores, level_boxes = np.where(passed, scores, np.float32(-1)), level_boxes * passed[:, None]
        order = np.argsort(-scores, kind="stable")[:top_k]
        out_scores, _, positions = nms_v2.sorted_nms_padded_reference(
            scores[order][None], level_boxes[order][None], min(len(rows), num_proposals), params["nms_iou_threshold"])
        scores_out.append(out_scores[0])
        rows_out.append(np.where(positions[0] >= 0, rows[order][np.maximum(positions[0], 0)], -1))
    if not scores_out:
        return np.zeros(0, np.int64)
    top = np.argsort(-np.concatenate(scores_out), kind="stable")[:num_proposals]
    chosen = np.concatenate(rows_out)[top]
    return chosen[chosen >= 0]


def _v2_detections(boxes, scores, classes, rank, num_classes: int, params, pre_nms_top_k: int, cap: int) -> np.ndarray:
    """Model Garden's v2 generator on one image's candidates (row or proposal ``rank`` is the
    anchor index; classes as columns; candidates not recorded score 0 and pass no threshold),
    through `nms_v2.generate_detections_v2_reference`. Returns the candidates kept, in order."""
    num_rows = int(rank.max()) + 1 if len(rank) else 1
    dense_scores = np.zeros((1, num_rows, num_classes), np.float32)
    dense_boxes = np.zeros((1, num_rows, num_classes, 4), np.float32)
    candidate = np.full((num_rows, num_classes), -1, np.int64)
    dense_scores[0, rank, classes] = scores
    dense_boxes[0, rank, classes] = boxes
    candidate[rank, classes] = np.arange(len(rank))
    _, _, out_classes, valid, anchors = nms_v2.generate_detections_v2_reference(
        dense_boxes, dense_scores, pre_nms_top_k=pre_nms_top_k, pre_nms_score_threshold=params["score_threshold"],
        nms_iou_threshold=params["iou_threshold"], max_num_detections=cap)
    return candidate[anchors[0, :int(valid[0])], out_classes[0, :int(valid[0])]]
