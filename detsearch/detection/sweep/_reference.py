"""The sweep's slow, obviously correct oracle: every configuration from scratch, NMS by the plain
references (`detsearch.detection.reference_nms`, `detsearch.detection.reference_nms_v2`) and COCO
evaluation by pycocotools (`detsearch.detection.pycoco`). The tests compare `sweep` with it.

It shares no code with the fast path beyond the cache reader, the COCO JSON loader and the
settings both sides are given (the `ParamSpec` grid, the `PostProcessing` and its one check
against the cache, `PostProcessing.checked`): each row's figures, the table's order and the
choice among rows are written here again, plainly, so that a bug in the fast path cannot pass
by being on both sides.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

from detsearch.detection.cache import CacheKind, DetectionCache
from detsearch.detection.cocoeval import GroundTruth, load_ground_truth
from detsearch.detection.pycoco import coco_ground_truth, load_results, pycocotools_eval, pycocotools_f1, summary_stats
from detsearch.detection.reference_nms import class_agnostic_nms_reference, per_class_nms_reference
from detsearch.detection.reference_nms_agnostic import generate_detections_v2_class_agnostic_reference
from detsearch.detection.reference_nms_v1 import generate_detections_v1_reference
from detsearch.detection.reference_nms_v2 import generate_detections_v2_reference, sorted_nms_padded_reference
from detsearch.detection.sweep.result import DEFAULT_TOLERANCE, SweepResult, SweepRow
from detsearch.detection.sweep.settings import NmsVersion, PostProcessing, ProposalNms
from detsearch.params import ParamSpec

__all__ = ["reference_detections", "sweep_reference"]

_ONE_STAGE = ("score_threshold", "iou_threshold")
_TWO_STAGE = ("nms_score_threshold", "nms_iou_threshold", "score_threshold", "iou_threshold")
_OBJECTIVES = ("map", "ap50", "f1", "map_at_budget")


def sweep_reference(
    cache: DetectionCache,
    ground_truth,
    grid: ParamSpec,
    post_processing: PostProcessing | None = None,
    *,
    max_detections: int | Sequence[int] | None = None,
    class_agnostic: bool | Sequence[bool] | None = None,
    soft_nms_sigma: float | Sequence[float] | None = None,
    objective: str = "map",
    budget: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> SweepResult:
    """`sweep` (grid strategy) the obvious way: for every configuration, NMS from scratch with
    the plain references, then pycocotools' COCOeval. Slow; the tests' oracle.

    Candidates reach the reference NMS in the fast path's tie order: one-stage entries by
    (row, class); two-stage entries by (proposal rank after the first stage, class).
    The arguments are `sweep`'s (grid strategy, this process); ``post_processing`` is checked
    against the cache (`PostProcessing.checked`, which fills in its defaults) and a row's
    ``max_detections`` sets both caps. Only the checks the reference itself needs are made;
    pycocotools must be installed.
    """
    if not isinstance(cache, DetectionCache):
        raise TypeError(f"cache must be a detsearch.detection.cache.DetectionCache, got {type(cache).__name__}")
    if not isinstance(grid, ParamSpec):
        raise TypeError(f"grid must be a ParamSpec, got {type(grid).__name__}")
    if objective not in _OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known objectives: {', '.join(_OBJECTIVES)}")
    if objective == "map_at_budget" and budget is None:
        raise ValueError("objective map_at_budget needs a budget")
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    meta = cache.meta
    kind = CacheKind(meta.kind)
    names = _ONE_STAGE if kind == CacheKind.ONE_STAGE else _TWO_STAGE
    if sorted(grid.names()) != sorted(names):
        raise ValueError(f"a {kind} sweep takes {', '.join(names)}; got {', '.join(grid.names())}")
    axes = [sorted(set(grid.candidates(name))) for name in names]
    post_processing = post_processing or PostProcessing()
    extra = {}
    if max_detections is not None:
        if post_processing.max_detections_per_class is not None or post_processing.max_total_detections is not None:
            raise ValueError("max_detections sets the cap per class and per image; do not give the caps with it")
        extra["max_detections"] = sorted({int(v) for v in np.atleast_1d(max_detections).tolist()})
    if class_agnostic is not None:
        extra["class_agnostic"] = sorted({bool(v) for v in np.atleast_1d(class_agnostic).tolist()})
    if soft_nms_sigma is not None:
        extra["soft_nms_sigma"] = sorted({float(v) for v in np.atleast_1d(soft_nms_sigma).tolist()})
    post = post_processing.checked(cache, grid)
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    coco_gt = coco_ground_truth(gt)
    image_ids = list(meta.image_ids)
    rows = []
    for values in itertools.product(*axes, *extra.values()):
        params = {name: float(value) for name, value in zip(names, values)}
        params.update(zip(extra, values[len(names):]))
        results = reference_detections(cache, params, post)
        evaluator = pycocotools_eval(coco_gt, load_results(coco_gt, results), image_ids, post.max_eval_detections)
        stats = summary_stats(evaluator)
        f1, f1_max, f1_max_score = pycocotools_f1(evaluator)
        rows.append(SweepRow(
            params=params,
            stats=stats,
            recall=stats[8],  # AR at max_eval_detections
            ap50=stats[1],
            dets_per_image=len(results) / len(image_ids) if image_ids else 0.0,
            f1=float(f1),
            f1_max=float(f1_max),
            f1_max_score=f1_max_score,
        ))
    table = tuple(sorted(rows, key=lambda row: tuple(row.params.values())))  # thresholds in MoXing order, then extras
    best_row = _choose(table, objective, budget, tolerance)
    return SweepResult(
        kind=kind,
        objective=objective,
        budget=budget,
        strategy="grid",
        best=ParamSpec(**{name: best_row.params[name] for name in names}),
        best_row=best_row,
        table=table,
        num_images=len(image_ids),
        tolerance=float(tolerance),
        top_row=_choose(table, objective, budget, 0.0),
        max_eval_detections=post.max_eval_detections,
    )


def _choose(rows: Sequence[SweepRow], objective: str, budget: float | None, tolerance: float) -> SweepRow:
    """The row a sweep must choose: among the rows whose objective value is at least the highest
    value minus ``tolerance`` (a row over the budget has no value), the fewest detections per
    image; among those the highest value; then the earlier row."""
    valued = [(_objective(row, objective, budget), row) for row in rows]
    valued = [(value, row) for value, row in valued if value is not None]
    if not valued:
        raise ValueError("no configuration to choose from" + (f" within budget {budget:g}" if budget is not None else ""))
    top = max(value for value, _ in valued)
    near = [(value, row) for value, row in valued if value >= top - tolerance]
    fewest = min(row.dets_per_image for _, row in near)
    near = [(value, row) for value, row in near if row.dets_per_image == fewest]
    highest = max(value for value, _ in near)
    return next(row for value, row in near if value == highest)


def _objective(row: SweepRow, objective: str, budget: float | None) -> float | None:
    if objective == "map":
        return row.stats[0]
    if objective == "ap50":
        return row.stats[1]
    if objective == "f1":
        return row.f1
    return row.stats[0] if row.dets_per_image <= budget else None  # map_at_budget


def _xywh(boxes) -> np.ndarray:
    """COCO ``[x, y, width, height]`` of yxyx boxes, in float64 on the values as stored."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)


