import json
import math

import numpy as np
import pytest

from detsearch.params import ParamSpec
from detsearch.selector import HyperSelector, Journal, ModelSize, SelectorConfig, model_size_from_parameters
from detsearch.selector.curves import Curve, LrSchedule, TrialSpec

from numpy_trainer import NumpyTrainer


def config(**kwargs):
    defaults = dict(total_steps=100, window=10, max_thres=5, evaluation_total_steps=None)
    defaults.update(kwargs)
    defaults.pop("evaluation_total_steps")
    return SelectorConfig(**defaults)


def test_schedule_endpoints_and_warmup():
    values = LrSchedule(start=1e-3, end=1.0, steps=4, warmup_steps=2, warmup_lr=0.5).values()
    np.testing.assert_allclose(values, [0.5, 0.5, 1e-3, 1e-2, 1e-1, 1.0])
    assert LrSchedule(start=0.1, steps=3).values().tolist() == [0.1, 0.1, 0.1]
    with pytest.raises(ValueError):
        LrSchedule(start=0.0, steps=3)
    with pytest.raises(ValueError):
        LrSchedule(start=0.1, steps=0)


def test_full_search_is_deterministic_and_sane():
    param_spec = ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    param_list_spec = ParamSpec(weight_decay=[1e-2, 1e-3, 1e-4], momentum=[0.99, 0.95, 0.9])
    results = [HyperSelector(NumpyTrainer(), config()).select(param_spec, param_list_spec) for _ in range(2)]
    assert results[0].param_spec == results[1].param_spec
    result = results[0]
    lr = result.param_spec.learning_rate
    assert DEFAULT_RANGE[0] < lr < DEFAULT_RANGE[1]
    assert result.lr_test.cut > 0
    assert set(result.lr_test.picks) == {"minimum", "minimum_over_10", "steep", "valley"}
    assert [s.name for s in result.stages] == ["weight_decay", "momentum"]
    assert result.param_spec.weight_decay in (1e-2, 1e-3, 1e-4)
    assert result.param_spec.momentum in (0.99, 0.95, 0.9)
    # the momentum stage's trial at the already-chosen momentum equals a weight_decay trial: reused
    assert result.trials_run + result.trials_reused == 7
    assert result.model_size is ModelSize.SMALL
    json.dumps(result.to_dict())


DEFAULT_RANGE = (1e-4, 10.0)


def test_learning_rate_refinement_trains_the_pick_and_its_neighbours():
    param_spec = ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    lists = ParamSpec(weight_decay=[1e-3, 1e-4], momentum=[0.95, 0.9])
    plain = HyperSelector(NumpyTrainer(), config()).select(param_spec, lists)
    trainer = NumpyTrainer()
    refined = HyperSelector(trainer, config(lr_refine_factors=(10 ** -0.5, 10 ** 0.5))).select(param_spec, lists)
    pick = refined.lr_test.learning_rate
    assert pick == plain.lr_test.learning_rate
    stage = refined.stages[0]
    assert [s.name for s in refined.stages] == ["learning_rate", "weight_decay", "momentum"]
    assert stage.candidates == (pick * 10 ** -0.5, pick, pick * 10 ** 0.5)
    assert stage.chosen == int(np.argmin(stage.scores))
    assert refined.stages[1].learning_rates[0] == stage.value  # the next stages train at the choice
    # range test + 3 learning rates + 1 new weight decay + 1 new momentum; the trial at the
    # chosen learning rate and default weight decay and momentum is shared by three stages
    assert trainer.runs == refined.trials_run == 6 and refined.trials_reused == 2
    assert refined.steps_spent == 6 * 100
    assert plain.steps_spent == 4 * 100 and plain.trials_run + plain.trials_reused == 5


def test_diverging_candidate_is_never_chosen():
    # lr 100 overflows the softmax to NaN in the numpy trainer
    result = HyperSelector(NumpyTrainer(), config(search_learning_rate=False)).select(
        ParamSpec(momentum=0.5), ParamSpec(learning_rate=[100.0, 0.1]))
    stage = result.stages[0]
    assert stage.curves[0].diverged and math.isinf(stage.scores[0])
    assert len(stage.curves[0]) < 100  # the trainer stopped at the divergence
    assert result.param_spec.learning_rate == 0.1


def test_momentum_stage_keeps_the_effective_learning_rate():
    result = HyperSelector(NumpyTrainer(), config(search_learning_rate=False)).select(
        ParamSpec(learning_rate=0.1, momentum=0.9), ParamSpec(momentum=[0.99, 0.9, 0.5]))
    stage = result.stages[0]
    np.testing.assert_allclose(stage.learning_rates, [0.01, 0.1, 0.5])
    np.testing.assert_allclose(stage.curves[0].learning_rates, 0.01)
    assert result.param_spec.learning_rate == pytest.approx(stage.learning_rates[stage.chosen])


