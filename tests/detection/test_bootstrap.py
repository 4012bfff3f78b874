"""The bootstrap over images: each replicate equals pycocotools on the duplicated data set."""

import math

import numpy as np
import pytest
from detsearch.detection import bootstrap, cocoeval, pycoco

STAT_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "AR100": 8}


# ------------------------------------------------------------------------------------------
# cases


def random_case(rng, *, first_annotation_id=1, many_per_group=False):
    """A COCO dataset and results: a few images (some empty), a few categories (the last one
    without ground truth), crowd regions, areas in every range and on range boundaries, and
    scores rounded to 0.1 half the time (ties across and inside images)."""
    num_images, num_categories = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    images = [{"id": int(i), "height": 300, "width": 300} for i in rng.choice(1000, num_images + 1, replace=False)]
    categories = [{"id": int(c), "name": f"c{c}"} for c in rng.choice(100, num_categories + 1, replace=False)]
    with_ground_truth = categories[:-1]
    annotations, next_id = [], first_annotation_id
    for image in images[:-1]:  # the last image stays empty
        for _ in range(int(rng.integers(0, 8))):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(1, 20, 2) if rng.random() < 0.5 else rng.uniform(20, 150, 2)
            area = float(w * h * (1.0 if rng.random() < 0.3 else rng.uniform(0.5, 1.2)))
            if rng.random() < 0.1:
                area = float(rng.choice([32.0**2, 96.0**2]))
            annotations.append(
                {
                    "id": next_id,
                    "image_id": image["id"],
                    "category_id": int(rng.choice(with_ground_truth)["id"]),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": area,
                    "iscrowd": int(rng.random() < 0.15),
                }
            )
            next_id += 1
    results = []
    for image in images[:-1]:
        own = [a for a in annotations if a["image_id"] == image["id"]]
        for _ in range(int(rng.integers(0, 150 if many_per_group else 30))):
            if own and rng.random() < 0.6:
                source = own[int(rng.integers(len(own)))]
                box = np.array(source["bbox"]) + rng.normal(0, 3, 4) * (rng.random() < 0.85)
                box[2:] = np.abs(box[2:]) + 0.5
                category = source["category_id"] if rng.random() < 0.8 else int(rng.choice(categories)["id"])
            else:
                box = np.r_[rng.uniform(0, 200, 2), rng.uniform(1, 100, 2)]
                category = int(rng.choice(categories)["id"])
            score = float(rng.random()) if rng.random() < 0.5 else round(float(rng.random()), 1)
            results.append({"image_id": image["id"], "category_id": category, "bbox": [float(v) for v in box], "score": score})
    return {"images": images, "categories": categories, "annotations": annotations}, results


def matched(dataset, results):
    matcher = cocoeval.CocoMatcher(cocoeval.load_ground_truth(dataset))
    n = len(results)
    image_ids = np.array([r["image_id"] for r in results], np.int64)
    category_ids = np.array([r["category_id"] for r in results], np.int64)
    boxes = np.array([r["bbox"] for r in results], np.float64).reshape(n, 4)
    scores = np.array([r["score"] for r in results], np.float64)
    return matcher.match(matcher.image_positions(image_ids), matcher.category_positions(category_ids), boxes, scores)


def duplicated(dataset, results, counts):
    """The data set with image ``i`` (in id order) present ``counts[i]`` times: copy ``c`` of
    the image at position ``p`` gets id ``(p + 1) * 1000 + c``, every annotation copy a new
    non-zero id; the results keep their order inside each copy."""
    old_ids = sorted(image["id"] for image in dataset["images"])
    new_ids = {old: [(p + 1) * 1000 + c for c in range(int(counts[p]))] for p, old in enumerate(old_ids)}
    images = [{"id": new, "height": 300, "width": 300} for old in old_ids for new in new_ids[old]]
    annotations = []
    for annotation in dataset["annotations"]:
        for new in new_ids[annotation["image_id"]]:
            annotations.append(dict(annotation, id=len(annotations) + 1, image_id=new, bbox=list(annotation["bbox"])))
    copies = [dict(r, image_id=new, bbox=list(r["bbox"])) for r in results for new in new_ids[r["image_id"]]]
    return {"images": images, "categories": [dict(c) for c in dataset["categories"]], "annotations": annotations}, copies


