"""A sweep stopped part way and started again with its journal computes only the NMS settings it
had not finished, and its result is the uninterrupted one bit for bit."""

import json

import numpy as np
import pytest

import detsearch.detection.sweep as sweep_module
from detsearch.detection.cache import read_cache, write_cache
from detsearch.detection.sweep import PostProcessing
from detsearch.detection.sweep.holdout import subset_cache
from detsearch.detection.sweep.journal import SweepJournal
from detsearch.executor import ProcessExecutor
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import random_case
from tests.detection.test_sweep_shards import CASES, TWO_STAGE


class Stopped(Exception):
    pass


def stop_after(count: int, calls: list):
    """A progress callback that records its calls and stops the sweep at ``count`` settings."""

    def progress(done, total):
        calls.append((done, total))
        if done >= count:
            raise Stopped

    return progress


def run_in_two(cache, dataset, spec, post, journal, stop_at: int, **options):
    """The sweep stopped after ``stop_at`` settings, then run again: (result, rerun's progress calls)."""
    first: list = []
    with pytest.raises(Stopped):
        sweep_module.sweep(cache, dataset, spec, post, journal=journal, progress=stop_after(stop_at, first), **options)
    assert first[-1][0] == stop_at
    again: list = []
    result = sweep_module.sweep(cache, dataset, spec, post, journal=journal, progress=lambda *a: again.append(a),
                                **options)
    return result, again


@pytest.mark.parametrize("name", ["batched", "v2 agnostic, caps", "v1 soft", "per class", "two-stage v2"])
@pytest.mark.parametrize("executor", [None, "processes"])
def test_a_stopped_sweep_resumes_with_the_uninterrupted_result(tmp_path, name, executor):
    spec, post, axes = CASES[name]
    kind = "two_stage" if "nms_score_threshold" in spec else "one_stage"
    cache, dataset = random_case(4, kind, num_images=7)
    options = dict(axes, tolerance=1.0)
    if executor == "processes":
        options.update(executor=ProcessExecutor(2), shards=3)
    whole = sweep_module.sweep(cache, dataset, spec, post, **options)
    total = len({tuple(row.params[k] for k in row.params if k not in ("score_threshold", "max_detections"))
                 for row in whole.table})
    stop_at = total // 2
    result, again = run_in_two(cache, dataset, spec, post, tmp_path / "journal", stop_at, **options)
    assert result.to_json() == whole.to_json()
    assert [row.stats for row in result.table] == [row.stats for row in whole.table]
    # The rerun reports the journal's settings at once, then computes only the others.
    assert again[0] == (stop_at, total) and [done for done, _ in again[1:]] == list(range(stop_at + 1, total + 1))
    # A third run finds every setting in the journal.
    again.clear()
    assert sweep_module.sweep(cache, dataset, spec, post, journal=tmp_path / "journal",
                              progress=lambda *a: again.append(a), **options).to_json() == whole.to_json()
    assert again == [(total, total)]


def test_the_coordinate_strategy_resumes_too(tmp_path):
    cache, dataset = random_case(5, "one_stage", num_images=6)
    spec = ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.3, 0.45, 0.5, 0.6, 0.7])
    calls: list = []
    whole = sweep_module.sweep(cache, dataset, spec, strategy="coordinate", progress=lambda *a: calls.append(a))
    result, again = run_in_two(cache, dataset, spec, None, tmp_path / "journal", 2, strategy="coordinate")
    assert result.to_json() == whole.to_json()
    # The search visits the settings it visited before; the first two come from the journal.
    assert len(calls) > 2 and again[0][0] == 2 and [done for done, _ in again[1:]] == list(range(3, len(calls) + 1))


