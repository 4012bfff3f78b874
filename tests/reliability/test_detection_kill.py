"""tools/search_det.py --search-training killed (SIGKILL) in the middle of the selector's trials,
started again with the same arguments and killed as the final training starts, then started
once more: it finishes with the uninterrupted run's choices and numbers, without rerunning
finished trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--search-training", "--max_images", "24", "--trial_steps", "10", "--evaluate_every_n_steps", "5",
        "--window", "2", "--warmup_steps", "2", "--steps", "30", "--weight-decays", "1e-4,1e-3", "--momentums",
        "0.9", "--score-thresholds", "0.05,0.3", "--iou-thresholds", "0.5", "--lr-refine-factors", ""]


def command(out: Path) -> list[str]:
    return [sys.executable, "tools/search_det.py", *ARGS, "--out", str(out)]


def environment() -> dict[str, str]:
    # read when a test runs: $DETSEARCH_DATA_DIR is the session's (tests/conftest.py), not ./data
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def run(out: Path) -> dict:
    proc = subprocess.run(command(out), cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def run_until_killed(out: Path, ready) -> None:
    proc = subprocess.Popen(command(out), cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before the kill point"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "summary.json").exists()


def same_outcome(summary: dict, reference: dict) -> None:
    for key in ("selected", "chosen", "config_row", "configurations"):
        assert summary[key] == reference[key], key
    for name in ("lr_test", "stages"):
        assert summary["selection"][name] == reference["selection"][name], name


@pytest.fixture(scope="module")
def reference(tmp_path_factory, real_mnist_dir):  # the demo's digits, where the script looks
    return run(tmp_path_factory.mktemp("reference") / "out")


def journal_lines(out: Path) -> int:
    path = out / "selector" / "journal.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_killed_during_the_trials_then_during_the_final_training(reference, tmp_path):
    out = tmp_path / "out"
    total = reference["selection"]["trials_run"] + reference["selection"]["trials_reused"]
    run_until_killed(out, lambda: journal_lines(out) >= 2)
    done = journal_lines(out)
    assert 2 <= done < reference["selection"]["trials_run"]
    # Started again and killed as the final training starts: training.yaml is written as Model
    # Garden's trainer starts on the choice (its first checkpoint comes at the end). The trials
    # the first run finished were reused, not run again: the journal holds each trial once.
    run_until_killed(out, lambda: (out / "training.yaml").exists())
    assert journal_lines(out) == reference["selection"]["trials_run"]
    # Started once more: it trains again from the start and finishes as the uninterrupted run.
    summary = run(out)
    same_outcome(summary, reference)
    selection = summary["selection"]
    assert selection["trials_run"] == 0 and selection["trials_run"] + selection["trials_reused"] == total
