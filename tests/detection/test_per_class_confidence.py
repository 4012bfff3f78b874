"""Per-class thresholds with a stated confidence: the Clopper-Pearson lower bound (against SciPy,
and against its defining property in exact arithmetic), the rules' choice under it (against a
brute force that recomputes the bound at every cut), ``--confidence`` on the command line and
the per-class figures on held-out images (against pycocotools' own matching)."""

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from detsearch import cli
from detsearch.detection.sweep.confidence import (beta_quantile, clopper_pearson_lower, lower_bound_reaches,
                                                  regularized_beta)
from detsearch.detection.sweep.per_class import ClassThreshold, PerClassRule, ScoreCurve, choose_cut

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_val2014_100"
ANNOTATIONS = DATA / "instances_val2014_100.json"
DETECTIONS = DATA / "instances_val2014_fakebbox100_results.json"


# ------------------------------------------------------------------------------------------
# the bound


def _random_cases(seed, count):
    """(k, n, C): n log-uniform in [1, 1e6], k uniform or at an edge, C uniform in [0.5, 0.9999]
    or a usual level; then the edges k in {0, 1, 2, n - 1, n} for n from 1 to 1e6."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        n = max(1, int(np.exp(rng.uniform(0, math.log(1e6)))))
        k = int(rng.integers(0, n + 1)) if i % 3 else int(np.clip(rng.choice([0, 1, 2, n - 1, n]), 0, n))
        confidence = float(rng.uniform(0.5, 0.9999)) if i % 2 else float(rng.choice([0.5, 0.9, 0.95, 0.99, 0.9999]))
        cases.append((k, n, confidence))
    for n in (1, 2, 3, 10, 1000, 10**5, 10**6):
        for k in {0, 1, min(2, n), n - 1, n}:
            for confidence in (0.5, 0.95, 0.9999):
                cases.append((k, n, confidence))
    return cases


def test_bound_equals_scipy():
    stats = pytest.importorskip("scipy.stats")
    worst = 0.0
    for k, n, confidence in _random_cases(0, 1500):
        expected = 0.0 if k == 0 else float(stats.beta.ppf(1 - confidence, k, n - k + 1))
        got = clopper_pearson_lower(k, n, confidence)
        assert abs(got - expected) <= 1e-12, (k, n, confidence, got, expected)
        worst = max(worst, abs(got - expected))
    assert worst < 1e-12


def test_regularized_beta_equals_scipy():
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(1)
    for _ in range(500):
        n = max(1, int(np.exp(rng.uniform(0, math.log(1e5)))))
        k = int(rng.integers(1, n + 1))
        x = float(rng.uniform())
        assert abs(regularized_beta(x, k, n - k + 1) - float(special.betainc(k, n - k + 1, x))) <= 1e-12, (x, k, n)


def _upper_tail(k, n, p: Fraction) -> Fraction:
    """P(X >= k) for X ~ Binomial(n, p), exactly."""
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 30])
def test_bound_is_where_the_binomial_tail_is_alpha(n):
    """The defining property, in exact rational arithmetic (no SciPy): at the lower bound L of k
    successes, P(X >= k | n, L) = 1 - C."""
    for confidence in (0.5, 0.8, 0.9, 0.95, 0.99, 0.9999):
        alpha = 1 - confidence
        for k in range(1, n + 1):
            lower = clopper_pearson_lower(k, n, confidence)
            assert 0.0 < lower < 1.0
            assert abs(float(_upper_tail(k, n, Fraction(lower))) - alpha) <= 1e-12, (k, n, confidence, lower)
        assert clopper_pearson_lower(0, n, confidence) == 0.0


def test_bound_is_monotone_in_confidence_and_successes():
    levels = (0.5, 0.6, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999)
    for n in (1, 4, 17, 250, 10**4, 10**6):
        ks = sorted({0, 1, 2, n // 3, n // 2, n - 1, n} & set(range(n + 1)))
        table = np.array([[clopper_pearson_lower(k, n, c) for c in levels] for k in ks])
        assert (np.diff(table, axis=1) <= 0).all(), n  # more confidence, lower bound
        assert (np.diff(table, axis=0) >= 0).all(), n  # more successes, higher bound
        assert (table[:, 0] <= np.array(ks) / n + 1e-15).all()  # at C >= 0.5 never above k / n


def test_closed_forms_and_quantile():
    assert clopper_pearson_lower(10, 10, 0.95) == pytest.approx(0.05 ** 0.1, abs=1e-15)
    assert clopper_pearson_lower(1, 10, 0.95) == pytest.approx(1 - 0.95 ** 0.1, abs=1e-15)
    assert beta_quantile(0.3, 2.5, 4.0) == pytest.approx(beta_quantile(0.3, 2.5, 4.0))
    x = beta_quantile(0.3, 7, 3)
    assert regularized_beta(x, 7, 3) == pytest.approx(0.3, abs=1e-14)


@pytest.mark.parametrize("call", [
    lambda: clopper_pearson_lower(3, 2, 0.9),
    lambda: clopper_pearson_lower(0, 0, 0.9),
    lambda: clopper_pearson_lower(-1, 2, 0.9),
    lambda: clopper_pearson_lower(1, 2, 1.0),
    lambda: clopper_pearson_lower(1, 2, 0.0),
    lambda: clopper_pearson_lower(1, 2, math.nan),
    lambda: clopper_pearson_lower(1, 2, True),
    lambda: clopper_pearson_lower(1.5, 2, 0.9),
    lambda: lower_bound_reaches([1, 3], [2, 2], 0.5, 0.9),
    lambda: lower_bound_reaches([1], [2], 0.0, 0.9),
])
def test_bad_bound_arguments(call):
    with pytest.raises(ValueError):
        call()


def test_lower_bound_reaches_is_the_bound_compared():
    rng = np.random.default_rng(2)
    trials = rng.integers(0, 3000, 4000)
    successes = (trials * rng.uniform(0.3, 1.0, len(trials))).astype(np.int64)
    for target, confidence in ((0.5, 0.95), (0.9, 0.9), (0.97, 0.5), (1.0, 0.95), (0.3, 0.9999)):
        reaches = lower_bound_reaches(successes, trials, target, confidence)
        expected = [n > 0 and clopper_pearson_lower(int(k), int(n), confidence) >= target for k, n in zip(successes, trials)]
        assert reaches.tolist() == expected
    # exactly at the bound: the bound itself decides
    lower = clopper_pearson_lower(40, 50, 0.9)
    assert lower_bound_reaches([40], [50], lower, 0.9).tolist() == [True]
    assert lower_bound_reaches([40], [50], float(np.nextafter(lower, 2)), 0.9).tolist() == [False]


# ------------------------------------------------------------------------------------------
# the rules' choice


def _seeded_curve(seed):
    """A curve whose precision falls with the score, some scores tied in float32."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(0, 400))
    scores = np.round(rng.uniform(0.05, 1.0, size), int(rng.integers(2, 5)))
    true_positive = rng.random(size) < np.clip(scores * rng.uniform(0.8, 1.3), 0, 1)
    ground_truth = int(true_positive.sum()) + int(rng.integers(0, 60))
    return ScoreCurve.from_detections(scores, true_positive, ground_truth)


