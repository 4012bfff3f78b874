import math

import numpy as np
import pytest

from detsearch.selector import rules


def test_smooth_window_one_is_identity():
    values = np.array([3.0, 1.0, 2.0])
    np.testing.assert_array_equal(rules.smooth(values, 1), values)


def test_smooth_is_debiased_ema():
    values = np.array([2.0, 4.0, 6.0])
    beta = 0.5
    expected = []
    avg = 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        expected.append(avg / (1 - beta ** (i + 1)))
    np.testing.assert_allclose(rules.smooth(values, 2), expected)
    assert rules.smooth(values, 50)[0] == 2.0  # debiased: the first point is the value itself


def test_smooth_stops_at_first_non_finite():
    out = rules.smooth(np.array([1.0, 3.0, np.nan, 1.0]), 2)
    np.testing.assert_allclose(out[:2], [1.0, (0.5 * 0.5 * 1.0 + 0.5 * 3.0) / 0.75])
    assert np.isnan(out[2:]).all()


def test_smooth_rejects_bad_window():
    with pytest.raises(ValueError, match="window"):
        rules.smooth(np.ones(3), 0)


def test_cut_at_run_longer_than_max_thres():
    values = np.array([5, 4, 3, 2, 3, 4, 5, 6], dtype=float)  # worsening from index 4
    assert rules.cut_index(values, max_thres=3) == 4  # run of 4 > 3: cut where the run began
    assert rules.cut_index(values, max_thres=4) == 8  # run of 4 tolerated


def test_short_worsening_runs_are_tolerated():
    values = np.array([5, 4, 4.5, 3, 3.5, 2], dtype=float)
    assert rules.cut_index(values, max_thres=1) == 6


def test_a_slow_drift_up_is_not_a_divergence():
    # A flat start whose loss drifts up 2% over 15 points (easier first batches), then the descent
    # and a real divergence: only the divergence cuts.
    start = 2.27 + 0.003 * np.arange(15)
    descent = np.linspace(2.3, 1.4, 30)
    divergence = 1.4 * 1.5 ** np.arange(1, 13)
    values = np.concatenate([start, descent, divergence])
    assert rules.cut_index(values, max_thres=10, explosion_check=False) == 45
    assert rules.cut_index(start, max_thres=10) == len(start)


def test_cut_at_nan_loss_and_explosion():
    values = np.array([1.0, 0.8, 0.5, 0.4])
    assert rules.cut_index(values, 10, loss=np.array([1, 1, np.nan, 1.0])) == 2
    exploding = np.array([1.0, 0.5, 0.4, 2.5])
    assert rules.cut_index(exploding, 10) == 3
    assert rules.cut_index(exploding, 10, explosion_check=False) == 4
    assert rules.cut_index(np.array([np.inf, 1.0]), 10) == 0


def test_lr_rules_on_constructed_curve():
    lrs = np.logspace(-4, 0, 41)
    # badness falls fastest at lr=1e-2 and is lowest at lr=1e-1
    x = np.log10(lrs)
    values = -np.tanh(2 * (x + 2)) + 0.5 * np.clip(x + 1, 0, None) ** 2 * 40
    assert rules.lr_minimum(lrs, values) == pytest.approx(lrs[np.argmin(values)])
    assert rules.lr_minimum_over_10(lrs, values) == pytest.approx(lrs[np.argmin(values)] / 10)
    assert rules.lr_steep(lrs, values) == pytest.approx(1e-2, rel=0.3)
    valley = rules.lr_valley(lrs, values)
    assert lrs[5] < valley < lrs[np.argmin(values)]  # inside the descent, before the minimum


