"""Diagnostic plots of a sweep, each written atomically as one PNG: the precision-recall curves,
F1 against the score threshold, the objective against detections per image with its Pareto
front, per-class AP beside per-class score thresholds, and (a sweep with errors) TIDE's error
anatomy along the threshold axes, the confusion matrix and the reliability diagram.

Inputs are plain arrays, so this module does not depend on the sweep's classes. Figures are
drawn on a `matplotlib.figure.Figure` with the Agg canvas directly (no pyplot, so no backend is
chosen for the process); matplotlib is imported inside the writers, so importing this module
needs only NumPy. `pareto_front` is a pure function and needs no matplotlib at all.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from detsearch.atomic import atomic_path
from detsearch.detection.cocoeval import AREA_NAMES, IOU_THRESHOLDS, MAX_DETECTIONS, RECALL_THRESHOLDS

__all__ = ["ERROR_COLORS", "pareto_front", "write_calibration", "write_confusion", "write_errors", "write_f1_curve",
           "write_pareto", "write_per_class", "write_pr_curve"]

DPI = 110
"""Resolution of every PNG written here, in dots per inch."""

PR_IOU_THRESHOLDS = (0.5, 0.75)
"""IoU thresholds whose precision-recall curves `write_pr_curve` draws (AP50 and AP75)."""

MAX_CLASS_CURVES_PR = 20
"""`write_pr_curve` draws one thin line per class only up to this many categories."""

MAX_CLASS_LEGEND = 12
"""`write_f1_curve` names per-class curves in its legend only up to this many classes."""

LOG_AXIS_RATIO = 20.0
"""`write_pareto` uses a logarithmic detections axis when the largest drawn detections per
image is at least this many times the smallest (and the smallest is > 0)."""


def _vector(name: str, value) -> np.ndarray:
    """``value`` as a 1-D float64 array (a copy only where conversion needs one)."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _save(figure, path: str | Path) -> None:
    """Lays ``figure`` out and writes it to ``path`` as PNG, atomically."""
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=DPI)


def _legend(axis, **options) -> None:
    """A legend when something is labelled (matplotlib warns on an empty one)."""
    if axis.get_legend_handles_labels()[0]:
        axis.legend(**options)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def write_pr_curve(path: str | Path, precision: np.ndarray, category_names: Sequence[str]) -> None:
    """Precision-recall curves at IoU 0.5 and 0.75 (area all, up to 100 detections per image),
    each the mean over the categories with ground truth; one thin grey line per category at
    IoU 0.5 when there are at most `MAX_CLASS_CURVES_PR` categories. Written atomically as PNG.

    The mean over recall of each drawn curve is pycocotools' AP50 / AP75 (a category without
    ground truth is -1 at every recall threshold, so averaging per recall threshold first does
    not change the mean); it is shown in the legend.

    Args:
      path: the PNG to write; its directory is created if missing.
      precision: pycocotools' ``eval['precision']``, float64 ``[T=10, R=101, K, A=4, M=3]``:
        IoU thresholds 0.50:0.05:0.95 (`IOU_THRESHOLDS`), recall thresholds 0:0.01:1
        (`RECALL_THRESHOLDS`), categories, area ranges all/small/medium/large, maxDets
        1/10/100; -1 where undefined (a category without ground truth). Not modified.
      category_names: ``K`` names, in the order of the category axis of ``precision``.

    Raises:
      ValueError: ``precision`` is not of shape ``[10, 101, len(category_names), 4, 3]``.
    """
    precision = np.asarray(precision, dtype=np.float64)
    names = list(category_names)
    expected = (len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(names), len(AREA_NAMES), len(MAX_DETECTIONS))
    if precision.shape != expected:
        raise ValueError(
            f"precision must have shape [T, R, K, A, M] = {list(expected)} for {len(names)} category_names, "
            f"got {list(precision.shape)}"
        )
    # [T, R, K] at area "all", maxDets 100.
    table = precision[:, :, :, AREA_NAMES.index("all"), MAX_DETECTIONS.index(100)]
    defined = table > -1
    recall = RECALL_THRESHOLDS

    figure = _new_figure(6.5, 5.2)
    axis = figure.subplots()
    iou_index = {t: int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, t))[0]) for t in PR_IOU_THRESHOLDS}
    if len(names) <= MAX_CLASS_CURVES_PR:
        grey_label = "per class, IoU 0.50"
        for k in range(len(names)):
            if defined[iou_index[0.5], :, k].all():
                axis.plot(recall, table[iou_index[0.5], :, k], color="0.7", linewidth=0.7, label=grey_label, zorder=1)
                grey_label = None  # one legend entry for all classes
    for threshold, color in zip(PR_IOU_THRESHOLDS, ("tab:blue", "tab:orange")):
        values, known = table[iou_index[threshold]], defined[iou_index[threshold]]  # [R, K]
        count = known.sum(axis=1)  # [R]: categories with ground truth
        if not count.any():
            axis.plot([], [], color=color, label=f"IoU {threshold:.2f} (no ground truth)")
            continue
        curve = np.where(known, values, 0.0).sum(axis=1) / np.maximum(count, 1)
        average_precision = float(values[known].mean())
        axis.plot(recall, curve, color=color, linewidth=2, label=f"IoU {threshold:.2f} (AP {average_precision:.3f})", zorder=3)
    with_ground_truth = int(defined[0, 0].sum())
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title(
        f"Precision-recall, mean over {with_ground_truth} of {len(names)} classes\n"
        "(area all, up to 100 detections per image)",
        fontsize=10,
    )
    axis.grid(True, alpha=0.3)
    _legend(axis, loc="lower left", fontsize=9)
    _save(figure, path)


