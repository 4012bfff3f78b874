"""The diagnostic plots: each writer leaves one complete PNG of plausible size and nothing else,
rejects misaligned inputs, and draws without pyplot; `pareto_front` agrees with a double loop."""

import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from detsearch.detection import plots
from detsearch.detection.cocoeval import IOU_THRESHOLDS, RECALL_THRESHOLDS

pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which must follow the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_single_png(directory: Path, name: str, min_size=(300, 200), max_size=(3000, 4000)) -> tuple[int, int]:
    """The directory holds ``name`` only (no temporary file left) and it is a plausible PNG."""
    assert sorted(p.name for p in directory.iterdir()) == [name]
    width, height = png_size(directory / name)
    assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1], (width, height)
    assert (directory / name).stat().st_size > 5000  # something was drawn
    return width, height


def random_precision(rng: np.random.Generator, num_classes: int, missing=()) -> np.ndarray:
    """A pycocotools-shaped precision array [10, 101, K, 4, 3]: non-increasing in recall, -1 for
    the ``missing`` categories."""
    precision = np.sort(rng.uniform(0, 1, (len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), num_classes, 4, 3)), axis=1)[:, ::-1]
    precision[:, :, list(missing)] = -1
    return np.ascontiguousarray(precision)


def random_f1_curve(rng: np.random.Generator, num_detections: int, num_ground_truth: int):
    """(scores, true_positives, counted, num_ground_truth) over distinct descending scores."""
    scores = np.unique(rng.uniform(0, 1, num_detections))[::-1].copy()
    hits = rng.random(len(scores)) < scores
    true_positives = np.minimum(np.cumsum(hits), num_ground_truth)
    counted = np.arange(1, len(scores) + 1)
    return scores, true_positives, counted, num_ground_truth


def random_per_class(rng: np.random.Generator, names):
    per_class = []
    for index, name in enumerate(names):
        if index == 1:  # no ground truth: skipped
            per_class.append((name, *random_f1_curve(rng, 30, 0)))
        elif index == 2:  # no detections: skipped
            per_class.append((name, np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), 12))
        else:
            per_class.append((name, *random_f1_curve(rng, int(rng.integers(5, 300)), int(rng.integers(1, 80)))))
    return per_class


def test_pr_curve_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    precision = random_precision(rng, 10, missing=(3,))
    before = precision.copy()
    plots.write_pr_curve(tmp_path / "pr.png", precision, [f"class {k}" for k in range(10)])
    assert_single_png(tmp_path, "pr.png")
    np.testing.assert_array_equal(precision, before)


def test_pr_curve_many_classes_and_no_ground_truth(tmp_path):
    rng = np.random.default_rng(1)
    plots.write_pr_curve(tmp_path / "a" / "pr.png", random_precision(rng, 80, missing=(0, 5)), [str(k) for k in range(80)])
    assert_single_png(tmp_path / "a", "pr.png")
    plots.write_pr_curve(tmp_path / "b" / "pr.png", random_precision(rng, 2, missing=(0, 1)), ["x", "y"])
    assert_single_png(tmp_path / "b", "pr.png")