def _brute_force(curve, rule):
    """choose_cut's (index, reached) by recomputing the bound at every cut with SciPy."""
    stats = pytest.importorskip("scipy.stats")

    def lower(k, n):
        return 0.0 if k == 0 else float(stats.beta.ppf(1 - rule.confidence, k, n - k + 1))

    n = len(curve.scores)
    if rule.kind == "precision":
        reaching = [i for i in range(n) if lower(int(curve.true_positives[i]), int(curve.counted[i])) >= rule.target]
        return (reaching[-1], True) if reaching else (-1, False)
    if curve.num_ground_truth == 0:
        return n - 1, False
    reaching = [i for i in range(n) if lower(int(curve.true_positives[i]), curve.num_ground_truth) >= rule.target]
    return (reaching[0], True) if reaching else (n - 1, False)


@pytest.mark.parametrize("seed", range(40))
def test_choose_cut_with_confidence_equals_brute_force(seed):
    curve = _seeded_curve(seed)
    for text in ("precision:0.5", "precision:0.8", "precision:0.95", "precision:1", "recall:0.2", "recall:0.6",
                 "recall:0.9", "recall:1"):
        for confidence in (0.5, 0.9, 0.95, 0.999):
            if confidence == 0.5 and text.endswith(":0.5"):
                continue  # bounds exactly at the target (symmetric medians): test_symmetric_median_ties_its_target
            rule = PerClassRule.parse(text, confidence=confidence)
            assert choose_cut(curve, rule) == _brute_force(curve, rule), (text, confidence)
    # the bound is stricter than the figure: never more kept (precision), never fewer (recall)
    plain, bounded = choose_cut(curve, PerClassRule.parse("precision:0.8")), choose_cut(curve, PerClassRule.parse("precision:0.8", 0.9))
    assert bounded[0] <= plain[0] or not plain[1]
    plain, bounded = choose_cut(curve, PerClassRule.parse("recall:0.6")), choose_cut(curve, PerClassRule.parse("recall:0.6", 0.9))
    assert bounded[0] >= plain[0]


