"""Every figure that README.md and docs/*.md quote, measured again, each with its command.

    python tools/docs_figures.py                      # the cheap groups (a few minutes on 2 cores)
    python tools/docs_figures.py --only coco,demo     # some groups
    python tools/docs_figures.py --heavy              # every group: timed runs, trainings, benchmarks (hours)
    python tools/docs_figures.py --list               # the groups and what they run; nothing is run
    python tools/docs_figures.py --check              # exit 1 when a doc does not quote a figure as measured

Each figure is printed on one line: its name, its value, where the docs quote it (``path:line``;
``NOT QUOTED`` when the doc's text for it is not found, i.e. the doc quotes another value) and the
command that measured it, with the paths this run used. The docs quote these figures in the
words the script searches for, so ``--check`` fails as soon as a doc and a measurement disagree.
Timings and sizes are printed as measured and never fail ``--check`` (they move from run to run
and with the machine's load, which is printed with them); a doc that quotes another measurement
of them is pointed at (``quotes another measurement``).

Groups (``--only``; ``--heavy`` adds the heavy ones to the default run):

- cheap: ``constants`` (code constants the docs name), ``install`` (sizes of this environment),
  ``coco`` (the COCO API's example detections in tests/data: exactness, tolerance, holdout,
  cost), ``demo`` (the demo RetinaNet shipped with the package, ``retinanet_demo``, on the
  detection demo: the config's row, the choice, the tolerance table, per-class thresholds,
  holdout, cost, its cache), ``bootstrap``, ``per_class_confidence``
  (tools/bench_per_class_confidence.py);
- heavy: ``timing`` (the README's two search-det commands under ``/usr/bin/time -v``, from
  nothing), ``models`` (the Faster R-CNN demo trained by Model Garden's trainer, cached and
  swept), ``cache_read`` (reading a 5000-image cache), ``scale`` (tools/bench_scale.py),
  ``garden`` (docs/garden.md's walkthrough and tools/bench_experiment.py, which also times
  caching against plain inference), ``selector`` (tools/bench_selector.py, all three tasks).

Outputs go to ``--work`` (default ``out/docs_figures``; each group's folder is emptied before it
runs, so nothing measured earlier is reused); data to ``$DETSEARCH_DATA_DIR`` or ``./data``, as for
every command (the ``timing`` group prepares its own from nothing).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COCO_DETECTIONS = "tests/data/coco_val2014_100/instances_val2014_fakebbox100_results.json"
COCO_ANNOTATIONS = "tests/data/coco_val2014_100/instances_val2014_100.json"
COCO_GRID = ("0,0.05,0.1,0.2,0.3,0.5", "0.3,0.4,0.5,0.6,0.7,1.0")
DEMO_GRID = ("0.01,0.05,0.1,0.2,0.3,0.5", "0.3,0.4,0.5,0.6,0.7")  # search-det's one-stage grid (pipeline.DEFAULT_GRIDS)
SHIPPED_RUN = "retinanet_demo"  # the demo RetinaNet shipped with the package (models/checkpoints/retinanet_demo)


# --------------------------------------------------------------------------------------------
# figures and where the docs quote them


@dataclass(frozen=True)
class Quote:
    """How ``path`` quotes a figure: ``text`` (whitespace-insensitive, across line breaks).
    ``anchor``: for a timing, a part of the doc's sentence that stays when the value changes."""

    path: str
    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class Figure:
    name: str
    value: str
    quotes: tuple[Quote, ...]
    command: str
    timing: bool = False


def figure(name: str, value, command: str, *quotes: tuple, timing: bool = False) -> Figure:
    """A figure; each quote is ``(path, text)`` or ``(path, text, anchor)``."""
    return Figure(name, str(value), tuple(Quote(*q) for q in quotes), command, timing)


class Docs:
    """The docs' text with whitespace runs collapsed, to find a quote across line breaks."""

    def __init__(self, root: Path):
        self.root = root
        self._flat: dict[str, tuple[str, list[int]]] = {}

    def _load(self, path: str) -> tuple[str, list[int]]:
        if path not in self._flat:
            lines = (self.root / path).read_text(encoding="utf-8").splitlines()
            flat, starts = [], []
            position = 0
            for line in lines:
                text = " ".join(line.split())
                starts.append(position)
                flat.append(text)
                position += len(text) + 1
            self._flat[path] = (" ".join(flat), starts)
        return self._flat[path]

    def line_of(self, path: str, text: str) -> int | None:
        flat, starts = self._load(path)
        at = flat.find(" ".join(text.split()))
        return None if at < 0 else bisect.bisect_right(starts, at)

    def where(self, fig: Figure) -> tuple[list[str], bool]:
        """Locations of ``fig``'s quotes and whether every one was found."""
        out, found_all = [], True
        for quote in fig.quotes:
            line = self.line_of(quote.path, quote.text)
            if line is not None:
                out.append(f"{quote.path}:{line}")
                continue
            found_all = False
            anchor = self.line_of(quote.path, quote.anchor) if quote.anchor else None
            if fig.timing and anchor is not None:
                out.append(f"{quote.path}:{anchor} (quotes another measurement)")
            else:
                out.append(f"{quote.path}: NOT QUOTED ({quote.text!r})")
        return out, found_all


# --------------------------------------------------------------------------------------------
# running commands


class CommandFailed(RuntimeError):
    pass


@dataclass
class Ran:
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float | None = None
    load: str = ""


def show(argv: list[str]) -> str:
    """``argv`` as a user types it: ``detsearch ...``, ``python tools/...``, repository paths relative."""
    words = list(argv)
    if words[:3] == [sys.executable, "-m", "detsearch"]:
        words = ["detsearch", *words[3:]]
    elif words and words[0] == sys.executable:
        words = ["python", *words[1:]]
    out = []
    for word in words:
        with contextlib.suppress(ValueError):
            word = str(Path(word).relative_to(REPO)) if word.startswith(str(REPO)) else word
        out.append(word)
    return shlex.join(out)


def detsearch(*args) -> list[str]:
    return [sys.executable, "-m", "detsearch", *map(str, args)]


def tool(name: str, *args) -> list[str]:
    return [sys.executable, str(REPO / "tools" / name), *map(str, args)]


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


@dataclass
class Context:
    work: Path
    verbose: bool = False
    env: dict = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        """An empty folder for a group's outputs (emptied: nothing of an earlier run is reused)."""
        path = self.work / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def run(self, argv: list[str], *, env: dict | None = None, time_v: bool = False, cwd: Path | None = None,
            label: str | None = None) -> Ran:
        """Runs ``argv`` (printed as ``label`` when given); raises `CommandFailed` with its
        output's end when it fails."""
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **self.env, **(env or {})}
        prefix = ["/usr/bin/time", "-v"] if time_v and Path("/usr/bin/time").exists() else []
        print(f"  $ {label or show(argv)}", flush=True)
        load = load_average()
        started = time.perf_counter()
        done = subprocess.run(prefix + argv, capture_output=True, text=True, env=environment, cwd=cwd or REPO)
        seconds = time.perf_counter() - started
        if self.verbose:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
        if done.returncode != 0:
            tail = "\n".join((done.stdout + "\n" + done.stderr).strip().splitlines()[-15:])
            raise CommandFailed(f"{label or show(argv)} exited {done.returncode}:\n{tail}")
        rss = None
        if prefix:
            match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
            rss = int(match.group(1)) / 1024 if match else None
        return Ran(done.stdout, done.stderr, seconds, rss, f"{load} before, {load_average()} after")


def markdown_rows(text: str, after: str | None = None) -> list[list[str]]:
    """The cells of the markdown table rows in ``text`` (after the line holding ``after``)."""
    lines = text.splitlines()
    if after is not None:
        start = next((i for i, line in enumerate(lines) if after in line), None)
        if start is None:
            raise CommandFailed(f"no line with {after!r} in the output")
        lines = lines[start + 1:]
    block = []
    for line in lines:
        if not line.startswith("|"):
            if block:
                break
            continue
        block.append([c.strip() for c in line.strip().strip("|").split("|")])
    separator = [i for i, cells in enumerate(block) if all(c and set(c) <= set("-:") for c in cells)]
    if separator:  # the header is the row above the separator
        block = block[separator[0] + 1:]
    return block


