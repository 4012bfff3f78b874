"""A sweep's outputs: the markdown report (the choice, what the tolerance traded, per-class
thresholds, the holdout, the trade-off table), the plots (objective heatmap, precision-recall,
F1 vs score, the Pareto front of objective vs detections, per-class AP and thresholds),
``per_class_thresholds.json``, and `write_outputs`, which writes them all beside ``result.json``.

The heatmap is drawn on a `matplotlib.figure.Figure` with the Agg canvas directly: no pyplot, so
no backend is chosen for the process.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from detsearch.atomic import atomic_path, write_bytes_atomic
from detsearch.detection.cache import CacheKind
from detsearch.detection.sweep.result import SweepResult, objective_value
from detsearch.params import PARAM_NAMES

__all__ = ["ERROR_AXES", "ERROR_PLOTS", "PLOTS", "describe_params", "error_axis", "error_trade", "print_summary", "summary_lines", "objective_grid", "per_class_document", "render_report", "tradeoff_line",
           "write_heatmap", "write_outputs", "write_plots"]

_COLUMN_NAMES = {
    "nms_score_threshold": "nms_score",
    "nms_iou_threshold": "nms_iou",
    "score_threshold": "score",
    "iou_threshold": "iou",
    "max_detections": "max_dets",
    "class_agnostic": "agnostic",
    "soft_nms_sigma": "sigma",
}

PLOTS = ("heatmap.png", "pr_curve.png", "f1_curve.png", "pareto.png", "per_class.png")
"""The pictures `write_outputs` draws (matplotlib)."""
ERROR_PLOTS = ("errors.png", "confusion.png", "calibration.png")
"""The pictures it adds for a sweep with errors (`detsearch.detection.tide`)."""
ERROR_AXES = ("score_threshold", "iou_threshold")
"""The threshold axes the error anatomy is drawn and told along."""

_OBJECTIVE_LABELS = {"map": "AP", "ap50": "AP50", "f1": "F1", "map_at_budget": "AP"}


def _value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}"


def describe_params(params) -> str:
    """``score_threshold=0.05, iou_threshold=0.5, ...``."""
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items())


def tradeoff_line(result: SweepResult) -> str:
    """What the tolerance rule gave up and saved against the highest objective, in one line."""
    best, top = result.best_row, result.top_row or result.best_row
    label = _OBJECTIVE_LABELS[result.objective]
    if best is top or dict(best.params) == dict(top.params):
        return f"the highest {label} is also the fewest detections within tolerance {result.tolerance:g}"
    given = result.objective_of(best) - result.objective_of(top)
    saved = (best.dets_per_image / top.dets_per_image - 1) * 100 if top.dets_per_image else 0.0
    return (f"{given:+.4f} {label}, {saved:+.0f} % detections per image ({best.dets_per_image:.1f} vs "
            f"{top.dets_per_image:.1f}) against the highest {label} ({describe_params(top.params)}), tolerance "
            f"{result.tolerance:g}")


def summary_lines(result: SweepResult, out: Path) -> list[str]:
    """What the tolerance traded, and the per-class and held-out figures, a line each (CLIs)."""
    lines = [tradeoff_line(result)]
    if result.per_class is not None:
        per_class = result.per_class
        lines.append(f"per-class thresholds ({per_class.rule}): AP {per_class.stats[0]:.4f}, AP50 {per_class.stats[1]:.4f}, "
                     f"{per_class.dets_per_image:.1f} detections/image -> {Path(out) / 'per_class_thresholds.json'}")
    holdout = result.holdout
    if holdout is not None:
        interval = holdout.ci95.get("AP")
        shown = "" if interval is None else f" (95 % [{interval[0]:.4f}, {interval[1]:.4f}])"
        lines.append(f"held out {len(holdout.image_ids)} images: AP {holdout.stats[0]:.4f}{shown} vs "
                     f"{holdout.chosen_stats[0]:.4f} on the {holdout.chosen_num_images} chosen on, gap "
                     f"{holdout.stats[0] - holdout.chosen_stats[0]:+.4f}")
    return lines


def print_summary(result: SweepResult, out: Path) -> None:
    """The choice and `summary_lines`, on stdout (``detsearch sweep``)."""
    best = result.best_row
    print(f"chosen ({result.objective}): {describe_params(result.best_params)}; AP {best.stats[0]:.4f}, "
          f"AP50 {best.stats[1]:.4f}, {best.dets_per_image:.1f} detections/image")
    for line in summary_lines(result, out):
        print(f"  {line}")
    print(f"  -> {Path(out) / 'result.json'}, report.md")


def per_class_document(result: SweepResult) -> dict:
    """``per_class_thresholds.json``: what an application applies on top of the configuration."""
    per_class = result.per_class
    confidence = per_class.rule.confidence
    bounds = ("precision_lower", "recall_lower") if confidence is not None else ()
    return {
        "keep": "score > score_threshold",
        "rule": str(per_class.rule),
        **({} if confidence is None else {"confidence": confidence}),
        "configuration": result.best_params,
        "classes": [{"category_id": c.category_id, "name": c.name, "score_threshold": c.score_threshold,
                     **{name: getattr(c, name) for name in bounds}}
                    for c in per_class.classes],
    }


def write_outputs(result: SweepResult, out: Path) -> dict[str, float]:
    """Writes the plots (`PLOTS`), ``out/report.md``, ``out/per_class_thresholds.json`` (with
    per-class thresholds) and, last, ``out/result.json`` (its presence means the sweep
    finished), each atomically. Returns the seconds each output took, by file name.

    A ``result.json`` of an earlier sweep is removed first: a sweep killed while writing must not
    leave the new report beside the old result, which would then pass for this sweep's. Temporary
    files that a killed sweep left behind are removed too, and so is a
    ``per_class_thresholds.json`` this sweep does not write.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").unlink(missing_ok=True)
    names = [(name, ".png") for name in PLOTS + ERROR_PLOTS] + [(n, ".tmp") for n in ("report.md", "per_class_thresholds.json", "result.json")]
    for name, suffix in names:
        for temporary in out.glob(f".{name}.*{suffix}"):  # left by a killed sweep (`atomic_path` names)
            temporary.unlink(missing_ok=True)
    seconds = write_plots(result, out)
    if result.table[0].errors is None:
        for name in ERROR_PLOTS:  # an earlier sweep's with errors
            (out / name).unlink(missing_ok=True)
    started = time.perf_counter()
    if result.per_class is not None:
        document = json.dumps(per_class_document(result), indent=2) + "\n"
        write_bytes_atomic(out / "per_class_thresholds.json", document.encode("utf-8"))
        seconds["per_class_thresholds.json"] = time.perf_counter() - started
    else:
        (out / "per_class_thresholds.json").unlink(missing_ok=True)
    write_bytes_atomic(out / "report.md", render_report(result).encode("utf-8"))
    write_bytes_atomic(out / "result.json", (result.to_json() + "\n").encode("utf-8"))
    return seconds


