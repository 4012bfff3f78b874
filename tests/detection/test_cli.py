"""``python -m detsearch sweep``: end to end on the COCO fixture, and one-line errors."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import detsearch.detection.cache as cache_module
import detsearch.detection.sweep as sweep_module
from detsearch import cli
from detsearch.detection.pycoco import pycocotools_stats
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import random_case

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_val2014_100"
ANNOTATIONS = DATA / "instances_val2014_100.json"
DETECTIONS = DATA / "instances_val2014_fakebbox100_results.json"
REPO = Path(__file__).resolve().parents[2]


def test_end_to_end_as_a_module(tmp_path):
    out = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "detsearch", "sweep",
        "--detections", str(DETECTIONS), "--annotations", str(ANNOTATIONS),
        "--score-thresholds", "0.0,0.3,0.6", "--iou-thresholds", "0.5,1.0", "--out", str(out),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "chosen (map)" in done.stdout and "within tolerance 0.001" in done.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["objective"] == "map" and len(result["table"]) == 6
    assert set(result["best"]) == {"score_threshold", "iou_threshold"}
    everything = next(r for r in result["table"] if r["params"] == {"score_threshold": 0.0, "iou_threshold": 1.0})
    assert everything["dets_per_image"] == 7.34  # no suppression: every detection of the file, as pycocotools sees it
    assert everything["stats"] == list(pycocotools_stats(json.loads(ANNOTATIONS.read_text()), json.loads(DETECTIONS.read_text())))
    best = next(r for r in result["table"] if r["params"] == result["best"])
    assert best["stats"][0] == max(r["stats"][0] for r in result["table"])
    report = (out / "report.md").read_text()
    assert "**chosen**" in report and "mAP alone favours the lowest score threshold" in report
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pictures = ["f1_curve.png", "heatmap.png", "pareto.png", "per_class.png", "pr_curve.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(pictures + ["report.md", "result.json"])  # no temporaries left


def test_in_process_objective_and_strategy(tmp_path, capsys):
    code = cli.main([
        "sweep", "--detections", str(DETECTIONS), "--annotations", str(ANNOTATIONS),
        "--score-thresholds", "0.0,0.2,0.5,0.8", "--iou-thresholds", "0.3,0.5,0.7", "--out", str(tmp_path),
        "--objective", "map_at_budget", "--budget", "4", "--strategy", "coordinate", "--no-progress",
    ])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["objective"] == "map_at_budget" and result["budget"] == 4 and result["strategy"] == "coordinate"
    assert result["best_row"]["dets_per_image"] <= 4


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["sweep", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--detections", "--cache", "--annotations", "--score-thresholds", "--iou-thresholds", "--nms-score-thresholds",
                 "--nms-iou-thresholds", "--out", "--objective", "--budget", "--strategy"):
        assert flag in text


def write(path, payload):
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def detections(**change):
    record = {"image_id": json.loads(DETECTIONS.read_text())[0]["image_id"], "category_id": 1, "bbox": [10.0, 10.0, 20.0, 30.0], "score": 0.9}
    record.update(change)
    return [record]


@pytest.mark.parametrize(
    "make_detections, extra, message",
    [
        (lambda p: write(p, detections(image_id=123456789)), [], "record 0: image_id 123456789 is not in the annotations"),
        (lambda p: write(p, detections(category_id=1000)), [], "record 0: category_id 1000 is not in the annotations"),
        (lambda p: write(p, detections(score=math.nan)), [], "record 0: score nan is not finite"),
        (lambda p: write(p, detections(score=math.inf)), [], "record 0: score inf is not finite"),
        (lambda p: write(p, detections(bbox=[10.0, 10.0, -5.0, 3.0])), [], "record 0"),
        (lambda p: write(p, []), [], "no detections"),
        (lambda p: write(p, "[{\"image_id\": 1,"), [], "malformed JSON"),
        (lambda p: str(p.parent / "missing.json"), [], "missing.json"),
        (lambda p: write(p, detections()), ["--score-thresholds", "0.1,1.5"], "--score-thresholds: 1.5 is outside [0, 1]"),
        (lambda p: write(p, detections()), ["--iou-thresholds", "-0.1"], "--iou-thresholds: -0.1 is outside [0, 1]"),
        (lambda p: write(p, detections()), ["--iou-thresholds", "abc"], "'abc' is not a number"),
        (lambda p: write(p, detections()), ["--objective", "map_at_budget"], "needs --budget"),
        (lambda p: write(p, detections()), ["--nms-iou-thresholds", "0.5"], "need a two-stage --cache"),
        (lambda p: write(p, detections()), ["--objective", "nonsense"], "invalid choice"),
        (lambda p: write(p, detections()), ["--per-class", "f2"], "--per-class: unknown per-class rule 'f2'"),
        (lambda p: write(p, detections()), ["--per-class", "precision:0"], "precision target must be in (0, 1]"),
        (lambda p: write(p, detections()), ["--per-class", "recall:1.5"], "recall target must be in (0, 1]"),
        (lambda p: write(p, detections()), ["--per-class", "recall"], "unknown per-class rule 'recall'"),
        (lambda p: write(p, detections()), ["--holdout", "1"], "--holdout must be a fraction in (0, 1), got 1"),
        (lambda p: write(p, detections()), ["--holdout", "0"], "--holdout must be a fraction in (0, 1), got 0"),
        (lambda p: write(p, detections()), ["--tolerance", "-0.01"], "--tolerance must be a number >= 0"),
        (lambda p: write(p, detections()), ["--max-detections", "0"], "--max-detections: 0 is outside"),
        (lambda p: write(p, detections()), ["--max-detections", "2.5"], "must be whole numbers"),
        (lambda p: write(p, detections()), ["--max-detections", "100", "--max-total-detections", "50"], "do not give max_total_detections with it"),
        (lambda p: write(p, detections()), ["--class-agnostic", "maybe"], "--class-agnostic: 'maybe'"),
        (lambda p: write(p, detections()), ["--replicates", "0"], "--replicates must be an integer >= 1, got 0"),
        (lambda p: write(p, detections()), ["--soft-nms-sigmas", "0.5"], "soft_nms_sigma is a setting of nms_version v1"),
        (lambda p: write(p, detections()), ["--soft-nms-sigmas", "-1"], "--soft-nms-sigmas: -1 is outside"),
        (lambda p: write(p, detections()), ["--soft-nms-sigma", "0.5"], "soft_nms_sigma is a setting of nms_version v1"),
        (lambda p: write(p, detections()), ["--nms-version", "v1", "--soft-nms-sigma", "-0.5"],
         "soft_nms_sigma must be None or a number >= 0"),
        (lambda p: write(p, detections()), ["--score-dtype", "bfloat16"], "Model Garden's combined_non_max_suppression"),
        (lambda p: write(p, detections()), ["--max-eval-detections", "0"], "max_eval_detections must be an integer >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make_detections, extra, message):
    out = tmp_path / "out"
    flags = {
        "--detections": make_detections(tmp_path / "raw.json"),
        "--annotations": str(ANNOTATIONS),
        "--score-thresholds": "0.1",
        "--iou-thresholds": "0.5",
        "--out": str(out),
    }
    flags.update(zip(extra[::2], extra[1::2]))
    arguments = ["sweep", "--no-progress"] + [item for pair in flags.items() for item in pair]
    try:
        code = cli.main(arguments)
    except SystemExit as stop:  # argparse
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_v1_soft_nms_sigmas_as_an_axis(tmp_path, capsys):
    code = cli.main(["sweep", "--detections", str(DETECTIONS), "--annotations", str(ANNOTATIONS), "--no-progress",
                     "--score-thresholds", "0.0,0.3", "--iou-thresholds", "0.5", "--nms-version", "v1",
                     "--soft-nms-sigmas", "0,0.5", "--max-eval-detections", "300", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "result.json").read_text())
    assert [row["params"]["soft_nms_sigma"] for row in result["table"]] == [0.0, 0.5, 0.0, 0.5]
    assert result["max_eval_detections"] == 300 and "sigma" in (tmp_path / "report.md").read_text()


def test_holdout_that_leaves_a_split_without_ground_truth(tmp_path, capsys):
    document = json.loads(ANNOTATIONS.read_text())
    first = min(image["id"] for image in document["images"])
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] == first]
    annotations = write(tmp_path / "gt.json", document)
    out = tmp_path / "out"
    code = cli.main(["sweep", "--no-progress", "--detections", str(DETECTIONS), "--annotations", annotations, "--score-thresholds",
                     "0.1", "--iou-thresholds", "0.5", "--out", str(out), "--holdout", "0.3"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--holdout: holdout 0.3 (seed 0): the held-out images (30) have no ground truth box" in err
    assert not out.exists()


def test_operating_point_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["sweep", "--no-progress", "--detections", str(DETECTIONS), "--annotations", str(ANNOTATIONS),
                     "--score-thresholds", "0,0.3,0.6", "--iou-thresholds", "0.5,1.0", "--out", str(out), "--per-class", "f1",
                     "--holdout", "0.3", "--holdout-seed", "2", "--replicates", "50", "--max-detections", "5,100",
                     "--class-agnostic", "false,true", "--tolerance", "0.01"])
    printed = capsys.readouterr().out
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["tolerance"] == 0.01 and len(result["table"]) == 3 * 2 * 2 * 2
    assert set(result["best"]) == {"score_threshold", "iou_threshold", "max_detections", "class_agnostic"}
    assert len(result["holdout"]["image_ids"]) == 30 and set(result["holdout"]["ci95"]) >= {"AP", "AP50", "objective"}
    assert {"category_id", "name", "score_threshold", "precision", "recall", "f1", "ap"} <= set(result["per_class"][0])
    thresholds = json.loads((out / "per_class_thresholds.json").read_text())
    assert thresholds["configuration"] == result["best"] and len(thresholds["classes"]) == len(result["per_class"])
    assert "per-class thresholds (f1)" in printed and "held out 30 images" in printed


def test_bad_annotations_are_named(tmp_path, capsys):
    broken = write(tmp_path / "gt.json", {"images": [{"id": 1, "height": 10, "width": 10}], "categories": [], "annotations": [{"id": 1, "image_id": 7}]})
    code = cli.main(["sweep", "--detections", str(DETECTIONS), "--annotations", broken, "--score-thresholds", "0.1",
                     "--iou-thresholds", "0.5", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "gt.json: annotations[0] (id 1): image_id 7 is not in 'images'" in err


@pytest.mark.tf
def test_two_stage_cache_directory(tmp_path, capsys):
    """--cache with a two-stage cache written by the cache module: the four thresholds, and the
    table equals the library sweep's."""
    small, dataset = random_case(31, "two_stage", num_images=5)
    meta = cache_module.CacheMeta(
        version=1,
        kind="two_stage",
        image_ids=small.meta.image_ids,
        image_sizes=small.meta.image_sizes,
        category_ids=small.meta.category_ids,
        score_floor=small.meta.score_floor,
        num_proposals=small.meta.num_proposals,
    )
    arrays = {name: getattr(small, name) for name in cache_module.ARRAY_NAMES}
    cache = cache_module.DetectionCache.from_arrays(meta, **arrays)
    cache_dir = cache_module.write_cache(tmp_path / "cache", cache)
    annotations = write(tmp_path / "gt.json", dataset)
    out = tmp_path / "out"
    code = cli.main(["sweep", "--cache", str(cache_dir), "--annotations", annotations, "--no-progress", "--out", str(out),
                     "--nms-score-thresholds", "0.0,0.3", "--nms-iou-thresholds", "0.5,0.7",
                     "--score-thresholds", "0.05,0.4", "--iou-thresholds", "0.5"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    spec = ParamSpec(nms_score_threshold=[0.0, 0.3], nms_iou_threshold=[0.5, 0.7], score_threshold=[0.05, 0.4], iou_threshold=[0.5])
    expected = sweep_module.sweep(cache, dataset, spec)
    assert result["table"] == [row.to_dict(expected.objective_of(row)) for row in expected.table]
    assert set(result["best"]) == {"nms_score_threshold", "nms_iou_threshold", "score_threshold", "iou_threshold"}
    # the four thresholds are required for a two-stage cache
    code = cli.main(["sweep", "--cache", str(cache_dir), "--annotations", annotations, "--out", str(tmp_path / "other"),
                     "--score-thresholds", "0.05", "--iou-thresholds", "0.5"])
    assert code == 2 and "needs --nms-score-thresholds" in capsys.readouterr().err


def test_workers_give_the_same_outputs(tmp_path):
    arguments = ["sweep", "--no-progress", "--detections", str(DETECTIONS), "--annotations", str(ANNOTATIONS),
                 "--score-thresholds", "0.05,0.3", "--iou-thresholds", "0.4,0.5,0.6"]
    assert cli.main(arguments + ["--out", str(tmp_path / "one")]) == 0
    assert cli.main(arguments + ["--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert cli.main(arguments + ["--out", str(tmp_path / "ranges"), "--shards", "7"]) == 0
    for name in ("result.json", "report.md"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "ranges" / name).read_bytes()


def test_errors_outputs_and_report(tmp_path, capsys):
    """--errors: every row has its anatomy, the three pictures, and report.md tells each axis's
    trade from the table's own figures; a later sweep without it removes the pictures."""
    out = tmp_path / "out"
    argv = ["sweep", "--no-progress", "--detections", str(DETECTIONS), "--annotations", str(ANNOTATIONS),
            "--score-thresholds", "0,0.3,0.6", "--iou-thresholds", "0.5,0.7,1.0", "--out", str(out), "--tolerance", "0.01"]
    assert cli.main(argv + ["--errors"]) == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert all(set(row["errors"]["delta_ap"]) == {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FP", "FN"}
               for row in result["table"])
    for name in ("errors.png", "confusion.png", "calibration.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(result["confusion"]["matrix"]) == len(json.loads(ANNOTATIONS.read_text())["categories"]) + 1
    assert 0 <= result["calibration"]["ece"] <= 1
    report = (out / "report.md").read_text()
    assert "## Error anatomy (TIDE)" in report and "## Leaderboard vs deployment" in report
    best = result["best"]
    rows = {(r["params"]["score_threshold"], r["params"]["iou_threshold"]): r for r in result["table"]}
    # The score axis's sentence compares the chosen row with the other end of the axis.
    other = 0.6 if best["score_threshold"] == 0.0 else 0.0
    here, there = rows[best["score_threshold"], best["iou_threshold"]], rows[other, best["iou_threshold"]]
    line = next(text for text in report.splitlines() if text.startswith(f"- score_threshold {other:g} → "))
    biggest = max(("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"),
                  key=lambda e: abs(here["errors"]["delta_ap"][e] - there["errors"]["delta_ap"][e]))
    change = here["errors"]["delta_ap"][biggest] - there["errors"]["delta_ap"][biggest]
    assert f"(chosen): {biggest} {change:+.4f}".replace("-", "\u2212") in line
    assert f"AP@.5 {there['ap50']:.4f} → {here['ap50']:.4f}" in line
    lowest = rows[0.0, best["iou_threshold"]]
    assert f"AP@[.5:.95] {lowest['stats'][0]:.4f}, AP50 {lowest['stats'][1]:.4f}" in report
    assert cli.main(argv) == 0
    assert not (out / "errors.png").exists() and "errors" not in json.loads((out / "result.json").read_text())["table"][0]