def test_f1_curve_writes_a_png(tmp_path):
    rng = np.random.default_rng(2)
    names = [f"class {k}" for k in range(10)]
    per_class = random_per_class(rng, names)
    pooled = random_f1_curve(rng, 500, 200)
    cuts = [None if k % 3 == 0 else float(rng.uniform(0, 1)) for k in range(10)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. 0 / 0 where a class has no ground truth
        plots.write_f1_curve(tmp_path / "f1.png", pooled, per_class, pooled_cut=0.05, class_cuts=cuts)
    assert_single_png(tmp_path, "f1.png")


def test_f1_curve_many_classes_and_empty_inputs(tmp_path):
    rng = np.random.default_rng(3)
    per_class = random_per_class(rng, [f"class {k}" for k in range(80)])
    plots.write_f1_curve(tmp_path / "a" / "f1.png", random_f1_curve(rng, 900, 300), per_class,
                         class_cuts=[0.3] * 80)
    assert_single_png(tmp_path / "a", "f1.png")
    empty = (np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    plots.write_f1_curve(tmp_path / "b" / "f1.png", empty, [])
    assert_single_png(tmp_path / "b", "f1.png")


def test_pareto_writes_a_png(tmp_path):
    rng = np.random.default_rng(4)
    dets = rng.uniform(1, 150, 40)
    values = 0.4 - 0.1 / np.sqrt(dets) + rng.normal(0, 0.01, 40)
    values[[2, 7]] = -np.inf
    values[11] = np.nan
    before = values.copy()
    best = int(np.nanargmax(np.where(np.isfinite(values), values, np.nan)))
    labels = [f"score {k / 40:g}, iou 0.5" for k in range(40)]
    plots.write_pareto(tmp_path / "a" / "pareto.png", dets, values, objective_name="mAP", chosen=5, best=best, labels=labels)
    assert_single_png(tmp_path / "a", "pareto.png")
    np.testing.assert_array_equal(values, before)
    # Chosen is the best and is not drawn; a linear axis (narrow range); nothing drawable at all.
    plots.write_pareto(tmp_path / "b" / "pareto.png", dets, values, objective_name="F1", chosen=best, best=best)
    plots.write_pareto(tmp_path / "c" / "pareto.png", [3.0, 4.0, 5.0], [0.2, np.nan, 0.3], objective_name="mAP", chosen=1)
    plots.write_pareto(tmp_path / "d" / "pareto.png", [3.0, 4.0], [np.nan, -np.inf], objective_name="mAP", chosen=0)
    for name in "bcd":
        assert_single_png(tmp_path / name, "pareto.png")


def test_per_class_writes_a_png_whose_height_grows_with_the_classes(tmp_path):
    rng = np.random.default_rng(5)
    sizes = {}
    for count in (3, 10, 80):
        ap = rng.uniform(0, 0.8, count)
        ap[0] = -1
        ap[-1] = np.nan
        thresholds = rng.uniform(0.01, 0.6, count)
        thresholds[1] = np.nan
        directory = tmp_path / str(count)
        plots.write_per_class(directory / "per_class.png", [f"class {k}" for k in range(count)], ap, thresholds,
                              base_threshold=0.3 if count != 10 else None)
        sizes[count] = assert_single_png(directory, "per_class.png")
    assert sizes[3][0] == sizes[10][0] == sizes[80][0]
    assert sizes[10][1] < sizes[80][1]
    assert sizes[80][1] >= 80 * 15  # at least 15 pixels a class
    plots.write_per_class(tmp_path / "0" / "per_class.png", [], [], [])
    png_size(tmp_path / "0" / "per_class.png")


@pytest.mark.parametrize("seed", range(10))
def test_f1_step_curve_is_the_f1_of_the_scores_above_the_threshold(seed):
    rng = np.random.default_rng(seed)
    scores, true_positives, counted, ground_truth = random_f1_curve(rng, int(rng.integers(1, 40)), int(rng.integers(0, 20)))
    scores[-1] = 0.0 if seed % 3 == 0 else scores[-1]  # a score at the left end of the axis
    scores[0] = 1.0 if seed % 3 == 1 else scores[0]  # and at the right end
    _, f1 = plots._f1_points("pooled", scores, true_positives, counted, ground_truth)
    x, y = plots._step_xy(scores, f1)
    assert np.all(np.diff(x) > 0) and x[0] == 0.0 and x[-1] == 1.0
    probes = np.r_[scores, np.nextafter(scores, -np.inf), np.nextafter(scores, np.inf), rng.uniform(0, 1, 50), 0.0]
    for threshold in probes[(probes >= 0) & (probes < 1)]:
        kept = scores > threshold
        tp = true_positives[kept][-1] if kept.any() else 0
        count = counted[kept][-1] if kept.any() else 0
        expected = 2 * tp / (count + ground_truth) if count + ground_truth else 0.0
        drawn = y[np.searchsorted(x, threshold, side="right") - 1]  # steps-post: y[j] on [x[j], x[j + 1])
        assert drawn == pytest.approx(expected), threshold
        assert plots._f1_at(scores, f1, threshold) == pytest.approx(expected), threshold


def slow_pareto_front(dets, values):
    """Indices not dominated by any other finite point, ordered by (dets, index)."""
    finite = [i for i in range(len(dets)) if np.isfinite(dets[i]) and np.isfinite(values[i])]
    front = []
    for i in finite:
        dominated = False
        for j in finite:
            no_worse = dets[j] <= dets[i] and values[j] >= values[i]
            better = dets[j] < dets[i] or values[j] > values[i]
            if j != i and no_worse and better:
                dominated = True
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (dets[i], i))


@pytest.mark.parametrize("seed", range(40))
def test_pareto_front_matches_the_double_loop(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(0, 30))
    # Few distinct values, so equal detections, equal values and exact duplicates are common.
    dets = rng.integers(0, 6, size).astype(np.float64)
    values = rng.integers(0, 5, size) / 4.0
    special = rng.random(size)
    values[special < 0.1] = np.nan
    values[(special >= 0.1) & (special < 0.15)] = -np.inf
    values[(special >= 0.15) & (special < 0.18)] = np.inf
    dets[(special >= 0.18) & (special < 0.21)] = np.nan
    if seed % 2:
        dets += rng.uniform(0, 1e-3, size) * (rng.random(size) < 0.5)  # some ties broken
    dets_before, values_before = dets.copy(), values.copy()
    front = plots.pareto_front(dets, values)
    assert front.dtype == np.int64
    assert front.tolist() == slow_pareto_front(dets, values)
    np.testing.assert_array_equal(dets, dets_before)
    np.testing.assert_array_equal(values, values_before)


def test_pareto_front_by_hand():
    dets = [10.0, 5.0, 5.0, 20.0, 1.0, 5.0, 30.0, 30.0, 2.0]
    values = [0.5, 0.4, 0.45, 0.5, 0.1, 0.45, np.inf, 0.6, np.nan]
    # 1 is beaten by 2 (same detections, higher); 5 duplicates 2; 3 is beaten by 0 (fewer, same);
    # 6 and 8 are not finite.
    assert plots.pareto_front(dets, values).tolist() == [4, 2, 5, 0, 7]
    assert plots.pareto_front([], []).tolist() == []
    assert plots.pareto_front([1.0, 2.0], [np.nan, -np.inf]).tolist() == []


def test_mismatched_inputs_raise_value_error(tmp_path):
    rng = np.random.default_rng(6)
    png = tmp_path / "x.png"
    with pytest.raises(ValueError, match=r"precision .*\[10, 101, 2, 4, 3\]"):
        plots.write_pr_curve(png, random_precision(rng, 3), ["a", "b"])
    with pytest.raises(ValueError, match="precision"):
        plots.write_pr_curve(png, np.zeros((10, 101, 2)), ["a", "b"])

    scores, true_positives, counted, ground_truth = random_f1_curve(rng, 20, 5)
    with pytest.raises(ValueError, match=f"pooled.*{len(scores)}, {len(scores) - 1}"):
        plots.write_f1_curve(png, (scores, true_positives[:-1], counted, ground_truth), [])
    with pytest.raises(ValueError, match=r"per_class\[0\] \(cat\).*descending"):
        plots.write_f1_curve(png, (scores, true_positives, counted, ground_truth),
                             [("cat", scores[::-1], true_positives, counted, ground_truth)])
    with pytest.raises(ValueError, match="num_ground_truth.*-1"):
        plots.write_f1_curve(png, (scores, true_positives, counted, -1), [])
    with pytest.raises(ValueError, match=r"class_cuts.*\(1\), got 2"):
        plots.write_f1_curve(png, (scores, true_positives, counted, ground_truth),
                             [("cat", scores, true_positives, counted, ground_truth)], class_cuts=[0.1, 0.2])

    with pytest.raises(ValueError, match="3 and 2"):
        plots.pareto_front([1.0, 2.0, 3.0], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"1-D.*\(2, 2\)"):
        plots.pareto_front(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="3 and 2"):
        plots.write_pareto(png, [1.0, 2.0, 3.0], [0.1, 0.2], objective_name="mAP", chosen=0)
    with pytest.raises(ValueError, match=r"labels .*\(2\), got 1"):
        plots.write_pareto(png, [1.0, 2.0], [0.1, 0.2], objective_name="mAP", chosen=0, labels=["a"])
    for name, chosen, best in (("chosen", 2, None), ("chosen", -1, None), ("best", 0, 5)):
        with pytest.raises(ValueError, match=rf"{name} .*\[0, 2\), got {chosen if name == 'chosen' else best}"):
            plots.write_pareto(png, [1.0, 2.0], [0.1, 0.2], objective_name="mAP", chosen=chosen, best=best)

    with pytest.raises(ValueError, match="3, 2 and 3"):
        plots.write_per_class(png, ["a", "b", "c"], [0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="2, 2 and 1"):
        plots.write_per_class(png, ["a", "b"], [0.1, 0.2], [0.1])
    assert not any(tmp_path.iterdir())  # nothing written, not even a temporary file


def test_plots_choose_no_matplotlib_backend(tmp_path):
    # A fresh process: pyplot, once imported, would pick a backend for the whole process.
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import numpy as np
        from detsearch.detection import plots
        assert "matplotlib" not in sys.modules, "importing the module must not import matplotlib"
        import matplotlib

        before = matplotlib.rcParams._get_backend_or_none()
        out = Path({str(tmp_path)!r})
        precision = np.sort(np.random.default_rng(0).uniform(0, 1, (10, 101, 2, 4, 3)), axis=1)[:, ::-1]
        plots.write_pr_curve(out / "pr.png", precision, ["a", "b"])
        curve = (np.array([0.9, 0.5, 0.1]), np.array([1, 1, 2]), np.array([1, 2, 3]), 2)
        plots.write_f1_curve(out / "f1.png", curve, [("a", *curve)], pooled_cut=0.5, class_cuts=[0.5])
        plots.write_pareto(out / "pareto.png", [1.0, 2.0, 3.0], [0.1, 0.3, 0.2], objective_name="mAP", chosen=1)
        plots.write_per_class(out / "per_class.png", ["a", "b"], [0.3, -1.0], [0.2, np.nan], base_threshold=0.1)
        assert "matplotlib.pyplot" not in sys.modules
        assert matplotlib.rcParams._get_backend_or_none() == before, (before, matplotlib.rcParams._get_backend_or_none())
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f1.png", "pareto.png", "per_class.png", "pr.png"]
    for path in tmp_path.iterdir():
        png_size(path)