def pycocotools_values(dataset, results, score_cut):
    """pycocotools' AP, AP50, AP75, AR100 and pooled F1 of the results with score > cut."""
    coco_gt = pycoco.coco_ground_truth(dataset)
    kept = [r for r in results if r["score"] > score_cut]
    evaluator = pycoco.pycocotools_eval(coco_gt, pycoco.load_results(coco_gt, kept))
    values = {name: float(evaluator.stats[index]) for name, index in STAT_INDEX.items()}
    values["F1"] = pycoco.pycocotools_f1(evaluator)[0]
    return values


def reference_stats(matches, counts, score_cut):
    """Slow and literal: the detections of every copy listed image by image (ascending
    position, copies adjacent, then rank), then pycocotools' accumulate loop per category and
    IoU threshold (area all, 100 detections) and `cocoeval.summarize`."""
    matcher = matches.matcher
    num_t, num_r, num_k = len(cocoeval.IOU_THRESHOLDS), len(cocoeval.RECALL_THRESHOLDS), matcher.num_categories
    ground_truth = matcher.ground_truth_per_image()
    precision = -np.ones((num_t, num_r, num_k, 4, 3))
    recall = -np.ones((num_t, num_k, 4, 3))
    keep = matches.scores > score_cut
    f1_tp = f1_counted = 0
    for k in range(num_k):
        npig = int(sum(int(counts[i]) * int(ground_truth[i, k]) for i in range(matcher.num_images)))
        scores, true_positive, counted = [], [], []
        for i in range(matcher.num_images):
            rows = np.flatnonzero(keep & (matches.image_pos == i) & (matches.category_pos == k))
            rows = rows[np.argsort(matches.rank[rows], kind="stable")]
            for _ in range(int(counts[i])):
                scores.extend(matches.scores[rows].tolist())
                true_positive.extend(matches.true_positive[rows, 0, :].tolist())
                counted.extend(matches.counted[rows, 0, :].tolist())
        order = np.argsort(-np.array(scores, np.float64), kind="mergesort")
        dtm = np.array(true_positive, bool).reshape(-1, num_t)[order].T
        not_ignored = np.array(counted, bool).reshape(-1, num_t)[order].T
        f1_tp += int(np.count_nonzero(dtm[0] & not_ignored[0]))
        f1_counted += int(np.count_nonzero(not_ignored[0]))
        if npig == 0:
            continue
        tp_sum = np.cumsum(dtm & not_ignored, axis=1).astype(np.float64)
        fp_sum = np.cumsum(~dtm & not_ignored, axis=1).astype(np.float64)
        for t in range(num_t):
            tp, fp = tp_sum[t], fp_sum[t]
            nd = len(tp)
            rc = tp / npig
            pr = (tp / (fp + tp + np.spacing(1))).tolist()
            recall[t, k, 0, 2] = rc[-1] if nd else 0
            for i in range(nd - 1, 0, -1):
                if pr[i] > pr[i - 1]:
                    pr[i - 1] = pr[i]
            q = np.zeros(num_r)
            for ri, pi in enumerate(np.searchsorted(rc, cocoeval.RECALL_THRESHOLDS, side="left")):
                if pi >= nd:
                    break
                q[ri] = pr[pi]
            precision[t, :, k, 0, 2] = q
    stats = cocoeval.summarize(precision, recall)
    values = {name: float(stats[index]) for name, index in STAT_INDEX.items()}
    denominator = f1_counted + int(counts @ ground_truth.sum(axis=1))
    values["F1"] = 2 * f1_tp / denominator if denominator else 0.0
    return values


def column(stats, b):
    return np.array([stats[name][b] for name in bootstrap.BOOTSTRAP_STATS])


def row(values):
    return np.array([values[name] for name in bootstrap.BOOTSTRAP_STATS])