def reference_detections(cache: DetectionCache, params, post_processing: PostProcessing) -> list[dict]:
    """COCO results of one configuration (``params`` as a row's), NMS from scratch with the
    plain references, under ``post_processing`` as `PostProcessing.checked` returns it for
    ``cache``; ``max_detections`` in ``params`` sets both caps, ``class_agnostic`` (in
    ``params``, else the post-processing's) keeps each box's best class (ties: the lower class)
    and runs one NMS per image. ``nms_version`` v2 and ``proposal_nms`` tiled run Model Garden's
    code as transcribed in `reference_nms_v2`; v2 with ``class_agnostic`` Model Garden's
    ``_generate_detections_v2_class_agnostic`` as transcribed in `reference_nms_agnostic` (which
    keeps each anchor's best class itself)."""
    max_detections_per_class = post_processing.max_detections_per_class
    max_total_detections = post_processing.max_total_detections
    num_proposals, per_level = post_processing.num_proposals, post_processing.per_level
    v2 = post_processing.nms_version == NmsVersion.V2
    v1 = post_processing.nms_version == NmsVersion.V1
    sigma = params.get("soft_nms_sigma", post_processing.soft_nms_sigma)
    tiled = post_processing.proposal_nms == ProposalNms.TILED
    kind = CacheKind(cache.meta.kind)
    meta = cache.meta
    category_ids = list(meta.category_ids)
    agnostic = bool(params.get("class_agnostic", post_processing.class_agnostic))
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
            if tiled:
                survivors = _tiled_proposals(row_boxes, objectness, levels, params, post_processing.proposal_top_k,
                                             num_proposals, post_processing.score_dtype)
            else:
                survivors = class_agnostic_nms_reference(
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
        if v1:
            kept, scores = _v1_detections(boxes, scores, classes, local_rank, len(category_ids), params,
                                          post_processing.pre_nms_top_k, max_total_detections, sigma)
        elif v2:
            if post_processing.score_dtype != "float32" and not agnostic:  # filtered in that dtype
                params = dict(params, score_threshold=_as_dtype(params["score_threshold"], post_processing.score_dtype))
            kept = _v2_detections(boxes, scores, classes, local_rank, len(category_ids), params,
                                  post_processing.pre_nms_top_k, max_total_detections, agnostic)
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
            kept = per_class_nms_reference(
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
            xywh = _xywh(boxes[kept])
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


def _tiled_proposals(boxes, objectness, levels, params, top_k: int, num_proposals: int,
                     score_dtype: str = "float32") -> np.ndarray:
    """Model Garden's ``_multilevel_propose_rois`` with ``use_batched_nms: false`` on one image's
    recorded rows (per level, in its order): per level the score filter (in ``score_dtype``, the
    RPN's: under mixed precision the threshold as that dtype), the top ``top_k``,
    `reference_nms_v2.sorted_nms_padded_reference` keeping ``num_proposals``; the levels'
    outputs merged by ``top_k`` over their concatenation. Returns the local rows kept."""
    threshold = np.float32(params["nms_score_threshold"])
    if score_dtype != "float32":  # objectness of that dtype's values, compared with the threshold in it
        threshold = np.float32(_as_dtype(params["nms_score_threshold"], score_dtype))
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
        out_scores, _, positions = sorted_nms_padded_reference(
            scores[order][None], level_boxes[order][None], min(len(rows), num_proposals), params["nms_iou_threshold"])
        scores_out.append(out_scores[0])
        rows_out.append(np.where(positions[0] >= 0, rows[order][np.maximum(positions[0], 0)], -1))
    if not scores_out:
        return np.zeros(0, np.int64)
    top = np.argsort(-np.concatenate(scores_out), kind="stable")[:num_proposals]
    chosen = np.concatenate(rows_out)[top]
    return chosen[chosen >= 0]


def _as_dtype(threshold: float, dtype: str) -> float:
    """A Python float as TensorFlow makes it a ``dtype`` scalar: to float32, then to ``dtype``,
    to nearest, ties to even (bfloat16: the float32's top 16 bits, rounded by the usual bias)."""
    single = np.float32(threshold)
    if dtype == "float16":
        return float(np.float16(single))
    word = int(np.frombuffer(single.tobytes(), np.uint32)[0])
    word = (word + 0x7FFF + ((word >> 16) & 1)) & 0xFFFF0000
    return float(np.frombuffer(np.uint32(word).tobytes(), np.float32)[0])


def _dense(boxes, scores, classes, rank, num_classes: int):
    """One image's candidates as Model Garden's generators take them: ``[1, anchors, classes,
    4]`` boxes and ``[1, anchors, classes]`` scores (row or proposal ``rank`` the anchor, the
    class the column; what is not recorded scores 0 and passes no threshold), and the candidate
    at each (anchor, class), -1 where none."""
    num_rows = int(rank.max()) + 1 if len(rank) else 1
    dense_scores = np.zeros((1, num_rows, num_classes), np.float32)
    dense_boxes = np.zeros((1, num_rows, num_classes, 4), np.float32)
    candidate = np.full((num_rows, num_classes), -1, np.int64)
    dense_scores[0, rank, classes] = scores
    dense_boxes[0, rank, classes] = boxes
    candidate[rank, classes] = np.arange(len(rank))
    return dense_boxes, dense_scores, candidate


def _v1_detections(boxes, scores, classes, rank, num_classes: int, params, pre_nms_top_k: int, cap: int, sigma):
    """Model Garden's v1 generator on one image's candidates (laid out by `_dense`) through `reference_nms_v1.generate_detections_v1_reference`. Returns the
    candidates kept, in order, and every candidate's score with the kept ones' replaced by the
    generator's output (soft NMS decays them)."""
    dense_boxes, dense_scores, candidate = _dense(boxes, scores, classes, rank, num_classes)
    _, out_scores, out_classes, valid, anchors = generate_detections_v1_reference(
        dense_boxes, dense_scores, pre_nms_top_k=pre_nms_top_k, pre_nms_score_threshold=params["score_threshold"],
        nms_iou_threshold=params["iou_threshold"], max_num_detections=cap, soft_nms_sigma=sigma)
    n = int(valid[0])
    kept = candidate[anchors[0, :n], out_classes[0, :n]]
    output = np.array(scores, np.float64, copy=True)
    if sigma:  # soft NMS: the decayed scores are the output; otherwise the cached ones as given
        output[kept] = out_scores[0, :n]
    return kept, output


def _v2_detections(boxes, scores, classes, rank, num_classes: int, params, pre_nms_top_k: int, cap: int,
                   agnostic: bool = False) -> np.ndarray:
    """Model Garden's v2 generator on one image's candidates (laid out by `_dense`), through `reference_nms_v2.generate_detections_v2_reference`, or with ``agnostic``
    `reference_nms_agnostic.generate_detections_v2_class_agnostic_reference`. Returns the
    candidates kept, in order."""
    dense_boxes, dense_scores, candidate = _dense(boxes, scores, classes, rank, num_classes)
    generate = generate_detections_v2_class_agnostic_reference if agnostic else generate_detections_v2_reference
    _, _, out_classes, valid, anchors = generate(
        dense_boxes, dense_scores, pre_nms_top_k=pre_nms_top_k, pre_nms_score_threshold=params["score_threshold"],
        nms_iou_threshold=params["iou_threshold"], max_num_detections=cap)
    return candidate[anchors[0, :int(valid[0])], out_classes[0, :int(valid[0])]]