def test_symmetric_median_ties_its_target():
    """At C = 0.5 the bound of k of 2k - 1 is the median of Beta(k, k): 1/2 exactly, so a target
    of 0.5 is reached there (SciPy's ppf is a float64 step off on some k)."""
    for k in (1, 2, 57, 148, 10**5):
        assert clopper_pearson_lower(k, 2 * k - 1, 0.5) == 0.5
    curve = ScoreCurve.from_detections([0.9, 0.8, 0.7], [True, False, True], 5)  # precision 1, 1/2, 2/3
    assert choose_cut(curve, PerClassRule.parse("precision:0.5", confidence=0.5)) == (2, True)
    assert lower_bound_reaches([2, 1], [3, 2], 0.5, 0.5).tolist() == [True, False]


def test_rule_confidence_is_checked_and_kept_apart_from_its_text():
    rule = PerClassRule.parse("precision:0.9", confidence=0.95)
    assert (rule.kind, rule.target, rule.confidence, str(rule)) == ("precision", 0.9, 0.95, "precision:0.9")
    assert PerClassRule.parse(rule) is rule and PerClassRule.parse(rule, 0.8).confidence == 0.8
    assert PerClassRule.parse("recall:0.7").confidence is None
    for bad in (0, 1, 1.5, -0.1, math.nan, math.inf, True, "0.9"):
        with pytest.raises(ValueError, match="confidence must be a number in \\(0, 1\\)"):
            PerClassRule("precision", 0.9, bad)
    with pytest.raises(ValueError, match="a confidence needs a precision:P or recall:R rule"):
        PerClassRule.parse("f1", confidence=0.9)


def test_class_threshold_dict_names_the_bounds_only_with_a_confidence():
    plain = ClassThreshold(1, "a", 0.5, 0.9, 0.5, 0.6, 0.4, 10, True)
    assert list(plain.to_dict()) == ["category_id", "name", "score_threshold", "precision", "recall", "f1", "ap",
                                     "detections", "reached"]
    bounded = ClassThreshold(1, "a", 0.5, 0.9, 0.5, 0.6, 0.4, 10, True, confidence=0.95, precision_lower=0.7,
                             recall_lower=0.3, held_out=True, holdout_precision=0.8, holdout_recall=None, holdout_held=False)
    assert bounded.to_dict() == {**plain.to_dict(), "precision_lower": 0.7, "recall_lower": 0.3, "holdout_precision": 0.8,
                                 "holdout_recall": None, "holdout_held": False}


# ------------------------------------------------------------------------------------------
# the library and the command line, against pycocotools


def _counts(coco_gt, results, image_ids):
    """{category: (true positives, counted detections, non-ignored ground truth)} of COCO
    ``results`` on ``image_ids``, read off pycocotools' evaluateImg (IoU 0.5, area all,
    maxDets 100)."""
    from detsearch.detection.pycoco import load_results, pycocotools_eval

    evaluator = pycocotools_eval(coco_gt, load_results(coco_gt, results), image_ids)
    all_area = list(evaluator.params.areaRng[0])
    counts = {}
    for e in evaluator.evalImgs:
        if e is None or list(e["aRng"]) != all_area or e["maxDet"] != 100:
            continue
        counted = ~np.asarray(e["dtIgnore"][0], bool)
        tp = int(np.count_nonzero((np.asarray(e["dtMatches"][0]) != 0) & counted))
        npig = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        before = counts.get(e["category_id"], (0, 0, 0))
        counts[e["category_id"]] = (before[0] + tp, before[1] + int(counted.sum()), before[2] + npig)
    return counts


def _cut(results, thresholds):
    """The results each category's threshold keeps, compared as float32 (as the model does)."""
    return [r for r in results if np.float32(r["score"]) > np.float32(thresholds[r["category_id"]])]


