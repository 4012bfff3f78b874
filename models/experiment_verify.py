"""Model Garden's own evaluation held against the sweep's table: which rows (`verification_rows`),
the comparison (`verify_rows`: each of the 12 stats as float32, `VerifiedRow`, `Verification`,
whose `Verification.check` raises `ModelGardenMismatch`), the stats Model Garden's evaluator does
not report as the sweep does (`NOT_COMPARED`), and where the kernel's order of equal scores may
decide a row otherwise (`TieFinder`). The evaluation itself is
`detsearch.models.experiment.evaluate_settings_with_model_garden`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from detsearch.detection.cache import CacheKind
from detsearch.detection.sweep.settings import NmsVersion
from detsearch.models.experiment import Experiment, evaluate_settings_with_model_garden

__all__ = [
    "MASK_AREAS",
    "ModelGardenMismatch",
    "NOT_COMPARED",
    "RAISED_MAX_DETS",
    "TieFinder",
    "VERIFY_ROWS",
    "Verification",
    "VerifiedRow",
    "verification_rows",
    "verify_rows",
]


RAISED_MAX_DETS = ("Model Garden's evaluator logs it as -1 when max_num_eval_detections is not 100 (pycocotools' "
                   "summarize reads AP at maxDets 100)")
MASK_AREAS = ("Model Garden's Mask R-CNN evaluator sizes each detection by its mask's area (its COCOWrapper, "
              "eval_type mask), which decides the area range an unmatched detection counts in; the sweep sizes it by "
              "its box, as pycocotools' bbox evaluation does")
NOT_COMPARED = {RAISED_MAX_DETS: ("AP",), MASK_AREAS: ("APs", "APm", "APl", "ARs", "ARm", "ARl")}
"""Why a stat of `verify_rows` is not compared with Model Garden's, by reason: the stats it covers."""

VERIFY_ROWS = 6
"""`verification_rows`' default: the chosen row, the config's, and four more spread over the axes."""

TIE_REASON = ("combined_non_max_suppression orders equal scores in no defined order (docs/models.md, "
              "\"Tied scores\")")


class ModelGardenMismatch(ValueError):
    """Model Garden's own evaluation gives another number than the sweep's row (`Verification.check`)."""


@dataclasses.dataclass(frozen=True)
class VerifiedRow:
    """One row of the sweep's table next to Model Garden's own evaluation at its settings.

    Attributes:
      params: the row's settings (MoXing names, ``max_detections`` when swept).
      labels: ``"chosen"`` and/or ``"config"`` where the row is one of those, else empty.
      ours: the sweep's 12 stats (float64, pycocotools order).
      theirs: Model Garden's 12 stats (float32 values, as its evaluator reports them).
      tie: None, or why the kernel's order of equal scores may decide this row otherwise than
        the sweep (`TieFinder`): a difference there is reported, not an error.
      unreported: positions of the stats not compared (`NOT_COMPARED` says why): AP when
        ``task.max_num_eval_detections`` is not 100 (Model Garden's evaluator logs -1: pycocotools'
        ``summarize`` reads AP at ``maxDets`` 100, `detsearch.detection.cocoeval`); the six
        stats of an area range on Mask R-CNN (its evaluator sizes each detection by its mask).
    """

    params: Mapping[str, float]
    labels: tuple[str, ...]
    ours: tuple[float, ...]
    theirs: tuple[float, ...]
    tie: str | None = None
    unreported: tuple[int, ...] = ()

    @property
    def differing(self) -> list[int]:
        """Positions of the stats compared where ``np.float32(ours) != theirs``."""
        return [i for i, (a, b) in enumerate(zip(self.ours, self.theirs))
                if i not in self.unreported and np.float32(a) != np.float32(b)]

    def describe(self) -> str:
        from detsearch.detection.report import describe_params

        text = describe_params(self.params)
        return f"{text} ({', '.join(self.labels)})" if self.labels else text


