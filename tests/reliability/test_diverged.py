"""A diverging trial (NaN loss, or a loss that explodes past EXPLODED_FACTOR x its first) ends at that step, is recorded as
diverged (also in the journal, so a resumed search does not run it again), scores worst, and
the search goes on with the other candidates. NumPy only: the trainer is tests/selector's."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "selector"))

from numpy_trainer import NumpyTrainer  # noqa: E402

from detsearch.params import ParamSpec  # noqa: E402
from detsearch.selector import HyperSelector, Journal, SelectorConfig  # noqa: E402
from detsearch.selector.curves import LrSchedule, TrialSpec  # noqa: E402
from detsearch.selector.rules import tail_score  # noqa: E402
from detsearch.training.base import EXPLODED_FACTOR, CurveRecorder, run_trial_steps  # noqa: E402

DIVERGE_AT = 6
"""Step (0-based, counted from the first step) at which an injected divergence turns non-finite."""


def nan_loss(index: int) -> float:
    return math.nan if index >= DIVERGE_AT else 1.0


def exploding_loss(index: int) -> float:
    # finite throughout: 1 until DIVERGE_AT, then 1000 (past EXPLODED_FACTOR x the first loss) and x10 per step
    return 1.0 if index < DIVERGE_AT else 1e3 * 10.0 ** (index - DIVERGE_AT)


class DivergingTrainer(NumpyTrainer):
    """`NumpyTrainer`, except that the trials ``chosen(trial)`` selects see ``loss(step)``
    (NaN or exploding) with a high accuracy, so that only the loss tells the divergence."""

    def __init__(self, chosen, loss=nan_loss, **kwargs):
        super().__init__(**kwargs)
        self.chosen = chosen
        self.loss = loss
        self.diverging_steps: list[int] = []  # steps run by each diverging trial

    def run(self, trial, on_step=None):
        if not self.chosen(trial):
            return super().run(trial, on_step)
        self.runs += 1
        recorder = CurveRecorder(trial, "loss", self.evaluation_total_steps)
        steps = 0
        for index in range(len(trial.schedule.values())):
            steps += 1
            if not recorder.after_step(index, {"loss": self.loss(index), "accuracy": 0.99}):
                break
        self.diverging_steps.append(steps)
        return recorder.curve()


def config(**kwargs):
    return SelectorConfig(**{"total_steps": 40, "window": 5, "max_thres": 5, **kwargs})


def candidate(value, name):
    """Selects the constant-schedule (candidate stage) trials whose ``name`` equals ``value``."""
    return lambda trial: trial.schedule.end is None and getattr(trial, name) == value


PARAM_SPEC = ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-3)
LISTS = ParamSpec(weight_decay=[1e-2, 1e-3, 1e-4], momentum=[0.95, 0.9, 0.5])


# --------------------------------------------------------------------------------------------
# one trial


@pytest.mark.parametrize("loss", [nan_loss, exploding_loss], ids=["nan", "exploding"])
def test_the_step_loop_stops_at_the_first_diverged_loss(loss):
    calls = []

    def step(index, learning_rate):
        calls.append(index)
        return {"loss": loss(index), "accuracy": 0.5}

    trial = TrialSpec(LrSchedule(start=0.1, steps=30), momentum=0.9, weight_decay=0.0)
    curve = run_trial_steps(trial, CurveRecorder(trial, "loss", 3), step, num_batches=30)
    assert calls == list(range(DIVERGE_AT + 1))  # no step after the bad one
    assert curve.diverged and curve.steps_run == DIVERGE_AT + 1
    last = curve.metric("loss")[-1]
    assert curve.steps[-1] == DIVERGE_AT + 1 and not last <= EXPLODED_FACTOR  # NaN, or exploded
    assert (curve.metric("loss")[:-1] == 1.0).all()


def test_a_loss_that_grows_but_stays_below_the_factor_is_not_divergence():
    trial = TrialSpec(LrSchedule(start=0.1, steps=30), momentum=0.9, weight_decay=0.0)
    curve = run_trial_steps(trial, CurveRecorder(trial, "loss", 3),
                            lambda index, lr: {"loss": 1.0 + 3.0 * index, "accuracy": 0.5}, num_batches=30)
    assert not curve.diverged and curve.steps_run == 30  # 88x the first loss at the end


def test_divergence_during_warmup_ends_the_trial_with_no_points():
    trial = TrialSpec(LrSchedule(start=0.1, steps=20, warmup_steps=10, warmup_lr=0.01), momentum=None, weight_decay=0.0)
    recorder = CurveRecorder(trial, "loss", 3)
    kept_going = [recorder.after_step(index, {"loss": nan_loss(index + DIVERGE_AT - 2), "accuracy": 0.5}) for index in range(3)]
    assert kept_going == [True, True, False]
    curve = recorder.curve()
    assert curve.diverged and curve.steps_run == 3 and len(curve) == 0
    assert tail_score(curve.metric("loss") if "loss" in curve.metrics else np.array([]), 5) == math.inf


def test_numpy_trainer_really_diverges_and_stops():
    """The unmodified trainer at an absurd learning rate: its softmax overflows to NaN and the
    trial stops there (the condition the injected trainers imitate)."""
    trainer = NumpyTrainer()
    curve = trainer.run(TrialSpec(LrSchedule(start=1e4, steps=100), momentum=0.9, weight_decay=0.0))
    assert curve.diverged and curve.steps_run < 100
    loss = curve.metric("loss")
    assert not loss[-1] <= EXPLODED_FACTOR * loss[0]  # NaN, or exploded
    assert np.isfinite(loss[:-1]).all()


# --------------------------------------------------------------------------------------------
# the search goes on


@pytest.mark.parametrize("loss", [nan_loss, exploding_loss], ids=["nan", "exploding"])
def test_diverging_weight_decay_candidate_scores_worst_and_the_search_goes_on(loss):
    trainer = DivergingTrainer(candidate(1e-3, "weight_decay"), loss=loss)
    result = HyperSelector(trainer, config()).select(PARAM_SPEC, LISTS)
    weight_decay, momentum = result.stages
    assert weight_decay.name == "weight_decay" and momentum.name == "momentum"
    bad = weight_decay.candidates.index(1e-3)
    assert weight_decay.curves[bad].diverged and weight_decay.scores[bad] == math.inf
    assert all(math.isfinite(s) for i, s in enumerate(weight_decay.scores) if i != bad)
    # 1e-3 is the default, which wins every tie: only its divergence can make another win
    assert result.param_spec.weight_decay != 1e-3 and bad not in weight_decay.tied
    assert trainer.diverging_steps and all(steps == DIVERGE_AT + 1 for steps in trainer.diverging_steps)
    assert all(np.isfinite(c.metric("loss")).all() for c in momentum.curves)  # later stage unaffected
    json.dumps(result.to_dict())  # a diverged curve still serialises (NaN/inf as strings)


def test_diverging_momentum_candidate_is_never_chosen():
    # no candidate equals the default momentum 0.9, which the weight_decay stage trains with
    lists = ParamSpec(weight_decay=[1e-3], momentum=[0.95, 0.8, 0.5])
    healthy = HyperSelector(NumpyTrainer(), config()).select(PARAM_SPEC, lists)
    best = healthy.param_spec.momentum
    trainer = DivergingTrainer(candidate(best, "momentum"))
    result = HyperSelector(trainer, config()).select(PARAM_SPEC, lists)
    momentum = result.stages[-1]
    assert momentum.scores[momentum.candidates.index(best)] == math.inf and trainer.diverging_steps == [DIVERGE_AT + 1]
    assert result.param_spec.momentum != best and result.param_spec.momentum in lists.candidates("momentum")


def test_diverged_trial_is_journaled_and_not_rerun(tmp_path):
    chosen = candidate(1e-3, "weight_decay")
    first_trainer = DivergingTrainer(chosen)
    first = HyperSelector(first_trainer, config(), Journal(tmp_path)).select(PARAM_SPEC, LISTS)
    records = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    diverged = [r for r in records if r["curve"]["diverged"]]
    assert len(diverged) == len(first_trainer.diverging_steps) >= 1
    assert diverged[0]["curve"]["metrics"]["loss"][-1] == "nan"
    again = DivergingTrainer(chosen)
    second = HyperSelector(again, config(), Journal(tmp_path)).select(PARAM_SPEC, LISTS)
    assert again.runs == 0 and again.diverging_steps == []
    assert second.param_spec == first.param_spec
    assert second.stages[0].scores == first.stages[0].scores


def test_when_every_candidate_diverges_the_search_says_so():
    trainer = DivergingTrainer(lambda trial: trial.schedule.end is None)
    with pytest.raises(ValueError, match=r"every weight_decay candidate diverged: \[0\.01, 0\.001, 0\.0001\]"):
        HyperSelector(trainer, config()).select(PARAM_SPEC, LISTS)


def test_range_test_divergence_is_cut_before_it():
    """The LR range test runs into divergence on purpose; the chosen learning rate lies before
    the first non-finite point, and the candidate stages still run."""
    trainer = DivergingTrainer(lambda trial: False)
    result = HyperSelector(trainer, config(total_steps=100, init_learning_rate=1e-3, end_learning_rate=1e4)).select(PARAM_SPEC, LISTS)
    curve = result.lr_test.curve
    assert curve.diverged and curve.steps_run < 100
    first_bad = len(curve) - 1  # the point of the step that diverged
    assert 0 < result.lr_test.cut <= first_bad
    assert result.lr_test.learning_rate < curve.learning_rates[first_bad]
    assert [s.name for s in result.stages] == ["weight_decay", "momentum"]


def test_a_diverged_point_keeps_every_metric_of_the_curve():
    """A metric only evaluate() measures (a detector's AP) is NaN at the point where the trial
    diverged, so that every metric has one value per point."""
    trial = TrialSpec(LrSchedule(start=0.1, steps=30), momentum=0.9, weight_decay=0.0)
    recorder = CurveRecorder(trial, "loss", 2, evaluate=lambda: {"AP": 0.25})
    curve = run_trial_steps(trial, recorder, lambda index, lr: {"loss": nan_loss(index)}, num_batches=30)
    assert curve.diverged and list(curve.steps) == [1, 2, 3, 4, 5, 6, 7]
    np.testing.assert_array_equal(curve.metric("AP"), [0.25] * 6 + [math.nan])
    assert math.isnan(curve.metric("loss")[-1])
