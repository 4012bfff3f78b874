"""``detsearch eval``: pycocotools' 12 stats and summary bit for bit on the real COCO fixture
and on seeded random results (score ties, scores equal in float32 only, equal boxes in
different categories, score 0), the regression check, and the sweep's bad-input rules."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from detsearch import cli
from detsearch.detection.results import read_results

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "coco_val2014_100"
ANNOTATIONS = FIXTURE / "instances_val2014_100.json"
RESULTS = FIXTURE / "instances_val2014_fakebbox100_results.json"


def pycocotools(annotations, results) -> tuple[np.ndarray, list[str]]:
    """The oracle (the coco extra; ``detsearch eval`` itself runs on the core install)."""
    pytest.importorskip("pycocotools", reason="the oracle: pip install 'detsearch[coco]'")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()) as printed:
        gt = COCO(str(annotations))
        evaluator = COCOeval(gt, gt.loadRes(str(results)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        evaluator.summarize()
    return evaluator.stats, printed.getvalue().splitlines()


def test_a_raised_max_eval_detections_equals_pycocotools_at_that_maxdets(tmp_path):
    # Model Garden's max_num_eval_detections: pycocotools with maxDets[2] = 300 (AP read at 300,
    # where pycocotools' summarize prints -1: `pycoco.summary_stats`).
    pytest.importorskip("pycocotools", reason="the oracle: pip install 'detsearch[coco]'")
    from detsearch.detection import pycoco

    dataset, results = json.loads(ANNOTATIONS.read_text()), json.loads(RESULTS.read_text())
    coco_gt = pycoco.coco_ground_truth(dataset)
    evaluator = pycoco.pycocotools_eval(coco_gt, pycoco.load_results(coco_gt, results), None, 300)
    code, printed, err, result = run_eval(tmp_path, "--detections", RESULTS, "--annotations", ANNOTATIONS,
                                          "--max-eval-detections", "300")
    assert code == 0, err
    assert result["stats"] == list(pycoco.summary_stats(evaluator)) and evaluator.stats[0] == -1
    assert result["max_eval_detections"] == 300 and "maxDets=300 ]" in printed[0] and "maxDets= 10 ]" in printed[7]


def run_eval(tmp_path, *arguments) -> tuple[int, list[str], str, dict | None]:
    out = tmp_path / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = cli.main(["eval", *map(str, arguments), "--out", str(out)])
        except SystemExit as stop:
            code = stop.code
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else None
    return code, stdout.getvalue().splitlines(), stderr.getvalue(), result


def test_the_real_fixture_equals_pycocotools_bit_for_bit(tmp_path):
    expected, summary = pycocotools(ANNOTATIONS, RESULTS)
    code, printed, err, result = run_eval(tmp_path, "--detections", RESULTS, "--annotations", ANNOTATIONS)
    assert code == 0, err
    assert result["stats"] == [float(v) for v in expected]  # bit for bit (JSON round-trips doubles)
    assert result["stats"][0] == pytest.approx(0.50458, abs=5e-6)
    assert printed[:12] == summary
    names = {c["id"]: c["name"] for c in json.loads(ANNOTATIONS.read_text())["categories"]}
    assert [(e["category_id"], e["name"]) for e in result["per_category_ap"]] == sorted(names.items())


def _random_case(rng: np.random.Generator, tmp_path: Path) -> tuple[Path, Path]:
    images = [{"id": int(i), "height": 200, "width": 300, "file_name": f"{i}.jpg"} for i in range(1, 9)]
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 5)]
    annotations = []
    for k in range(60):
        x, y = rng.uniform(0, 200, 2)
        w, h = rng.uniform(2, 90, 2)
        annotations.append({"id": k + 1, "image_id": int(rng.integers(1, 9)), "category_id": int(rng.choice([1, 2, 5])),
                            "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
                            "iscrowd": int(rng.random() < 0.1)})
    results = []
    for annotation in annotations:
        for _ in range(int(rng.integers(0, 4))):
            jitter = rng.normal(0, 4, 4)
            bbox = [float(v) for v in np.maximum(np.asarray(annotation["bbox"]) + jitter, [0, 0, 0.5, 0.5])]
            results.append({"image_id": annotation["image_id"], "category_id": annotation["category_id"],
                            "bbox": bbox, "score": float(rng.choice([0.5, 0.25, 0.0, rng.random()]))})
    for record in list(results[:20]):  # equal boxes in another category, tied scores
        results.append({**record, "category_id": 2 if record["category_id"] != 2 else 5})
    for record in results[20:40]:  # scores equal in float32, different in float64
        record["score"] = 0.5 + float(rng.integers(1, 4)) * 1e-10
    order = rng.permutation(len(results))
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps({"images": images, "categories": categories, "annotations": annotations}))
    dt_path.write_text(json.dumps([results[i] for i in order]))
    return gt_path, dt_path


@pytest.mark.parametrize("seed", range(6))
def test_random_results_equal_pycocotools_bit_for_bit(tmp_path, seed):
    gt_path, dt_path = _random_case(np.random.default_rng(seed), tmp_path)
    expected, _ = pycocotools(gt_path, dt_path)
    code, _, err, result = run_eval(tmp_path, "--detections", dt_path, "--annotations", gt_path)
    assert code == 0, err
    assert result["stats"] == [float(v) for v in expected]


def test_expect_fails_naming_each_stat_that_fell(tmp_path):
    code, _, _, result = run_eval(tmp_path, "--detections", RESULTS, "--annotations", ANNOTATIONS)
    assert code == 0
    better = dict(result, stats=[v + 0.01 if i in (0, 3) else v for i, v in enumerate(result["stats"])])
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps(better))
    code, _, err, _ = run_eval(tmp_path, "--detections", RESULTS, "--annotations", ANNOTATIONS, "--expect", previous)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("detsearch eval: AP fell from") and lines[1].startswith("detsearch eval: APs fell from")
    code, _, err, _ = run_eval(tmp_path, "--detections", RESULTS, "--annotations", ANNOTATIONS, "--expect", previous,
                               "--max-drop", "0.02")
    assert code == 0, err


def test_bad_detections_and_annotations_read_as_in_the_sweep(tmp_path):
    from tests.reliability.test_bad_inputs import BAD, GOOD_ANNOTATIONS, GOOD_DETECTIONS, SWEEP_ERRORS

    for relative, fragment in SWEEP_ERRORS.items():
        if relative.startswith("detections/"):
            arguments = ["--detections", BAD / relative, "--annotations", GOOD_ANNOTATIONS]
        elif relative.startswith("annotations/"):
            arguments = ["--detections", GOOD_DETECTIONS, "--annotations", BAD / relative]
        else:
            continue
        code, out, err, result = run_eval(tmp_path, *arguments)
        assert code == 2 and result is None, (relative, err)
        assert len(err.splitlines()) == 1 and err.startswith("detsearch eval: error: "), (relative, err)
        assert fragment in err, (relative, fragment, err)


def test_columns_hold_the_file_values_exactly(tmp_path):
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.random(500), rng.uniform(0, 1e4, 500), np.round(rng.uniform(0, 640, 500), 2),
                             [0.0, 1.0, 0.1, 1 / 3, 5e-324, 2.2250738585072014e-308, 0.30000000000000004]])
    literals = [repr(float(v)) for v in values] + [f"{v:.17g}" for v in values[:200]] + [f"{v:.3e}" for v in values[:200]]
    text = "[" + ",".join(
        f'{{"image_id": 1, "category_id": 1, "bbox": [{a}, {a}, {a}, {a}], "score": {min(float(a), 1.0) if float(a) <= 1 else 0.5}}}'
        for a in literals) + "]"
    path = tmp_path / "r.json"
    path.write_text(text)
    columns = read_results(path, image_ids=[1], category_ids=[1])
    plain = json.loads(text)
    assert columns.bbox.tobytes() == np.asarray([r["bbox"] for r in plain], np.float64).tobytes()
    assert columns.score.tobytes() == np.asarray([r["score"] for r in plain], np.float64).tobytes()
