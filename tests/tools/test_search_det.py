"""tools/search_det.py end to end on a few demo images (the README's main job, shortened)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_search_det_runs_the_whole_flow(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "tools/search_det.py", "--steps", "30", "--max_images", "24", "--out", str(out),
         "--score-thresholds", "0.01,0.3", "--iou-thresholds", "0.4,0.6"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_garden_default"]["params"] == {"score_threshold": 0.05, "iou_threshold": 0.5}
    result = json.loads((out / "sweep" / "result.json").read_text())
    # the flags' values plus Model Garden's defaults, every combination
    assert sorted({tuple(sorted(row["params"].items())) for row in result["table"]}) == sorted(
        tuple(sorted({"score_threshold": s, "iou_threshold": i}.items()))
        for s in (0.01, 0.05, 0.3) for i in (0.4, 0.5, 0.6))
    assert result["best"] == summary["chosen"]["params"]
    assert (out / "sweep" / "report.md").exists() and (out / "sweep" / "heatmap.png").exists()
    assert "Model Garden default" in proc.stdout


def test_bad_threshold_flag_is_one_clear_error(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "tools/search_det.py", "--score-thresholds", "0.1,abc", "--out", str(tmp_path),
         "--checkpoint", "unused"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--score-thresholds" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