def _f1_points(name: str, scores, true_positives, counted, num_ground_truth) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(scores, f1)``, both float64 ``[n]``, scores descending."""
    scores = _vector(f"{name} scores", scores)
    true_positives = _vector(f"{name} true_positives", true_positives)
    counted = _vector(f"{name} counted", counted)
    if not len(scores) == len(true_positives) == len(counted):
        raise ValueError(
            f"{name}: scores, true_positives and counted must have one length, got "
            f"{len(scores)}, {len(true_positives)} and {len(counted)}"
        )
    if num_ground_truth < 0:
        raise ValueError(f"{name}: num_ground_truth must be >= 0, got {num_ground_truth}")
    if np.any(np.diff(scores) > 0):
        raise ValueError(f"{name}: scores must be in descending order, got {scores[:5]}...")
    denominator = counted + float(num_ground_truth)
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return scores, f1


def _f1_at(scores: np.ndarray, f1: np.ndarray, threshold: float) -> float:
    """F1 of the detections with score > ``threshold`` (0 when none)."""
    kept = int(np.searchsorted(-scores, -threshold, side="left"))  # how many scores are > threshold
    return float(f1[kept - 1]) if kept else 0.0


def _step_xy(scores: np.ndarray, f1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(x, y)``, x ascending, for ``drawstyle="steps-post"`` (``y[j]`` holds on
    ``[x[j], x[j + 1])``) of the F1 of the scores > the threshold: ``f1[i + 1]`` on
    ``[scores[i + 1], scores[i])``, ``f1[-1]`` below the lowest score (from 0) and 0 from the
    highest (to 1)."""
    x = scores[::-1]
    y = np.r_[f1[::-1][1:], 0.0]
    if x[0] > 0:
        x, y = np.r_[0.0, x], np.r_[f1[-1], y]
    if x[-1] < 1:
        x, y = np.r_[x, 1.0], np.r_[y, 0.0]
    return x, y


