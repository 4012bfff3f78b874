"""Percentile bootstrap over images for COCO bbox stats, each replicate exact.

A bootstrap replicate draws the evaluated images with replacement; `bootstrap_weights` says
how many times each image is drawn. `replicate_stats` evaluates every replicate as pycocotools
would evaluate the physically duplicated data set: image ``i`` present ``weights[b, i]``
times, each copy an independent image (its own ground truth, its own detections, matched on
its own), copies of one image adjacent in image order. The numbers are bitwise those of
pycocotools on that data set, and with all weights 1 those of `Matches.evaluate`.

Why no replicate needs matching again: the matching of a copy is the matching of its image, so
only the accumulation changes. Per (category, IoU threshold) the detections of all images are
in descending score order (ties: images ascending, then rank), so a replicate only changes the
weighted running counts of true positives and counted detections, and what is read from them:

- the precision envelope at recall threshold ``r`` is the highest precision among the true
  positives whose recall ``tp / npig`` is ``>= RECALL_THRESHOLDS[r]`` (other detections never
  raise it); each true positive is put at the last ``r`` its recall reaches, and a running max
  from the last threshold down does the rest;
- the ``w`` copies of a detection with no equal-score detection of the same image and
  category are consecutive, and their precisions ``(tp + c) / (n + c)`` do not decrease with
  ``c``, so the last copy stands for all of them (a detection drawn 0 times changes nothing:
  it has the recall of the true positive before it and a precision no higher, or recall 0
  and precision 0);
- detections of one image and category with equal scores (a "tie unit") are repeated as a
  block, ``[d1, d2, d1, d2, ...]``, where an early copy can hold the highest precision; every
  copy of their true positives is placed. Scores after NMS rarely tie inside an image, so this
  costs little.

Each replicate is one compiled walk (numba, `_replicate_envelopes`) over the true positives of
all 10 IoU thresholds: its per-image weights summed into the running counts, the precisions
computed with pycocotools' float64 operations; the means are NumPy's over the same values in
the same order, hence bitwise equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from detsearch.checks import positive_int
from detsearch.detection.cocoeval import IOU_THRESHOLDS, RECALL_THRESHOLDS, Matches

__all__ = ["BOOTSTRAP_STATS", "DEFAULT_CHUNK", "bootstrap_weights", "percentile_interval", "replicate_stats"]

BOOTSTRAP_STATS = ("AP", "AP50", "AP75", "AR100", "F1")
"""Keys of `replicate_stats`: pycocotools' stats 0, 1, 2, 8 and the pooled F1 at IoU 0.5."""
DEFAULT_CHUNK = 32
"""Replicates evaluated by one call of the compiled walk in `replicate_stats`."""

_EPS = np.spacing(1)
_NUM_T = len(IOU_THRESHOLDS)
_NUM_R = len(RECALL_THRESHOLDS)
# Selected as pycocotools' summarize selects them.
_T50 = int(np.where(IOU_THRESHOLDS == 0.5)[0][0])
_T75 = int(np.where(IOU_THRESHOLDS == 0.75)[0][0])
_BELOW_100 = 100.0 * (1.0 - 1e-12)
_THRESHOLD_AFTER = np.r_[RECALL_THRESHOLDS[1:], np.inf]