def test_valley_matches_fastai_port():
    # fastai's reference code, verbatim in logic
    def fastai_valley(lrs, losses):
        n = len(losses)
        max_start, max_end = 0, 0
        lds = [1] * n
        for i in range(1, n):
            for j in range(0, i):
                if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                    lds[i] = lds[j] + 1
                if lds[max_end] < lds[i]:
                    max_end = i
                    max_start = max_end - lds[max_end]
        sections = (max_end - max_start) / 3
        idx = max_start + int(sections) + int(sections / 2)
        return float(lrs[idx])

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 60))
        lrs = np.sort(rng.uniform(1e-4, 1, n))
        losses = rng.normal(size=n).cumsum()
        assert rules.lr_valley(lrs, losses) == fastai_valley(lrs, losses)


def test_choose_lr_skips_leading_points_and_rejects_empty():
    lrs = np.logspace(-3, 0, 20)
    values = np.linspace(1, 2, 20)
    values[0] = -5  # an early outlier in the skipped first tenth
    assert rules.choose_lr(lrs, values, 20, "minimum") == lrs[2]
    with pytest.raises(ValueError, match="first point"):
        rules.choose_lr(lrs, values, 0)
    with pytest.raises(ValueError, match="unknown lr rule"):
        rules.choose_lr(lrs, values, 5, "nope")


def test_tail_score():
    assert rules.tail_score(np.array([5, 1, 2, 3.0]), 2) == 2.5
    assert rules.tail_score(np.array([1, 2.0]), 10) == 1.5
    assert rules.tail_score(np.array([1, 2.0]), 2, loss=np.array([1, np.nan])) == math.inf
    assert rules.tail_score(np.array([]), 2) == math.inf


def test_ties_and_weight_decay_choice():
    candidates = [1e-2, 1e-3, 1e-4]
    # badness of accuracy: -0.90, -0.93, -0.94; 5% of 0.94 = 0.047 -> all tie
    scores = [-0.90, -0.93, -0.94]
    assert rules.ties(scores, 0.05) == [0, 1, 2]
    # ties keep the default
    assert rules.choose_weight_decay(candidates, scores, 0.05, default=1e-2) == 0
    assert rules.choose_weight_decay(candidates, scores, 0.05, default=1e-3) == 1
    # the nearest tied candidate on a log scale when the default is not a candidate
    assert rules.choose_weight_decay(candidates, scores, 0.05, default=5e-3) == 0
    assert rules.choose_weight_decay(candidates, scores, 0.05, default=0.0) == 2
    # with a 2% band only the last two tie: a default of 1e-2 is not among them -> nearest is 1e-3
    assert rules.ties(scores, 0.02) == [1, 2]
    assert rules.choose_weight_decay(candidates, scores, 0.02, default=1e-2) == 1
    # no band: the best
    assert rules.choose_weight_decay(candidates, scores, 0.0, default=1e-2) == 2
    # no default: the best of the ties
    assert rules.choose_weight_decay(candidates, scores, 0.05) == 2
    # a diverged candidate never ties
    assert rules.choose_weight_decay(candidates, [math.inf, 0.5, 0.51], 0.5, default=1e-2) == 1
    with pytest.raises(ValueError, match="every weight_decay candidate diverged"):
        rules.choose_weight_decay(candidates, [math.inf] * 3, 0.05)


def test_choose_best_prefers_first_of_equal_scores():
    assert rules.choose_best([0.9, 0.95], [0.3, 0.3], "momentum") == 0
    assert rules.choose_best([0.9, 0.95], [math.inf, 0.3], "momentum") == 1
    with pytest.raises(ValueError, match="every momentum candidate diverged"):
        rules.choose_best([0.9], [math.inf], "momentum")


def test_horizon_score_reads_the_second_half_of_the_horizon():
    steps = np.arange(1, 101)
    values = steps.astype(float)
    assert rules.horizon_score(steps, values, 100) == np.mean(np.arange(51, 101))
    assert rules.horizon_score(steps, values, 20) == np.mean(np.arange(11, 21))
    assert rules.horizon_score(steps, values, 0.5) == math.inf  # no point inside
    bad = values.copy()
    bad[4] = np.nan  # a NaN before the horizon: the trial diverged on the way
    assert rules.horizon_score(steps, bad, 20) == math.inf
    assert rules.tail_score(values, 50) == rules.horizon_score(steps, values, 100)