def write_plots(result: SweepResult, out: Path) -> dict[str, float]:
    """Draws `PLOTS` into ``out``; the seconds each took."""
    from detsearch.detection import plots

    seconds = {}

    def timed(name, draw):
        started = time.perf_counter()
        draw(out / name)
        seconds[name] = time.perf_counter() - started

    timed("heatmap.png", lambda path: write_heatmap(result, path))
    details = result.chosen
    if details is not None:
        curves = details.curves
        timed("pr_curve.png", lambda path: plots.write_pr_curve(path, details.evaluation.precision, details.names))
        per_class = [(name, c.scores, c.true_positives, c.counted, c.num_ground_truth) for name, c in zip(details.names, curves)]
        pooled = details.pooled
        class_cuts = None if result.per_class is None else [c.score_threshold for c in result.per_class.classes]
        timed("f1_curve.png", lambda path: plots.write_f1_curve(
            path, (pooled.scores, pooled.true_positives, pooled.counted, pooled.num_ground_truth), per_class,
            pooled_cut=result.best_params["score_threshold"], class_cuts=class_cuts))
        ap = details.evaluation.per_category_ap
        thresholds = np.full(len(details.names), np.nan) if class_cuts is None else np.asarray(class_cuts, np.float64)
        timed("per_class.png", lambda path: plots.write_per_class(path, list(details.names), ap, thresholds,
                                                                  base_threshold=result.best_params["score_threshold"]))
        if details.confusion is not None:
            confusion = details.confusion
            timed("confusion.png", lambda path: plots.write_confusion(path, confusion.normalized, confusion.names,
                                                                      confusion.matrix))
        if details.calibration is not None:
            calibrated = details.calibration
            timed("calibration.png", lambda path: plots.write_calibration(path, calibrated.bins, calibrated.ece,
                                                                          calibrated.mce))
    if result.table[0].errors is not None:
        from detsearch.detection.plots import ERROR_COLORS

        panels = []
        for name in ERROR_AXES:
            values, rows = error_axis(result, name)
            deltas = np.array([[row.errors.delta_ap[e] for e in ERROR_COLORS] for row in rows]).reshape(len(rows), -1)
            panels.append((name, values, deltas, result.best_row.params[name]))
        timed("errors.png", lambda path: plots.write_errors(path, panels))
    table = list(result.table)
    values = np.array([np.nan if result.objective_of(r) is None else result.objective_of(r) for r in table])
    chosen = next(i for i, r in enumerate(table) if dict(r.params) == dict(result.best_row.params))
    top = result.top_row or result.best_row
    best = next(i for i, r in enumerate(table) if dict(r.params) == dict(top.params))
    timed("pareto.png", lambda path: plots.write_pareto(
        path, np.array([r.dets_per_image for r in table]), values, objective_name=_OBJECTIVE_LABELS[result.objective],
        chosen=chosen, best=best, labels=[_short(r.params) for r in table]))
    return seconds