# ------------------------------------------------------------------------------------------
# weights all 1: Matches.evaluate


@pytest.mark.parametrize("seed", range(8))
def test_unit_weights_equal_evaluate_bitwise(seed):
    rng = np.random.default_rng(seed)
    for case in range(12):
        dataset, results = random_case(rng, first_annotation_id=case % 2, many_per_group=case % 4 == 0)
        matches = matched(dataset, results)
        ones = np.ones((2, matches.matcher.num_images), np.int64)
        for cut in (-math.inf, 0.5, float(np.median(matches.scores)) if len(matches) else 0.3, 2.0):
            evaluation = matches.evaluate([cut])[0]
            stats = bootstrap.replicate_stats(matches, ones, cut)
            for b in range(2):
                np.testing.assert_array_equal(column(stats, b)[:4], evaluation.stats[[0, 1, 2, 8]])
                np.testing.assert_array_equal(stats["F1"][b], evaluation.f1)


# ------------------------------------------------------------------------------------------
# drawn weights: pycocotools on the duplicated data set, and the slow reference


@pytest.mark.parametrize("seed", range(6))
def test_bootstrap_weights_equal_pycocotools_on_duplicated_data(seed):
    pytest.importorskip("pycocotools", reason="the oracle: pip install 'detsearch[coco]'")
    rng = np.random.default_rng(100 + seed)
    for case in range(6):
        dataset, results = random_case(rng, many_per_group=case == 0)
        matches = matched(dataset, results)
        weights = bootstrap.bootstrap_weights(matches.matcher.num_images, 4, seed=seed * 10 + case)
        cut = (-math.inf, 0.5)[case % 2]
        stats = bootstrap.replicate_stats(matches, weights, cut, chunk=3)
        for b in range(len(weights)):
            expected = pycocotools_values(*duplicated(dataset, results, weights[b]), cut)
            np.testing.assert_array_equal(column(stats, b), row(expected), err_msg=f"case {case}, replicate {b}")


@pytest.mark.parametrize("seed", range(6))
def test_heavy_weights_equal_reference(seed):
    # Weights up to 6 repeat tie units (equal scores in one image and category) many times,
    # the case where an early copy can hold the best precision.
    rng = np.random.default_rng(200 + seed)
    for case in range(6):
        dataset, results = random_case(rng, first_annotation_id=case % 2, many_per_group=case == 0)
        matches = matched(dataset, results)
        weights = rng.integers(0, 7, size=(5, matches.matcher.num_images))
        weights[0] = 0
        cut = (-math.inf, 0.5, 0.25)[case % 3]
        stats = bootstrap.replicate_stats(matches, weights, cut, chunk=2)
        for b in range(len(weights)):
            expected = reference_stats(matches, weights[b], cut)
            np.testing.assert_array_equal(column(stats, b), row(expected), err_msg=f"case {case}, replicate {b}")


def test_reference_equals_pycocotools_on_a_tie_heavy_case():
    # The slow reference itself against the oracle, on a case with ties inside images.
    pytest.importorskip("pycocotools", reason="the oracle: pip install 'detsearch[coco]'")
    rng = np.random.default_rng(7)
    dataset, results = random_case(rng, many_per_group=True)
    matches = matched(dataset, results)
    counts = np.arange(matches.matcher.num_images) % 4
    expected = pycocotools_values(*duplicated(dataset, results, counts), -math.inf)
    np.testing.assert_array_equal(row(reference_stats(matches, counts, -math.inf)), row(expected))


