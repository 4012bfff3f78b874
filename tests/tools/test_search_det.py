"""tools/search_det.py end to end on a few demo images (the README's main job, shortened)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.usefixtures("real_mnist_dir")  # the demo's digits, prepared in $DETSEARCH_DATA_DIR, where the script looks
def test_search_det_runs_the_whole_flow(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "tools/search_det.py", "--steps", "30", "--max_images", "24", "--out", str(out),
         "--score-thresholds", "0.01,0.3", "--iou-thresholds", "0.4,0.6"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "retinanet_resnetfpn_coco" and (out / "thresholds.yaml").is_file()
    assert summary["config_row"]["params"] == {"score_threshold": 0.05, "iou_threshold": 0.5}
    result = json.loads((out / "sweep" / "result.json").read_text())
    # the flags' values plus Model Garden's defaults, every combination
    assert sorted({tuple(sorted(row["params"].items())) for row in result["table"]}) == sorted(
        tuple(sorted({"score_threshold": s, "iou_threshold": i}.items()))
        for s in (0.01, 0.05, 0.3) for i in (0.4, 0.5, 0.6))
    assert result["best"] == summary["chosen"]["params"]
    assert (out / "sweep" / "report.md").exists() and (out / "sweep" / "heatmap.png").exists()
    assert "config thresholds" in proc.stdout


def test_bad_threshold_flag_is_one_clear_error(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "tools/search_det.py", "--score-thresholds", "0.1,abc", "--out", str(tmp_path),
         "--checkpoint", "unused"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--score-thresholds" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("real_mnist_dir")  # the demo's digits, prepared in $DETSEARCH_DATA_DIR, where the script looks
def test_search_training_selects_trains_sweeps_and_exports(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "tools/search_det.py", "--search-training", "--max_images", "24",
         "--trial_steps", "10", "--evaluate_every_n_steps", "5", "--window", "2", "--warmup_steps", "2",
         "--eval_images", "8", "--steps", "10", "--weight-decays", "1e-4,1e-3", "--momentums", "0.9",
         "--score-thresholds", "0.05,0.3", "--iou-thresholds", "0.5", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    selected = summary["selected"]
    assert set(selected) == {"learning_rate", "momentum", "weight_decay"}
    selection = summary["selection"]
    assert selection["metric"] == "AP" and selection["by_acc"] is True
    assert [stage["name"] for stage in selection["stages"]] == ["learning_rate", "weight_decay", "momentum"]
    # distinct trials: the range test, 3 learning rates, 1 more weight decay (the default one and
    # the only momentum are the chosen learning rate's trial again)
    assert selection["trials_run"] == 5
    assert (out / "lr_range.png").exists() and (out / "candidates.png").exists()
    # Model Garden's trainer trained the final model with the choice (training.yaml), 10 steps.
    assert summary["checkpoint"].endswith("ckpt-10") and (out / "training.yaml").is_file()
    assert "training parameters:" in proc.stdout


@pytest.mark.slow
def test_search_det_runs_on_real_voc_annotations(tmp_path, deepforest_dir):
    """The deepforest sample (4 real aerial images, 951 boxes of Tree / Dead / Alive, VOC XML):
    train, cache, sweep."""
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "tools/search_det.py", "--dataset", "voc", "--data_dir", str(deepforest_dir),
         "--steps", "2", "--out", str(out), "--score-thresholds", "0.05,0.3", "--iou-thresholds", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 4 and summary["configurations"] == 2
    # converted once to TFRecords through a COCO json; the classes are the VOC names in id order
    instances = json.loads((out / "records" / "val" / "instances.json").read_text())
    assert [c["name"] for c in instances["categories"]] == ["Alive", "Dead", "Tree"]
    assert summary["checkpoint"].endswith("ckpt-2")