def _short(params) -> str:
    return ", ".join(f"{_COLUMN_NAMES.get(k, k)} {_value(v)}" for k, v in params.items())


def render_report(result: SweepResult) -> str:
    """Markdown trade-off table of a `SweepResult`, the winner marked."""
    names = list(result.best_params)
    lines = [
        "# Detection threshold sweep",
        "",
        f"- kind: {result.kind}, images: {result.num_images}, configurations: {len(result.table)} ({result.strategy})",
        f"- objective: {result.objective}" + (f" (budget {result.budget:g} detections/image)" if result.budget is not None else ""),
        "- chosen: " + ", ".join(f"{k} = {_value(v)}" for k, v in result.best_params.items()),
        f"- rule: the fewest detections per image within {result.tolerance:g} of the highest {result.objective}; "
        + tradeoff_line(result),
        f"- chosen AP@[.5:.95] {result.best_row.stats[0]:.4f}, AP50 {result.best_row.stats[1]:.4f}, "
        f"AR@{result.max_eval_detections} {result.best_row.recall:.4f}, F1@.5 {result.best_row.f1:.4f}, {result.best_row.dets_per_image:.2f} detections/image",
    ]
    if result.best_row.f1_max_score is not None:
        lines.append(
            f"- best F1@.5 along the score axis at these IoU settings: {result.best_row.f1_max:.4f}, "
            f"keeping scores >= {result.best_row.f1_max_score:.4g}"
        )
    lines += _holdout_lines(result) + _per_class_lines(result) + _deployment_lines(result) + _errors_lines(result)
    lines += [
        "",
        "## All configurations",
        "",
        f"mAP alone favours the lowest score threshold: COCO AP keeps the {result.max_eval_detections} best detections "
        "per image and category and "
        "never loses by adding lower-scored ones, so raising the score threshold can only lower or tie it. "
        "That is why the choice takes the fewest detections per image within the tolerance of the best "
        "(pareto.png shows the trade-off); --objective f1 or map_at_budget are other operating points.",
        "",
        "| " + " | ".join(_COLUMN_NAMES[n] for n in names) + f" | mAP | AP50 | AR@{result.max_eval_detections} | F1@.5 | dets/image | objective | |",
        "|" + "---:|" * (len(names) + 6) + "---|",
    ]
    top_params = dict((result.top_row or result.best_row).params)
    chosen_params = dict(result.best_row.params)
    for row in result.table:
        value = objective_value(row, result.objective, result.budget)
        params = dict(row.params)
        mark = "**chosen**" if params == chosen_params else ("highest" if params == top_params else "")
        cells = [_value(row.params[n]) for n in names] + [
            f"{row.stats[0]:.4f}",
            f"{row.stats[1]:.4f}",
            f"{row.recall:.4f}",
            f"{row.f1:.4f}",
            f"{row.dets_per_image:.2f}",
            "over budget" if value == -math.inf else f"{value:.4f}",
            mark,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    drawn = PLOTS if result.chosen is not None else ("heatmap.png", "pareto.png")
    if result.table[0].errors is not None:
        drawn += tuple(name for name in ERROR_PLOTS if name != "calibration.png" or
                       (result.chosen is not None and result.chosen.calibration is not None))
    pictures = ", ".join(drawn)
    lines += ["", f"pictures: {pictures}; every number: result.json.", ""]
    return "\n".join(lines)


def _holdout_lines(result: SweepResult) -> list[str]:
    holdout = result.holdout
    if holdout is None:
        return []
    lines = [
        "",
        "## Held-out images",
        "",
        f"Chosen on {holdout.chosen_num_images} images, scored on {len(holdout.image_ids)} held-out ones (fraction "
        f"{holdout.fraction:g}, seed {holdout.seed}); 95 % intervals: percentile bootstrap over the held-out images, "
        f"{holdout.replicates} replicates.",
        "",
        "| figure | chosen on | held out | gap | 95 % interval |",
        "|---|---:|---:|---:|---|",
    ]
    figures = [("objective", holdout.chosen_objective, holdout.objective)]
    figures += [(name, holdout.chosen_stats[i], holdout.stats[i]) for i, name in ((0, "AP"), (1, "AP50"), (2, "AP75"), (8, "AR100"))]
    for name, chosen, held in figures:
        interval = holdout.ci95.get(name)
        gap = "" if chosen is None or held is None else f"{held - chosen:+.4f}"
        cells = [name, "" if chosen is None else f"{chosen:.4f}", "" if held is None else f"{held:.4f}", gap,
                 "" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _per_class_lines(result: SweepResult) -> list[str]:
    per_class = result.per_class
    details = result.chosen
    if per_class is None and details is None:
        return []
    lines = ["", "## Per class", ""]
    if per_class is not None:
        stats = per_class.stats
        confidence = per_class.rule.confidence
        held_out = any(c.held_out for c in per_class.classes)
        by = str(per_class.rule) if confidence is None else f"{per_class.rule} at confidence {confidence:g}"
        lines += [
            f"Per-class score thresholds by {by} on top of the chosen configuration (keep score > "
            f"threshold; per_class_thresholds.json): AP {stats[0]:.4f}, AP50 {stats[1]:.4f}, "
            f"{per_class.dets_per_image:.2f} detections/image. Precision, recall and F1 at IoU 0.5."
            + ("" if confidence is None else
               f" The target is met by the one-sided lower bound at {confidence:g} (exact Clopper-Pearson) of the "
               f"{per_class.rule.kind}: precision low and recall low.")
            + ("" if not held_out else
               " Held out: the same thresholds on the held-out images; held: whether the target held there."),
            "",
        ]
        header = ["category", "name", "threshold", "precision", "recall", "F1", "AP", "detections"]
        align = ["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:"]
        if confidence is not None:
            header, align = header + ["precision low", "recall low"], align + ["---:", "---:"]
        if held_out:
            header, align = header + ["held-out precision", "held-out recall", "held"], align + ["---:", "---:", "---"]
        lines += ["| " + " | ".join(header) + " | |", "|" + "|".join(align) + "|---|"]

        def show(value):
            return "" if value is None else f"{value:.4f}"

        for c in per_class.classes:
            note = "no ground truth" if c.ap is None else ("" if c.reached else "target out of reach")
            cells = [str(c.category_id), c.name, f"{c.score_threshold:.4g}", show(c.precision), show(c.recall), show(c.f1),
                     show(c.ap), str(c.detections)]
            if confidence is not None:
                cells += [show(c.precision_lower), show(c.recall_lower)]
            if held_out:
                cells += [show(c.holdout_precision), show(c.holdout_recall),
                          "" if c.holdout_held is None else ("yes" if c.holdout_held else "no")]
            lines.append("| " + " | ".join(cells + [note]) + " |")
        return lines
    ap = details.evaluation.per_category_ap
    lines += ["AP@[.5:.95] of the chosen configuration per category (--per-class adds thresholds).", "",
              "| category | name | AP |", "|---:|---|---:|"]
    for category_id, name, value in zip(details.category_ids, details.names, ap):
        lines.append(f"| {category_id} | {name} | {'' if value < 0 else f'{value:.4f}'} |")
    return lines


def error_axis(result: SweepResult, name: str) -> tuple[list, list]:
    """The values of threshold ``name`` and the rows along it (ascending) with every other
    parameter at the chosen configuration's."""
    chosen = dict(result.best_row.params)
    rows = sorted((row for row in result.table
                   if all(value == chosen[key] for key, value in row.params.items() if key != name)),
                  key=lambda row: row.params[name])
    return [row.params[name] for row in rows], rows


def error_trade(result: SweepResult, name: str) -> str:
    """One sentence: what moving ``name`` from the other end of its axis to the chosen value
    traded, error type by error type (TIDE's ΔAP@.5: what fixing that type would add)."""
    values, rows = error_axis(result, name)
    chosen_value = result.best_row.params[name]
    if len(values) < 2:
        return f"{name}: one value swept ({_value(chosen_value)}), nothing traded along it."
    here = rows[values.index(chosen_value)]
    there = rows[-1] if chosen_value == values[0] else rows[0]
    changes = sorted(((error, here.errors.delta_ap[error] - there.errors.delta_ap[error]) for error in _ERROR_TYPES),
                     key=lambda item: -abs(item[1]))
    shown = [f"{error} {_signed(change)}" + (" AP" if i == 0 else "") for i, (error, change) in enumerate(changes[:3])
             if abs(change) >= 5e-5]
    moves = ", ".join(shown) if shown else "no error type moves by 0.0001 AP or more"
    return (f"{name} {_value(there.params[name])} → {_value(chosen_value)} (chosen): {moves} (the AP@.5 fixing each "
            f"type would add; AP@.5 {there.ap50:.4f} → {here.ap50:.4f}, {there.dets_per_image:.2f} → "
            f"{here.dets_per_image:.2f} detections/image).")


def _signed(value: float) -> str:
    return f"{value:+.4f}".replace("-", "\u2212")


_ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")


def _errors_lines(result: SweepResult) -> list[str]:
    row = result.best_row
    if row.errors is None:
        return []
    lines = [
        "",
        "## Error anatomy (TIDE)",
        "",
        "What the chosen configuration's errors cost at IoU 0.5 (TIDE's definitions, hotcoco's numbers): ΔAP@.5 is "
        "the AP@.5 fixing every error of that type would add (mean over classes); counts are the false positives of "
        "each type and the missed boxes no error is near. errors.png draws them along the score and IoU axes; every "
        "row of result.json has them.",
        "",
        "| | " + " | ".join(_ERROR_TYPES) + " | FP | FN |",
        "|---|" + "---:|" * (len(_ERROR_TYPES) + 2),
        "| ΔAP@.5 | " + " | ".join(f"{row.errors.delta_ap[e]:.4f}" for e in _ERROR_TYPES + ("FP", "FN")) + " |",
        "| count | " + " | ".join(str(row.errors.counts[e]) for e in _ERROR_TYPES) + " | | |",
        "",
    ]
    lines += [f"- {error_trade(result, name)}" for name in ERROR_AXES]
    details = result.chosen
    if details is not None and details.calibration is not None:
        calibrated = details.calibration
        lines.append(f"- calibration of the chosen detections at IoU 0.5 ({calibrated.num_detections} counted): "
                     f"expected calibration error {calibrated.ece:.4f}, largest bin gap {calibrated.mce:.4f} "
                     "(calibration.png).")
    if details is not None and details.confusion is not None:
        matrix = details.confusion.matrix.astype(np.int64)
        k = len(details.names)
        pairs = sorted(((int(matrix[r, c]), r, c) for r in range(k) for c in range(k) if r != c and matrix[r, c]),
                       reverse=True)[:3]
        told = "; ".join(f"{details.names[r]} detected as {details.names[c]}: {n}" for n, r, c in pairs)
        lines.append(f"- confusion at IoU 0.5 (confusion.png; every detection against every box of any class): "
                     f"{int(matrix[k, :k].sum())} detections match no box, {int(matrix[:k, k].sum())} boxes no "
                     "detection; " + (f"most confused: {told}." if pairs else "no box is taken by another class."))
    return lines


def _deployment_lines(result: SweepResult) -> list[str]:
    details = result.chosen
    if details is None or details.leaderboard is None:
        return []
    board = details.leaderboard
    per_class = result.per_class
    deployed = (f"the per-class thresholds ({per_class.rule})" if per_class is not None
                else f"the chosen score_threshold {_value(result.best_params['score_threshold'])}")
    lines = [
        "",
        "## Leaderboard vs deployment",
        "",
        f"A leaderboard reports COCO AP at the lowest score threshold swept ({_value(details.leaderboard_threshold)}: "
        f"AP@[.5:.95] {board.stats[0]:.4f}, AP50 {board.stats[1]:.4f}, {details.leaderboard_dets_per_image:.2f} "
        f"detections/image, the other thresholds as chosen). An application keeps only what passes {deployed}: "
        "precision, recall and F1 at IoU 0.5 below are what it sees.",
        "",
        f"| category | name | AP (score > {_value(details.leaderboard_threshold)}) | AP50 | deployed threshold | "
        "precision | recall | F1 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    ap = board.per_category_ap
    ap50 = board.per_category_ap50
    classes = per_class.classes if per_class is not None else None
    for k, (category_id, name) in enumerate(zip(details.category_ids, details.names)):
        if ap[k] < 0:
            continue  # no ground truth
        if classes is not None:
            c = classes[k]
            threshold, figures = c.score_threshold, (c.precision, c.recall, c.f1)
        else:
            curve = details.curves[k]
            threshold = result.best_params["score_threshold"]
            figures = curve.figures(len(curve.scores) - 1)

        def show(value):
            return "" if value is None else f"{value:.4f}"

        lines.append(f"| {category_id} | {name} | {ap[k]:.4f} | {ap50[k]:.4f} | {threshold:.4g} | "
                     + " | ".join(show(v) for v in figures) + " |")
    return lines


def objective_grid(result: SweepResult, row_name: str, column_name: str,
                   fixed: dict[str, float]) -> tuple[list[float], list[float], np.ndarray]:
    """The objective over two thresholds, the others held at ``fixed``.

    Returns:
      ``(rows, columns, values)``: the sorted candidates of ``row_name`` and ``column_name``,
      and float64 ``values[len(rows), len(columns)]``, NaN where no row was evaluated (coordinate
      strategy) or the row breaks the budget.
    """
    rows = sorted({r.params[row_name] for r in result.table})
    columns = sorted({r.params[column_name] for r in result.table})
    values = np.full((len(rows), len(columns)), np.nan)
    for r in result.table:
        if any(r.params[k] != v for k, v in fixed.items()):
            continue
        value = objective_value(r, result.objective, result.budget)
        values[rows.index(r.params[row_name]), columns.index(r.params[column_name])] = np.nan if value == -math.inf else value
    return rows, columns, values


def write_heatmap(result: SweepResult, path: Path) -> None:
    """The objective over (score_threshold, iou_threshold) at the best first-stage setting, and,
    two-stage, over the first-stage thresholds at the best second-stage one; the best cell
    outlined. Written atomically as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    best = dict(result.best_row.params)  # the grid's values, as the table's rows hold them
    extra = {k: v for k, v in best.items() if k not in PARAM_NAMES}  # swept axes beyond the thresholds: the chosen value
    panels = [("score_threshold", "iou_threshold", {**{k: v for k, v in best.items() if k.startswith("nms_")}, **extra})]
    if result.kind == CacheKind.TWO_STAGE:
        panels.append(("nms_score_threshold", "nms_iou_threshold",
                       {**{k: best[k] for k in ("score_threshold", "iou_threshold")}, **extra}))
    figure = Figure(figsize=(6.5 * len(panels), 5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (row_name, column_name, fixed) in zip(axes[0], panels):
        rows, columns, values = objective_grid(result, row_name, column_name, fixed)
        image = axis.imshow(values, cmap="viridis", aspect="auto", origin="lower")
        finite = values[~np.isnan(values)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        axis.set_xticks(range(len(columns)), [f"{c:g}" for c in columns])
        axis.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
        axis.set_xlabel(column_name)
        axis.set_ylabel(row_name)
        title = result.objective + (" at " + ", ".join(f"{k}={v:g}" for k, v in fixed.items()) if fixed else "")
        axis.set_title(title, fontsize=9)
        for i in range(len(rows)):
            for j in range(len(columns)):
                if not np.isnan(values[i, j]):
                    color = "black" if values[i, j] > middle else "white"
                    axis.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=7, color=color)
                    if rows[i] == best[row_name] and columns[j] == best[column_name]:
                        axis.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        figure.colorbar(image, ax=axis)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110)
