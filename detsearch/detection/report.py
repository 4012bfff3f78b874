"""A sweep's outputs: the markdown trade-off table, the objective heatmap, and `write_outputs`,
which writes both beside ``result.json``.

The heatmap is drawn on a `matplotlib.figure.Figure` with the Agg canvas directly: no pyplot, so
no backend is chosen for the process.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from detsearch.atomic import atomic_path, write_bytes_atomic
from detsearch.detection.cache import CacheKind
from detsearch.detection.sweep.result import SweepResult, objective_value

__all__ = ["objective_grid", "render_report", "write_heatmap", "write_outputs"]

_COLUMN_NAMES = {
    "nms_score_threshold": "nms_score",
    "nms_iou_threshold": "nms_iou",
    "score_threshold": "score",
    "iou_threshold": "iou",
}


def write_outputs(result: SweepResult, out: Path) -> None:
    """Writes ``out/heatmap.png``, ``out/report.md`` and, last, ``out/result.json`` (its presence
    means the sweep finished), each atomically.

    A ``result.json`` of an earlier sweep is removed first: a sweep killed while writing must not
    leave the new report beside the old result, which would then pass for this sweep's. Temporary
    files that a killed sweep left behind are removed too.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").unlink(missing_ok=True)
    for name, suffix in (("heatmap.png", ".png"), ("report.md", ".tmp"), ("result.json", ".tmp")):
        for temporary in out.glob(f".{name}.*{suffix}"):  # left by a killed sweep (`atomic_path` names)
            temporary.unlink(missing_ok=True)
    write_heatmap(result, out / "heatmap.png")
    write_bytes_atomic(out / "report.md", render_report(result).encode("utf-8"))
    write_bytes_atomic(out / "result.json", (result.to_json() + "\n").encode("utf-8"))


def render_report(result: SweepResult) -> str:
    """Markdown trade-off table of a `SweepResult`, the winner marked."""
    names = list(result.best_params)
    lines = [
        "# Detection threshold sweep",
        "",
        f"- kind: {result.kind}, images: {result.num_images}, configurations: {len(result.table)} ({result.strategy})",
        f"- objective: {result.objective}" + (f" (budget {result.budget:g} detections/image)" if result.budget is not None else ""),
        "- best: " + ", ".join(f"{k} = {v:g}" for k, v in result.best_params.items()),
        f"- best AP@[.5:.95] {result.best_row.stats[0]:.4f}, AP50 {result.best_row.stats[1]:.4f}, "
        f"AR@100 {result.best_row.recall:.4f}, F1@.5 {result.best_row.f1:.4f}, {result.best_row.dets_per_image:.2f} detections/image",
    ]
    if result.best_row.f1_max_score is not None:
        lines.append(
            f"- best F1@.5 along the score axis at these IoU settings: {result.best_row.f1_max:.4f}, "
            f"keeping scores >= {result.best_row.f1_max_score:.4g}"
        )
    lines += [
        "",
        "mAP alone favours the lowest score threshold: COCO AP keeps the 100 best detections per image and "
        "never loses by adding lower-scored ones, so raising the score threshold can only lower or tie it. "
        "Weigh AP against detections per image (or use --objective f1 or map_at_budget) to pick an "
        "operating point.",
        "",
        "| " + " | ".join(_COLUMN_NAMES[n] for n in names) + " | mAP | AP50 | AR@100 | F1@.5 | dets/image | objective | |",
        "|" + "---:|" * (len(names) + 6) + "---|",
    ]
    for row in result.table:
        value = objective_value(row, result.objective, result.budget)
        mark = "**best**" if row is result.best_row or dict(row.params) == result.best_params else ""
        cells = [f"{row.params[n]:g}" for n in names] + [
            f"{row.stats[0]:.4f}",
            f"{row.stats[1]:.4f}",
            f"{row.recall:.4f}",
            f"{row.f1:.4f}",
            f"{row.dets_per_image:.2f}",
            "over budget" if value == -math.inf else f"{value:.4f}",
            mark,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "heatmap: heatmap.png; every number: result.json.", ""]
    return "\n".join(lines)


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

    best = result.best_params
    panels = [("score_threshold", "iou_threshold", {k: v for k, v in best.items() if k.startswith("nms_")})]
    if result.kind == CacheKind.TWO_STAGE:
        panels.append(("nms_score_threshold", "nms_iou_threshold", {k: best[k] for k in ("score_threshold", "iou_threshold")}))
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