def test_a_journal_of_other_inputs_is_dropped(tmp_path, caplog):
    cache, dataset = random_case(6, "two_stage", num_images=5)
    journal = tmp_path / "journal"
    sweep_module.sweep(cache, dataset, TWO_STAGE, journal=journal)
    lines = journal.read_text().splitlines()
    assert len(lines) == 8
    # Another post-processing, then another cache: their rows differ, so nothing is reused.
    for post, (other_cache, other_dataset) in ((PostProcessing(num_proposals=3), (cache, dataset)),
                                               (None, random_case(7, "two_stage", num_images=5))):
        calls: list = []
        with caplog.at_level("WARNING"):
            result = sweep_module.sweep(other_cache, other_dataset, TWO_STAGE, post, journal=journal,
                                        progress=lambda *a: calls.append(a))
        assert "of another sweep" in caplog.text
        caplog.clear()
        assert [done for done, _ in calls] == list(range(1, 9))
        assert result.to_json() == sweep_module.sweep(other_cache, other_dataset, TWO_STAGE, post).to_json()
        assert {json.loads(line)["sweep"] for line in journal.read_text().splitlines()} != {json.loads(lines[0])["sweep"]}


def test_a_cut_line_is_ignored_and_the_setting_runs_again(tmp_path, caplog):
    cache, dataset = random_case(8, "one_stage", num_images=5)
    spec, post, _ = CASES["batched"]
    journal = tmp_path / "journal"
    whole = sweep_module.sweep(cache, dataset, spec, post, journal=journal)
    text = journal.read_bytes()
    last = text[:-1].rfind(b"\n") + 1
    journal.write_bytes(text[: last + (len(text) - last) // 2])  # the last line cut in the middle
    calls: list = []
    with caplog.at_level("WARNING"):
        result = sweep_module.sweep(cache, dataset, spec, post, journal=journal, progress=lambda *a: calls.append(a))
    assert "unreadable journal line" in caplog.text
    assert result.to_json() == whole.to_json() and calls == [(3, 4), (4, 4)]
    assert journal.read_bytes().count(b"\n") == 5 and len(SweepJournal(journal, json.loads(text.splitlines()[0])["sweep"]).finished) == 4


def test_a_cache_read_from_its_directory_is_named_by_its_meta(tmp_path):
    cache, dataset = random_case(9, "one_stage", num_images=5)
    spec, post, _ = CASES["batched"]
    write_cache(tmp_path / "cache", cache)
    journal = tmp_path / "journal"
    whole = sweep_module.sweep(tmp_path / "cache", dataset, spec, post, journal=journal)
    calls: list = []
    assert sweep_module.sweep(read_cache(tmp_path / "cache"), dataset, spec, post, journal=journal,
                              progress=lambda *a: calls.append(a)).to_json() == whole.to_json()
    assert calls == [(4, 4)]
    # Another cache directory (four of the images) is another sweep.
    write_cache(tmp_path / "part", subset_cache(cache, np.arange(4)))
    calls.clear()
    assert sweep_module.sweep(tmp_path / "part", dataset, spec, post, journal=journal,
                              progress=lambda *a: calls.append(a)).to_json() == sweep_module.sweep(
        tmp_path / "part", dataset, spec, post).to_json()
    assert len(calls) == 4
    # The same arrays in memory are another description of the cache: computed afresh, same table.
    calls.clear()
    assert sweep_module.sweep(cache, dataset, spec, post, journal=journal,
                              progress=lambda *a: calls.append(a)).to_json() == whole.to_json()
    assert len(calls) == 4


def test_journal_rows_keep_every_bit(tmp_path):
    cache, dataset = random_case(10, "one_stage", num_images=6)
    spec, post, axes = CASES["v2 agnostic, caps"]
    journal = tmp_path / "journal"
    whole = sweep_module.sweep(cache, dataset, spec, post, journal=journal, **axes)
    digest = json.loads(journal.read_text().splitlines()[0])["sweep"]
    restored = [row for rows in SweepJournal(journal, digest).finished.values() for row in rows]
    assert sorted(restored, key=lambda r: json.dumps(r.params, sort_keys=True)) == sorted(
        whole.table, key=lambda r: json.dumps(r.params, sort_keys=True))
    for row in restored:
        assert all(type(v) is type(whole.table[0].params[k]) for k, v in row.params.items())
    assert np.asarray([r.stats for r in restored]).dtype == np.float64
