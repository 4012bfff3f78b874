"""HyperSelector on Ray tasks: the same SearchResult (every curve, score and choice), the same
journal, byte for byte, and the same on_trial calls as in-process."""

import functools
import json
import math

import pytest

from detsearch.params import ParamSpec
from detsearch.selector import HyperSelector, Journal, SelectorConfig
from detsearch.selector.journal import JOURNAL_FILE
from tests.selector.numpy_trainer import NumpyTrainer

PARAM_SPEC = ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
LISTS = ParamSpec(weight_decay=[1e-2, 1e-3, 1e-4], momentum=[0.99, 0.95, 0.9])
CONFIG = SelectorConfig(total_steps=100, window=10, max_thres=5)


def search(directory, executor=None, param_list_spec=LISTS, config=CONFIG, param_spec=PARAM_SPEC, **kwargs):
    calls = []
    selector = HyperSelector(NumpyTrainer(), config, Journal(directory), executor=executor,
                             on_trial=lambda *call: calls.append(call), **kwargs)
    result = selector.select(param_spec, param_list_spec)
    journal = (directory / JOURNAL_FILE).read_bytes()
    return result, journal, [(name, index, reused, curve.to_dict()) for name, index, reused, curve in calls]


def same(result_a, result_b):
    a, b = result_a.to_dict(), result_b.to_dict()
    a.pop("seconds"), b.pop("seconds")
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_full_search_equals_in_process(ray_executor, tmp_path):
    local = search(tmp_path / "local")
    on_ray = search(tmp_path / "ray", ray_executor)
    assert same(local[0], on_ray[0])
    assert local[0].param_spec == on_ray[0].param_spec
    assert on_ray[1] == local[1]  # the journal, byte for byte: same trials in the same order
    assert on_ray[2] == local[2]
    assert (on_ray[0].trials_run, on_ray[0].trials_reused) == (local[0].trials_run, local[0].trials_reused) == (6, 1)


def test_resume_from_a_partial_journal(ray_executor, tmp_path):
    partial = ParamSpec(weight_decay=[1e-2, 1e-3, 1e-4])
    search(tmp_path / "local", param_list_spec=partial)
    search(tmp_path / "ray", ray_executor, param_list_spec=partial)
    local = search(tmp_path / "local")
    on_ray = search(tmp_path / "ray", ray_executor)
    assert same(local[0], on_ray[0]) and on_ray[1] == local[1] and on_ray[2] == local[2]
    assert on_ray[0].trials_reused == local[0].trials_reused == 5  # range test, 3 weight decays, 1 momentum


def test_diverging_candidates_and_a_trainer_factory(ray_executor, tmp_path):
    config = SelectorConfig(total_steps=100, window=10, max_thres=5, search_learning_rate=False)
    lists = ParamSpec(learning_rate=[100.0, 0.1, 1.0])
    local = search(tmp_path / "local", param_list_spec=lists, config=config, param_spec=ParamSpec(momentum=0.5))
    on_ray = search(tmp_path / "ray", ray_executor, param_list_spec=lists, config=config,
                    param_spec=ParamSpec(momentum=0.5), trainer_factory=functools.partial(NumpyTrainer))
    assert same(local[0], on_ray[0]) and on_ray[1] == local[1] and on_ray[2] == local[2]
    stage = on_ray[0].stages[0]
    assert stage.curves[0].diverged and math.isinf(stage.scores[0])
    assert on_ray[0].param_spec.learning_rate == 0.1


def test_a_failing_trial_raises_and_keeps_earlier_trials(ray_executor, tmp_path):
    class Exploding(NumpyTrainer):
        def run(self, trial, on_step=None):
            if trial.weight_decay == 1e-3:
                raise ValueError("trial failed")
            return super().run(trial, on_step)

    journal = Journal(tmp_path)
    selector = HyperSelector(Exploding(), CONFIG, journal, executor=ray_executor)
    with pytest.raises(ValueError, match="trial failed"):
        selector.select(PARAM_SPEC, LISTS)
    assert (tmp_path / JOURNAL_FILE).read_text().count("\n") >= 1  # the range test at least