def search(pattern: str, text: str, what: str) -> re.Match:
    match = re.search(pattern, text)
    if match is None:
        raise CommandFailed(f"{what}: {pattern!r} not found in the output")
    return match


def seconds_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def sci(value: float) -> str:
    """``8.1e-4`` (not Python's ``8.1e-04``)."""
    mantissa, _, exponent = f"{value:.1e}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def about_text(seconds: float) -> str:
    """A duration as the README rounds it: "about 15 seconds", "about 3 minutes"."""
    if seconds < 90:
        return f"about {5 * round(seconds / 5):.0f} seconds" if seconds >= 10 else f"about {seconds:.0f} seconds"
    return f"about {round(seconds / 60)} minutes"


def data_root() -> Path:
    from detsearch.datasets.paths import data_root as root

    return root()


def cache_figures(cache_dir: Path) -> dict:
    """Images, rows, entries and bytes (all, and of the row arrays) of a cache directory."""
    from detsearch.detection.cache import read_cache

    cache = read_cache(cache_dir, verify=False)
    images = len(cache.meta.image_ids)
    files = [f for f in cache_dir.rglob("*") if f.is_file() and "shards" not in f.parts]
    size = sum(f.stat().st_size for f in files)
    rows_size = sum(f.stat().st_size for f in files if f.name.startswith("row_"))
    return {"images": images, "rows": int(cache.row_boxes.shape[0]), "entries": int(cache.entry_score.shape[0]),
            "bytes": size, "row_bytes": rows_size}


# --------------------------------------------------------------------------------------------
# cheap groups


def group_constants(ctx: Context) -> list[Figure]:
    """Constants of the code that the docs name (read from the modules; nothing runs)."""
    import math

    from detsearch.detection.sweep.result import DEFAULT_TOLERANCE
    from detsearch.selector import rules
    from detsearch.selector.hyperselector import (DEFAULT_FINAL_STEPS, DEFAULT_LR_RANGE, HORIZON_LADDER,
                                                  LARGE_MODEL_PARAMETERS)
    from detsearch.training.base import EXPLODED_FACTOR

    def power(value: float) -> str:
        exponent = math.log10(value)
        return f"1e{exponent:.0f}" if exponent < 0 and exponent == round(exponent) else f"{value:g}"

    def code(name: str) -> str:
        return f"python tools/docs_figures.py --only constants ({name})"

    hyper, operating, readme = "docs/hyperselector.md", "docs/operating_points.md", "README.md"
    horizon = rules.HORIZON_EXPONENTS
    seed_factor = (100 / DEFAULT_FINAL_STEPS) ** horizon["fourth_root"]
    ladder = sorted({*HORIZON_LADDER, 1.0})
    ladder_words = [("1" if f == 1.0 else f"10^{math.log10(f):g}") for f in ladder]
    fractions = {0.25: "1/4", 0.5: "1/2", 1.0: "all"}
    figures = [
        figure("tolerance.default", f"{DEFAULT_TOLERANCE:g}", code("detsearch.detection.sweep.result.DEFAULT_TOLERANCE"),
               (readme, f"within `--tolerance` (default {DEFAULT_TOLERANCE:g}) of the best"),
               (operating, f"**Default `--tolerance {DEFAULT_TOLERANCE:g}`**")),
        figure("selector.exploded_factor", f"{EXPLODED_FACTOR:g}x", code("detsearch.training.base.EXPLODED_FACTOR"),
               (hyper, f"a loss above {EXPLODED_FACTOR:g}x the trial's first loss (`EXPLODED_FACTOR`")),
        figure("selector.rise_margin", f"{rules.RISE_MARGIN:.0%}", code("detsearch.selector.rules.RISE_MARGIN"),
               (hyper, f"more than {rules.RISE_MARGIN * 100:g}% above the best smoothed loss so far (`RISE_MARGIN`)")),
        figure("selector.loss_explosion_factor", f"{rules.LOSS_EXPLOSION_FACTOR:g}x",
               code("detsearch.selector.rules.LOSS_EXPLOSION_FACTOR"),
               (hyper, f"a smoothed loss above {rules.LOSS_EXPLOSION_FACTOR:g}x the best smoothed loss so far "
                       "(`LOSS_EXPLOSION_FACTOR`")),
        figure("selector.leading_skip", f"{rules.LEADING_SKIP_FRACTION:.0%}",
               code("detsearch.selector.rules.LEADING_SKIP_FRACTION"),
               (hyper, f"skipping the first {rules.LEADING_SKIP_FRACTION * 100:g}% of the curve (`LEADING_SKIP_FRACTION`")),
        figure("selector.noise_band", f"{rules.NOISE_SIGMAS:g} standard errors, {rules.NOISE_BLOCKS} blocks",
               code("detsearch.selector.rules.NOISE_SIGMAS, NOISE_BLOCKS"),
               (hyper, f"{rules.NOISE_SIGMAS:g} standard errors of the mean difference"),
               (hyper, f"cut into {rules.NOISE_BLOCKS} consecutive blocks"),
               (hyper, f"that of the {rules.NOISE_BLOCKS} block means")),
        figure("selector.horizon_exponents", f"fourth_root {horizon['fourth_root']:g}, sqrt {horizon['sqrt']:g}",
               code("detsearch.selector.rules.HORIZON_EXPONENTS"),
               (hyper, f"| `fourth_root` (default) | {horizon['fourth_root']:g} |"),
               (hyper, f"| `sqrt` | {horizon['sqrt']:g} |")),
        figure("selector.fit", f"fractions {rules.HORIZON_FRACTIONS}, clip [0, {rules.MAX_HORIZON_EXPONENT:g}], "
               f"fallback {rules.FIT_FALLBACK_EXPONENT:g}", code("detsearch.selector.rules.HORIZON_FRACTIONS, "
                                                                 "MAX_HORIZON_EXPONENT, FIT_FALLBACK_EXPONENT"),
               (hyper, "the ladder's best learning rate at " + ", ".join(fractions[f] for f in rules.HORIZON_FRACTIONS[:-1])
                + f" and {fractions[rules.HORIZON_FRACTIONS[-1]]} of the trials' length"),
               (hyper, f"clipped to [0, {rules.MAX_HORIZON_EXPONENT:g}]; {rules.FIT_FALLBACK_EXPONENT:g} when fewer")),
        figure("selector.seed_horizon_factor", f"{seed_factor:.3f}", code("(100 / DEFAULT_FINAL_STEPS) ** 0.25"),
               (hyper, f"`0.1 ** 0.25 = {seed_factor:.2f}`"),
               (hyper, f"x {seed_factor:.3f} = (trial / final {DEFAULT_FINAL_STEPS} steps) ** 0.25")),
        figure("selector.horizon_ladder", ", ".join(ladder_words), code("detsearch.selector.hyperselector.HORIZON_LADDER"),
               (hyper, "the pick times " + ", ".join(ladder_words[:-1]) + f" and {ladder_words[-1]} are trained")),
        figure("selector.final_steps", DEFAULT_FINAL_STEPS, code("detsearch.selector.hyperselector.DEFAULT_FINAL_STEPS"),
               (hyper, f"`DEFAULT_FINAL_STEPS` = {DEFAULT_FINAL_STEPS} steps"),
               (readme, f"(default: `run`'s {DEFAULT_FINAL_STEPS} steps")),
        figure("selector.large_model", f"{LARGE_MODEL_PARAMETERS:,}", code("detsearch.selector.hyperselector."
                                                                           "LARGE_MODEL_PARAMETERS"),
               (hyper, f"`LARGE` from {LARGE_MODEL_PARAMETERS / 1e6:g}M trainable parameters")),
        figure("selector.lr_range", "; ".join(f"{size}: {power(a)}..{power(b)}" for size, (a, b) in
                                              ((str(k).split('.')[-1], v) for k, v in DEFAULT_LR_RANGE.items())),
               code("detsearch.selector.hyperselector.DEFAULT_LR_RANGE"),
               *((hyper, f"| {str(size).split('.')[-1].upper()} | {power(a)} | {power(b)} |")
                 for size, (a, b) in DEFAULT_LR_RANGE.items())),
    ]
    return figures