def test_no_ground_truth_drawn_gives_minus_one_and_zero_f1():
    dataset = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 1}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 0}],
    }
    matches = matched(dataset, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "score": 0.9}])
    stats = bootstrap.replicate_stats(matches, np.array([[0, 2], [2, 0], [0, 0]]))
    np.testing.assert_array_equal(column(stats, 0), [-1, -1, -1, -1, 0])
    np.testing.assert_array_equal(column(stats, 1), [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(column(stats, 2), [-1, -1, -1, -1, 0])


def test_no_detections():
    rng = np.random.default_rng(3)
    dataset, _ = random_case(rng)
    matches = matched(dataset, [])
    weights = bootstrap.bootstrap_weights(matches.matcher.num_images, 3, seed=0)
    stats = bootstrap.replicate_stats(matches, weights)
    for b in range(3):
        np.testing.assert_array_equal(column(stats, b), row(reference_stats(matches, weights[b], -math.inf)))


def test_chunks_do_not_change_values_and_weights_are_not_modified():
    rng = np.random.default_rng(5)
    dataset, results = random_case(rng, many_per_group=True)
    matches = matched(dataset, results)
    weights = bootstrap.bootstrap_weights(matches.matcher.num_images, 7, seed=1)
    before = weights.copy()
    whole = bootstrap.replicate_stats(matches, weights, chunk=7)
    for chunk in (1, 3, 100):
        parts = bootstrap.replicate_stats(matches, weights, chunk=chunk)
        for name in bootstrap.BOOTSTRAP_STATS:
            np.testing.assert_array_equal(parts[name], whole[name])
            assert parts[name].dtype == np.float64 and parts[name].shape == (7,)
    np.testing.assert_array_equal(weights, before)


def test_ground_truth_per_image_counts_non_ignored_boxes():
    rng = np.random.default_rng(9)
    dataset, _ = random_case(rng)
    matcher = cocoeval.CocoMatcher(cocoeval.load_ground_truth(dataset))
    expected = np.zeros((matcher.num_images, matcher.num_categories), np.int64)
    for annotation in dataset["annotations"]:
        if not annotation["iscrowd"] and 0 <= annotation["area"] <= 1e5**2:
            i = int(np.searchsorted(matcher.image_ids, annotation["image_id"]))
            k = int(np.searchsorted(matcher.category_ids, annotation["category_id"]))
            expected[i, k] += 1
    got = matcher.ground_truth_per_image()
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got.sum(axis=0), matcher._npig[:, 0])


def test_last_recall_threshold_equals_searchsorted():
    # The fast path's first guess can be one off exactly at a threshold: every tp / npig with
    # npig <= 600, and large random ones.
    npig = np.repeat(np.arange(1, 601), np.arange(2, 602))
    tp = np.concatenate([np.arange(n + 1) for n in range(1, 601)])
    rng = np.random.default_rng(0)
    big = rng.integers(1, 10**9, 200_000)
    npig = np.r_[npig, big, big]
    tp = np.r_[tp, rng.integers(0, big + 1), big // rng.integers(1, 101, len(big)) * rng.integers(0, 2, len(big))]
    tp_f, npig_f = tp.astype(np.float64), npig.astype(np.float64)
    expected = np.searchsorted(cocoeval.RECALL_THRESHOLDS, tp_f / npig_f, side="right") - 1
    after = np.r_[cocoeval.RECALL_THRESHOLDS[1:], np.inf]
    got = [bootstrap._last_recall(t, n, after) for t, n in zip(tp_f.tolist(), npig_f.tolist())]  # pylint: disable=protected-access
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------------------------
# bootstrap_weights, percentile_interval


def test_bootstrap_weights_are_counts_of_a_seeded_draw():
    weights = bootstrap.bootstrap_weights(9, 5, seed=0)
    assert weights.dtype == np.int64 and weights.shape == (5, 9)
    np.testing.assert_array_equal(weights.sum(axis=1), 9)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(weights, [np.bincount(rng.integers(0, 9, 9), minlength=9) for _ in range(5)])
    np.testing.assert_array_equal(bootstrap.bootstrap_weights(9, 5, seed=0), weights)
    assert not np.array_equal(bootstrap.bootstrap_weights(9, 5, seed=1), weights)


def test_percentile_interval():
    values = np.random.default_rng(0).normal(size=101)
    low, high = bootstrap.percentile_interval(values, 0.9)
    assert (low, high) == tuple(np.quantile(values, [(1 - 0.9) / 2, 1 - (1 - 0.9) / 2], method="linear"))
    np.testing.assert_allclose((low, high), np.percentile(values, [5, 95]), rtol=1e-12)
    assert isinstance(low, float) and low < high
    # -1 (undefined stat) values are kept.
    assert bootstrap.percentile_interval(np.array([-1.0, 0.5, 0.5, 0.5]), 0.5) == tuple(np.quantile([-1.0, 0.5, 0.5, 0.5], [0.25, 0.75]))
    assert bootstrap.percentile_interval(np.array([0.25])) == (0.25, 0.25)


# ------------------------------------------------------------------------------------------
# argument validation


@pytest.fixture(scope="module")
def small_matches():
    return matched(*random_case(np.random.default_rng(1)))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_images=0, replicates=3, seed=0), ValueError, "num_images must be an integer >= 1, got 0"),
        (dict(num_images=4, replicates=0, seed=0), ValueError, "replicates must be an integer >= 1, got 0"),
        (dict(num_images=4, replicates=-2, seed=0), ValueError, "replicates must be an integer >= 1, got -2"),
        (dict(num_images=4, replicates=3, seed=-1), ValueError, "seed must be an integer >= 0, got -1"),
        (dict(num_images=4, replicates=2.5, seed=0), ValueError, "replicates must be an integer >= 1, got 2.5"),
        (dict(num_images=4, replicates=3, seed=None), ValueError, "seed must be an integer >= 0, got None"),
        (dict(num_images=True, replicates=3, seed=0), ValueError, "num_images must be an integer >= 1, got True"),
    ],
)
def test_bootstrap_weights_rejects(kwargs, error, message):
    with pytest.raises(error, match=message):
        bootstrap.bootstrap_weights(**kwargs)