@pytest.mark.parametrize("rule, confidence", [("precision:0.6", 0.8), ("recall:0.5", 0.9), ("f1", None)])
def test_library_bounds_and_held_out_figures_equal_pycocotools(rule, confidence):
    pytest.importorskip("pycocotools")
    stats = pytest.importorskip("scipy.stats")
    import detsearch.detection.sweep as sweep_module
    from detsearch.detection.cache import import_coco_detections
    from detsearch.detection.cocoeval import load_ground_truth
    from detsearch.detection.pycoco import coco_ground_truth
    from detsearch.detection.sweep import PostProcessing
    from detsearch.detection.sweep._reference import reference_detections
    from detsearch.detection.sweep.holdout import split_images, subset_cache
    from detsearch.params import ParamSpec

    cache = import_coco_detections(str(DETECTIONS), str(ANNOTATIONS))
    dataset = json.loads(ANNOTATIONS.read_text())
    spec = ParamSpec(score_threshold=[0.0, 0.2], iou_threshold=[0.5, 1.0])
    result = sweep_module.sweep(cache, dataset, spec, per_class=PerClassRule.parse(rule, confidence), holdout=0.4, seed=3,
                                replicates=10)
    gt = load_ground_truth(dataset)
    coco_gt = coco_ground_truth(gt)
    chosen, held = split_images(cache.meta.image_ids, 0.4, 3, gt)
    params = dict(result.best_row.params)
    thresholds = result.per_class.thresholds()
    sides = {}
    for name, positions in (("chosen", chosen), ("held", held)):
        part = subset_cache(cache, positions)
        results = reference_detections(part, params, PostProcessing().checked(part))
        sides[name] = _counts(coco_gt, _cut(results, thresholds), list(part.meta.image_ids))
    held_ids = sorted(cache.meta.image_ids[i] for i in held)
    ground_truth = _counts(coco_gt, [], held_ids)  # every category's non-ignored ground truth there
    rule = result.per_class.rule
    checked_bounds = held_true = 0
    for entry in result.per_class.classes:
        payload = entry.to_dict()
        assert ("precision_lower" in payload) == (confidence is not None)
        assert {"holdout_precision", "holdout_recall", "holdout_held"} <= set(payload)
        tp, counted, _ = sides["held"].get(entry.category_id, (0, 0, 0))
        npig = ground_truth.get(entry.category_id, (0, 0, 0))[2]
        assert entry.holdout_precision == (tp / counted if counted else None), entry
        assert entry.holdout_recall == (tp / npig if npig else None), entry
        figure = {"precision": entry.holdout_precision, "recall": entry.holdout_recall}.get(rule.kind)
        assert entry.holdout_held == (None if figure is None else figure >= rule.target), entry
        held_true += bool(entry.holdout_held)
        if confidence is None or entry.precision is None and entry.recall is None:
            continue
        tp, counted, npig = sides["chosen"].get(entry.category_id, (0, 0, 0))
        assert entry.precision == (tp / counted if counted else None) and entry.recall == tp / npig

        def lower(k, n):
            return 0.0 if k == 0 else float(stats.beta.ppf(1 - confidence, k, n - k + 1))

        assert (entry.precision_lower is None) == (counted == 0)
        if counted:
            assert entry.precision_lower == pytest.approx(lower(tp, counted), abs=1e-12)
        assert entry.recall_lower == pytest.approx(lower(tp, npig), abs=1e-12)
        bound = entry.precision_lower if rule.kind == "precision" else entry.recall_lower
        assert entry.reached == (bound is not None and bound >= rule.target)
        checked_bounds += counted > 0
    assert (held_true > 0) == (rule.kind != "f1") and (confidence is None or checked_bounds > 3)


def test_command_line_confidence_and_holdout(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["sweep", "--no-progress", "--detections", str(DETECTIONS), "--annotations", str(ANNOTATIONS),
                     "--score-thresholds", "0,0.3", "--iou-thresholds", "0.5,1.0", "--out", str(out),
                     "--per-class", "precision:0.6", "--confidence", "0.9", "--holdout", "0.5", "--replicates", "20"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["per_class_rule"] == "precision:0.6" and result["per_class_confidence"] == 0.9
    fields = {"precision_lower", "recall_lower", "holdout_precision", "holdout_recall", "holdout_held"}
    assert all(fields <= set(entry) for entry in result["per_class"])
    reached = [e for e in result["per_class"] if e["reached"] and e["precision"] is not None]
    assert reached and all(e["precision_lower"] >= 0.6 for e in reached)
    assert any(not e["reached"] and e["ap"] is not None for e in result["per_class"])  # some target out of the bound's reach
    document = json.loads((out / "per_class_thresholds.json").read_text())
    assert document["confidence"] == 0.9 and document["rule"] == "precision:0.6"
    assert [(c["category_id"], c["precision_lower"], c["recall_lower"]) for c in document["classes"]] == \
        [(e["category_id"], e["precision_lower"], e["recall_lower"]) for e in result["per_class"]]
    report = (out / "report.md").read_text()
    assert "precision:0.6 at confidence 0.9" in report and "| precision low | recall low | held-out precision |" in report


def test_without_confidence_the_outputs_keep_their_fields(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["sweep", "--no-progress", "--detections", str(DETECTIONS), "--annotations", str(ANNOTATIONS),
                     "--score-thresholds", "0,0.3", "--iou-thresholds", "0.5", "--out", str(out), "--per-class", "precision:0.6"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert "per_class_confidence" not in result
    assert set(result["per_class"][0]) == {"category_id", "name", "score_threshold", "precision", "recall", "f1", "ap",
                                           "detections", "reached"}
    document = json.loads((out / "per_class_thresholds.json").read_text())
    assert set(document) == {"keep", "rule", "configuration", "classes"}
    assert set(document["classes"][0]) == {"category_id", "name", "score_threshold"}
    assert "precision low" not in (out / "report.md").read_text()
