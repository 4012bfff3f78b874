"""Per-category score thresholds on top of a chosen configuration, and the score curves behind
them.

A rule picks, for each category, one cut of that category's detections along the score axis:

- ``f1``: the cut with the highest F1;
- ``precision:P``: the lowest cut whose precision is ``>= P`` (the most recall at that
  precision); where no cut reaches P the category keeps nothing;
- ``recall:R``: the highest cut whose recall is ``>= R`` (the fewest detections reaching that
  recall); where no cut reaches R the category keeps everything the configuration keeps.

With a ``confidence`` C (precision and recall rules only) a cut reaches the target when the
one-sided lower confidence bound at level C of its precision or recall does: the exact
Clopper-Pearson bound (`detsearch.detection.sweep.confidence`) of ``k`` true positives among
``n`` kept (counted) detections for precision, among the category's ``n`` non-ignored ground
truth boxes for recall. The same scans choose: the lowest cut whose precision bound is ``>= P``,
the highest cut whose recall bound is ``>= R``; out of reach, the category keeps nothing
(precision) or everything (recall) as without one, and says so (``reached`` False). The bound
covers one cut fixed in advance; the rule picks its cut by the same counts, so the bound is no
guarantee for the cut it picks: held-out images (``--holdout``: ``holdout_precision``,
``holdout_recall``, ``holdout_held``) show how the targets carry over, and
tools/bench_per_class_confidence.py measures it over many splits.

Precision, recall and F1 are those of COCO matching at IoU 0.5, area "all", 100 detections per
image, crowd and ignored boxes excluded (the pooled F1 of a `SweepRow` is the same figure over
all categories). Ties between cuts go to the higher cut (fewer detections).

A cut keeps the detections whose float32 score is at least some score ``s`` (the curve counts
equal float32 scores together, as NMS and the export compare them). It is written as a
``score_threshold`` with the meaning it has everywhere, keep ``score > score_threshold``, and
separating (`cuts.threshold_keeping`): at or above the highest dropped score of the category's
detections of the configuration and strictly below the lowest kept one, as the scores are given
(float64 from a COCO results file) and as float32 (the model's output), preferring the shortest
decimal between them; the configuration's own threshold where nothing is dropped. So applying
the thresholds to the configuration's output, in either precision, keeps exactly the detections
the figures count. Categories without ground truth keep the configuration's threshold, with no
figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from detsearch.detection.cocoeval import STAT_NAMES, CocoEvaluation, Matches
from detsearch.detection.sweep.confidence import clopper_pearson_lower, lower_bound_reaches
from detsearch.detection.sweep.cuts import float32_cut, threshold_keeping

__all__ = [
    "PER_CLASS_RULES",
    "ChosenDetails",
    "ClassThreshold",
    "PerClassResult",
    "PerClassRule",
    "ScoreCurve",
    "choose_cut",
    "class_curves",
    "per_class_thresholds",
]

PER_CLASS_RULES = ("f1", "precision:P", "recall:R")
"""The forms ``--per-class`` takes (P and R in (0, 1])."""


@dataclass(frozen=True)
class PerClassRule:
    """A per-category cut rule: ``kind`` ``"f1"``, ``"precision"`` or ``"recall"``, with its
    ``target`` in (0, 1] (None for f1), and for precision and recall an optional
    ``confidence`` in (0, 1): the target is then one of the Clopper-Pearson lower bound at that
    level (module docstring)."""

    kind: str
    target: float | None = None
    confidence: float | None = None

    def __post_init__(self) -> None:
        confidence = self.confidence
        if confidence is not None:
            if self.kind == "f1":
                raise ValueError("a confidence needs a precision:P or recall:R rule, not f1")
            if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not (0.0 < confidence < 1.0):
                raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
        if self.kind == "f1":
            if self.target is not None:
                raise ValueError(f"the f1 rule takes no target, got {self.target!r}")
            return
        if self.kind not in ("precision", "recall"):
            raise ValueError(f"unknown per-class rule {self.kind!r}; use one of {', '.join(PER_CLASS_RULES)}")
        target = self.target
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not (0.0 < target <= 1.0):
            raise ValueError(f"{self.kind} target must be in (0, 1], got {target!r}")

    @classmethod
    def parse(cls, text: "str | PerClassRule", confidence: float | None = None) -> "PerClassRule":
        """``"f1"``, ``"precision:0.9"`` or ``"recall:0.8"``, with ``confidence`` (None: the
        rule's own, if a `PerClassRule` is given); ValueError naming the text otherwise."""
        if isinstance(text, PerClassRule):
            return text if confidence is None else cls(text.kind, text.target, confidence)
        if not isinstance(text, str):
            raise TypeError(f"a per-class rule is a string such as 'f1' or 'precision:0.9', got {type(text).__name__}")
        kind, colon, target = text.strip().partition(":")
        if kind == "f1" and not colon:
            return cls("f1", None, confidence)
        if kind not in ("precision", "recall") or not colon:
            raise ValueError(f"unknown per-class rule {text!r}; use one of {', '.join(PER_CLASS_RULES)}")
        try:
            value = float(target)
        except ValueError:
            raise ValueError(f"per-class rule {text!r}: {target!r} is not a number") from None
        if not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise ValueError(f"per-class rule {text!r}: {kind} target must be in (0, 1], got {target}")
        return cls(kind, value, confidence)

    def __str__(self) -> str:
        """The rule as ``--per-class`` takes it (without the confidence)."""
        return self.kind if self.target is None else f"{self.kind}:{self.target:g}"

    def lower_bounds(self, curve: "ScoreCurve", index: int) -> tuple[float | None, float | None]:
        """(precision, recall) lower bounds at this rule's confidence of ``curve`` keeping
        ``scores[:index + 1]`` (index -1: nothing; precision None then, and recall None without
        ground truth)."""
        tp = int(curve.true_positives[index]) if index >= 0 else 0
        counted = int(curve.counted[index]) if index >= 0 else 0
        precision = clopper_pearson_lower(tp, counted, self.confidence) if counted else None
        recall = clopper_pearson_lower(tp, curve.num_ground_truth, self.confidence) if curve.num_ground_truth else None
        return precision, recall


@dataclass(frozen=True, eq=False)
class ScoreCurve:
    """Counts at IoU 0.5 along the score axis of one category (or of all, pooled).

    Attributes:
      scores: float64 ``[n]`` distinct float32 score values, descending.
      true_positives: int64 ``[n]``: true positives with ``float32(score) >= scores[i]``.
      counted: int64 ``[n]``: counted (not ignored) detections with ``float32(score) >= scores[i]``.
      num_ground_truth: non-ignored ground truth boxes.
    """

    scores: np.ndarray
    true_positives: np.ndarray
    counted: np.ndarray
    num_ground_truth: int

    @classmethod
    def from_detections(cls, scores, true_positive, num_ground_truth: int) -> "ScoreCurve":
        """The curve of counted detections with ``scores`` (any order) and bool ``true_positive``."""
        scores = np.asarray(scores, np.float64).astype(np.float32).astype(np.float64)
        true_positive = np.asarray(true_positive, bool)
        order = np.argsort(-scores, kind="stable")
        scores, true_positive = scores[order], true_positive[order]
        last = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)
        return cls(scores[last], np.cumsum(true_positive, dtype=np.int64)[last],
                   np.arange(1, len(scores) + 1, dtype=np.int64)[last], int(num_ground_truth))

    def figures(self, index: int) -> tuple[float | None, float, float]:
        """(precision, recall, F1) keeping ``scores[:index + 1]``; index -1 keeps nothing
        (precision None)."""
        tp = int(self.true_positives[index]) if index >= 0 else 0
        counted = int(self.counted[index]) if index >= 0 else 0
        precision = tp / counted if counted else None
        recall = tp / self.num_ground_truth if self.num_ground_truth else 0.0
        denominator = counted + self.num_ground_truth
        return precision, recall, (2 * tp / denominator if denominator else 0.0)