def test_replicate_stats_rejects(small_matches):
    num_images = small_matches.matcher.num_images
    good = np.ones((2, num_images), np.int64)
    with pytest.raises(ValueError, match=rf"weights must be \[replicates, {num_images}\].*got shape \({num_images},\)"):
        bootstrap.replicate_stats(small_matches, good[0])
    with pytest.raises(ValueError, match=rf"got shape \(2, {num_images + 1}\)"):
        bootstrap.replicate_stats(small_matches, np.ones((2, num_images + 1), np.int64))
    with pytest.raises(ValueError, match="at least one replicate"):
        bootstrap.replicate_stats(small_matches, good[:0])
    negative = good.copy()
    negative[1, num_images - 1] = -3
    with pytest.raises(ValueError, match=rf"weights\[1, {num_images - 1}\] = -3 is negative"):
        bootstrap.replicate_stats(small_matches, negative)
    with pytest.raises(TypeError, match="weights must be integers, got dtype float64"):
        bootstrap.replicate_stats(small_matches, good.astype(np.float64))
    with pytest.raises(TypeError, match="weights must be integers, got dtype bool"):
        bootstrap.replicate_stats(small_matches, good.astype(bool))
    with pytest.raises(ValueError, match="score_cut must not be NaN"):
        bootstrap.replicate_stats(small_matches, good, math.nan)
    with pytest.raises(ValueError, match="chunk must be an integer >= 1, got 0"):
        bootstrap.replicate_stats(small_matches, good, chunk=0)
    with pytest.raises(TypeError, match="matches must be Matches"):
        bootstrap.replicate_stats(small_matches.matcher, good)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5, math.nan])
def test_percentile_interval_rejects_level(level):
    with pytest.raises(ValueError, match="level must be in \\(0, 1\\), got"):
        bootstrap.percentile_interval(np.arange(5.0), level)


@pytest.mark.parametrize(
    "values, message",
    [
        (np.zeros(0), r"non-empty 1-D array, got shape \(0,\)"),
        (np.zeros((2, 3)), r"non-empty 1-D array, got shape \(2, 3\)"),
        (np.array([0.1, math.nan]), r"values\[1\] is NaN"),
        (np.array(["a", "b"]), "real numbers, got dtype <U1"),
    ],
)
def test_percentile_interval_rejects_values(values, message):
    with pytest.raises(ValueError, match=message):
        bootstrap.percentile_interval(values)
