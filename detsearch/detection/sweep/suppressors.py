"""The NMS implementations a `SweepEngine` runs, behind one small protocol, `Suppressor`.

An engine asks one question of NMS, many times: which boxes of a `Selection` does it keep at
one IoU threshold, at the grid's lowest score threshold and largest cap (every other score
threshold and cap is read off that answer, see `detsearch.detection.sweep.engine`). The boxes
arrive image by image in visiting order (descending score, ties as the engine's docstring
says), so an implementation never sorts. Consecutive calls share a selection (the keys of one
first-stage setting differ in ``iou_threshold`` only): each implementation prepares what they
share once and keeps it, its memo, which nobody else reads.

Second stage (and one-stage), over the engine's `Candidates`:

- `GreedyWalkNms`: greedy batched NMS as one compiled walk over all images (`nms.GreedyWalk`);
- `ReferenceGreedyNms`: the same, image by image through `nms.per_class_nms_reference`;
- `TiledV2Nms`: Model Garden's v2 (`nms_v2.tiled_nms` per image and class, one compiled call
  over all of them, then the merge; class-agnostic, ``use_class_agnostic_nms``:
  `nms_v2.padded_nms` per image);
- `V1Nms`: Model Garden's v1 (`nms_v1`: TensorFlow's padded NMS, or its kernel's hard or soft
  NMS, per image and class, then the merge). Soft NMS outputs decayed scores: second-stage
  suppressors answer `output_scores` (None: the candidates' own).

First stage (two-stage), over the cache's proposal rows:

- `BatchedProposalNms`: greedy class-agnostic NMS (`nms.class_agnostic_nms_batched`, the
  compiled walk);
- `TiledProposalNms`: Model Garden's ``use_batched_nms: false`` (per level the top-k, then
  `nms_v2.tiled_nms`).

`second_stage_nms` and `first_stage_nms` choose the implementation a `PostProcessing` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, NamedTuple, Protocol

import numpy as np

from detsearch.detection import nms as nms_ops
from detsearch.detection import nms_v1, nms_v2
from detsearch.detection.cache import DetectionCache
from detsearch.detection.cocoeval import ragged_arange
from detsearch.detection.sweep.settings import NmsBackend, NmsVersion, PostProcessing, ProposalNms

__all__ = [
    "BatchedProposalNms",
    "Candidates",
    "GreedyWalkNms",
    "ReferenceGreedyNms",
    "Selection",
    "Suppressor",
    "TiledProposalNms",
    "TiledV2Nms",
    "V1Nms",
    "class_groups",
    "class_lists",
    "first_stage_nms",
    "second_stage_nms",
]


class Selection(NamedTuple):
    """The boxes one NMS pass visits.

    Attributes:
      key: what chose them; equal keys mean equal selections (a suppressor's memo key).
      positions: int positions among the suppressor's boxes, image by image in visiting order;
        None for all of them, in their own order.
      offsets: int ``[num_images + 1]``: image ``i`` owns ``positions[offsets[i]:offsets[i + 1]]``
        (of the boxes themselves when ``positions`` is None).
      class_agnostic: one NMS over all classes of an image (capped at ``max_total_detections``).
    """

    key: Hashable
    positions: np.ndarray | None
    offsets: np.ndarray
    class_agnostic: bool = False


class Suppressor(Protocol):
    """One NMS implementation, run at the grid's lowest score threshold and largest cap."""

    def prepare(self, selection: Selection) -> None:
        """Prepares what every IoU threshold of ``selection`` shares, and keeps it (for
        example before worker processes fork)."""

    def kept(self, selection: Selection, iou_threshold: float) -> np.ndarray:
        """Positions among the suppressor's boxes that NMS keeps of ``selection`` at
        ``iou_threshold``, image by image in output order."""


@dataclass(frozen=True)
class Candidates:
    """The cache entries every second-stage NMS pass of a sweep draws from: those scoring above
    the grid's lowest ``score_threshold``, image by image in visiting order.

    Attributes:
      entries: int ``[n]``: the cache entry of each candidate.
      image, row, classes: int ``[n]``: its image position, cache row and class index.
      score: float32 ``[n]``.
      boxes: float32 ``[n, 4]`` yxyx (one-stage: its row's; two-stage: its own).
      offsets: int ``[num_images + 1]``: image ``i`` owns ``offsets[i]:offsets[i + 1]``.
      num_classes: the cache's number of categories.
    """

    entries: np.ndarray
    image: np.ndarray
    row: np.ndarray
    classes: np.ndarray
    score: np.ndarray
    boxes: np.ndarray
    offsets: np.ndarray
    num_classes: int

    @property
    def num_images(self) -> int:
        return len(self.offsets) - 1


class GreedyWalkNms:
    """Greedy batched NMS (TensorFlow's kernels' semantics) as one compiled walk over all
    images (`nms.GreedyWalk`); each image stops at ``max_total`` kept."""

    def __init__(self, candidates: Candidates, max_per_class: int, max_total: int):
        self.candidates = candidates
        self.max_per_class = max_per_class
        self.max_total = max_total
        # Shared by every walk: the boxes' walk data and dense (image, class) group ids.
        self.data = nms_ops.walk_data(candidates.boxes)
        self.group, self.num_groups = nms_ops.compact_groups(candidates.image, candidates.classes)
        self._walk: tuple[Hashable, nms_ops.GreedyWalk] | None = None

    def prepare(self, selection: Selection) -> None:
        self._prepared(selection)

    def _prepared(self, selection: Selection) -> nms_ops.GreedyWalk:
        if self._walk is not None and self._walk[0] == selection.key:
            return self._walk[1]
        picked = selection.positions
        if picked is None:
            data, group, num_groups = self.data, self.group, self.num_groups
        elif selection.class_agnostic:
            data, group, num_groups = self.data[:, picked], self.candidates.image[picked], self.candidates.num_images
        else:
            data, group, num_groups = self.data[:, picked], self.group[picked], self.num_groups
        walk = nms_ops.GreedyWalk.prepared(data, group, num_groups, selection.offsets)
        self._walk = (selection.key, walk)
        return walk

    def kept(self, selection: Selection, iou_threshold: float) -> np.ndarray:
        kept = self._prepared(selection).run(
            iou_threshold=iou_threshold,
            max_per_group=self.max_total if selection.class_agnostic else self.max_per_class,  # agnostic: one group
            max_per_image=self.max_total,
        )
        return np.flatnonzero(kept) if selection.positions is None else selection.positions[kept]


class ReferenceGreedyNms:
    """Greedy batched NMS image by image through the NumPy reference
    (`nms.per_class_nms_reference`); slow, no preparation."""

    def __init__(self, candidates: Candidates, max_per_class: int, max_total: int):
        self.candidates = candidates
        self.max_per_class = max_per_class
        self.max_total = max_total

    def prepare(self, selection: Selection) -> None:
        pass

    def kept(self, selection: Selection, iou_threshold: float) -> np.ndarray:
        positions = np.arange(len(self.candidates.entries)) if selection.positions is None else selection.positions
        boxes, classes = self.candidates.boxes[positions], self.candidates.classes[positions]
        offsets, agnostic = selection.offsets, selection.class_agnostic
        kept = np.zeros(len(positions), bool)
        for i in range(len(offsets) - 1):
            lo, hi = offsets[i], offsets[i + 1]
            chosen = nms_ops.per_class_nms_reference(
                boxes[lo:hi],
                np.arange(hi - lo, 0, -1, dtype=np.float32),  # already in visiting order
                np.zeros(hi - lo, np.int64) if agnostic else classes[lo:hi],
                iou_threshold=iou_threshold,
                max_detections_per_class=self.max_total if agnostic else self.max_per_class,
                max_total_detections=self.max_total,
            )
            kept[lo + chosen] = True
        return positions[kept]


class TiledV2Nms:
    """Model Garden's ``nms_version: v2``: per (image, class) the top ``pre_nms_top_k``
    candidates, `nms_v2.tiled_nms` on each (all of them in one `nms_v2.tiled_nms_groups` call),
    the classes merged by descending score, ties by (class, position), the first ``cap`` of each
    image.

    A class-agnostic selection (``use_class_agnostic_nms: true``, Model Garden's
    ``_generate_detections_v2_class_agnostic``) is each row's best class (the engine's selection:
    a row's first entry in visiting order, ties the lower class, as ``tf.nn.top_k(k=1)``): per
    image its first ``pre_nms_top_k`` (Model Garden's ``tf.nn.top_k`` over the anchors' best
    scores: descending, ties the lower row or proposal rank), then `nms_v2.padded_nms`
    (TensorFlow's ``non_max_suppression_padded``, greedy at IoU >= the threshold), whose output is
    already in descending score and capped at ``cap``. Its selection on a shorter prefix is the
    prefix of its selection, and its first ``c`` are its output at cap ``c``
    (`nms_v2.padded_nms`), as the engine needs."""

    def __init__(self, candidates: Candidates, pre_nms_top_k: int, cap: int):
        self.candidates = candidates
        self.pre_nms_top_k = pre_nms_top_k
        self.cap = cap
        self._lists: tuple[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def prepare(self, selection: Selection) -> None:
        self._prepared(selection)

    def _prepared(self, selection: Selection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lists NMS runs on, laid end to end: ``(positions, offsets, boxes)``, list ``g``
        being ``positions[offsets[g]:offsets[g + 1]]``. Per image, per class with candidates
        (ascending): the top ``pre_nms_top_k`` in visiting order (descending score, ties by row or
        proposal rank: Model Garden's ``tf.nn.top_k``; entries under the lowest threshold would
        rank below these); class-agnostic: per image its first ``pre_nms_top_k``."""
        if self._lists is not None and self._lists[0] == selection.key:
            return self._lists[1]
        c = self.candidates
        everything = np.arange(len(c.entries)) if selection.positions is None else selection.positions
        if selection.class_agnostic:
            positions, offsets = _first_of_each(everything, selection.offsets, self.pre_nms_top_k)
        else:
            positions, offsets = class_groups(c, everything, self.pre_nms_top_k)
        lists = (positions, offsets, np.ascontiguousarray(c.boxes[positions], np.float32))
        self._lists = (selection.key, lists)
        return lists

    def kept(self, selection: Selection, iou_threshold: float) -> np.ndarray:
        c = self.candidates
        positions, offsets, boxes = self._prepared(selection)
        if selection.class_agnostic:
            return positions[nms_v2.padded_nms_groups(boxes, offsets, iou_threshold, self.cap)]
        picked = positions[nms_v2.tiled_nms_groups(boxes, offsets, iou_threshold, self.cap)]
        # by image, class and position in the class's selection: the merge's tie order
        return picked[nms_v2.merge_classes(c.image[picked], c.score[picked], self.cap)]


def _first_of_each(positions: np.ndarray, offsets: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``top_k`` of each list ``positions[offsets[i]:offsets[i + 1]]``: ``(positions,
    offsets)`` of the shortened lists."""
    counts = np.minimum(np.diff(offsets), top_k)
    return positions[ragged_arange(offsets[:-1], counts)], np.r_[0, np.cumsum(counts)].astype(np.int64)


def class_groups(candidates: Candidates, positions: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image, per class with candidates among ``positions`` (ascending image, then class):
    their positions, the first ``top_k`` in visiting order (Model Garden's per-class
    ``tf.nn.top_k``: descending score, ties by row or proposal rank; entries under the lowest
    threshold would rank below these), laid end to end: ``(positions, offsets)``, group ``g``
    being ``positions[offsets[g]:offsets[g + 1]]``."""
    c = candidates
    if not len(positions):
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    group = c.image[positions] * c.num_classes + c.classes[positions]
    by_group = np.argsort(group, kind="stable")  # within a group: the visiting order
    order, group = positions[by_group], group[by_group]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    return _first_of_each(order, np.r_[starts, len(order)], top_k)


def class_lists(order: np.ndarray, offsets: np.ndarray, image: np.ndarray, num_images: int) -> list[list[np.ndarray]]:
    """`class_groups`' ``(order, offsets)`` as one list of groups per image (``image``: the
    candidates' image positions)."""
    groups = [order[lo:hi] for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    bounds = np.searchsorted(image[order[offsets[:-1]]], np.arange(num_images + 1))
    return [groups[bounds[i]:bounds[i + 1]] for i in range(num_images)]


class V1Nms:
    """Model Garden's ``nms_version: v1`` (`detsearch.detection.nms_v1`): per (image, class) the
    top ``pre_nms_top_k`` candidates, one TensorFlow NMS each at the grid's lowest score
    threshold, capped at ``cap``; the classes merged by descending output score, ties by (class,
    position), the first ``cap`` of each image.

    ``soft_nms_sigma`` None runs ``non_max_suppression_padded`` (`nms_v1.padded_nms_v1`, list
    by list); 0 the kernel's hard NMS and above 0 its soft NMS (`nms_v1.v5_groups`, every list
    in one compiled pass), whose decayed scores are the output (`output_scores`) and which
    ignores the IoU threshold. Every higher score threshold is the output restricted to output
    scores above it, and every smaller cap its first entries (`nms_v1`, properties (a) and
    (b)), except with ``soft_nms_sigma`` None where a tile holds an IoU exactly at the
    threshold: then `exact_prefixes` is False and `kept_above` runs each score threshold on its
    own."""

    def __init__(self, candidates: Candidates, pre_nms_top_k: int, cap: int, soft_nms_sigma: float | None,
                 score_threshold: float):
        self.candidates = candidates
        self.pre_nms_top_k = pre_nms_top_k
        self.cap = cap
        self.sigma = soft_nms_sigma
        self.score_threshold = score_threshold
        self._groups: tuple[Hashable, tuple[np.ndarray, np.ndarray]] | None = None
        self._runs: dict[float | None, tuple[np.ndarray, np.ndarray, bool]] = {}

    def prepare(self, selection: Selection) -> None:
        self._prepared(selection)

    def _prepared(self, selection: Selection) -> tuple[np.ndarray, np.ndarray]:
        """`class_groups` of the selection's candidates; a new selection forgets the runs."""
        if self._groups is None or self._groups[0] != selection.key:
            everything = np.arange(len(self.candidates.entries)) if selection.positions is None else selection.positions
            self._groups = (selection.key, class_groups(self.candidates, everything, self.pre_nms_top_k))
            self._runs = {}
        return self._groups[1]

    def _lists(self, selection: Selection) -> list[list[np.ndarray]]:
        return class_lists(*self._prepared(selection), self.candidates.image, self.candidates.num_images)

    def _run(self, selection: Selection, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """(kept positions image by image in output order, their float32 output scores, exact)."""
        c = self.candidates
        order, offsets = self._prepared(selection)
        memo = None if self.sigma else iou_threshold  # soft NMS reads no IoU threshold
        if memo in self._runs:
            return self._runs[memo]
        if self.sigma is not None:  # the kernel's NMS, every list at once
            positions, out_scores, counts = nms_v1.v5_groups(c.boxes[order], c.score[order], offsets, self.sigma,
                                                             iou_threshold, self.score_threshold, self.cap)
            rows = ragged_arange(offsets[:-1], counts)  # each list's selection: (image, class, position) order
            picked, scores = order[np.repeat(offsets[:-1], counts) + positions[rows]], out_scores[rows]
            merged = nms_v2.merge_classes(c.image[picked], scores, self.cap)
            self._runs[memo] = (picked[merged], scores[merged], True)
            return self._runs[memo]
        picked, scores, exact = [], [], True
        for classes in self._lists(selection):
            lists = []
            for group in classes:
                chosen, ok = nms_v1.padded_nms_v1_checked(c.boxes[group], iou_threshold, self.cap)
                lists.append((group[chosen], ok))
                exact = exact and ok
            which, position = nms_v1.merge_classes([c.score[g] for g, _ in lists], self.cap)
            picked.extend(lists[k][0][p] for k, p in zip(which.tolist(), position.tolist()))
        picked = np.asarray(picked, np.int64)
        self._runs[memo] = (picked, c.score[picked], exact)
        return self._runs[memo]

    def kept(self, selection: Selection, iou_threshold: float) -> np.ndarray:
        return self._run(selection, iou_threshold)[0]

    def output_scores(self, selection: Selection, iou_threshold: float) -> np.ndarray | None:
        """Soft NMS: the decayed float32 score of each of `kept`'s positions; otherwise None (the
        candidates' own scores)."""
        return self._run(selection, iou_threshold)[1] if self.sigma else None

    def exact_prefixes(self, selection: Selection, iou_threshold: float) -> bool:
        """Whether every higher score threshold's output is `kept`'s restricted to scores above it."""
        return self._run(selection, iou_threshold)[2]

    def kept_above(self, selection: Selection, iou_threshold: float, score_threshold: float) -> np.ndarray:
        """`kept` of a run at ``score_threshold`` itself (``soft_nms_sigma`` None): each class's
        candidates scoring above it (a prefix of its list) through `nms_v1.padded_nms_v1`."""
        score, cut = self.candidates.score, np.float32(score_threshold)
        picked = []
        for classes in self._lists(selection):
            lists = []
            for group in classes:
                group = group[score[group] > cut]
                lists.append(group[nms_v1.padded_nms_v1(self.candidates.boxes[group], iou_threshold, self.cap)])
            which, position = nms_v1.merge_classes([score[g] for g in lists], self.cap)
            picked.extend(lists[k][p] for k, p in zip(which.tolist(), position.tolist()))
        return np.asarray(picked, np.int64)


class BatchedProposalNms:
    """The first stage as greedy class-agnostic NMS (Model Garden's ``roi_generator.
    use_batched_nms: true``): proposals above ``score_threshold`` (the grid's lowest
    ``nms_score_threshold``), per FPN level when ``per_level``, at most ``num_proposals`` per
    image, by `nms.class_agnostic_nms_batched` (the compiled walk; the proposals sorted once,
    `nms.ProposalWalk`). Kept: global rows per image by descending objectness (ties by row), by
    IoU threshold."""

    def __init__(self, cache: DetectionCache, score_threshold: float, num_proposals: int, per_level: bool):
        self.cache = cache
        self.score_threshold = score_threshold
        self.num_proposals = num_proposals
        self.per_level = per_level
        self._walk: nms_ops.ProposalWalk | None = None  # sorted once for every IoU threshold
        self._kept: dict[float, np.ndarray] = {}

    def prepare(self, selection: Selection) -> None:
        pass

    def kept(self, selection: Selection, iou_threshold: float) -> np.ndarray:
        if iou_threshold not in self._kept:
            if self._walk is None:
                cache = self.cache
                self._walk = nms_ops.ProposalWalk(
                    np.asarray(cache.row_boxes, np.float32), np.asarray(cache.row_objectness, np.float32),
                    selection.offsets, score_threshold=self.score_threshold,
                    levels=np.asarray(cache.row_level) if self.per_level else None)
            self._kept[iou_threshold], _ = self._walk.kept(iou_threshold, self.num_proposals)
        return self._kept[iou_threshold]


class TiledProposalNms:
    """The first stage as Model Garden's ``roi_generator`` with ``use_batched_nms: false``: per
    FPN level (in recorded order) the top ``proposal_top_k`` rows by objectness (ties by row),
    objectness above ``score_cut`` (the grid's lowest ``nms_score_threshold`` as the first stage
    compares it, `PostProcessing.proposal_cut`),
    `nms_v2.tiled_nms` keeping at most ``num_proposals``; the levels merged by descending
    objectness, ties by (level, position), the first ``num_proposals``. Kept by IoU threshold."""

    def __init__(self, cache: DetectionCache, score_cut: float, num_proposals: int, proposal_top_k: int):
        self.cache = cache
        self.score_cut = score_cut
        self.num_proposals = num_proposals
        self.proposal_top_k = proposal_top_k
        self._kept: dict[float, np.ndarray] = {}

    def prepare(self, selection: Selection) -> None:
        pass

    def kept(self, selection: Selection, iou_threshold: float) -> np.ndarray:
        if iou_threshold not in self._kept:
            self._kept[iou_threshold] = self._run(selection.offsets, iou_threshold)
        return self._kept[iou_threshold]

    def _run(self, row_offsets: np.ndarray, iou_threshold: float) -> np.ndarray:
        boxes = np.asarray(self.cache.row_boxes, np.float32)
        objectness = np.asarray(self.cache.row_objectness, np.float32)
        levels = np.asarray(self.cache.row_level)
        kept = []
        for i in range(len(row_offsets) - 1):
            lo, hi = int(row_offsets[i]), int(row_offsets[i + 1])
            merged = []
            for level in dict.fromkeys(levels[lo:hi].tolist()):  # Model Garden records them in its order
                rows = lo + np.flatnonzero(levels[lo:hi] == level)
                rows = rows[np.argsort(-objectness[rows], kind="stable")][:self.proposal_top_k]
                rows = rows[objectness[rows].astype(np.float64) > self.score_cut]  # a prefix
                merged.append(rows[nms_v2.tiled_nms(boxes[rows], iou_threshold, self.num_proposals)])
            merged = np.concatenate(merged) if merged else np.zeros(0, np.int64)
            kept.append(merged[np.argsort(-objectness[merged], kind="stable")][:self.num_proposals])
        return np.concatenate(kept) if kept else np.zeros(0, np.int64)


def second_stage_nms(post_processing: PostProcessing, backend: NmsBackend, candidates: Candidates,
                     score_threshold: float) -> Suppressor:
    """The (second-stage, or one-stage) NMS a checked ``post_processing`` runs at
    ``score_threshold`` (the grid's lowest): v1 is always `V1Nms`, v2 `TiledV2Nms`; batched is
    `GreedyWalkNms`, or `ReferenceGreedyNms` with the reference backend."""
    per_class, total = post_processing.max_detections_per_class, post_processing.max_total_detections
    if post_processing.nms_version == NmsVersion.V1:
        return V1Nms(candidates, post_processing.pre_nms_top_k, total, post_processing.soft_nms_sigma, score_threshold)
    if post_processing.nms_version == NmsVersion.V2:
        return TiledV2Nms(candidates, post_processing.pre_nms_top_k, total)
    if backend == NmsBackend.REFERENCE:
        return ReferenceGreedyNms(candidates, per_class, total)
    return GreedyWalkNms(candidates, per_class, total)


def first_stage_nms(post_processing: PostProcessing, cache: DetectionCache, score_threshold: float) -> Suppressor:
    """The first-stage NMS a checked two-stage ``post_processing`` runs, at ``score_threshold``
    (the grid's lowest ``nms_score_threshold``)."""
    if post_processing.proposal_nms == ProposalNms.TILED:
        return TiledProposalNms(cache, post_processing.proposal_cut(score_threshold), post_processing.num_proposals,
                                post_processing.proposal_top_k)
    return BatchedProposalNms(cache, score_threshold, post_processing.num_proposals, post_processing.per_level)
