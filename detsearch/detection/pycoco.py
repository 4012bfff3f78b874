"""pycocotools as the oracle: its ``COCO`` and bbox ``COCOeval``, run without printing.

The tests (and the sweep's slow reference) compare this project's numbers with these. Nothing
here is on the fast path: `detsearch.detection.cocoeval` computes the same numbers itself.
pycocotools is imported when a function here is called, not when this module is imported.

pycocotools writes into what it is given (``loadRes`` adds ``area`` and ``id`` to every
result, ``COCOeval`` marks ground truth ``_ignore``), so every function here works on copies
and leaves the caller's dicts unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from detsearch.detection.cocoeval import GroundTruth

__all__ = [
    "coco_ground_truth",
    "load_results",
    "pycocotools_eval",
    "pycocotools_f1",
    "pycocotools_stats",
    "summary_stats",
]


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def coco_ground_truth(ground_truth: GroundTruth | Mapping[str, Any]):
    """A pycocotools ``COCO`` holding ``ground_truth``: a COCO instances dict (deep-copied) or a
    `GroundTruth` (its images, categories and annotations, boxes as float64 ``[x, y, w, h]``)."""
    from pycocotools.coco import COCO

    if isinstance(ground_truth, GroundTruth):
        gt = ground_truth
        dataset = {
            "images": [{"id": int(i), "height": int(h), "width": int(w)} for i, (h, w) in zip(gt.image_ids, gt.image_sizes)],
            "categories": [{"id": int(c), "name": n} for c, n in zip(gt.category_ids, gt.category_names)],
            "annotations": [
                {
                    "id": int(gt.annotation_ids[a]),
                    "image_id": int(gt.image_ids[gt.image_index[a]]),
                    "category_id": int(gt.category_ids[gt.category_index[a]]),
                    "bbox": [float(v) for v in gt.boxes[a]],
                    "area": float(gt.areas[a]),
                    "iscrowd": int(gt.crowd[a]),
                }
                for a in range(gt.num_annotations)
            ],
        }
    elif isinstance(ground_truth, Mapping):
        dataset = copy.deepcopy(dict(ground_truth))
    else:
        raise TypeError(f"ground_truth must be a COCO instances dict or a GroundTruth, got {type(ground_truth).__name__}")
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def load_results(coco_gt, results: Sequence[Mapping[str, Any]]):
    """``coco_gt.loadRes`` on copies of COCO bbox ``results``; an empty list gives a ``COCO``
    without detections (``loadRes`` cannot load one)."""
    from pycocotools.coco import COCO

    with _quiet():
        if len(results):
            return coco_gt.loadRes([dict(result, bbox=list(result["bbox"])) for result in results])
        coco_dt = COCO()
        coco_dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
        coco_dt.createIndex()
    return coco_dt


def pycocotools_eval(coco_gt, coco_dt, image_ids: Iterable[int] | None = None, max_detections: int = 100):
    """A bbox ``COCOeval`` of ``coco_dt`` against ``coco_gt`` after evaluate, accumulate and
    summarize (``.stats`` holds the 12 stats, `summary_stats` the project's); on ``image_ids``
    (sorted, as pycocotools orders them) or, when None, on every ground-truth image; with
    ``params.maxDets[2] = max_detections``, as Model Garden's evaluator sets it."""
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.params.maxDets[2] = max_detections
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def summary_stats(evaluator) -> tuple[float, ...]:
    """The 12 stats of a summarized ``COCOeval``, AP read at ``params.maxDets[2]`` as the other
    AP stats are: pycocotools' ``summarize`` reads it at 100 whatever ``maxDets`` holds (-1 when
    100 is not among them). The mean ``summarize`` takes, over ``eval['precision']``; with the
    default ``maxDets`` exactly ``evaluator.stats``."""
    stats = [float(v) for v in evaluator.stats]
    params = evaluator.params
    if 100 not in params.maxDets or params.maxDets[2] != 100:
        area = [i for i, label in enumerate(params.areaRngLbl) if label == "all"]
        at = [i for i, value in enumerate(params.maxDets) if value == params.maxDets[2]]  # `_summarize`'s indexing
        precision = evaluator.eval["precision"][:, :, :, area, at]
        stats[0] = float(np.mean(precision[precision > -1])) if (precision > -1).any() else -1.0
    return tuple(stats)


def pycocotools_stats(ground_truth: GroundTruth | Mapping[str, Any], results: Sequence[Mapping[str, Any]],
                      image_ids: Iterable[int] | None = None, max_detections: int = 100) -> tuple[float, ...]:
    """pycocotools' 12 bbox stats (`summary_stats`) of COCO ``results`` (may be empty) on
    ``image_ids`` (None: every ground-truth image), ``maxDets[2] = max_detections``. Neither
    input is modified."""
    coco_gt = coco_ground_truth(ground_truth)
    return summary_stats(pycocotools_eval(coco_gt, load_results(coco_gt, results), image_ids, max_detections))


def pycocotools_f1(evaluator) -> tuple[float, float, float | None]:
    """F1 at IoU 0.5, area all, ``maxDets[-1]`` detections, categories pooled, from an evaluated
    ``COCOeval``'s per-image results (crowd and ignored boxes excluded).

    Returns:
      ``(f1, best_f1, best_score)``: F1 of all detections; the best F1 over score cuts (keep
      ``score >= best_score``; equal scores are cut together, ties go to the higher score);
      ``best_score`` is None without detections.
    """
    area_all = list(evaluator.params.areaRng[0])
    scores, true_positive = [], []
    ground_truth = 0
    for e in evaluator.evalImgs:
        if e is None or list(e["aRng"]) != area_all:
            continue
        ground_truth += int(np.count_nonzero(e["gtIgnore"] == 0))
        counted = np.logical_not(e["dtIgnore"][0])
        scores.extend(np.asarray(e["dtScores"])[counted].tolist())
        true_positive.extend(np.logical_and(e["dtMatches"][0], counted)[counted].tolist())
    scores = np.asarray(scores, np.float64)
    true_positive = np.asarray(true_positive, bool)
    total_tp = int(np.count_nonzero(true_positive))
    denominator = len(scores) + ground_truth
    f1 = float(2 * total_tp) / float(denominator) if denominator else 0.0
    order = np.argsort(-scores, kind="stable")
    scores, true_positive = scores[order], true_positive[order]
    best, best_score = 0.0, None
    tp = 0
    for i in range(len(scores)):
        tp += int(true_positive[i])
        if i + 1 < len(scores) and scores[i + 1] == scores[i]:
            continue
        value = float(2 * tp) / float(i + 1 + ground_truth)
        if best_score is None or value > best:
            best, best_score = value, float(scores[i])
    return f1, best, best_score