def installed_closure(name: str, extras: set[str]) -> dict:
    """The installed distributions ``pip install 'NAME[EXTRAS]'`` needs: name -> distribution."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, todo = {}, [(name, frozenset(extras))]
    while todo:
        wanted, wanted_extras = todo.pop()
        key = canonicalize_name(wanted)
        try:
            dist = metadata.distribution(wanted)
        except metadata.PackageNotFoundError:
            continue
        if key in found and wanted_extras <= found[key][1]:
            continue
        found[key] = (dist, wanted_extras | found.get(key, (None, frozenset()))[1])
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in wanted_extras or {""}):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return {key: dist for key, (dist, _) in found.items()}


def distribution_bytes(dist) -> int:
    return sum(f.locate().stat().st_size for f in dist.files or () if f.locate().is_file())


def group_install(ctx: Context) -> list[Figure]:
    """Sizes of what pip installs: the README's first command (``.[test]``: every distribution it
    pulls in, as installed here) and the ``[ray]`` extra (docs/scale.md)."""
    from importlib import metadata

    closure = installed_closure("detsearch", {"test"})
    size = sum(distribution_bytes(d) for d in closure.values())
    figures = [figure("install.test_extra", f"{size / 1e9:.1f} GB ({len(closure)} distributions)",
                      "pip install -e '.[test]'; the files of every distribution it needs",
                      ("README.md", f"the test tools; about {size / 1e9:.0f} GB)", "the test tools; about"),
                      timing=True)]
    try:
        ray = metadata.distribution("ray")
    except metadata.PackageNotFoundError:
        print("  ray is not installed: no figure for docs/scale.md's install size")
        return figures
    extra = {k: d for k, d in installed_closure("detsearch", {"ray"}).items() if k not in closure}
    ray_size = sum(distribution_bytes(d) for d in extra.values())
    figures.append(figure("install.ray", f"{ray_size / 1e6:.0f} MB (ray {ray.version}: {', '.join(sorted(extra))})",
                          "pip install -e '.[ray]' after '.[test]'; the files of the distributions it adds",
                          ("docs/scale.md", f"about {10 * round(ray_size / 1e7):.0f} MB", "seconds from a wheel cache"),
                          timing=True))
    return figures


def tolerance_figures(prefix: str, stdout: str, command: str, doc_rows: bool = True) -> tuple[list[Figure], dict]:
    """The split table of tools/bench_operating_points.py --only tolerance, one figure per row."""
    from detsearch.detection.sweep.result import DEFAULT_TOLERANCE

    rows = markdown_rows(stdout, after="half/half splits")
    table = {}
    figures = []
    for cells in rows:
        tolerance = float(cells[0])
        table[tolerance] = cells
        first = f"**{cells[0]}**" if tolerance == DEFAULT_TOLERANCE else cells[0]
        text = "| " + " | ".join([first, *cells[1:]]) + " |"
        figures.append(figure(f"{prefix}.tolerance_{cells[0]}", " | ".join(cells[1:]), command,
                              *((("docs/operating_points.md", text),) if doc_rows else ())))
    return figures, table


def cost_figures(prefix: str, stdout: str, command: str) -> list[Figure]:
    """The seconds of tools/bench_operating_points.py --only cost, one figure per row."""
    rows = markdown_rows(stdout, after="| run | configurations")
    files = markdown_rows(stdout, after="| file | seconds")
    base = float(rows[0][2])
    labels = {"plain sweep": "plain sweep", "--per-class": "`--per-class f1`", "--holdout": "`--holdout 0.3`",
              "--max-detections": "`--max-detections 100,300`", "--class-agnostic": "`--class-agnostic false,true`"}
    figures = []
    doc = "docs/operating_points.md"
    for cells in rows:
        key = next(k for k in labels if cells[0].startswith(k))
        value = f"{float(cells[2]):.2f} s" + ("" if key == "plain sweep" else f" ({float(cells[2]) - base:+.2f})")
        label = f"| {labels[key]} ({cells[1]} configurations) |"
        figures.append(figure(f"{prefix}.cost.{key.strip('-').replace('-', '_').replace(' ', '_')}",
                              f"{value} ({cells[1]} configurations)", command, (doc, f"{label} {value} |", label),
                              timing=True))
    order = ("heatmap.png", "pr_curve.png", "f1_curve.png", "per_class.png", "pareto.png")
    written = {cells[0]: float(cells[1]) for cells in files}
    value = " / ".join(f"{written[name]:.2f}" for name in order if name in written) + " s"
    figures.append(figure(f"{prefix}.cost.plots", value + " (" + " / ".join(n[:-4] for n in order) + ")", command,
                          (doc, f"| writing heatmap / pr_curve / f1_curve / per_class / pareto | {value} |",
                           "| writing heatmap / pr_curve / f1_curve / per_class / pareto |"), timing=True))
    return figures


def group_coco(ctx: Context) -> list[Figure]:
    """The COCO API's example detections on 100 val2014 images (tests/data/coco_val2014_100):
    the sweep with suppression off against pycocotools on the file, the tolerance table, the
    holdout, the cost of each operating-point output. NumPy and pycocotools only."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    work = ctx.folder("coco")
    detections, annotations = str(REPO / COCO_DETECTIONS), str(REPO / COCO_ANNOTATIONS)
    figures = []

    argv = detsearch("sweep", "--detections", detections, "--annotations", annotations, "--score-thresholds", "0",
                     "--iou-thresholds", "1.0", "--out", work / "off", "--no-progress")
    ctx.run(argv)
    off = json.loads((work / "off" / "result.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(annotations)
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    same = [float(v) for v in evaluator.stats] == off["best_row"]["stats"]
    ap = f"{off['best_row']['stats'][0]:.6f}"
    figures.append(figure("coco.ap_suppression_off", ap + ("" if same else " (NOT pycocotools' 12 stats: "
                                                           f"{evaluator.stats[0]:.6f})"), show(argv),
                          ("README.md", f"pycocotools' 12 stats on that file bit for bit (AP {ap} on the example"),
                          ("docs/cache_format.md", f"tested on the real COCO fixture: AP {ap}")))
    dets = off["best_row"]["dets_per_image"]
    figures.append(figure("coco.detections_per_image", f"{dets:.1f}", show(argv),
                          ("docs/operating_points.md", f"val2014 images, {dets:.1f} detections per image")))

    argv = tool("bench_operating_points.py", "--only", "tolerance", "--detections", detections, "--annotations",
                annotations, "--score-thresholds", COCO_GRID[0], "--iou-thresholds", COCO_GRID[1])
    tolerance, table = tolerance_figures("coco", ctx.run(argv).stdout, show(argv))
    figures += tolerance
    chosen, held = table[0.005][1], table[0.005][3].split(" ± ")[0]
    figures.append(figure("coco.tolerance_0.005_overfit", f"held out {held} vs chosen on {chosen}", show(argv),
                          ("docs/operating_points.md", f"({held} vs {chosen} at 0.005)")))

    argv = detsearch("sweep", "--detections", detections, "--annotations", annotations, "--score-thresholds",
                     COCO_GRID[0], "--iou-thresholds", COCO_GRID[1], "--holdout", "0.3", "--out", work / "holdout",
                     "--no-progress")
    ctx.run(argv)
    figures += holdout_figures("coco", "COCO example", json.loads((work / "holdout" / "result.json").read_text()),
                               show(argv))

    argv = tool("bench_operating_points.py", "--only", "cost", "--detections", detections, "--annotations",
                annotations, "--score-thresholds", COCO_GRID[0], "--iou-thresholds", COCO_GRID[1])
    figures += cost_figures("coco", ctx.run(argv).stdout, show(argv))
    return figures


def holdout_figures(prefix: str, label: str, result: dict, command: str) -> list[Figure]:
    holdout = result["holdout"]
    chosen_on, held_out = holdout["chosen_on"], len(holdout["image_ids"])
    low, high = holdout["ci95"]["AP"]
    ap_on, ap_held = chosen_on["stats"][0], holdout["stats"][0]
    doc = "docs/operating_points.md"
    row = (f"| {label}, {chosen_on['num_images']} / {held_out} images, AP | {ap_on:.4f} | {ap_held:.4f} | "
           f"[{low:.4f}, {high:.4f}] |")
    figures = [figure(f"{prefix}.holdout", f"chosen on {ap_on:.4f}, held out {ap_held:.4f}, 95 % [{low:.4f}, {high:.4f}]",
                      command, (doc, row))]
    if prefix == "coco":
        figures.append(figure("coco.holdout_interval", f"width {high - low:.2f}, middle {(low + high) / 2:.3f}", command,
                              (doc, f"On {held_out} COCO images the interval is {high - low:.2f} wide"),
                              (doc, f"the interval's middle ({(low + high) / 2:.3f}) lies above the held-out AP "
                                    f"({ap_held:.3f})")))
    return figures


def search_det_figures(summary: dict) -> dict:
    """The config's row, the chosen and the highest of a search-det ``summary.json``, as text."""
    def row(entry: dict) -> str:
        return f"AP {entry['map']:.4f} / AP50 {entry['ap50']:.4f} with {entry['dets_per_image']:.1f} detections per image"

    def params(entry: dict) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in entry["params"].items())

    config = summary.get("config_row")
    return {"config": None if config is None else f"{row(config)} ({params(config)})",
            "config_row": None if config is None else row(config),
            "chosen": f"{row(summary['chosen'])} ({params(summary['chosen'])})",
            "highest": f"{row(summary['highest'])} ({params(summary['highest'])})"}


def group_demo(ctx: Context) -> list[Figure]:
    """The demo RetinaNet shipped with the package on the detection demo's 500 val images:
    ``detsearch search-det --model-dir retinanet_demo`` (the README's choice; the config's row is
    the one tests/models/test_regression.py pins), its cache, and the operating points on that
    cache (per-class thresholds, holdout, the tolerance table, the cost of each output). Prepares
    the demo data and its TFRecords on first use."""
    work = ctx.folder("demo")
    figures = []
    out = work / "search_det_retinanet"
    argv = detsearch("search-det", "--model-dir", SHIPPED_RUN, "--out", out)
    ran = ctx.run(argv)
    summary = json.loads((out / "summary.json").read_text())
    trade = search(r"([+-]\d\.\d{4}) AP, ([+-]\d+) % detections per image \(([\d.]+) vs ([\d.]+)\)", ran.stdout,
                   "search-det's trade line")
    given, saved, kept, top = trade.groups()
    chosen, highest = summary["chosen"], summary["highest"]
    rows = search_det_figures(summary)
    command = show(argv)
    operating, models = "docs/operating_points.md", "docs/models.md"
    figures += [
        figure("demo.trade", f"{given} AP, {saved} % detections per image ({kept} vs {top})", command,
               ("README.md", f"with the shipped checkpoint, {given} AP for {saved} % detections"),
               (operating, f"e.g. `{given} AP, {saved} % detections per image ({kept} vs {top})`")),
        figure("demo.lowest_threshold", f"{highest['dets_per_image']:.0f} detections per image for "
               f"{highest['map'] - chosen['map']:+.4f} AP over {chosen['dets_per_image']:.0f}", command,
               (operating, f"on the demo, {highest['dets_per_image']:.0f} detections per image for "
                           f"{highest['map'] - chosen['map']:+.4f} AP over a threshold that keeps "
                           f"{chosen['dets_per_image']:.0f}")),
        figure("demo.chosen", rows["chosen"], command),
        figure("demo.highest", rows["highest"], command),
    ]
    if rows["config"] is not None:
        figures.append(figure("demo.config_row", rows["config"], command, (models, f"it reaches {rows['config_row']}")))
    stages = summary.get("stage_seconds", {})
    if "record" in stages:
        figures.append(figure("demo.cache_recording", f"{stages['record']:.1f} s for {summary['images']} images "
                              f"(tracing included); sweep {stages.get('sweep', float('nan')):.1f} s; whole command "
                              f"{seconds_text(ran.seconds)}; {ran.load}", command, timing=True))

    cache_dir = out / "cache"
    annotations = out / "annotations.json"  # the ground truth the sweep scored against
    grid = ["--score-thresholds", DEMO_GRID[0], "--iou-thresholds", DEMO_GRID[1]]
    sizes = cache_figures(cache_dir)
    images = sizes["images"]
    figures += [
        figure("demo.cache", f"{sizes['rows'] / images:.0f} rows, {sizes['entries'] / images:.0f} entries, "
               f"{sizes['bytes'] / images / 1e3:.1f} kB per image", command),
        figure("demo.cache_entries", f"{sizes['entries'] / 1e6:.1f}M entries on {images} images", command,
               (operating, f"demo ({images} images, {sizes['entries'] / 1e6:.1f}M cached entries)")),
    ]

    argv = detsearch("sweep", "--cache", cache_dir, "--annotations", annotations, *grid, "--per-class", "f1",
                     "--out", work / "per_class", "--no-progress")
    ran = ctx.run(argv)
    per_class = json.loads((work / "per_class" / "result.json").read_text())
    classes = per_class["per_class"]
    line = search(r"per-class thresholds \(f1\): AP ([\d.]+), AP50 [\d.]+, ([\d.]+) detections/image", ran.stdout,
                  "the per-class line")
    thresholds = [c["score_threshold"] for c in classes if c["f1"] is not None]
    f1 = [c["f1"] for c in classes if c["f1"] is not None]
    pooled = per_class["best_row"]["f1"]
    document = json.loads((work / "per_class" / "per_class_thresholds.json").read_text())
    first = document["classes"][0]
    configuration = ", ".join(f'"{k}": {v:g}' for k, v in document["configuration"].items())
    figures += [
        figure("demo.per_class", f"thresholds {min(thresholds):.2f}-{max(thresholds):.2f}, {line.group(2)} "
               f"detections/image, F1 {pooled:.2f} -> {min(f1):.2f}-{max(f1):.2f}, AP {line.group(1)}", show(argv),
               (operating, f"the F1 thresholds lie between {min(thresholds):.2f} and {max(thresholds):.2f} per digit; "
                           f"with them the model keeps {line.group(2)} detections per image (F1 at IoU 0.5 from "
                           f"{pooled:.2f} to {min(f1):.2f}-{max(f1):.2f} per class) at AP {line.group(1)}")),
        figure("demo.per_class_file", f"class {first['name']}: {first['score_threshold']}", show(argv),
               (operating, f'"configuration": {{{configuration}}}'),
               (operating, f'{{"category_id": {first["category_id"]}, "name": "{first["name"]}", '
                           f'"score_threshold": {first["score_threshold"]}}}')),
    ]

    argv = detsearch("sweep", "--cache", cache_dir, "--annotations", annotations, *grid, "--holdout", "0.3",
                     "--out", work / "holdout", "--no-progress")
    ctx.run(argv)
    figures += holdout_figures("demo", "demo", json.loads((work / "holdout" / "result.json").read_text()), show(argv))

    argv = tool("bench_operating_points.py", "--only", "tolerance", "--cache", cache_dir, "--annotations", annotations)
    tolerance, table = tolerance_figures("demo", ctx.run(argv).stdout, show(argv))
    figures += tolerance
    default = table[0.001]
    figures.append(figure("demo.tolerance_carries_over", f"held out {default[3].split(' ± ')[0]}, chosen on "
                          f"{default[1]}, detections {default[2]}", show(argv),
                          (operating, f"what it gives up on held-out images ({default[3].split(' ± ')[0]}) is what it "
                                      f"gave up where it chose ({default[1]})")))

    argv = tool("bench_operating_points.py", "--only", "cost", "--cache", cache_dir, "--annotations", annotations)
    figures += cost_figures("demo", ctx.run(argv).stdout, show(argv))
    return figures


def group_bootstrap(ctx: Context) -> list[Figure]:
    """`detsearch.detection.bootstrap` on seeded synthetic sets (`tools/bench_eval.py`'s
    generator, 100 detections per image): 1000 replicates of 50k detections timed; the AP and
    percentile interval of a 5000-image set (COCO AP on copied images comes out higher)."""
    import numpy as np

    sys.path.insert(0, str(REPO / "tools"))
    from bench_eval import make_results

    from detsearch.detection.bootstrap import bootstrap_weights, percentile_interval, replicate_stats
    from detsearch.detection.cocoeval import CocoMatcher
    from detsearch.detection.synthetic import make_ground_truth

    command = "python tools/docs_figures.py --only bootstrap"

    def matches(images: int):
        rng = np.random.default_rng(0)
        gt = make_ground_truth(rng, images)
        results = make_results(rng, gt, 100)
        matcher = CocoMatcher(gt)
        image_ids = np.array([r["image_id"] for r in results])
        category_ids = np.array([r["category_id"] for r in results])
        boxes = np.array([r["bbox"] for r in results], np.float64)
        scores = np.array([r["score"] for r in results], np.float64)
        return matcher.match(matcher.image_positions(image_ids), matcher.category_positions(category_ids), boxes,
                             scores), len(results)

    small, count = matches(500)
    weights = bootstrap_weights(small.matcher.num_images, 1000, 0)
    started = time.perf_counter()
    replicate_stats(small, weights)
    seconds = time.perf_counter() - started
    figures = [figure("bootstrap.seconds", f"{seconds:.1f} s for 1000 replicates of {count // 1000}k detections "
                      f"({load_average()})", command,
                      ("docs/operating_points.md", f"1000 replicates of {count // 1000}k detections take about "
                                                   f"{seconds:.0f} s", "replicates of 50k detections take about"),
                      timing=True)]
    large, count = matches(5000)
    ap = large.evaluate()[0].stats[0]
    low, high = percentile_interval(replicate_stats(large, bootstrap_weights(large.matcher.num_images, 1000, 0))["AP"])
    figures.append(figure("bootstrap.interval_above", f"AP {ap:.4f}, 95 % [{low:.4f}, {high:.4f}] "
                          f"({count // 1000}k detections, 1000 replicates, seed 0)", command,
                          ("docs/operating_points.md", f"on a random 5000-image set with AP {ap:.4f} the percentile "
                                                       f"interval was [{low:.4f}, {high:.4f}]")))
    return figures


def group_per_class_confidence(ctx: Context) -> list[Figure]:
    """tools/bench_per_class_confidence.py (200 half/half splits of its synthetic set):
    how often precision:0.9 holds on the held-out half, chosen by the point estimate and by the
    lower bound at 0.95, and the recall the bound gives up."""
    argv = tool("bench_per_class_confidence.py")
    stdout = ctx.run(argv).stdout
    command = show(argv)
    pooled = {method: search(rf"{method}: held-out precision >= 0\.9 in (\d+)/(\d+) = ([\d.]+)", stdout, method).groups()
              for method in ("point", "bound")}
    rates = {"point": [], "bound": []}
    reached_point = {}
    for cells in markdown_rows(stdout, after="| category |"):
        if cells[4] != "-":
            rates[cells[2]].append((float(cells[4].split()[0]), cells[0]))
        if cells[2] == "point":
            reached_point[cells[0]] = cells[4]
    given = sorted((float(m.group(2)), m.group(1)) for m in re.finditer(r"^  (.+?): \+([\d.]+) \(", stdout, re.M))
    (low, low_name), (high, high_name) = given[0], given[-1]

    def label(name: str) -> str:  # "dog (rare)" -> "rare"
        return name.split("(")[-1].rstrip(")")

    never = [line.split("|")[1].strip() for line in stdout.splitlines() if "| bound | 0/" in line]
    point_rate, bound_rate = (f"{float(pooled[m][2]):.3f}" for m in ("point", "bound"))
    figures = [
        figure("per_class_confidence.point", f"{pooled['point'][0]} / {pooled['point'][1]} = {point_rate}", command,
               ("docs/operating_points.md", f"| the point estimate | {pooled['point'][0]} / {pooled['point'][1]} = "
                                            f"{point_rate} | |")),
        figure("per_class_confidence.bound", f"{pooled['bound'][0]} / {pooled['bound'][1]} = {bound_rate}, recall given "
               f"up {low:.3f} ({label(low_name)}) to {high:.3f} ({label(high_name)})", command,
               ("docs/operating_points.md", f"| the lower bound at 0.95 | {pooled['bound'][0]} / {pooled['bound'][1]} = "
                                            f"{bound_rate} | {low:.3f} ({label(low_name)}) to {high:.3f} "
                                            f"({label(high_name)}) |"),
               ("README.md", f"held 0.9 on the unseen half {100 * float(pooled['point'][2]):.1f} % of the time chosen by "
                             f"the point estimate and {100 * float(pooled['bound'][2]):.1f} % by the bound at 0.95, for "
                             f"{100 * low:.1f} to {100 * high:.1f} points of recall")),
        figure("per_class_confidence.per_category", f"bound {min(rates['bound'])[0]:.3f} to {max(rates['bound'])[0]:.3f}, "
               f"point {min(rates['point'])[0]:.3f} to {max(rates['point'])[0]:.3f}", command,
               ("docs/operating_points.md", f"Per category the bound holds {min(rates['bound'])[0]:.3f} to "
                                            f"{max(rates['bound'])[0]:.3f} of the time, the point estimate "
                                            f"{min(rates['point'])[0]:.3f} to {max(rates['point'])[0]:.3f}")),
    ]
    for name in never:  # reached by the bound on no split: what the point estimate did there
        rate = float(reached_point[name].split()[0])
        figures.append(figure("per_class_confidence.never_reached", f"{name}: point estimate holds {rate:.3f}", command,
                              ("docs/operating_points.md", f"the point estimate reaches it on every split and holds "
                                                           f"it on {100 * rate:.0f} %")))
    return figures


# --------------------------------------------------------------------------------------------
# heavy groups


def group_timing(ctx: Context) -> list[Figure]:
    """The README's two search-det commands timed with ``/usr/bin/time -v``: the demo from
    nothing (fresh data folder and output: the data prepared and converted to TFRecords, the
    demo RetinaNet trained 1500 steps by Model Garden's trainer, cached, swept) and
    ``--model-dir retinanet_demo`` (the shipped checkpoint, data prepared)."""
    work = ctx.folder("timing")
    env = {"DETSEARCH_DATA_DIR": str(work / "data")}
    figures = []
    argv = detsearch("search-det", "--out", work / "search_det_retinanet")
    ran = ctx.run(argv, env=env, time_v=True)
    command = f"DETSEARCH_DATA_DIR={work / 'data'} /usr/bin/time -v {show(argv)}"
    memory = f", peak RSS {ran.max_rss_mb:.0f} MB" if ran.max_rss_mb else ""
    figures.append(figure("timing.search_det_demo", f"{seconds_text(ran.seconds)}{memory}; {ran.load}", command,
                          ("README.md", f"({about_text(ran.seconds)} on 2 CPU", "on the built-in demo ("),
                          timing=True))
    summary = json.loads((work / "search_det_retinanet" / "summary.json").read_text())
    retrained = search_det_figures(summary)["config"]
    if retrained is not None:
        figures.append(figure("timing.retrained_config_row", f"{retrained} (trained here; the shipped checkpoint is "
                              "the same recipe)",
                              command))
    argv = detsearch("search-det", "--model-dir", SHIPPED_RUN, "--out", work / "shipped")
    ran = ctx.run(argv, env=env, time_v=True)
    memory = f", peak RSS {ran.max_rss_mb:.0f} MB" if ran.max_rss_mb else ""
    figures.append(figure("timing.search_det_shipped", f"{seconds_text(ran.seconds)}{memory}; {ran.load}",
                          f"DETSEARCH_DATA_DIR={work / 'data'} /usr/bin/time -v {show(argv)}",
                          ("README.md", f"({about_text(ran.seconds)}", "checkpoint shipped with the package"),
                          timing=True))
    return figures


def group_models(ctx: Context) -> list[Figure]:
    """The Faster R-CNN demo (``fasterrcnn_resnetfpn_coco`` with the shipped override):
    ``detsearch search-det --model faster_rcnn`` from nothing here (1500 steps of Model Garden's
    trainer, its cache, the four-threshold sweep): the config's row, the choice, the cache's size
    and the time. docs/models.md quotes none of them yet."""
    work = ctx.folder("models")
    out = work / "search_det_faster_rcnn"
    argv = detsearch("search-det", "--model", "faster_rcnn", "--out", out)
    ran = ctx.run(argv, time_v=True)
    command = show(argv)
    summary = json.loads((out / "summary.json").read_text())
    rows = search_det_figures(summary)
    figures = [figure("models.frcnn_chosen", rows["chosen"], command),
               figure("models.frcnn_highest", rows["highest"], command)]
    if rows["config"] is not None:
        figures.append(figure("models.frcnn_config_row", rows["config"], command))
    sizes = cache_figures(out / "cache")
    images = sizes["images"]
    figures += [
        figure("models.frcnn_cache", f"{sizes['rows'] / images:.0f} proposals, {sizes['entries'] / images:.0f} entries, "
               f"{sizes['bytes'] / images / 1e3:.1f} kB per image (proposals {sizes['row_bytes'] / images / 1e3:.1f} kB)",
               command),
        figure("models.frcnn_run", f"{seconds_text(ran.seconds)} (training included); stage seconds "
               + ", ".join(f"{k} {v:.1f}" for k, v in summary.get("stage_seconds", {}).items()) + f"; {ran.load}",
               command, timing=True),
    ]
    return figures


def group_cache_read(ctx: Context) -> list[Figure]:
    """``read_cache`` on a seeded one-stage cache of 5000 images x 1000 rows x 5 entries per
    row: with ``verify=True`` from the page cache (3 reads) and after evicting its files
    (``posix_fadvise DONTNEED``), and with ``verify=False``."""
    import numpy as np

    from detsearch.detection.cache import CacheSettings, DetectionCache, read_cache, write_cache

    work = ctx.folder("cache_read")
    images, rows, per_row = 5000, 1000, 5
    rng = np.random.default_rng(0)
    settings = CacheSettings(kind="one_stage", category_ids=tuple(range(1, 81)), score_floor=0.01)
    meta = settings.meta(list(range(1, images + 1)), [(480, 640)] * images)
    corner = rng.uniform(0, 400, (images * rows, 2)).astype(np.float32)
    boxes = np.concatenate([corner, corner + rng.uniform(1, 200, (images * rows, 2)).astype(np.float32)], axis=1)
    # per_row distinct classes per row, in order: one of the first 16, then every 16th after it
    classes = rng.integers(0, 16, images * rows)[:, None] + 16 * np.arange(per_row)
    cache = DetectionCache.from_arrays(
        meta, row_offsets=np.arange(images + 1) * rows, row_boxes=boxes,
        entry_offsets=np.arange(images + 1) * rows * per_row,
        entry_row=np.repeat(np.arange(images * rows), per_row), entry_class=classes.reshape(-1),
        entry_score=rng.uniform(0.01, 1.0, images * rows * per_row).astype(np.float32))
    path = work / "cache"
    write_cache(path, cache)
    del cache
    size = sum(f.stat().st_size for f in path.iterdir())

    def timed(verify: bool) -> float:
        started = time.perf_counter()
        read_cache(path, verify=verify)
        return time.perf_counter() - started

    warm = [timed(True) for _ in range(3)]
    for file in path.iterdir():
        with open(file, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    cold = timed(True)
    plain = min(timed(False) for _ in range(3))
    command = "python tools/docs_figures.py --only cache_read"
    return [figure("cache_read.seconds", f"{size / 1e6:.0f} MB: verify=True {min(warm):.1f}-{max(warm):.1f} s warm, "
                   f"{cold:.1f} s evicted; verify=False {plain:.1f} s ({load_average()})", command,
                   ("docs/cache_format.md", f"({images * rows / 1e6:.0f} M rows, {images * rows * per_row / 1e6:.0f} M "
                                            f"entries, {size / 1e6:.0f} MB) reads with `verify=True` in "
                                            f"{min(warm):.1f}-{max(warm):.1f} s from the page cache and about "
                                            f"{cold:.1f} s after evicting it; `verify=False` takes {plain:.1f} s",
                    "reads with `verify=True` in"), timing=True)]


def group_scale(ctx: Context) -> list[Figure]:
    """``tools/bench_scale.py``: the same sweep and trial set in-process and on a local Ray
    instance with 2 CPUs (exit status 1 when their results differ)."""
    argv = tool("bench_scale.py")
    ran = ctx.run(argv)
    figures_json = json.loads(ran.stdout.strip().splitlines()[-1])
    trials = search(r"\((\d+) trials run, (\d+) reused", ran.stdout, "the trials line")
    data = search(r"sweep data: (\d+) images, \d+ candidates, (\d+) class scores", ran.stdout, "the data line")
    forked = figures_json["sweep_fork"]
    command = show(argv)
    scale = "docs/scale.md"
    out = [figure("scale.data", f"{data.group(1)} images, {int(data.group(2)) / 1e6:.1f} M class scores; trials "
                  f"{trials.group(1)} run, {trials.group(2)} reused", command,
                  (scale, f"{data.group(1)} synthetic COCO-like images, {int(data.group(2)) / 1e6:.1f} M class scores"))]
    for name, label in (("sweep", "sweep"), ("trials", f"trials ({trials.group(1)} run, {trials.group(2)} reused)")):
        local, ray = figures_json[f"{name}_local"], figures_json[f"{name}_ray"]
        same = "yes" if figures_json[f"{name}_identical"] else "NO"
        out.append(figure(f"scale.{name}", f"in-process {local:.2f} s, Ray {ray:.2f} s, {local / ray:.2f}x, identical {same}",
                          command, (scale, f"| {label} | {local:.2f} s | {ray:.2f} s | {local / ray:.2f}x | {same} |",
                                    f"| {label.split(' (')[0]}"), timing=True))
    total_local = figures_json["sweep_local"] + figures_json["trials_local"]
    total_ray = sum(figures_json[k] for k in ("ray_start", "ray_first_tasks", "sweep_ray", "trials_ray"))
    over = {name: figures_json[f"{name}_ray"] - figures_json[f"{name}_local"] / 2 for name in ("sweep", "trials")}
    out.append(figure("scale.ray_costs", f"start {figures_json['ray_start']:.1f} s, first tasks "
                      f"{figures_json['ray_first_tasks']:.2f} s, empty task {figures_json['ray_task_round_trip_ms']:.2f} ms; "
                      f"forked sweep {forked:.2f} s; both {total_ray:.1f} s on Ray vs {total_local:.1f} s in-process; "
                      f"{load_average()}", command,
                      (scale, f"{figures_json['ray_start']:.1f} s to start a local instance, "
                              f"{figures_json['ray_first_tasks']:.2f} s for the first tasks (worker processes), "
                              f"{figures_json['ray_task_round_trip_ms']:.2f} ms per empty task", "Ray's own costs:"),
                      (scale, f"Ray spent {over['sweep']:.1f} s (sweep) and {over['trials']:.1f} s (trials) more",
                       "Against a perfect split over the 2 CPUs"),
                      (scale, f"(`ProcessExecutor(2)`) took {forked:.2f} s", "`ProcessExecutor(2)`) took"),
                      (scale, f"({total_ray:.1f} s vs {total_local:.1f} s)", "workloads together took"),
                      timing=True))
    return out


# The rows of docs/hyperselector.md's validation table: bench_selector's variant names -> the table's words.
SELECTOR_MODELS = {
    "softmax": "softmax (the seed's)",
    "mlp": "2-layer MLP (784-256-10)",
    "cnn": "small CNN",
    "detection: retinanet": "RetinaNet demo as `search-det --search-training` runs it (val AP by Model Garden's evaluator)",
    "Model Garden": "Model Garden RetinaNet (`retinanet_resnet18_demo`, AP by Model Garden's evaluator)",
}
SELECTOR_SHORT = {"softmax": "softmax", "mlp": "MLP", "cnn": "CNN", "detection": "RetinaNet demo by AP",
                  "model_garden": "RetinaNet"}
SELECTOR_RULES = {
    "moxing: pick, 5% ties": "MoXing's stages: the range test's pick, 5% ties",
    "ladder": "ladder (best constant lr at the trials' length)",
    "ladder x fourth_root (shipped)": "**ladder x fourth_root**",
    "by AP, ladder, 5% ties (before)": "by AP, ladder, 5% ties (the first round's rule)",
    "by AP, ladder, noise ties (shipped)": "**by AP, ladder, noise ties** (the detector default)",
    "pick, 5% ties (before)": "by loss, the range test's pick, 5% ties",
    "ladder, no horizon (shipped)": "**by loss, ladder, no horizon** (the detector default)",
    "by loss, ladder, no horizon (--by-loss)": "by loss, ladder, no horizon (`--by-loss`)",
    "ladder x fourth_root": "by loss, ladder x fourth_root",
    "ladder x sqrt": "ladder x sqrt",
}


def selector_figures(stdout: str, command: str, task: str) -> list[Figure]:
    """Figures of one tools/bench_selector.py run: per model, the table's rows, the grid's best
    point and median."""
    doc = "docs/hyperselector.md"
    figures = []
    blocks = re.findall(r"^== (.+?): test score.*?\n(grid best .*?)\n", stdout, flags=re.M)
    grid = {}
    for model, line in blocks:
        match = search(r"grid best\s+([\d.]+ ± [\d.]+)\s+lr (\S+) wd (\S+) momentum (\S+).*median point ([\d.]+)", line,
                       "the grid best line")
        grid[model] = match.groups()
    for header in re.finditer(r"^\| (.+?) \| rule \| ours \|.*\n((?:\| \| .*\n?)+)", stdout, flags=re.M):
        model = header.group(1)
        label = next((v for k, v in SELECTOR_MODELS.items() if model.startswith(k)), model)
        key = next((k for k in SELECTOR_MODELS if model.startswith(k)), model).split(":")[0].replace(" ", "_").lower()
        for number, line in enumerate(header.group(2).strip().splitlines()):
            cells = [c.strip() for c in line.strip().strip("|").split("|")][1:]
            name, ours, defaults, grid_best, gap, versus, steps = cells
            rule = SELECTOR_RULES.get(name, name)
            if task == "experiment" and name in ("ladder x sqrt",):
                rule = "by loss, ladder x sqrt"
            bold = rule.startswith("**")
            mark = (lambda text: f"**{text}**") if bold else (lambda text: text)
            first = f"| {label} | {rule} | {mark(ours)} | {defaults} | {grid_best} |" if number == 0 else \
                f"| | {rule} | {mark(ours)} | | |"
            figures.append(figure(f"selector.{key}.{name}", f"{ours}; gap {gap}; vs defaults {versus}; steps {steps}",
                                  command, (doc, f"{first} {mark(gap)} | {mark(versus)} | {steps} |")))
        if model in grid:
            points, lr, wd, momentum, median = grid[model]
            short = SELECTOR_SHORT.get(key, key)
            figures.append(figure(f"selector.{key}.grid_best", f"lr {float(lr):.3g} wd {wd} momentum {momentum} ({points})",
                                  command, (doc, f"{short} {float(lr):.3g}, {wd}, {momentum}")))
            figures.append(figure(f"selector.{key}.grid_median", median, command,
                                  *(() if key == "model_garden" else ((doc, f"{short} {median}"),))))
    return figures


def group_selector(ctx: Context) -> list[Figure]:
    """``tools/bench_selector.py`` for classification (MNIST softmax, MLP, CNN), detection (the
    demo RetinaNet as ``search-det --search-training`` runs it, by AP) and the Model Garden
    experiment (the TFRecords its override reads are made first when missing), 3 seeds each,
    from nothing (an empty ``--out``): the rows of docs/hyperselector.md's validation table."""
    work = ctx.folder("selector")
    figures = []
    ensure_tfrecords(ctx, data_root())
    for task in ("classification", "detection", "experiment"):
        argv = tool("bench_selector.py", "--task", task, "--out", work / task)
        ran = ctx.run(argv, time_v=True)
        figures += selector_figures(ran.stdout, show(argv), task)
        flag = "" if task == "classification" else f" --task {task}"
        figures.append(figure(f"selector.{task}_seconds", f"{seconds_text(ran.seconds)} from nothing; {ran.load}",
                              show(argv), ("docs/hyperselector.md", f"`python tools/bench_selector.py{flag}` (about "
                                           f"{round(ran.seconds / 60)} minutes from nothing",
                                           f"`python tools/bench_selector.py{flag}` (about"), timing=True))
    return figures


def ensure_tfrecords(ctx: Context, root: Path) -> list[tuple[str, Ran]]:
    """The demo's TFRecords made by Model Garden's converter (docs/garden.md), when missing."""
    done = []
    if not (root / "demo" / "instances_val.json").exists():
        argv = detsearch("prepare-demo")
        done.append(("prepare-demo", ctx.run(argv, time_v=True)))
    records = root / "demo" / "tfrecords"
    records.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        if not list(records.glob(f"{split}-*")):
            argv = [sys.executable, "-m", "official.vision.data.create_coco_tf_record",
                    f"--image_dir={root / 'demo' / split}",
                    f"--object_annotations_file={root / 'demo' / f'instances_{split}.json'}",
                    f"--output_file_prefix={records / split}", "--num_shards=1", "--num_processes=0"]
            done.append((f"create_coco_tf_record {split}", ctx.run(argv, time_v=True)))
    return done


def group_garden(ctx: Context) -> list[Figure]:
    """docs/garden.md's walkthrough from nothing (its own data folder): the demo data and
    TFRecords, Model Garden's trainer on the RetinaNet and the Faster R-CNN demo configs,
    ``search-det --experiment`` on each (the RetinaNet with ``--export``), each step timed;
    tools/bench_experiment.py on both; the RetinaNet cache swept with batched and v2 NMS."""
    from detsearch.models.experiment import config_path

    work = ctx.folder("garden")
    root = work / "data"
    previous = ctx.env.get("DETSEARCH_DATA_DIR")
    ctx.env["DETSEARCH_DATA_DIR"] = str(root)
    garden = "docs/garden.md"
    figures = []
    try:
        steps = dict(ensure_tfrecords(ctx, root))
        if "prepare-demo" in steps:
            ran = steps["prepare-demo"]
            figures.append(figure("garden.prepare_demo", f"{seconds_text(ran.seconds)}; {ran.load}", "detsearch prepare-demo",
                                  (garden, f"COCO json ({seconds_text(ran.seconds)})", "COCO json ("), timing=True))
        converted = [ran.seconds for name, ran in steps.items() if name.startswith("create_coco_tf_record")]
        figures.append(figure("garden.tfrecords", f"{seconds_text(sum(converted))} for both splits",
                              "python -m official.vision.data.create_coco_tf_record ... (train, val)",
                              (garden, f"converter ({seconds_text(sum(converted))} for both)", "own converter ("),
                              timing=True))
        for kind, experiment, config in (("retinanet", "retinanet_resnetfpn_coco", "retinanet_resnet18_demo"),
                                         ("fasterrcnn", "fasterrcnn_resnetfpn_coco", "fasterrcnn_resnet18_demo")):
            run_dir = work / "runs" / f"{kind}_demo"
            argv = [sys.executable, "-m", "official.vision.train", f"--experiment={experiment}", "--mode=train",
                    f"--config_file={config_path(config)}", f"--model_dir={run_dir}"]
            ran = ctx.run(argv, time_v=True)
            trained = seconds_text(ran.seconds)
            comment = f"# Model Garden's trainer, 400 steps ({trained})" if kind == "retinanet" else f"# 400 steps ({trained})"
            figures.append(figure(f"garden.{kind}_train", f"{trained}; {ran.load}", show(argv),
                                  (garden, f"--model_dir=runs/{kind}_demo {comment}", f"--model_dir=runs/{kind}_demo"),
                                  timing=True))
            out = work / "out" / f"{kind}_demo"
            extra = ["--export", out / "export"] if kind == "retinanet" else []
            argv = detsearch("search-det", "--experiment", experiment, "--config-file", config, "--model-dir", run_dir,
                             "--out", out, *extra, "--verify")
            ran = ctx.run(argv, time_v=True)
            command = show(argv)
            summary = json.loads((out / "summary.json").read_text())
            chosen, default = summary["chosen"], summary["config_row"]
            if default is None:
                raise CommandFailed(f"{show(argv)}: the config's thresholds are not a row of the table")
            searched = seconds_text(ran.seconds)
            figures.append(figure(f"garden.{kind}_search_det", f"{searched}; {ran.load}", command,
                                  (garden, f"# cache, sweep, export, proof ({searched})", "# cache, sweep, export, proof (")
                                  if kind == "retinanet" else
                                  (garden, f"# {summary['configurations']} configurations ({searched})",
                                   "--out out/fasterrcnn_demo --verify"), timing=True))
            params = ", ".join(f"{k}={v:g}" for k, v in chosen["params"].items())
            values = f"mAP {chosen['map']:.4f}, AP50 {chosen['ap50']:.4f}, {chosen['dets_per_image']:.1f} dets/image"
            config_values = f"{default['map']:.4f}, {default['ap50']:.4f}, {default['dets_per_image']:.1f}"
            if kind == "fasterrcnn":
                quotes = [(garden, f"It chose `{params}`: mAP {chosen['map']:.4f}, AP50 {chosen['ap50']:.4f}, "
                                   f"{chosen['dets_per_image']:.1f} detections per image, against the config's"),
                          (garden, "(" + " / ".join(f"{v:g}" for v in default["params"].values()) + f") {config_values};")]
            else:
                trade = search(r"([+-]\d\.\d{4}) AP, ([+-]\d+) % detections per image \(([\d.]+) vs ([\d.]+)\)",
                               ran.stdout, "search-det's trade line")
                quotes = [(garden, f"chosen: {params} mAP {chosen['map']:.4f} AP50 {chosen['ap50']:.4f} "
                                   f"{chosen['dets_per_image']:.1f} dets/image"),
                          (garden, "config thresholds: " + ", ".join(f"{k}={v:g}" for k, v in default["params"].items())
                           + f" mAP {default['map']:.4f} AP50 {default['ap50']:.4f} {default['dets_per_image']:.1f} "
                             "dets/image"),
                          (garden, "{} AP, {} % detections per image ({} vs {})".format(*trade.groups()))]
            figures.append(figure(f"garden.{kind}_choice", f"{params}: {values}; config's {config_values}", command,
                                  *quotes))
            stages = summary.get("stage_seconds", {})
            verification = stages.get("verify")  # pipeline.ThresholdSearch.seconds: record, sweep, verify, export
            stage_quotes = [(garden, f"`stage_seconds`: recording {stages['record']:.1f} s, the "
                                     f"{summary['configurations']}-configuration sweep {stages['sweep']:.1f} s",
                             "`stage_seconds`: recording")] if kind == "fasterrcnn" and "record" in stages else []
            if kind == "fasterrcnn" and verification is not None:
                stage_quotes.append((garden, f"`--verify` of 6 rows {verification:.0f} s", "`--verify` of 6 rows"))
            figures.append(figure(f"garden.{kind}_stage_seconds", ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()),
                                  command, *stage_quotes, timing=True))
            argv = tool("bench_experiment.py", "--experiment", experiment, "--config-file", config, "--model-dir", run_dir)
            ran = ctx.run(argv)
            cells = {row[0]: row[1:] for row in markdown_rows(ran.stdout)}
            figures.append(figure(f"garden.{kind}_cost", "; ".join(f"{k}: {' '.join(v)}".strip() for k, v in cells.items())
                                  + f" ({load_average()})", show(argv),
                                  (garden, "| plain Model Garden inference, batched NMS | " +
                                   cells.get("plain inference, batched NMS", ["?"])[0],
                                   "| plain Model Garden inference, batched NMS |"), timing=True))
            batched_ms = float(cells["plain inference, batched NMS"][0])
            v2_ms = float(cells["plain inference, v2 NMS"][0])
            if kind == "retinanet":
                figures.append(figure("garden.retinanet_v2", f"v2 {v2_ms:.0f} ms per image, {v2_ms / batched_ms:.0f}x "
                                      f"batched; {v2_ms * summary['images'] / 1000:.0f} s per configuration",
                                      show(argv), (garden, f"v2 is {v2_ms / batched_ms:.0f} times slower", "Model Garden's v2 is"),
                                      (garden, f"costs {v2_ms:.0f} ms per image, {v2_ms * summary['images'] / 1000:.0f} s per "
                                               "configuration", "own v2 post-processing costs"), timing=True))
            else:
                sizes = cache_figures(out / "cache")
                figures.append(figure("garden.fasterrcnn_cache", f"{sizes['rows'] / sizes['images']:.0f} proposals, "
                                      f"{sizes['entries'] / sizes['images'] / 1000:.1f}k entries per image", command,
                                      (garden, f"records {sizes['rows'] / sizes['images']:.0f} proposals per image"),
                                      (garden, f"{sizes['entries'] / sizes['images'] / 1000:.1f}k entries per image")))
            if kind == "retinanet":
                swept = {}
                for version in ("batched", "v2"):
                    argv = detsearch("sweep", "--cache", out / "cache", "--annotations", out / "annotations.json",
                                     "--score-thresholds", DEMO_GRID[0], "--iou-thresholds", DEMO_GRID[1],
                                     "--nms-version", version, "--out", work / f"sweep_{version}", "--no-progress")
                    swept[version] = ctx.run(argv).seconds
                figures.append(figure("garden.sweep_versions", f"batched {swept['batched']:.1f} s, v2 {swept['v2']:.1f} s "
                                      f"(whole command; {load_average()})", show(argv).replace("--nms-version v2", "--nms-version batched|v2"),
                                      (garden, f"{swept['batched']:.1f} s batched, {swept['v2']:.1f} s v2",
                                       "--nms-version batched|v2`):"), timing=True))
    finally:
        if previous is None:
            ctx.env.pop("DETSEARCH_DATA_DIR", None)
        else:
            ctx.env["DETSEARCH_DATA_DIR"] = previous
    return figures


@dataclass(frozen=True)
class Group:
    name: str
    heavy: bool
    run: Callable[[Context], list[Figure]]


GROUPS = {g.name: g for g in (
    Group("constants", False, group_constants),
    Group("install", False, group_install),
    Group("coco", False, group_coco),
    Group("demo", False, group_demo),
    Group("bootstrap", False, group_bootstrap),
    Group("per_class_confidence", False, group_per_class_confidence),
    Group("timing", True, group_timing),
    Group("models", True, group_models),
    Group("cache_read", True, group_cache_read),
    Group("scale", True, group_scale),
    Group("garden", True, group_garden),
    Group("selector", True, group_selector),
)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None, help="comma-separated groups (default: the cheap ones; --list names them)")
    parser.add_argument("--heavy", action="store_true", help="the heavy groups too (hours on 2 cores)")
    parser.add_argument("--list", action="store_true", help="print the groups and what they run, run nothing")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a doc does not quote a measured figure (timings excepted)")
    parser.add_argument("--work", default="out/docs_figures", help="outputs of the commands (default out/docs_figures)")
    parser.add_argument("--verbose", action="store_true", help="print the end of every command's output")
    args = parser.parse_args(argv)
    if args.list:
        for group in GROUPS.values():
            print(f"{group.name} ({'heavy' if group.heavy else 'cheap'}): {' '.join(group.run.__doc__.split())}")
        return 0
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in GROUPS]
        if unknown:
            parser.error(f"unknown group(s) {', '.join(unknown)}; one of {', '.join(GROUPS)}")
    else:
        names = [n for n, g in GROUPS.items() if args.heavy or not g.heavy]
    work = Path(args.work)
    ctx = Context(work if work.is_absolute() else Path.cwd() / work, verbose=args.verbose)
    # The commands run in the repository; the data stay where this process looks for them.
    ctx.env["DETSEARCH_DATA_DIR"] = str(data_root())
    docs = Docs(REPO)
    failed, unquoted = [], []
    print(f"machine: {os.cpu_count()} CPUs, {load_average()}", flush=True)
    for name in names:
        print(f"\n[{name}] {' '.join(GROUPS[name].run.__doc__.split()[:12])} ...", flush=True)
        started = time.perf_counter()
        try:
            figures = GROUPS[name].run(ctx)
        except Exception as error:  # a group that cannot measure its figures is reported, the others still run
            print(f"[{name}] FAILED: {type(error).__name__}: {error}", flush=True)
            failed.append(name)
            continue
        for fig in figures:
            where, found = docs.where(fig)
            if not found and not fig.timing:
                unquoted.append(fig.name)
            kind = " (timing)" if fig.timing else ""
            print(f"{fig.name} = {fig.value}{kind} | {'; '.join(where) or 'not quoted in the docs'} | $ {fig.command}",
                  flush=True)
        print(f"[{name}] {len(figures)} figures, {time.perf_counter() - started:.0f} s", flush=True)
    print()
    if unquoted:
        print(f"{len(unquoted)} figure(s) the docs do not quote as measured: {', '.join(unquoted)}")
    if failed:
        print(f"group(s) failed: {', '.join(failed)}")
    if not unquoted and not failed:
        print("every figure run is quoted as measured")
    return 1 if failed or (args.check and unquoted) else 0


if __name__ == "__main__":
    sys.exit(main())