def test_best_log_lr_finds_the_vertex_of_a_parabola():
    x = np.log([0.01, 0.03, 0.1, 0.3])
    true = math.log(0.05)
    scores = (x - true) ** 2 + 1.0
    value, interior = rules.best_log_lr(x, scores)
    assert interior and value == pytest.approx(true, abs=1e-12)
    assert rules.best_log_lr(x, x) == (x[0], False)  # best at the edge: not interior
    assert rules.best_log_lr(x, [1.0, 0.5, 0.5, 1.0])[1]
    assert rules.best_log_lr(x, [math.inf] * 4)[1] is False


def test_fit_horizon_exponent_recovers_a_power_law():
    # loss(lr, t) = (log lr - log best(t))^2 with best(t) = 0.3 * t^-0.4: the fit finds 0.4.
    lrs = 0.3 * 10.0 ** np.linspace(-2, 0.5, 11)
    steps = np.arange(1, 201)
    alpha = 0.4

    def curve(lr):
        return steps, (math.log(lr) - np.log(0.3 * steps ** -alpha)) ** 2

    fitted, optima = rules.fit_horizon_exponent(lrs, [curve(lr) for lr in lrs], 200)
    assert [h for h, _, _ in optima] == [50, 100, 200]
    assert all(interior for _, _, interior in optima)
    assert fitted == pytest.approx(alpha, abs=0.03)
    # every optimum at the edge of the ladder: no fit
    fitted, _ = rules.fit_horizon_exponent(lrs[:2], [curve(lr) for lr in lrs[:2]], 200)
    assert fitted is None


def test_paired_noise_and_noise_bands():
    rng = np.random.default_rng(0)
    common = rng.normal(0, 1.0, 50)  # shared batches: cancels in the paired difference
    a = common + 0.01 * rng.normal(size=50)
    b = common + 0.3 + 0.01 * rng.normal(size=50)
    noise = rules.paired_noise(a, b)
    assert 0 < noise < 0.01
    assert rules.paired_noise(a[:3], b[:3]) == 0.0
    assert rules.paired_noise(a, np.full(50, np.nan)) == math.inf
    bands = rules.noise_bands([float(np.mean(a)), float(np.mean(b)), math.inf], [a, b, b])
    assert bands[0] == 0.0 and bands[1] == pytest.approx(rules.NOISE_SIGMAS * noise) and bands[2] == math.inf


def test_ties_within_noise_and_default_momentum():
    scores = [1.00, 1.02, 1.30]
    assert rules.ties(scores, 0.0) == [0]
    assert rules.ties(scores, 0.0, bands=[0.0, 0.05, 0.05]) == [0, 1]
    assert rules.ties(scores, 0.025, bands=[0.0, 0.0, 0.5]) == [0, 1, 2]  # relative or noise band
    # a diverged candidate's band is +inf (noise_bands): it still never ties, default or not
    diverged = [1.0, math.inf]
    assert rules.ties(diverged, 0.0, bands=rules.noise_bands(diverged, [np.ones(10), np.ones(10)])) == [0]
    assert rules.choose_weight_decay([1e-2, 1e-3], diverged, 0.05, default=1e-3, bands=[0.0, math.inf]) == 0
    # momentum: among the tied candidates the default wins; a clearly better one replaces it
    assert rules.choose_momentum([0.99, 0.9], [1.0, 1.02], 0.9, bands=[0.0, 0.05]) == 1
    assert rules.choose_momentum([0.99, 0.9], [1.0, 1.02], 0.9, bands=[0.0, 0.01]) == 0
    assert rules.choose_momentum([0.99, 0.9], [1.0, 1.02], None, bands=[0.0, 0.05]) == 0
    assert rules.choose_weight_decay([1e-2, 1e-4], [1.0, 1.02], 0.0, default=1e-4, bands=[0.0, 0.05]) == 1
    with pytest.raises(ValueError, match="every momentum candidate diverged"):
        rules.choose_momentum([0.9], [math.inf], 0.9)
