"""Reports of a `SearchResult`: summary table, PNG plots, TensorBoard scalars, result.json."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from detsearch.selector import SearchResult, rules


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "diverged"


def metric_value(result: SearchResult, score: float) -> float:
    """A stage score (badness) back in the metric's own sign."""
    return -score if result.by_acc else score


def summary_table(result: SearchResult) -> str:
    """Plain-text table: the LR test's reading, then every candidate with its tail score."""
    lines = []
    if result.lr_test is not None:
        test = result.lr_test
        lines.append(f"learning rate range test ({len(test.curve)} points, cut at {test.cut}):")
        for name, lr in test.picks.items():
            mark = "  <- chosen" if name == test.rule else ""
            lines.append(f"  rule {name:<16} lr {lr:.4g}{mark}")
    for stage in result.stages:
        lines.append(f"{stage.name} candidates (tail {result.metric}):")
        for i, (candidate, score) in enumerate(zip(stage.candidates, stage.scores)):
            mark = "  <- chosen" if i == stage.chosen else ("  (tie)" if i in stage.tied else "")
            if i in stage.tied and stage.noise and 0 < stage.noise[i] < math.inf:
                mark += f" within noise (+-{stage.noise[i]:.3g})"
            lines.append(f"  {stage.name} {candidate:<10g} {result.metric} {_fmt(metric_value(result, score))}{mark}")
    horizon = result.horizon
    if horizon is not None:
        how = (f"{horizon.rule} rule" if horizon.rule != "fit" else
               "fitted" if horizon.fitted is not None else "fit had too few points: fallback exponent")
        lines.append(f"horizon: lr {horizon.learning_rate:.4g} on {horizon.trial_steps}-step trials x {horizon.factor:.3g} "
                     f"= (trial / final {horizon.final_steps} steps) ** {horizon.exponent:.2f} ({how})")
    chosen = ", ".join(f"{k}={v:.4g}" for k, v in result.param_spec.to_dict().items())
    lines.append(f"chosen: {chosen}")
    lines.append(f"trials: {result.trials_run} run, {result.trials_reused} reused; {result.steps_spent} steps; "
                 f"{result.seconds:.1f} s")
    return "\n".join(lines)


def _figure(figsize: tuple[float, float]):
    """A matplotlib ``Figure`` on the Agg canvas (no pyplot: no backend is chosen for the
    process)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def plot_lr_test(result: SearchResult, path: str | os.PathLike, window: int) -> None:
    """Smoothed loss against learning rate (log axis), the cut, the chosen LR and other rules' picks."""
    if result.lr_test is None:
        return
    test = result.lr_test
    lrs = test.curve.learning_rates
    raw = test.curve.metric(test.metric)
    smoothed = test.smoothed
    fig = _figure((7, 4.5))
    ax = fig.subplots()
    ax.plot(lrs, raw, color="0.8", linewidth=0.8, label=f"{test.metric} (points)")
    ax.plot(lrs, smoothed, color="C0", label=f"{test.metric} (smoothed, window {window})")
    if test.cut < len(lrs):
        ax.axvspan(lrs[test.cut] if test.cut < len(lrs) else lrs[-1], lrs[-1], color="C3", alpha=0.1,
                   label="cut: diverging")
    for i, (name, lr) in enumerate(test.picks.items()):
        style = dict(color="C2", linewidth=2) if name == test.rule else dict(color=f"C{4 + i}", linestyle=":")
        ax.axvline(lr, label=f"{name}: {lr:.3g}", **style)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(test.metric)
    finite = smoothed[np.isfinite(smoothed)]
    if finite.size:
        low, high = np.min(finite), np.max(finite)
        pad = 0.1 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + pad)
    ax.set_title("learning-rate range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_stages(result: SearchResult, path: str | os.PathLike, window: int) -> None:
    """One panel per candidate stage: every candidate's smoothed curve against steps."""
    if not result.stages:
        return
    fig = _figure((6 * len(result.stages), 4))
    axes = fig.subplots(1, len(result.stages), squeeze=False)
    for ax, stage in zip(axes[0], result.stages):
        for i, (candidate, curve) in enumerate(zip(stage.candidates, stage.curves)):
            values = rules.smooth(curve.metric(result.metric), window)
            label = f"{stage.name}={candidate:g}" + (" (chosen)" if i == stage.chosen else "")
            ax.plot(curve.steps, values, linewidth=2.5 if i == stage.chosen else 1.2, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{result.metric} (smoothed)")
        title = f"{stage.name} candidates"
        if stage.name == "learning_rate" and result.horizon is not None and result.horizon.factor != 1.0:
            title += f" (x{result.horizon.factor:.3g} for {result.horizon.final_steps} final steps)"
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_tensorboard(result: SearchResult, logdir: str | os.PathLike) -> None:
    """Every trial's curve as TensorBoard scalars, one run per trial under ``logdir``."""
    import tensorflow as tf

    trials = []
    if result.lr_test is not None:
        trials.append(("lr_range_test", result.lr_test.curve))
    for stage in result.stages:
        trials += [(f"{stage.name}={c:g}", curve) for c, curve in zip(stage.candidates, stage.curves)]
    for name, curve in trials:
        writer = tf.summary.create_file_writer(str(Path(logdir) / name))
        with writer.as_default():
            for i, step in enumerate(curve.steps):
                tf.summary.scalar("learning_rate", curve.learning_rates[i], step=int(step))
                for metric, values in curve.metrics.items():
                    tf.summary.scalar(metric, values[i], step=int(step))
        writer.close()
