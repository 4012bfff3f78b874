"""tools/search_cls.py end to end on real MNIST with short trials; a rerun reuses the journal."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf

ROOT = Path(__file__).resolve().parents[2]


def run(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "tools/search_cls.py", "--train_url", str(out), "--total_steps", "40",
         "--max_number_of_steps", "60", "--window", "10", "--weight_decays", "1e-3,1e-4", "--momentums", "0.95,0.9"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.usefixtures("real_mnist_dir")  # prepared in $DETSEARCH_DATA_DIR, where the script looks
def test_search_cls_writes_its_report_and_resumes(tmp_path):
    out = tmp_path / "cls"
    first = run(out)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert set(result["chosen"]) == {"learning_rate", "momentum", "weight_decay"}
    assert result["chosen"]["weight_decay"] in (1e-3, 1e-4) and result["chosen"]["momentum"] in (0.95, 0.9)
    assert 0.5 < result["test_accuracy"] <= 1.0
    # the range test, the ladder of 4 constant learning rates (chosen for the final 60 steps),
    # 2 weight decays and 2 momentums
    assert result["search"]["trials_run"] + result["search"]["trials_reused"] == 9
    assert result["search"]["horizon"]["final_steps"] == 60
    for name in ("lr_range.png", "candidates.png", "train/model/saved_model.pb"):
        assert (out / name).exists(), name
    assert len(list((out / "search" / "tensorboard").iterdir())) == 9  # a run per curve
    assert "chosen:" in first.stdout

    second = run(out)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads((out / "result.json").read_text())
    assert again["chosen"] == result["chosen"]
    assert again["search"]["trials_run"] == 0