def bootstrap_weights(num_images: int, replicates: int, seed: int) -> np.ndarray:
    """Draw counts of a bootstrap over images.

    Replicate ``b`` counts the ``b``-th call ``rng.integers(0, num_images, num_images)`` of
    ``rng = np.random.default_rng(seed)``: ``num_images`` images drawn uniformly with
    replacement. One seed gives one array; there is no unseeded draw.

    Args:
      num_images: images to draw from, >= 1 (`CocoMatcher.num_images`).
      replicates: bootstrap replicates, >= 1.
      seed: non-negative integer seed.

    Returns:
      int64 ``[replicates, num_images]``: how many times image ``i`` (position ``i`` among the
      matcher's ``image_ids``) is drawn in replicate ``b``; every row sums to ``num_images``.

    Raises:
      BadSetting: an argument that is not an integer, ``num_images < 1``, ``replicates < 1``
        or ``seed < 0``.
    """
    num_images = positive_int(num_images, "num_images")
    replicates = positive_int(replicates, "replicates")
    seed = positive_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    weights = np.empty((replicates, num_images), np.int64)
    for row in weights:  # one replicate at a time: memory O(num_images) besides the result
        row[:] = np.bincount(rng.integers(0, num_images, size=num_images, dtype=np.int64), minlength=num_images)
    return weights


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval: the ``(1 - level) / 2`` and ``1 - (1 - level) / 2``
    quantiles of ``values`` (``np.quantile``, linear interpolation).

    Every value is used as given: a replicate whose stat is undefined holds -1 (pycocotools'
    mark, e.g. no ground truth drawn) and is kept; filter such values first if they should not
    count.

    Args:
      values: real ``[B]`` replicate values (e.g. an entry of `replicate_stats`), B >= 1.
      level: coverage, strictly between 0 and 1.

    Returns:
      ``(low, high)`` as floats, ``low <= high``.

    Raises:
      ValueError: ``values`` is not a non-empty 1-D array of numbers without NaN, or ``level``
        is not in (0, 1).
    """
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)) or array.dtype == bool:
        raise ValueError(f"values must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if np.isnan(array).any():
        raise ValueError(f"values[{int(np.flatnonzero(np.isnan(array))[0])}] is NaN")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(array, [tail, 1.0 - tail], method="linear")
    return float(low), float(high)


def replicate_stats(matches: Matches, weights: np.ndarray, score_cut: float = -math.inf, *,
                    chunk: int = DEFAULT_CHUNK) -> dict[str, np.ndarray]:
    """COCO stats of the detections with ``score > score_cut`` on each bootstrap replicate.

    Replicate ``b`` is the multiset of evaluated images in which image ``i`` (position ``i``
    among ``matches.matcher.image_ids``) appears ``weights[b, i]`` times, each copy an
    independent image. Every value equals pycocotools' on the physically duplicated data set
    (copies of an image adjacent in image id order, images in their order, annotation copies
    with new unique non-zero ids), and with all weights 1 equals
    ``matches.evaluate([score_cut])``, bit for bit. (pycocotools never counts a ground truth
    box of id 0 as matched, see `detsearch.detection.cocoeval`; every copy of such a box keeps
    that quirk here.) The stats:

    - "AP", "AP50", "AP75", "AR100": ``COCOeval.stats[[0, 1, 2, 8]]`` (area all, 100
      detections per image and category); -1 when no category has non-ignored ground truth in
      the replicate (categories without it are left out of the means, as pycocotools does);
    - "F1": pooled F1 at IoU 0.5, area all, 100 detections,
      ``2 TP / (counted detections + non-ignored ground truth)``, 0 when that denominator is 0
      (`CocoEvaluation.f1`).

    Args:
      matches: the matched detections (`CocoMatcher.match`).
      weights: integer ``[B, I]`` (``I = matches.matcher.num_images``), non-negative, e.g.
        `bootstrap_weights`; not modified.
      score_cut: keep detections with ``score > score_cut`` (compared as float64; the default
        keeps all but those scored -inf, as `Matches.evaluate` does).
      chunk: replicates evaluated together, >= 1 (`DEFAULT_CHUNK`). Memory grows with it: 8 kB
        per category (the precision envelopes), times ``chunk``. The values do not depend on it.

    Returns:
      float64 ``[B]`` arrays under the keys of `BOOTSTRAP_STATS`.

    Raises:
      TypeError: ``matches`` is not `Matches`, or ``weights`` is not integer.
      ValueError: ``weights`` is not ``[B >= 1, I]`` or has a negative entry, ``score_cut`` is
        NaN, or ``chunk`` is not an integer >= 1 (`BadSetting`).
    """
    if not isinstance(matches, Matches):
        raise TypeError(f"matches must be Matches (CocoMatcher.match), got {type(matches).__name__}")
    matcher = matches.matcher
    weights = np.asarray(weights)
    if weights.dtype == bool or not np.issubdtype(weights.dtype, np.integer):
        raise TypeError(f"weights must be integers, got dtype {weights.dtype}")
    if weights.ndim != 2 or weights.shape[1] != matcher.num_images:
        raise ValueError(f"weights must be [replicates, {matcher.num_images}] (one column per evaluated image), got shape {weights.shape}")
    if weights.shape[0] < 1:
        raise ValueError(f"weights must have at least one replicate, got shape {weights.shape}")
    if weights.size and weights.min() < 0:
        b, i = np.argwhere(weights < 0)[0]
        raise ValueError(f"weights[{b}, {i}] = {weights[b, i]} is negative")
    score_cut = float(score_cut)
    if math.isnan(score_cut):
        raise ValueError("score_cut must not be NaN")
    chunk = positive_int(chunk, "chunk")

    num_replicates = weights.shape[0]
    chunk = min(chunk, num_replicates)
    layout = _layout(matches, score_cut)
    out = {name: np.empty(num_replicates, np.float64) for name in BOOTSTRAP_STATS}
    envelope = np.empty(_NUM_R * chunk * layout.num_segments)  # reused: fresh pages cost more than the work
    for start in range(0, num_replicates, chunk):
        stop = min(num_replicates, start + chunk)
        stats = _chunk_stats(layout, weights[start:stop], envelope)
        for name in BOOTSTRAP_STATS:
            out[name][start:stop] = stats[name]
    return out


# --------------------------------------------------------------------------------------------
# internals


@dataclass(frozen=True, eq=False)
class _Layout:
    """What every replicate reads. Detections are in pycocotools' accumulation order
    (category, descending score, image, rank); "entries" are their true positives (area all)
    at every IoU threshold, in (threshold, detection) order, so the entry's segment
    ``t * K + k`` ascends."""

    num_categories: int
    tp_image: np.ndarray  # int64 [P]
    tp_category: np.ndarray  # int64 [P]
    tp_segment: np.ndarray  # int64 [P]
    segment_bounds: np.ndarray  # int64 [S + 1] entries of segment s: bounds[s]:bounds[s + 1]
    counted_image: np.ndarray  # int64 [C] images of the detections counted at IoU 0.5
    counted_high: np.ndarray  # int64 [P] such detections up to the entry's detection
    odd_image: np.ndarray  # int64 [O] (threshold, detection) counted unlike at IoU 0.5
    odd_sign: np.ndarray  # int64 [O] +1 counted there only, -1 not counted there only
    # position = counted[counted_high] - offset[offset_index]: offset j is the detections
    # counted at IoU 0.5 before category offset_counted[j], less the odd pairs
    # offset_odd_low[j]:offset_odd_high[j] (those of the entry's segment up to the entry).
    offset_index: np.ndarray  # int64 [P]
    offset_counted: np.ndarray  # int64 [J]
    offset_odd_high: np.ndarray  # int64 [J]
    offset_odd_low: np.ndarray  # int64 [J]
    tied_of_entry: np.ndarray  # int64 [P] the entry's row among the tied ones below, -1 if none
    tied_tp_rank: np.ndarray  # int64 [M] true positives of the unit up to the entry's detection
    tied_counted_rank: np.ndarray  # int64 [M] counted detections of the unit up to it
    tied_unit_tp: np.ndarray  # int64 [M] true positives of the unit
    tied_unit_counted: np.ndarray  # int64 [M] counted detections of the unit
    counted50_per_image: np.ndarray  # int64 [I] counted detections at IoU 0.5
    gt_image: np.ndarray  # int64 [N] (category, image) pairs with non-ignored ground truth
    gt_count: np.ndarray  # int64 [N] by category, and their number of boxes
    gt_bounds: np.ndarray  # int64 [K + 1] pairs of category k: gt_bounds[k]:gt_bounds[k + 1]

    @property
    def num_segments(self) -> int:
        return _NUM_T * self.num_categories


def _layout(matches: Matches, score_cut: float) -> _Layout:
    matcher = matches.matcher
    num_k = matcher.num_categories
    keep = np.flatnonzero(matches.scores > score_cut)
    category = matches.category_pos[keep]
    image = matches.image_pos[keep]
    scores = matches.scores[keep]
    # A stable sort on descending score of the per-image lists concatenated in image order.
    order = np.lexsort((matches.rank[keep], image, -scores, category))
    rows = keep[order]
    category, image, scores = category[order], image[order], scores[order]
    n = len(rows)
    tp = matches.true_positive[rows, 0, :]  # [n, T], area all
    counted = matches.counted[rows, 0, :]
    category_first = np.searchsorted(category, np.arange(num_k))

    new_unit = np.ones(n, bool)
    new_unit[1:] = (category[1:] != category[:-1]) | (scores[1:] != scores[:-1]) | (image[1:] != image[:-1])
    unit_first = np.flatnonzero(new_unit)
    unit_of = np.cumsum(new_unit) - 1
    unit_size = np.diff(np.r_[unit_first, n])

    threshold, det = np.nonzero(tp.T)
    segment = threshold * num_k + category[det]
    num_s = _NUM_T * num_k

    # Counted at threshold t = counted at IoU 0.5, corrected by the few (threshold, detection)
    # pairs that differ (a detection matched to a crowd region at some thresholds only).
    base = counted[:, _T50]
    counted_rows = np.flatnonzero(base)
    odd_threshold, odd_det = np.nonzero(counted.T != base)
    odd_key = odd_threshold * n + odd_det
    odd_high = np.searchsorted(odd_key, threshold * n + det, side="right")
    odd_low = np.searchsorted(odd_key, threshold * n + category_first[category[det]], side="left")
    no_odd = odd_high == odd_low  # no correction: share the category's offset
    odd_high[no_odd] = 0
    odd_low[no_odd] = 0
    offsets, offset_index = np.unique(np.stack([category[det], odd_high, odd_low]), axis=1, return_inverse=True)

    tied = np.flatnonzero(unit_size[unit_of[det]] > 1)  # entries whose detection shares its tie unit
    tied_of_entry = np.full(len(det), -1, np.int64)
    tied_of_entry[tied] = np.arange(len(tied))
    tied_det, tied_threshold = det[tied], threshold[tied]
    first = unit_first[unit_of[tied_det]]
    last = first + unit_size[unit_of[tied_det]]
    tp_cum = np.zeros((n + 1, _NUM_T), np.int64)
    np.cumsum(tp, axis=0, out=tp_cum[1:])
    counted_cum = np.zeros((n + 1, _NUM_T), np.int64)
    np.cumsum(counted, axis=0, out=counted_cum[1:])

    ground_truth = matcher.ground_truth_per_image()
    gt_category, gt_image = np.nonzero(ground_truth.T)
    return _Layout(
        num_categories=num_k,
        tp_image=image[det],
        tp_category=category[det],
        tp_segment=segment,
        segment_bounds=np.searchsorted(segment, np.arange(num_s + 1)),
        counted_image=image[counted_rows],
        counted_high=np.searchsorted(counted_rows, det, side="right"),
        odd_image=image[odd_det],
        odd_sign=np.where(counted[odd_det, odd_threshold], 1, -1).astype(np.int64),
        offset_index=offset_index.reshape(-1),
        offset_counted=np.searchsorted(counted_rows, category_first, side="left")[offsets[0]],
        offset_odd_high=offsets[1],
        offset_odd_low=offsets[2],
        tied_of_entry=tied_of_entry,
        tied_tp_rank=tp_cum[tied_det + 1, tied_threshold] - tp_cum[first, tied_threshold],
        tied_counted_rank=counted_cum[tied_det + 1, tied_threshold] - counted_cum[first, tied_threshold],
        tied_unit_tp=tp_cum[last, tied_threshold] - tp_cum[first, tied_threshold],
        tied_unit_counted=counted_cum[last, tied_threshold] - counted_cum[first, tied_threshold],
        counted50_per_image=np.bincount(image[base], minlength=matcher.num_images).astype(np.int64),
        gt_image=gt_image,
        gt_count=ground_truth[gt_image, gt_category],
        gt_bounds=np.searchsorted(gt_category, np.arange(num_k + 1)),
    )


def _chunk_stats(layout: _Layout, weights: np.ndarray, envelope: np.ndarray) -> dict[str, np.ndarray]:
    """`replicate_stats` of ``weights`` ``[B, I]``; ``envelope`` is float64 workspace of at
    least ``B * S * R``."""
    num_b = weights.shape[0]
    num_k = layout.num_categories
    weights = np.ascontiguousarray(weights, np.int64)
    envelope = envelope[: num_b * layout.num_segments * _NUM_R].reshape(num_b, _NUM_T, num_k, _NUM_R)
    npig = np.empty((num_b, num_k), np.int64)
    tp_total = np.empty((num_b, layout.num_segments), np.int64)
    _replicate_envelopes(weights, layout.gt_image, layout.gt_count, layout.gt_bounds, layout.tp_image,
                         layout.tp_category, layout.segment_bounds, layout.counted_image, layout.counted_high,
                         layout.odd_image, layout.odd_sign, layout.offset_index, layout.offset_counted,
                         layout.offset_odd_high, layout.offset_odd_low, layout.tied_of_entry, layout.tied_tp_rank,
                         layout.tied_counted_rank, layout.tied_unit_tp, layout.tied_unit_counted, _THRESHOLD_AFTER,
                         envelope, npig, tp_total)
    npig_safe = np.maximum(npig, 1).astype(np.float64)
    precision_trk = envelope.transpose(0, 1, 3, 2)  # [B, T, R, K]
    recall = tp_total.reshape(num_b, _NUM_T, num_k).astype(np.float64) / npig_safe[:, None, :]

    out = {name: np.full(num_b, -1.0) for name in BOOTSTRAP_STATS}
    for b in range(num_b):
        present = npig[b] > 0
        if not present.any():
            continue
        # The values of pycocotools' summarize in its order, so that np.mean sums alike.
        q = precision_trk[b][:, :, present]
        out["AP"][b] = np.mean(q.reshape(-1))
        out["AP50"][b] = np.mean(q[_T50].reshape(-1))
        out["AP75"][b] = np.mean(q[_T75].reshape(-1))
        out["AR100"][b] = np.mean(recall[b][:, present].reshape(-1))
    tp50 = tp_total.reshape(num_b, _NUM_T, num_k)[:, _T50, :].sum(axis=1, dtype=np.int64)
    denominator = weights @ layout.counted50_per_image + npig.sum(axis=1, dtype=np.int64)
    out["F1"] = np.where(denominator > 0, (2 * tp50) / np.maximum(denominator, 1), 0.0)
    return out


@numba.njit(cache=True, nogil=True)
def _last_recall(tp, npig, threshold_after):
    """Index of the last recall threshold ``<= tp / npig`` (pycocotools' ``rc``, float64), for
    ``0 <= tp <= npig``.

    The thresholds are 0.01 apart and the rounding errors about 1e-16 relative, so
    ``floor(rc * 100 * (1 - 1e-12))`` is that index or the one before it; one comparison with
    the next threshold settles it.
    """
    recall = tp / npig
    index = int(recall * _BELOW_100)
    if threshold_after[index] <= recall:
        index += 1
    return index


@numba.njit(cache=True, nogil=True)
def _replicate_envelopes(weights, gt_image, gt_count, gt_bounds, tp_image, tp_category, segment_bounds, counted_image,
                         counted_high, odd_image, odd_sign, offset_index, offset_counted, offset_odd_high,
                         offset_odd_low, tied_of_entry, tied_tp_rank, tied_counted_rank, tied_unit_tp,
                         tied_unit_counted, threshold_after, envelope, npig, tp_total):
    """Per replicate ``b`` (weights ``[B, I]``): the weighted counts of one walk over the true
    positives of each (IoU threshold, category) segment, the precision at each (pycocotools'
    ``tp / (fp + tp + eps)``, every copy of a tied one), put at the last recall threshold its
    recall reaches and maxed there, then the running max down the recall thresholds: the
    precision envelope ``envelope[b, t, k, r]``; also ``npig[b, k]`` and ``tp_total[b, s]``."""
    num_b = weights.shape[0]
    num_t, num_k, num_r = envelope.shape[1], envelope.shape[2], envelope.shape[3]
    counted_cum = np.zeros(len(counted_image) + 1, np.int64)
    odd_cum = np.zeros(len(odd_image) + 1, np.int64)
    offset = np.zeros(len(offset_counted), np.int64)
    npig_safe = np.empty(num_k, np.float64)
    for b in range(num_b):
        w = weights[b]
        for k in range(num_k):
            total = 0
            for j in range(gt_bounds[k], gt_bounds[k + 1]):
                total += w[gt_image[j]] * gt_count[j]
            npig[b, k] = total
            npig_safe[k] = max(total, 1)
        for j in range(len(counted_image)):
            counted_cum[j + 1] = counted_cum[j] + w[counted_image[j]]
        for j in range(len(odd_image)):
            odd_cum[j + 1] = odd_cum[j] + w[odd_image[j]] * odd_sign[j]
        for j in range(len(offset_counted)):
            offset[j] = counted_cum[offset_counted[j]] - odd_cum[offset_odd_high[j]] + odd_cum[offset_odd_low[j]]
        envelope[b] = 0.0  # >= 0: pycocotools' 0 where no true positive reaches a recall threshold
        for s in range(num_t * num_k):
            t, k = s // num_k, s % num_k
            ordinal = 0
            for p in range(segment_bounds[s], segment_bounds[s + 1]):
                copies = w[tp_image[p]]
                ordinal += copies  # every copy of the entry's detection (and its tie unit before it)
                position = counted_cum[counted_high[p]] - offset[offset_index[p]]
                m = tied_of_entry[p]
                if m < 0:
                    tp = np.float64(ordinal)
                    # fp + tp is the integer position, exact in float64
                    precision = tp / (np.float64(position) + _EPS)
                    r = _last_recall(tp, npig_safe[tp_category[p]], threshold_after)
                    if precision > envelope[b, t, k, r]:
                        envelope[b, t, k, r] = precision
                    continue
                # Copy c of a tie unit with U true positives and N counted detections comes c
                # blocks after the first: its counts are the first copy's plus c * U and c * N.
                tp_before = ordinal - copies * tied_tp_rank[m]
                counted_before = position - copies * tied_counted_rank[m]
                for c in range(copies):
                    tp_count = tp_before + c * tied_unit_tp[m] + tied_tp_rank[m]
                    counted_count = counted_before + c * tied_unit_counted[m] + tied_counted_rank[m]
                    tp = np.float64(tp_count)
                    fp = np.float64(counted_count - tp_count)
                    precision = tp / (fp + tp + _EPS)
                    r = _last_recall(tp, npig_safe[tp_category[p]], threshold_after)
                    if precision > envelope[b, t, k, r]:
                        envelope[b, t, k, r] = precision
            tp_total[b, s] = ordinal
            for r in range(num_r - 2, -1, -1):
                if envelope[b, t, k, r + 1] > envelope[b, t, k, r]:
                    envelope[b, t, k, r] = envelope[b, t, k, r + 1]