def write_f1_curve(
    path: str | Path,
    pooled: tuple,
    per_class: Sequence[tuple],
    *,
    pooled_cut: float | None = None,
    class_cuts: Sequence[float | None] | None = None,
) -> None:
    """F1 at IoU 0.5 against the score threshold: all classes pooled (bold) and one thin curve
    per class. Written atomically as PNG.

    A score threshold ``t`` keeps the detections with score > ``t``, the meaning
    ``score_threshold`` has everywhere. F1 is constant between consecutive distinct scores, so
    each curve is a step curve: ``F1[i + 1]`` on ``[scores[i + 1], scores[i])``, the F1 of all
    detections below the lowest score, 0 from the highest on.

    Args:
      path: the PNG to write; its directory is created if missing.
      pooled: ``(scores, true_positives, counted, num_ground_truth)``: ``scores`` float64 ``[n]``,
        the distinct scores in descending order; ``true_positives`` and ``counted`` int ``[n]``,
        the cumulative counts of true positives and of counted detections with score >=
        ``scores[i]``; ``num_ground_truth`` an int. ``F1[i] = 2 * true_positives[i] /
        (counted[i] + num_ground_truth)``, 0 where the denominator is 0.
      per_class: ``(name, scores, true_positives, counted, num_ground_truth)`` per class, the
        same meaning; classes without ground truth or without points are not drawn. Class names
        are in the legend when at most `MAX_CLASS_LEGEND` classes are drawn.
      pooled_cut: a score threshold marked with a vertical dashed line, or None.
      class_cuts: None, or one score threshold (None or NaN: none) per entry of ``per_class``;
        each is marked with a dot on its class's curve, at the F1 of the scores > the threshold.

    Raises:
      ValueError: the arrays of a curve differ in length, its scores are not descending, its
        ``num_ground_truth`` is negative, or ``class_cuts`` is not aligned with ``per_class``.
    """
    scores, f1 = _f1_points("pooled", *pooled)
    per_class = list(per_class)
    if class_cuts is not None and len(class_cuts) != len(per_class):
        raise ValueError(f"class_cuts must have one entry per per_class entry ({len(per_class)}), got {len(class_cuts)}")
    curves = []  # (name, scores, f1, cut)
    for index, (name, *arrays) in enumerate(per_class):
        class_scores, class_f1 = _f1_points(f"per_class[{index}] ({name})", *arrays)
        if arrays[-1] > 0 and len(class_scores):
            curves.append((str(name), class_scores, class_f1, None if class_cuts is None else class_cuts[index]))

    from matplotlib import colormaps

    named = len(curves) <= MAX_CLASS_LEGEND
    palette = colormaps["tab20" if len(curves) > 10 else "tab10"]
    figure = _new_figure(9.0, 5.2)
    axis = figure.subplots()
    for number, (name, class_scores, class_f1, cut) in enumerate(curves):
        color = palette(number % palette.N)
        x, y = _step_xy(class_scores, class_f1)
        axis.plot(x, y, drawstyle="steps-post", color=color, linewidth=0.9, alpha=0.85 if named else 0.4,
                  label=name if named else None, zorder=2)
        if cut is not None and math.isfinite(cut):
            axis.plot([cut], [_f1_at(class_scores, class_f1, cut)], "o", color=color, markersize=4,
                      markeredgecolor="black", markeredgewidth=0.4, zorder=4)
    if len(scores):
        x, y = _step_xy(scores, f1)
        axis.plot(x, y, drawstyle="steps-post", color="black", linewidth=2.2, label="all classes", zorder=5)
    if pooled_cut is not None and math.isfinite(pooled_cut):
        axis.axvline(pooled_cut, color="tab:red", linestyle="--", linewidth=1.2, zorder=6,
                     label=f"chosen score threshold {pooled_cut:.3g}")
    if class_cuts is not None and any(c is not None and math.isfinite(c) for c in class_cuts):
        axis.plot([], [], "o", color="0.6", markeredgecolor="black", markeredgewidth=0.4, markersize=4,
                  label="per-class chosen threshold")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("score threshold (keep scores > threshold)")
    axis.set_ylabel("F1 at IoU 0.5")
    title = "F1 against score threshold"
    if curves:
        title += f": all classes pooled (bold) and {len(curves)} classes with ground truth"
    axis.set_title(title, fontsize=10)
    axis.grid(True, alpha=0.3)
    # Outside the axes: the curves fill the whole plot area.
    _legend(axis, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    _save(figure, path)


def pareto_front(dets_per_image, values) -> np.ndarray:
    """Indices of the configurations on the Pareto front of (fewer detections, higher value).

    A configuration is on the front when no other one dominates it: has detections per image
    <= its own and a value >= its own, at least one of the two strictly. Configurations with
    equal detections and equal value do not dominate each other, so both are on the front.
    Configurations with a non-finite detections per image or value (NaN, +-inf: e.g. over
    budget) are ignored: never on the front, never dominating.

    Args:
      dets_per_image: float ``[N]``, detections per image of each configuration.
      values: float ``[N]``, the objective of each configuration (higher is better).

    Returns:
      int64 ``[F]``: the indices on the front, by ascending detections per image (then by
      index); along it the values strictly increase, except between exact duplicates.

    Raises:
      ValueError: the inputs are not 1-D or differ in length.
    """
    dets = _vector("dets_per_image", dets_per_image)
    values = _vector("values", values)
    if len(dets) != len(values):
        raise ValueError(f"dets_per_image and values must have one length, got {len(dets)} and {len(values)}")
    finite = np.flatnonzero(np.isfinite(dets) & np.isfinite(values))
    if not len(finite):
        return np.zeros(0, np.int64)
    order = finite[np.lexsort((finite, -values[finite], dets[finite]))]
    sorted_dets, sorted_values = dets[order], values[order]
    starts = np.r_[True, sorted_dets[1:] != sorted_dets[:-1]]
    group = np.cumsum(starts) - 1
    group_best = sorted_values[starts]  # first of each group of equal detections: its highest value
    best_before = np.r_[-np.inf, np.maximum.accumulate(group_best)[:-1]]  # over strictly fewer detections
    on_front = (sorted_values == group_best[group]) & (sorted_values > best_before[group])
    return order[on_front].astype(np.int64)


def write_pareto(
    path: str | Path,
    dets_per_image,
    values,
    *,
    objective_name: str,
    chosen: int,
    best: int | None = None,
    labels: Sequence[str] | None = None,
) -> None:
    """The objective of each configuration against its detections per image, the Pareto front
    (`pareto_front`) as a step line, the chosen configuration and the one of highest objective
    marked. The detections axis is logarithmic when the drawn detections per image span a ratio
    of at least `LOG_AXIS_RATIO`. Written atomically as PNG.

    Args:
      path: the PNG to write; its directory is created if missing.
      dets_per_image: float ``[N]``, detections per image of each configuration.
      values: float ``[N]``, the objective of each configuration; a configuration with a
        non-finite value (NaN or -inf, e.g. over budget) or detections per image is not drawn.
      objective_name: the y-axis label and legend name, e.g. ``"mAP"``.
      chosen: index of the chosen configuration, in ``[0, N)``.
      best: index of the configuration of highest objective, or None; marked only when it
        differs from ``chosen``.
      labels: None, or ``N`` short descriptions of the configurations; the chosen and best
        points are annotated with theirs.

    Raises:
      ValueError: the inputs differ in length, or ``chosen`` / ``best`` is out of range.
    """
    dets = _vector("dets_per_image", dets_per_image)
    values = _vector("values", values)
    if len(dets) != len(values):
        raise ValueError(f"dets_per_image and values must have one length, got {len(dets)} and {len(values)}")
    count = len(dets)
    if labels is not None and len(labels) != count:
        raise ValueError(f"labels must have one entry per configuration ({count}), got {len(labels)}")
    for name, index in (("chosen", chosen), ("best", best)):
        if index is not None and not 0 <= index < count:
            raise ValueError(f"{name} must be an index in [0, {count}), got {index}")
    front = pareto_front(dets, values)
    shown = np.isfinite(dets) & np.isfinite(values)

    # A log axis when detections per image span a wide range: the knee of the front is at few
    # detections, where a linear axis crowds the points.
    logarithmic = bool(shown.any()) and dets[shown].min() > 0 and dets[shown].max() >= LOG_AXIS_RATIO * dets[shown].min()
    position = np.full(count, 0.5)  # of each drawn point across the x range, 0 left to 1 right
    if shown.any():
        x = np.log(dets[shown]) if logarithmic else dets[shown]
        if x.max() > x.min():
            position[shown] = (x - x.min()) / (x.max() - x.min())

    figure = _new_figure(7.5, 5.2)
    axis = figure.subplots()
    if logarithmic:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
    axis.scatter(dets[shown], values[shown], s=14, color="0.6", label="configurations", zorder=2)
    if len(front):
        axis.plot(dets[front], values[front], drawstyle="steps-post", color="tab:blue", linewidth=1.5,
                  marker="o", markersize=5, label="Pareto front", zorder=3)
    marks = [(chosen, "chosen", dict(marker="*", s=260, color="tab:red"), 10)]
    if best is not None and best != chosen:
        marks.append((best, f"highest {objective_name}", dict(marker="D", s=90, color="tab:green"), 20))
    for index, name, style, rise in marks:
        if not shown[index]:
            continue
        # Up and to the left of a point on the front no configuration lies; at the left edge the
        # label goes right instead, to stay inside the plot.
        offset = (-14 if position[index] > 0.3 else 14, rise)
        axis.scatter([dets[index]], [values[index]], edgecolors="black", linewidths=0.8, label=name, zorder=5, **style)
        if labels is not None:
            axis.annotate(
                labels[index], (dets[index], values[index]), xytext=offset, textcoords="offset points", fontsize=8,
                ha="left" if offset[0] > 0 else "right", va="top" if offset[1] < 0 else "bottom",
                bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor=style["color"], alpha=0.9),
                arrowprops=dict(arrowstyle="-", color=style["color"], linewidth=0.8), zorder=6,
            )
    if shown.any():
        low, high = float(values[shown].min()), float(values[shown].max())
        margin = 0.08 * (high - low) if high > low else 0.05 * max(abs(high), 1e-3)
        axis.set_ylim(low - margin, high + 2.5 * margin)  # room for the labels above
    axis.set_xlabel("detections per image")
    axis.set_ylabel(objective_name)
    hidden = count - int(shown.sum())
    title = f"{objective_name} against detections per image, {int(shown.sum())} configurations"
    if hidden:
        title += f" ({hidden} not drawn: over budget or undefined)"
    axis.set_title(title, fontsize=10)
    axis.grid(True, alpha=0.3)
    _legend(axis, loc="best", fontsize=8)
    _save(figure, path)