def test_learning_rate_candidates_without_range_test():
    result = HyperSelector(NumpyTrainer(), config(search_learning_rate=False)).select(
        ParamSpec(momentum=0.9), ParamSpec(learning_rate=[1e-4, 1e-1]))
    assert result.lr_test is None
    assert result.param_spec.learning_rate == 1e-1


def test_by_loss_and_by_acc_both_work():
    param_spec = ParamSpec(learning_rate=0.1, momentum=0.9)
    for by_acc in (True, False):
        result = HyperSelector(NumpyTrainer(), config(by_acc=by_acc)).select(param_spec)
        assert result.metric == ("accuracy" if by_acc else "loss")
        assert result.param_spec.learning_rate > 0


def test_bad_specs_fail_before_training():
    trainer = NumpyTrainer()
    selector = HyperSelector(trainer, config())
    with pytest.raises(ValueError, match="search_learning_rate=True"):
        selector.select(ParamSpec(momentum=0.9), ParamSpec(learning_rate=[0.1, 0.2]))
    with pytest.raises(ValueError, match="param_spec.momentum"):
        selector.select(ParamSpec(learning_rate=0.1), ParamSpec(momentum=[0.9, 0.5]))
    with pytest.raises(ValueError, match="duplicate"):
        selector.select(ParamSpec(momentum=0.9), ParamSpec(weight_decay=[0.1, 0.1]))
    assert trainer.runs == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(total_steps=-1), "total_steps"),
    (dict(window=0), "window"),
    (dict(max_thres=-1), "max_thres"),
    (dict(evaluate_every_n_steps=1000), "evaluate_every_n_steps"),
    (dict(init_learning_rate=1.0, end_learning_rate=0.1), "init_learning_rate"),
    (dict(lr_rule="magic"), "unknown lr rule"),
    (dict(weight_decay_diff_thres=-0.1), "weight_decay_diff_thres"),
    (dict(lr_refine_factors=(0.3, -3.0)), "lr_refine_factors"),
    (dict(lr_refine_factors=[0.3, 3.0]), "lr_refine_factors"),
])
def test_config_validation(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        config(**kwargs)


def test_model_size_from_parameters():
    assert model_size_from_parameters(7850) is ModelSize.SMALL
    assert model_size_from_parameters(25_000_000) is ModelSize.LARGE


def test_journal_resume_reuses_trials_and_gives_same_result(tmp_path):
    param_spec = ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    param_list_spec = ParamSpec(weight_decay=[1e-2, 1e-3], momentum=[0.95, 0.9])
    first = HyperSelector(NumpyTrainer(), config(), Journal(tmp_path)).select(param_spec, param_list_spec)
    # simulate a kill in the middle of writing a record: a truncated last line
    path = tmp_path / "journal.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    trainer = NumpyTrainer()
    second = HyperSelector(trainer, config(), Journal(tmp_path)).select(param_spec, param_list_spec)
    assert second.param_spec == first.param_spec
    assert second.trials_reused >= 2
    assert trainer.runs == first.trials_run - 2
    # a third run reuses everything
    trainer = NumpyTrainer()
    third = HyperSelector(trainer, config(), Journal(tmp_path)).select(param_spec, param_list_spec)
    assert trainer.runs == 0 and third.param_spec == first.param_spec


def test_journal_keys_depend_on_fingerprint_and_trial():
    trial = TrialSpec(LrSchedule(start=0.1, steps=10), 0.9, 1e-4)
    assert trial.key("a") != trial.key("b")
    assert trial.key("a") != TrialSpec(LrSchedule(start=0.1, steps=10), 0.9, 1e-3).key("a")
    assert trial.key("a") == TrialSpec(LrSchedule(start=0.1, steps=10), 0.9, 1e-4, name="other").key("a")


def test_curve_round_trip_keeps_nan():
    curve = Curve(np.array([1, 2]), np.array([0.1, 0.2]), {"loss": np.array([1.0, np.nan])}, True, 2)
    back = Curve.from_dict(json.loads(json.dumps(curve.to_dict())))
    assert back.diverged and np.isnan(back.metric("loss")[1]) and back.steps.tolist() == [1, 2]


def test_horizon_scales_the_ladders_best_to_the_final_budget():
    param_spec = ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    lists = ParamSpec(weight_decay=[1e-3, 1e-4], momentum=[0.95, 0.9])
    plain = HyperSelector(NumpyTrainer(), config(noise_ties=False)).select(param_spec, lists)
    assert plain.horizon is None and [s.name for s in plain.stages] == ["weight_decay", "momentum"]
    trainer = NumpyTrainer()
    result = HyperSelector(trainer, config(final_steps=1000)).select(param_spec, lists)
    ladder = result.stages[0]
    pick = result.lr_test.learning_rate
    assert pick == plain.lr_test.learning_rate
    assert ladder.name == "learning_rate"
    np.testing.assert_allclose(ladder.candidates, [pick * f for f in (0.1, 10 ** -0.5, 1.0, 10 ** 0.5)])
    h = result.horizon
    assert h.rule == "fourth_root" and h.exponent == 0.25 and h.factor == pytest.approx(0.1 ** 0.25)
    momentum = result.stages[-1]
    assert h.learning_rate == momentum.learning_rates[momentum.chosen]  # after the momentum rescaling
    assert result.param_spec.learning_rate == pytest.approx(h.learning_rate * 0.1 ** 0.25)
    # range test + 4 learning rates + 1 new weight decay + 1 new momentum (the ladder's best at the
    # default weight decay and momentum is shared by three stages)
    assert trainer.runs == result.trials_run == 7 and result.trials_reused == 2
    # lr_refine_factors (1,): the range test's pick alone, scaled
    alone = HyperSelector(NumpyTrainer(), config(final_steps=1000, horizon_rule="sqrt", lr_refine_factors=(1.0,),
                                                 noise_ties=False)).select(param_spec, lists)
    assert alone.horizon.factor == pytest.approx(0.1 ** 0.5)
    assert alone.param_spec.learning_rate == pytest.approx(plain.param_spec.learning_rate * 0.1 ** 0.5)
    assert alone.steps_spent == plain.steps_spent
    none = HyperSelector(NumpyTrainer(), config(final_steps=1000, horizon_rule="none")).select(param_spec, lists)
    assert none.horizon.factor == 1.0 and none.stages[0].name == "weight_decay"  # no ladder
    json.dumps(result.to_dict())


def test_fit_horizon_reads_the_ladder():
    param_spec = ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    result = HyperSelector(NumpyTrainer(), config(final_steps=1000, horizon_rule="fit")).select(
        param_spec, ParamSpec(weight_decay=[1e-3, 1e-4]))
    ladder = result.stages[0]
    h = result.horizon
    assert [o[0] for o in h.optima] == [25, 50, 100]
    assert h.exponent == (0.25 if h.fitted is None else h.fitted) and 0 <= h.exponent <= 1
    assert h.factor == pytest.approx(0.1 ** h.exponent)
    assert result.param_spec.learning_rate == pytest.approx(ladder.value * h.factor)


def test_a_fixed_learning_rate_is_not_corrected():
    result = HyperSelector(NumpyTrainer(), config(search_learning_rate=False, final_steps=1000)).select(
        ParamSpec(learning_rate=0.05, momentum=0.9), ParamSpec(momentum=[0.95, 0.9]))
    assert result.horizon is None
    assert result.param_spec.learning_rate in (0.05, 0.05 * 0.05 / 0.1)


def test_momentum_ties_within_noise_keep_the_default():
    # On this problem momentum 0.99 scores a hair better than the default 0.8 at one effective
    # learning rate: the best score takes 0.99, noise ties keep the default.
    param_spec = ParamSpec(learning_rate=0.1, momentum=0.8, weight_decay=0.0)
    lists = ParamSpec(momentum=[0.99, 0.8])
    plain = HyperSelector(NumpyTrainer(), config(noise_ties=False)).select(param_spec, lists)
    noisy = HyperSelector(NumpyTrainer(), config(noise_ties=True)).select(param_spec, lists)
    stage = noisy.stages[0]
    assert plain.stages[0].scores == stage.scores and stage.scores[0] < stage.scores[1]
    assert plain.param_spec.momentum == 0.99
    assert stage.tied == (0, 1) and stage.noise[0] == 0.0 and stage.noise[1] > stage.scores[1] - stage.scores[0]
    assert noisy.param_spec.momentum == 0.8


def test_planned_trials_counts_what_on_trial_reports():
    param_spec = ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    lists = ParamSpec(weight_decay=[1e-3, 1e-4], momentum=[0.95, 0.9])
    for kwargs in ({}, {"final_steps": 1000}, {"lr_refine_factors": (0.5,)}):
        seen = []
        cfg = config(**kwargs)
        HyperSelector(NumpyTrainer(), cfg, on_trial=lambda *a: seen.append(a)).select(param_spec, lists)
        assert cfg.planned_trials(lists) == len(seen), kwargs
    seen = []
    cfg = config(search_learning_rate=False)
    listed = ParamSpec(learning_rate=[0.1, 0.01], momentum=[0.95, 0.9])
    HyperSelector(NumpyTrainer(), cfg, on_trial=lambda *a: seen.append(a)).select(ParamSpec(momentum=0.9), listed)
    assert cfg.planned_trials(listed) == len(seen) == 4
