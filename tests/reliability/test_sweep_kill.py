"""``python -m detsearch sweep`` killed with SIGKILL and started again with the same arguments
finishes with exactly the outputs of an uninterrupted run, and a kill never leaves a file that
passes for a finished result: ``result.json`` (written last; its presence means the sweep
finished) is either absent or this sweep's, never an earlier sweep's beside this one's report.

Kills land at random times (seeded) and, deterministically, at each rename of the output
writer (``os.replace``), before and after it. The classification search's kill tests are in
tests/selector/test_kill_resume.py, the cache writer's in tests/detection/test_cache.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "coco_val2014_100"
OUTPUTS = ("heatmap.png", "pr_curve.png", "f1_curve.png", "per_class.png", "pareto.png", "report.md", "result.json")
"""In the order the writer renames them into place."""
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def arguments(out: Path, scores: str = "0.0,0.3,0.6") -> list[str]:
    return ["sweep", "--no-progress", "--detections", str(DATA / "instances_val2014_fakebbox100_results.json"),
            "--annotations", str(DATA / "instances_val2014_100.json"), "--score-thresholds", scores,
            "--iou-thresholds", "0.5,0.7", "--out", str(out)]


def sweep(out: Path, scores: str = "0.0,0.3,0.6") -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "detsearch", *arguments(out, scores)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


def contents(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS if (out / name).exists()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference outputs (uninterrupted), the outputs of an earlier sweep with other
    thresholds (what a killed rerun finds in --out), and the reference's wall time."""
    root = tmp_path_factory.mktemp("sweep_kill")
    seconds = sweep(root / "reference")
    sweep(root / "earlier", scores="0.1")
    reference, earlier = contents(root / "reference"), contents(root / "earlier")
    assert set(reference) == set(OUTPUTS) and reference["result.json"] != earlier["result.json"]
    return root, reference, earlier, seconds


def check_after_kill(out: Path, reference: dict, earlier: dict) -> str:
    """What a kill may leave: the earlier outputs untouched, or this sweep's outputs without
    result.json, or all of this sweep's outputs; plus temporaries that no name matches.
    Returns which of these it found."""
    found = contents(out)
    names = set(os.listdir(out)) - set(OUTPUTS)
    assert all(name.startswith(".") for name in names), names  # only the writer's temporaries
    if found == earlier:
        return "earlier"
    assert "result.json" not in found or found == reference, "result.json does not belong to the files beside it"
    for name, data in found.items():  # a present file is a whole one: the earlier sweep's or this one's
        assert data in (reference[name], earlier[name]), name
    return "finished" if found == reference else "unfinished"


def rerun_matches_reference(out: Path, reference: dict) -> None:
    sweep(out)
    assert contents(out) == reference
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)  # temporaries of the killed run are gone


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_time_then_rerun(tmp_path, runs, seed):
    root, reference, earlier, seconds = runs
    out = tmp_path / "out"
    shutil.copytree(root / "earlier", out)
    delay = float(np.random.default_rng(seed).uniform(0.2, 1.1)) * seconds
    child = subprocess.Popen([sys.executable, "-m", "detsearch", *arguments(out)], cwd=REPO, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    check_after_kill(out, reference, earlier)
    rerun_matches_reference(out, reference)


CRASH_AT_REPLACE = """
    import os, sys
    from detsearch import cli
    crash_at, when = int(sys.argv[1]), sys.argv[2]
    calls = [0]
    real_replace = os.replace

    def replace(source, target):
        calls[0] += 1
        if calls[0] == crash_at and when == "before":
            os._exit(9)  # as SIGKILL: no cleanup, no finally
        real_replace(source, target)
        if calls[0] == crash_at and when == "after":
            os._exit(9)

    os.replace = replace
    cli.main(sys.argv[3:])
    os._exit(0)
"""


@pytest.mark.parametrize("crash_at, when", [(1, "before"), (2, "after"), (5, "after"), (6, "before"), (7, "before")])
def test_killed_at_each_rename_of_the_outputs(tmp_path, runs, crash_at, when):
    """Renames in `OUTPUTS` order (the plots, report.md, result.json). Killed just before one,
    the file stays a temporary; just after, it is in place and the ones after it are not. (Just
    after the last is a finished sweep.)"""
    root, reference, earlier, _ = runs
    out = tmp_path / "out"
    shutil.copytree(root / "earlier", out)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_AT_REPLACE), str(crash_at), when, *arguments(out)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr
    state = check_after_kill(out, reference, earlier)
    placed = crash_at - (when == "before")  # outputs renamed into place before the kill
    assert state == "unfinished"
    for name in OUTPUTS[:placed]:
        assert contents(out)[name] == reference[name], name
    assert "result.json" not in contents(out)  # the earlier sweep's is gone, this one's not yet there
    if when == "before":
        assert any(name.startswith(f".{OUTPUTS[crash_at - 1]}.") for name in os.listdir(out))  # the unrenamed temporary
    rerun_matches_reference(out, reference)


CRASH_AFTER_FIRST_SETTING = """
    import os, sys
    from detsearch import cli
    from detsearch.detection.sweep import journal

    real_put = journal.SweepJournal.put

    def put(self, key, rows):
        real_put(self, key, rows)
        os._exit(9)  # as SIGKILL, once the first NMS setting is in the journal

    journal.SweepJournal.put = put
    cli.main(sys.argv[1:])
    os._exit(0)
"""


def test_killed_after_a_setting_the_rerun_reuses_it(tmp_path, runs):
    from detsearch.cli.sweep import JOURNAL_FILE

    _, reference, _, _ = runs
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_AFTER_FIRST_SETTING), *arguments(out)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr
    assert len((out / JOURNAL_FILE).read_text().splitlines()) == 1  # one of the two NMS settings
    again = subprocess.run([sys.executable, "-m", "detsearch", *arguments(out), "--verbose"], cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "holds an unfinished sweep's progress" in again.stderr
    assert "1 of 2 NMS settings finished before" in again.stderr
    assert contents(out) == reference
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)  # the journal is gone with the sweep finished