def write_per_class(path: str | Path, names: Sequence[str], ap, thresholds, *, base_threshold: float | None = None) -> None:
    """Two horizontal bar panels sharing the class axis (classes top to bottom in the given
    order): AP@[.5:.95] per class and its chosen score threshold. Written atomically as PNG.

    Args:
      path: the PNG to write; its directory is created if missing.
      names: ``K`` class names.
      ap: float ``[K]``, AP@[.5:.95] per class; -1 or NaN (no ground truth) is shown as
        "no ground truth". The mean over the other classes is marked with a dotted line.
      thresholds: float ``[K]``, the chosen score threshold per class; NaN is shown as "none".
      base_threshold: the configuration's global score threshold, marked with a vertical dashed
        line on the threshold panel, or None.

    Raises:
      ValueError: ``ap`` or ``thresholds`` is not 1-D of length ``len(names)``.
    """
    names = [str(n) for n in names]
    ap = _vector("ap", ap)
    thresholds = _vector("thresholds", thresholds)
    if not len(names) == len(ap) == len(thresholds):
        raise ValueError(
            f"names, ap and thresholds must have one length, got {len(names)}, {len(ap)} and {len(thresholds)}"
        )
    count = len(names)
    has_ap = np.isfinite(ap) & (ap > -1)
    has_threshold = np.isfinite(thresholds)
    font = 9 if count <= 30 else 8 if count <= 60 else 7
    figure = _new_figure(10.0, max(3.0, 1.3 + (0.19 if count <= 30 else 0.21) * count))
    ap_axis, threshold_axis = figure.subplots(1, 2, sharey=True)
    rows = np.arange(count)

    # The reference lines are named in the titles: a legend would hide bars.
    ap_axis.barh(rows, np.where(has_ap, ap, 0.0), height=0.75, color="tab:blue")
    ap_title = "AP per class"
    if has_ap.any():
        mean = float(ap[has_ap].mean())
        ap_axis.axvline(mean, color="black", linestyle=":", linewidth=1)
        ap_title += f"\n(dotted: mean over classes with ground truth, {mean:.3f})"
    ap_top = max(1e-3, float(ap[has_ap].max()) if has_ap.any() else 1.0)
    for row in rows:
        text = f"{ap[row]:.3f}" if has_ap[row] else "no ground truth"
        ap_axis.text(ap[row] + 0.01 * ap_top if has_ap[row] else 0.01 * ap_top, row, text, va="center",
                     fontsize=font - 1, color="black" if has_ap[row] else "0.5")
    ap_axis.set_xlim(0, ap_top * 1.2 if has_ap.any() else 1.0)  # room for the value labels
    ap_axis.set_xlabel("AP@[.5:.95]")
    ap_axis.set_title(ap_title, fontsize=10)

    threshold_axis.barh(rows, np.where(has_threshold, thresholds, 0.0), height=0.75, color="tab:orange")
    candidates = list(thresholds[has_threshold]) + ([base_threshold] if base_threshold is not None else [])
    threshold_top = max(1e-3, max(candidates)) if candidates else 1.0
    threshold_title = "chosen score threshold per class"
    if base_threshold is not None:
        threshold_axis.axvline(base_threshold, color="tab:red", linestyle="--", linewidth=1.2)
        threshold_title += f"\n(dashed: global score threshold {base_threshold:.3g})"
    for row in rows:
        text = f"{thresholds[row]:.3g}" if has_threshold[row] else "none"
        threshold_axis.text(thresholds[row] + 0.01 * threshold_top if has_threshold[row] else 0.01 * threshold_top, row,
                            text, va="center", fontsize=font - 1, color="black" if has_threshold[row] else "0.5")
    threshold_axis.set_xlim(0, threshold_top * 1.2)
    threshold_axis.set_xlabel("chosen score threshold")
    threshold_axis.set_title(threshold_title, fontsize=10)

    ap_axis.set_yticks(rows, names, fontsize=font)
    if count:
        ap_axis.set_ylim(count - 0.5, -0.5)  # first class on top
    for axis in (ap_axis, threshold_axis):
        axis.grid(True, axis="x", alpha=0.3)
        axis.tick_params(axis="x", labelsize=font + 1)
    _save(figure, path)