def class_curves(matches: Matches) -> list[ScoreCurve]:
    """One `ScoreCurve` per category position of ``matches``' ground truth (area all, IoU 0.5,
    the first 100 detections per image and category)."""
    counted = matches.counted[:, 0, 0]
    true_positive = matches.true_positive[:, 0, 0]
    num_ground_truth = matches.matcher.ground_truth_counts()
    curves = []
    for k in range(matches.matcher.num_categories):
        members = np.flatnonzero(counted & (matches.category_pos == k))
        curves.append(ScoreCurve.from_detections(matches.scores[members], true_positive[members], int(num_ground_truth[k])))
    return curves


def choose_cut(curve: ScoreCurve, rule: PerClassRule) -> tuple[int, bool]:
    """``(index, reached)``: keep ``curve.scores[:index + 1]`` (index -1: nothing) under ``rule``;
    ``reached`` is False where a precision or recall target is out of reach (of its lower bound,
    with a confidence)."""
    n = len(curve.scores)
    if rule.confidence is not None:  # precision or recall
        trials = curve.counted if rule.kind == "precision" else np.full(n, curve.num_ground_truth, np.int64)
        reaching = np.flatnonzero(lower_bound_reaches(curve.true_positives, trials, rule.target, rule.confidence))
        if rule.kind == "precision":  # the lowest cut reaching it
            return (int(reaching[-1]), True) if len(reaching) else (-1, False)
        return (int(reaching[0]), True) if len(reaching) else (n - 1, False)
    if rule.kind == "f1":
        best, best_f1 = -1, 0.0
        for i in range(n):
            f1 = curve.figures(i)[2]
            if f1 > best_f1:  # ties keep the higher cut
                best, best_f1 = i, f1
        return best, True
    if rule.kind == "precision":
        for i in range(n - 1, -1, -1):
            precision = curve.figures(i)[0]
            if precision is not None and precision >= rule.target:
                return i, True
        return -1, False
    for i in range(n):
        if curve.figures(i)[1] >= rule.target:
            return i, True
    return n - 1, False


