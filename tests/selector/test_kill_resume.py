"""A search killed with SIGKILL at random points and started again finishes with the same result,
without rerunning the trials it had finished."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]

SCRIPT = """
import json, sys, time
sys.path[:0] = [{here!r}, {root!r}]
from numpy_trainer import NumpyTrainer
from detsearch.params import ParamSpec
from detsearch.selector import HyperSelector, Journal, SelectorConfig

class Counting(NumpyTrainer):
    def run(self, trial, on_step=None):
        with open(sys.argv[2], "a") as f:
            f.write(trial.name + "\\n")
        time.sleep(0.15)  # leaves time to be killed mid-trial
        return super().run(trial, on_step)

result = HyperSelector(Counting(), SelectorConfig(total_steps=100, window=10),
                       Journal(sys.argv[1])).select(
    ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4),
    ParamSpec(weight_decay=[1e-2, 1e-3, 1e-4], momentum=[0.99, 0.95, 0.9]))
print(json.dumps(result.param_spec.to_dict()))
"""


def run(directory, log, kill_at_trial=None):
    script = directory / "search.py"
    script.write_text(SCRIPT.format(here=str(HERE), root=str(ROOT)))
    proc = subprocess.Popen([sys.executable, str(script), str(directory / "journal"), str(log)],
                            stdout=subprocess.PIPE, text=True)
    if kill_at_trial is None:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        return json.loads(out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once trial number kill_at_trial has started
        if log.exists() and len(log.read_text().split()) >= kill_at_trial:
            break
        time.sleep(0.01)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return None


@pytest.mark.parametrize("kill_at_trial", [1, 3, 5])
def test_killed_search_resumes_to_the_same_result(tmp_path, kill_at_trial):
    (tmp_path / "ref").mkdir()
    reference = run(tmp_path / "ref", tmp_path / "ref.log")
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "work.log"
    run(work, log, kill_at_trial=kill_at_trial)
    started_before_kill = log.read_text().split() if log.exists() else []
    journal = work / "journal" / "journal.jsonl"
    finished = len(journal.read_text().splitlines()) if journal.exists() else 0
    assert finished == kill_at_trial - 1
    resumed = run(work, log)
    assert resumed == reference
    all_started = log.read_text().split()
    rerun = all_started[len(started_before_kill):]
    # every trial that was finished before the kill is reused, not run again
    assert len(rerun) == 6 - finished