ERROR_COLORS = {"Cls": "tab:red", "Loc": "tab:orange", "Both": "tab:olive", "Dupe": "tab:purple", "Bkg": "tab:gray",
                "Miss": "tab:blue"}
"""The TIDE error types `write_errors` stacks, and their colours."""


def write_errors(path: str | Path, panels: Sequence[tuple[str, Sequence[float], np.ndarray, float]]) -> None:
    """Stacked bars of TIDE's ΔAP per error type (`ERROR_COLORS`) along one threshold axis per
    panel, the chosen value marked. Written atomically as PNG.

    Args:
      path: the PNG to write.
      panels: ``(axis name, values, delta_ap, chosen value)``: ``delta_ap`` float ``[len(values),
        6]`` in `ERROR_COLORS` order (NaN where the configuration was not evaluated).
    """
    figure = _new_figure(5.0 * max(1, len(panels)), 4.6)
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for axis, (name, values, deltas, chosen) in zip(axes, panels):
        deltas = np.asarray(deltas, np.float64)
        if deltas.shape != (len(values), len(ERROR_COLORS)):
            raise ValueError(f"{name}: delta_ap must have shape ({len(values)}, {len(ERROR_COLORS)}), got {deltas.shape}")
        x = np.arange(len(values))
        bottom = np.zeros(len(values))
        for j, (error, color) in enumerate(ERROR_COLORS.items()):
            height = np.nan_to_num(np.maximum(deltas[:, j], 0.0))
            axis.bar(x, height, bottom=bottom, color=color, width=0.7, label=error)
            bottom += height
        labels = [f"{v:g}" + ("\n(chosen)" if v == chosen else "") for v in values]
        axis.set_xticks(x, labels, fontsize=9)
        axis.set_xlabel(name)
        axis.set_ylabel("ΔAP@.5 if fixed (mean over classes)")
        axis.set_title(f"error anatomy along {name}", fontsize=10)
        axis.grid(True, axis="y", alpha=0.3)
        axis.set_ylim(0, max(1e-3, float(bottom.max())) * 1.4)  # room for the legend above the bars
    _legend(axes[-1], fontsize=8, loc="upper right", ncol=3)
    _save(figure, path)