_FIGURES = ("category_id", "name", "score_threshold", "precision", "recall", "f1", "ap", "detections", "reached")
_LOWER_BOUNDS = ("precision_lower", "recall_lower")
_HELD_OUT = ("holdout_precision", "holdout_recall", "holdout_held")


@dataclass(frozen=True)
class ClassThreshold:
    """One category's threshold and its figures (None where the category has no ground truth;
    ``precision`` None where it keeps no counted detection).

    ``detections``: the category's detections the threshold keeps (of the configuration's
    output); ``reached``: False where the rule's target is out of reach.

    With a rule's ``confidence`` (else None, and `to_dict` leaves them out):
    ``precision_lower`` and ``recall_lower``, the Clopper-Pearson lower bounds at that level of
    the figures (None where the figure is).

    With held-out images (``held_out`` True, else `to_dict` leaves them out): the same cut's
    ``holdout_precision`` and ``holdout_recall`` there (None where undefined: nothing counted
    kept, no ground truth) and ``holdout_held``: whether the rule's target held there (None for
    f1 or where the figure is None).
    """

    category_id: int
    name: str
    score_threshold: float
    precision: float | None
    recall: float | None
    f1: float | None
    ap: float | None
    detections: int
    reached: bool
    confidence: float | None = None
    precision_lower: float | None = None
    recall_lower: float | None = None
    held_out: bool = False
    holdout_precision: float | None = None
    holdout_recall: float | None = None
    holdout_held: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        names = _FIGURES + (_LOWER_BOUNDS if self.confidence is not None else ()) + (_HELD_OUT if self.held_out else ())
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class PerClassResult:
    """Per-category thresholds under ``rule`` and the 12 COCO stats with all of them applied."""

    rule: PerClassRule
    classes: tuple[ClassThreshold, ...]
    stats: tuple[float, ...]
    dets_per_image: float

    def thresholds(self) -> dict[int, float]:
        return {c.category_id: c.score_threshold for c in self.classes}

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class_rule": str(self.rule),
            **({} if self.rule.confidence is None else {"per_class_confidence": self.rule.confidence}),
            "per_class": [c.to_dict() for c in self.classes],
            "per_class_stats": dict(zip(STAT_NAMES, self.stats)),
            "per_class_dets_per_image": self.dets_per_image,
        }

    def held_out(self, matches: Matches, base_cut: float) -> "PerClassResult":
        """This result with each category's figures on held-out images at its threshold.

        Args:
          matches: the chosen configuration's matches on the held-out images (at its cap), every
            score above its score threshold or more (cut here at ``base_cut``).
          base_cut: the float64 cut of the configuration's score threshold (`float32_cut`).

        A category keeps its held-out detections with ``score > base_cut`` and ``score >
        float32_cut(score_threshold)``, as on the images it was chosen on; precision and recall
        are those of COCO matching there (IoU 0.5, area all, the first ``maxDets`` detections per
        image and category, crowd and ignored boxes excluded).
        """
        matcher = matches.matcher
        counted = matches.counted[:, 0, 0] & (matches.scores > base_cut)
        true_positive = matches.true_positive[:, 0, 0]
        ground_truth = matcher.ground_truth_counts()
        positions = matcher.category_positions([c.category_id for c in self.classes])
        classes = []
        for entry, k in zip(self.classes, positions):
            kept = counted & (matches.category_pos == k) & (matches.scores > float32_cut(entry.score_threshold))
            tp, kept_count, npig = int(np.count_nonzero(true_positive[kept])), int(np.count_nonzero(kept)), int(ground_truth[k])
            precision = tp / kept_count if kept_count else None
            recall = tp / npig if npig else None
            figure = {"precision": precision, "recall": recall}.get(self.rule.kind)
            held = None if figure is None else bool(figure >= self.rule.target)
            classes.append(replace(entry, held_out=True, holdout_precision=precision, holdout_recall=recall,
                                   holdout_held=held))
        return replace(self, classes=tuple(classes))