@dataclasses.dataclass(frozen=True)
class Verification:
    """The sweep's rows against Model Garden's own evaluation, stat by stat as float32."""

    rows: tuple[VerifiedRow, ...]

    @property
    def stats_compared(self) -> int:
        return sum(len(row.ours) - len(row.unreported) for row in self.rows)

    @property
    def mismatches(self) -> list[tuple[VerifiedRow, str, float, float]]:
        """(row, stat name, ours, theirs) of every differing stat of a row without a documented tie."""
        from detsearch.detection.cocoeval import STAT_NAMES

        return [(row, STAT_NAMES[i], row.ours[i], row.theirs[i]) for row in self.rows if row.tie is None
                for i in row.differing]

    @property
    def excused(self) -> list[VerifiedRow]:
        """Rows that differ where a documented tie makes the kernel's order undefined."""
        return [row for row in self.rows if row.tie is not None and row.differing]

    def lines(self) -> list[str]:
        """What ``--verify`` prints: the count compared, then every row; each mismatch as
        ``row: STAT ours X theirs Y``."""
        from detsearch.detection.cocoeval import STAT_NAMES

        mismatches = self.mismatches
        verdict = (f"{len(mismatches)} differ" if mismatches else "all equal") + (
            f", {len(self.excused)} rows differ where scores tie" if self.excused else "")
        unreported = sorted({STAT_NAMES[i] for row in self.rows for i in row.unreported})
        counted = (f"{len(self.rows)} rows, {self.stats_compared} stats" if unreported
                   else f"{len(self.rows)} rows x 12 stats = {self.stats_compared}")
        lines = [f"Model Garden's own evaluation: {counted} compared as float32 (np.float32(sweep) == Model Garden): "
                 f"{verdict}"]
        for reason, names in NOT_COMPARED.items():
            if set(names) & set(unreported):
                lines.append(f"  not compared: {', '.join(n for n in names if n in unreported)}: {reason}")
        for row in self.rows:
            state = "equal" if not row.differing else f"{len(row.differing)} differ"
            shown = row.ours[0] if 0 in row.unreported else row.theirs[0]
            lines.append(f"  {row.describe()}: mAP {shown:.4f}, {state}"
                         + (f" where {row.tie}" if row.tie is not None and row.differing else ""))
            for i in row.differing:
                lines.append(f"    {STAT_NAMES[i]}: ours {row.ours[i]!r} theirs {row.theirs[i]!r}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        from detsearch.detection.cocoeval import STAT_NAMES

        return {
            "rows": [{"params": dict(row.params), "labels": list(row.labels), "ours": list(row.ours),
                      "theirs": list(row.theirs), "tie": row.tie, "differing": [STAT_NAMES[i] for i in row.differing],
                      "not_compared": [STAT_NAMES[i] for i in row.unreported]}
                     for row in self.rows],
            "stats_compared": self.stats_compared,
            "mismatches": [{"params": dict(row.params), "stat": name, "ours": ours, "theirs": theirs}
                           for row, name, ours, theirs in self.mismatches],
        }

    def check(self) -> None:
        """Raises `ModelGardenMismatch` naming the first differing stat when any differs (rows
        with a documented tie aside)."""
        mismatches = self.mismatches
        if mismatches:
            row, name, ours, theirs = mismatches[0]
            raise ModelGardenMismatch(
                f"--verify: Model Garden's own evaluation differs from the sweep in {len(mismatches)} of "
                f"{self.stats_compared} stats; first: {row.describe()}: {name} ours {ours!r} theirs {theirs!r}")


def verification_rows(table: Sequence, chosen: Mapping[str, float], config: Mapping[str, float],
                      count: int = VERIFY_ROWS) -> list[tuple[Any, tuple[str, ...]]]:
    """``count`` rows of a sweep's ``table`` (all of them when it has fewer) to hold against
    Model Garden: the row of the ``chosen`` settings and the row of the ``config``'s, then,
    axis by axis in turn, the chosen row with one axis moved to the end of its range farthest
    from the chosen value, then to the other end, then rows evenly spaced through the table.

    Returns ``(row, labels)`` pairs, labels ``"chosen"`` / ``"config"`` where they apply.

    Raises:
      ValueError: ``chosen`` or ``config`` names settings no row of the table has.
    """
    if count < 2:
        raise ValueError(f"verify at least the chosen and the config's rows; got {count}")

    def find(setting: Mapping[str, float]):
        for row in table:
            if all(row.params.get(k) == v for k, v in setting.items()):
                return row
        raise ValueError(f"no row of the sweep has {dict(setting)}")

    anchor = find(chosen)
    picked: dict[tuple, tuple[Any, list[str]]] = {}

    def add(row, label: str | None = None) -> None:
        key = tuple(sorted(row.params.items()))
        entry = picked.setdefault(key, (row, []))
        if label is not None:
            entry[1].append(label)

    add(anchor, "chosen")
    add(find(config), "config")
    axes = {name: sorted({row.params[name] for row in table}) for name in anchor.params}
    ends = []
    for name, values in axes.items():
        far, near = sorted((values[0], values[-1]), key=lambda v: -abs(v - anchor.params[name]))
        ends.append((name, far))
        ends.append((name, near))
    ends = ends[0::2] + ends[1::2]  # every axis's far end before any near end
    for name, value in ends:
        if len(picked) >= count:
            break
        add(find({**anchor.params, name: value}))
    for parts in range(2, len(table) + 1):  # evenly spaced, ever finer
        for position in np.linspace(0, len(table) - 1, parts).round().astype(int):
            if len(picked) >= count:
                break
            add(table[position])
        if len(picked) >= count:
            break
    return [(row, tuple(labels)) for row, labels in list(picked.values())[:count]]


class TieFinder:
    """Where a cache's equal scores meet a kernel whose order of equal scores is undefined
    (`documented_tie`): Model Garden's ``batched`` one-stage NMS (equal scores of one class
    in one image) and the batched first stage (``roi_generator.use_batched_nms: true``: equal
    objectness in one image, per level when NMS runs per level). ``nms_version: v2`` and the
    tiled first stage order equal scores by position (``tf.nn.top_k``), as the sweep does.
    Equal scores of different classes are not counted: they meet only where an image's output
    reaches its cap (``max_num_detections``)."""

    def __init__(self, cache, post_processing):
        from detsearch.detection.sweep.settings import ProposalNms

        self.kind = cache.meta.kind
        self.one_stage = self.kind == CacheKind.ONE_STAGE and post_processing.nms_version == NmsVersion.BATCHED
        self.first_stage = self.kind == CacheKind.TWO_STAGE and post_processing.proposal_nms == ProposalNms.BATCHED
        self._tied = np.zeros(0, np.float32)
        if self.one_stage:
            offsets = np.asarray(cache.entry_offsets, np.int64)
            image = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            self._tied = _tied_values(np.asarray(cache.entry_score, np.float32), image, np.asarray(cache.entry_class))
        elif self.first_stage:
            offsets = np.asarray(cache.row_offsets, np.int64)
            image = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            level = (np.asarray(cache.row_level) if post_processing.per_level and cache.row_level is not None
                     else np.zeros(len(image), np.int64))
            self._tied = _tied_values(np.asarray(cache.row_objectness, np.float32), image, level)

    def reason(self, params: Mapping[str, float]) -> str | None:
        """None, or why the row at ``params`` may differ from Model Garden by the order of equal
        scores above its threshold."""
        if self.one_stage:
            above = int((self._tied > np.float32(params["score_threshold"])).sum())
            where = "scores above score_threshold tie within one class of one image"
        elif self.first_stage:
            above = int((self._tied > np.float32(params["nms_score_threshold"])).sum())
            where = "proposals above nms_score_threshold tie in objectness (roi_generator.use_batched_nms true)"
        else:
            return None
        return f"{where} ({above} such scores); {TIE_REASON}" if above else None


def _tied_values(scores: np.ndarray, *groups: np.ndarray) -> np.ndarray:
    """The scores equal to another score of the same group, each once per such score."""
    if not len(scores):
        return np.zeros(0, np.float32)
    order = np.lexsort((scores, *groups))
    same = scores[order][1:] == scores[order][:-1]
    for group in groups:
        same &= group[order][1:] == group[order][:-1]
    return scores[order][1:][same]


def verify_rows(experiment: Experiment, rows: Sequence[tuple[Any, tuple[str, ...]]], *,
                ground_truth_file: str | os.PathLike | None = None, ties: TieFinder | None = None,
                progress: Callable[[int], None] | None = None) -> Verification:
    """Model Garden's own evaluation (`evaluate_settings_with_model_garden`) at the settings of
    each ``(row, labels)`` of a sweep's table (`verification_rows`), next to the row's stats;
    ``ties`` names the rows where a documented tie may decide otherwise."""
    from detsearch.detection.cocoeval import STAT_NAMES

    theirs = evaluate_settings_with_model_garden(experiment, [dict(row.params) for row, _ in rows],
                                                 ground_truth_file=ground_truth_file, progress=progress)
    raised = experiment.post_processing.max_eval_detections != 100
    masks = experiment.kind == CacheKind.TWO_STAGE and bool(experiment.config.task.model.include_mask)
    sized = [STAT_NAMES.index(name) for name in NOT_COMPARED[MASK_AREAS]] if masks else []
    return Verification(tuple(
        VerifiedRow(params=dict(row.params), labels=tuple(labels), ours=tuple(float(v) for v in row.stats),
                    theirs=tuple(stats[name] for name in STAT_NAMES), tie=None if ties is None else ties.reason(row.params),
                    unreported=tuple(([0] if raised and stats["AP"] == -1 else []) + sized))
        for (row, labels), stats in zip(rows, theirs)))