def write_confusion(path: str | Path, normalized: np.ndarray, names: Sequence[str], matrix: np.ndarray) -> None:
    """The row-normalized confusion matrix (ground truth rows, detected columns, the last of each
    background) as a heat map, counts written where they fit. Written atomically as PNG."""
    normalized = np.asarray(normalized, np.float64)
    labels = [str(n) for n in names] + ["background"]
    count = len(labels)
    if normalized.shape != (count, count):
        raise ValueError(f"normalized must be {count} x {count}, got {normalized.shape}")
    size = min(16.0, max(4.5, 0.32 * count + 2.5))
    figure = _new_figure(size + 1.2, size)
    axis = figure.subplots()
    image = axis.imshow(normalized, cmap="Blues", vmin=0.0, vmax=1.0)
    font = 9 if count <= 15 else 7 if count <= 40 else 5
    axis.set_xticks(np.arange(count), labels, rotation=90, fontsize=font)
    axis.set_yticks(np.arange(count), labels, fontsize=font)
    axis.set_xlabel("detected category (last: background = missed box)")
    axis.set_ylabel("ground truth category (last: background = false detection)")
    if count <= 25:
        for r in range(count):
            for c in range(count):
                if matrix[r, c]:
                    axis.text(c, r, str(int(matrix[r, c])), ha="center", va="center", fontsize=font - 1,
                              color="white" if normalized[r, c] > 0.5 else "black")
    axis.set_title("confusion at IoU 0.5 (rows normalized)", fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    _save(figure, path)


def write_calibration(path: str | Path, bins: Sequence[dict], ece: float, mce: float) -> None:
    """A reliability diagram: per score bin the fraction of correct detections (IoU 0.5) against
    the mean score, the diagonal for reference, and the detections per bin below. Written
    atomically as PNG."""
    figure = _new_figure(6.0, 6.4)
    axis, counts_axis = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lower = np.array([b["lower"] for b in bins])
    upper = np.array([b["upper"] for b in bins])
    width = upper - lower
    filled = np.array([b["count"] > 0 for b in bins])
    accuracy = np.array([b["accuracy"] for b in bins])
    confidence = np.array([b["confidence"] for b in bins])
    axis.bar(lower[filled], accuracy[filled], width=width[filled], align="edge", color="tab:blue", alpha=0.75,
             edgecolor="black", label="fraction correct")
    axis.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="perfect calibration")
    axis.plot(confidence[filled], accuracy[filled], "o", color="tab:red", markersize=4, label="bin mean score")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_ylabel("fraction correct at IoU 0.5")
    axis.set_title(f"score calibration: ECE {ece:.4f}, MCE {mce:.4f}", fontsize=10)
    _legend(axis, fontsize=8, loc="upper left")
    axis.grid(True, alpha=0.3)
    counts_axis.bar(lower, [b["count"] for b in bins], width=width, align="edge", color="0.6", edgecolor="black")
    counts_axis.set_xlabel("score")
    counts_axis.set_ylabel("detections")
    counts_axis.grid(True, axis="y", alpha=0.3)
    _save(figure, path)