@dataclass(frozen=True, eq=False)
class ChosenDetails:
    """What the plots and the report need of the chosen configuration: its `CocoEvaluation`, the
    pooled and per-category `ScoreCurve` (IoU 0.5), the category names; the evaluation of its NMS
    setting at the grid's lowest score threshold (``leaderboard``: what a leaderboard reports)
    and that threshold's detections per image; with errors asked, its confusion matrix and
    calibration (`detsearch.detection.diagnostics`; calibration None where a score lies outside
    [0, 1])."""

    evaluation: CocoEvaluation
    pooled: ScoreCurve
    curves: tuple[ScoreCurve, ...]
    category_ids: tuple[int, ...]
    names: tuple[str, ...]
    leaderboard: CocoEvaluation | None = None
    leaderboard_threshold: float | None = None
    leaderboard_dets_per_image: float | None = None
    confusion: Any = None
    calibration: Any = None


def cut_threshold(lowest_kept: float | None, output_scores: np.ndarray, base_threshold: float) -> float:
    """The separating ``score_threshold`` keeping the output scores (as given) whose float32 is
    ``>= lowest_kept`` (a float32 value; None keeps nothing): ``base_threshold`` where nothing
    of the output is dropped."""
    output = np.asarray(output_scores, np.float64)
    kept = np.zeros(len(output), bool) if lowest_kept is None else output.astype(np.float32) >= np.float32(lowest_kept)
    return threshold_keeping(output, kept, base_threshold)


def per_class_thresholds(matches: Matches, output_category: np.ndarray, output_scores: np.ndarray, rule: PerClassRule,
                         base_threshold: float, names: Sequence[str], num_images: int) -> PerClassResult:
    """Per-category thresholds under ``rule`` for one configuration.

    Args:
      matches: the configuration's matches (its detections above its score threshold).
      output_category: int ``[D]`` category position of every detection of the configuration's
        output (above its score threshold), ``output_scores`` their scores.
      rule: a `PerClassRule`.
      base_threshold: the configuration's score threshold.
      names: category names by position.
      num_images: images evaluated (for detections per image).
    """
    matcher = matches.matcher
    curves = class_curves(matches)
    output_category = np.asarray(output_category, np.int64)
    output_scores = np.asarray(output_scores, np.float64)
    thresholds, chosen = [], []
    for k, curve in enumerate(curves):
        scores_k = output_scores[output_category == k]
        if curve.num_ground_truth == 0:
            thresholds.append(float(base_threshold))
            chosen.append(None)
            continue
        index, reached = choose_cut(curve, rule)
        if rule.kind == "recall" and not reached:
            thresholds.append(float(base_threshold))  # out of reach: everything the configuration keeps
        else:
            thresholds.append(cut_threshold(curve.scores[index] if index >= 0 else None, scores_k, base_threshold))
        chosen.append((index, reached))
    cuts = np.array([float32_cut(t) for t in thresholds])
    evaluation = matches.evaluate_per_category(cuts)
    ap = evaluation.per_category_ap
    classes = []
    for k, (curve, threshold, pick) in enumerate(zip(curves, thresholds, chosen)):
        kept = int(np.count_nonzero(output_scores[output_category == k] > cuts[k]))
        if pick is None:
            classes.append(ClassThreshold(int(matcher.category_ids[k]), names[k], threshold, None, None, None, None, kept, True,
                                          confidence=rule.confidence))
            continue
        precision, recall, f1 = curve.figures(pick[0])
        bounds = {}
        if rule.confidence is not None:
            precision_lower, recall_lower = rule.lower_bounds(curve, pick[0])
            bounds = dict(confidence=rule.confidence, precision_lower=precision_lower, recall_lower=recall_lower)
        classes.append(ClassThreshold(int(matcher.category_ids[k]), names[k], threshold, precision, recall, f1,
                                      float(ap[k]), kept, pick[1], **bounds))
    total = int(np.count_nonzero(output_scores > cuts[output_category])) if len(output_scores) else 0
    return PerClassResult(rule, tuple(classes), tuple(float(v) for v in evaluation.stats),
                          total / num_images if num_images else 0.0)
