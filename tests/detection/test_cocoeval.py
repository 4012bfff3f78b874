"""COCO evaluation equals pycocotools bit for bit (stats, precision, recall, per-category AP)."""

import json
from pathlib import Path

import numpy as np
import pytest
from detsearch.detection import cocoeval, pycoco

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_val2014_100"
ANNOTATIONS = DATA / "instances_val2014_100.json"
RESULTS = DATA / "instances_val2014_fakebbox100_results.json"


def pycocotools_eval(dataset, results, image_ids=None):
    """COCOeval (evaluated, summarized) of ``results`` on ``dataset``; neither is modified."""
    coco_gt = pycoco.coco_ground_truth(dataset)
    return pycoco.pycocotools_eval(coco_gt, pycoco.load_results(coco_gt, results), image_ids)


def assert_same(evaluator, ours):
    np.testing.assert_array_equal(ours.stats, evaluator.stats)
    np.testing.assert_array_equal(ours.precision, evaluator.eval["precision"])
    np.testing.assert_array_equal(ours.recall, evaluator.eval["recall"])


def pycocotools_per_category_ap(evaluator):
    out = []
    for k in range(evaluator.eval["precision"].shape[2]):
        values = evaluator.eval["precision"][:, :, k, 0, -1]
        values = values[values > -1]
        out.append(np.mean(values) if values.size else -1.0)
    return np.array(out)


# ------------------------------------------------------------------------------------------
# the real fixture


@pytest.fixture(scope="module")
def fixture_data():
    return json.loads(ANNOTATIONS.read_text()), json.loads(RESULTS.read_text())


def test_fixture_equals_pycocotools_bitwise(fixture_data):
    dataset, results = fixture_data
    evaluator = pycocotools_eval(dataset, results)
    ours = cocoeval.evaluate_results(ANNOTATIONS, RESULTS)
    assert_same(evaluator, ours)
    np.testing.assert_array_equal(ours.per_category_ap, pycocotools_per_category_ap(evaluator))
    # The README's figures (pycocotools prints 3 digits).
    expected = [0.505, 0.697, 0.573, 0.586, 0.519, 0.501, 0.387, 0.594, 0.595, 0.640, 0.566, 0.564]
    assert [float(f"{v:.3f}") for v in ours.stats] == expected
    assert ours.stats_dict()["AP"] == ours.stats[0]


def test_fixture_thresholds_are_truncations(fixture_data):
    dataset, results = fixture_data
    gt = cocoeval.load_ground_truth(dataset)
    matcher = cocoeval.CocoMatcher(gt)
    image_ids = np.array([r["image_id"] for r in results])
    category_ids = np.array([r["category_id"] for r in results])
    boxes = np.array([r["bbox"] for r in results], np.float64)
    scores = np.array([r["score"] for r in results], np.float64)
    matches = matcher.match(matcher.image_positions(image_ids), matcher.category_positions(category_ids), boxes, scores)
    thresholds = [0.0, 0.3, float(np.median(scores)), 0.9, 2.0]
    for threshold, ours in zip(thresholds, matches.evaluate(thresholds)):
        kept = [r for r in results if r["score"] > threshold]
        assert_same(pycocotools_eval(dataset, kept), ours)
        assert ours.num_detections == len(kept)


def test_inputs_are_not_modified(fixture_data):
    dataset, results = fixture_data
    before = (json.dumps(dataset), json.dumps(results))
    cocoeval.evaluate_results(dataset, results)
    assert (json.dumps(dataset), json.dumps(results)) == before


# ------------------------------------------------------------------------------------------
# randomized cases


def random_case(rng, many_per_group=False):
    num_images, num_categories = int(rng.integers(1, 7)), int(rng.integers(1, 5))
    images = [{"id": int(i), "height": 300, "width": 300} for i in rng.choice(1000, num_images, replace=False)]
    categories = [{"id": int(c), "name": f"c{c}"} for c in rng.choice(100, num_categories, replace=False)]
    annotations, next_id = [], int(rng.integers(0, 2))  # sometimes an annotation id 0
    for image in images:
        for _ in range(int(rng.integers(0, 8))):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(1, 20, 2) if rng.random() < 0.5 else rng.uniform(20, 150, 2)
            if rng.random() < 0.2:
                w, h = float(round(w)), float(round(h))
            area = float(w * h * (1.0 if rng.random() < 0.3 else rng.uniform(0.5, 1.2)))
            if rng.random() < 0.1:
                area = float(rng.choice([32.0**2, 96.0**2]))  # exactly on an area-range boundary
            annotations.append(
                {
                    "id": next_id,
                    "image_id": image["id"],
                    "category_id": int(rng.choice(categories)["id"]),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": area,
                    "iscrowd": int(rng.random() < 0.15),
                }
            )
            next_id += 1
    results = []
    for image in images:
        for _ in range(int(rng.integers(0, 150 if many_per_group else 40))):
            own = [a for a in annotations if a["image_id"] == image["id"]]
            if own and rng.random() < 0.6:
                source = own[int(rng.integers(len(own)))]
                box = np.array(source["bbox"]) + rng.normal(0, 3, 4) * (rng.random() < 0.85)
                box[2:] = np.abs(box[2:]) + 0.5
                category = source["category_id"] if rng.random() < 0.8 else int(rng.choice(categories)["id"])
            else:
                box = np.r_[rng.uniform(0, 200, 2), rng.uniform(1, 100, 2)]
                category = int(rng.choice(categories)["id"])
            score = float(rng.random()) if rng.random() < 0.5 else round(float(rng.random()), 1)  # ties
            results.append({"image_id": image["id"], "category_id": category, "bbox": [float(v) for v in box], "score": score})
    dataset = {"images": images, "categories": categories, "annotations": annotations}
    return dataset, results


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_equal_pycocotools(seed):
    rng = np.random.default_rng(seed)
    for case in range(25):
        dataset, results = random_case(rng, many_per_group=(case % 5 == 0))
        assert_same(pycocotools_eval(dataset, results), cocoeval.evaluate_results(dataset, results))


def test_edge_cases():
    dataset = {
        "images": [{"id": 1}, {"id": 2}, {"id": 3}],
        "categories": [{"id": 5}, {"id": 6}, {"id": 7}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [0, 0, 100, 100], "area": 9000, "iscrowd": 1},
            {"id": 3, "image_id": 2, "category_id": 6, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
        ],
    }
    cases = {
        "no detections": [],
        "image 3 (no ground truth) only": [{"image_id": 3, "category_id": 5, "bbox": [1, 1, 5, 5], "score": 0.5}],
        "category 7 has no ground truth": [
            {"image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 5, "bbox": [10, 10, 20, 20], "score": 0.8},
        ],
        "crowd matched repeatedly": [
            {"image_id": 1, "category_id": 5, "bbox": [60, 60, 10, 10], "score": s} for s in (0.9, 0.8, 0.7)
        ]
        + [{"image_id": 1, "category_id": 5, "bbox": [10, 10, 20, 20], "score": 0.6}],
        "duplicates and ties": [{"image_id": 2, "category_id": 6, "bbox": [50, 50, 40, 40], "score": 0.5} for _ in range(3)],
    }
    for name, results in cases.items():
        assert_same(pycocotools_eval(dataset, results), cocoeval.evaluate_results(dataset, results)), name


def test_equal_ious_go_to_the_last_box_and_an_iou_of_exactly_one_half_matches():
    # Two boxes of one place, the first with annotation id 0 (counted unmatched when taken):
    # the best detection takes the last of equal IoU, so it is the true positive, not the third.
    dataset = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 5}],
        "annotations": [
            {"id": 0, "image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 7, "image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 8, "image_id": 2, "category_id": 5, "bbox": [0, 0, 10, 20], "area": 200, "iscrowd": 0},
        ],
    }
    results = [
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "score": 0.9},
        {"image_id": 1, "category_id": 5, "bbox": [100, 100, 10, 10], "score": 0.8},
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "score": 0.7},
        {"image_id": 2, "category_id": 5, "bbox": [0, 0, 10, 10], "score": 0.6},  # IoU 100 / 200
    ]
    ours = cocoeval.evaluate_results(dataset, results)
    assert_same(pycocotools_eval(dataset, results), ours)
    assert ours.precision[0, 0, 0, 0, 2] > 0.99  # at IoU 0.5 the best detection is a true positive
    assert ours.recall[0, 0, 0, 2] == 2 / 3  # and so is the one at IoU exactly 0.5; the third is not


def test_no_detections_gives_zero_ap_and_minus_one_without_ground_truth():
    dataset = {
        "images": [{"id": 1}],
        "categories": [{"id": 1}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 0}],
    }
    ours = cocoeval.evaluate_results(dataset, [])
    np.testing.assert_array_equal(ours.stats, [0, 0, 0, -1, 0, -1, 0, 0, 0, -1, 0, -1])


def test_subset_of_images():
    rng = np.random.default_rng(11)
    dataset, results = random_case(rng)
    image_ids = [dataset["images"][0]["id"]]
    kept = [r for r in results if r["image_id"] in image_ids]
    ours = cocoeval.evaluate_results(dataset, kept, eval_image_ids=image_ids)
    assert_same(pycocotools_eval(dataset, kept, image_ids=image_ids), ours)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["annotations"][0].update(image_id=99), r"annotations\[0\] \(id 1\): image_id 99 is not in 'images'"),
        (lambda d: d["annotations"][0].update(category_id=99), "category_id 99 is not in 'categories'"),
        (lambda d: d["annotations"][0].update(bbox=[0, 0, -1, 5]), "negative width or height"),
        (lambda d: d["annotations"][0].update(bbox=[0, 0, float("nan"), 5]), "four finite numbers"),
        (lambda d: d["annotations"][0].pop("area"), "'area'"),
        (lambda d: d["images"].append({"id": 1}), "image id 1 appears twice"),
        (lambda d: d.pop("categories"), "'categories'"),
    ],
)
def test_bad_ground_truth_is_named(mutate, message):
    dataset = {
        "images": [{"id": 1}],
        "categories": [{"id": 1}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0}],
    }
    mutate(dataset)
    with pytest.raises(ValueError, match=message):
        cocoeval.load_ground_truth(dataset, name="gt.json")


def test_bad_detections_are_named(tmp_path):
    dataset = {"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": []}
    with pytest.raises(ValueError, match="category_id 3 is not in"):
        cocoeval.evaluate_results(dataset, [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}])
    with pytest.raises(ValueError, match="image_id 4 is not among"):
        cocoeval.evaluate_results(dataset, [{"image_id": 4, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}])
    with pytest.raises(ValueError, match="score is NaN"):
        cocoeval.evaluate_results(dataset, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": float("nan")}])
    bad = tmp_path / "gt.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="gt.json: malformed JSON: Expecting property name"):
        cocoeval.load_ground_truth(bad)


# ------------------------------------------------------------------------------------------
# crowded scenes: maxDets[2] raised (Model Garden's max_num_eval_detections)


def assert_same_at(evaluator, ours):
    """`assert_same` for any maxDets: the precision and recall arrays, the stats of
    `pycoco.summary_stats` (pycocotools' own, AP read at maxDets[2])."""
    assert ours.stats.tolist() == list(pycoco.summary_stats(evaluator))
    np.testing.assert_array_equal(ours.precision, evaluator.eval["precision"])
    np.testing.assert_array_equal(ours.recall, evaluator.eval["recall"])
    assert ours.max_dets == tuple(evaluator.params.maxDets)


@pytest.mark.parametrize("max_detections", [100, 300, 120, 40, 10, 5])
def test_raised_max_detections_equal_pycocotools(max_detections):
    rng = np.random.default_rng(max_detections)
    for case in range(12):
        dataset, results = random_case(rng, many_per_group=True)
        coco_gt = pycoco.coco_ground_truth(dataset)
        evaluator = pycoco.pycocotools_eval(coco_gt, pycoco.load_results(coco_gt, results), None, max_detections)
        ours = cocoeval.evaluate_results(dataset, results, max_detections=max_detections)
        assert_same_at(evaluator, ours)
        # The stats alone (the envelope read at maxDets[2] only; at 1 and 10 two maxDets
        # entries are that number) are the same numbers.
        matcher = cocoeval.CocoMatcher(dataset, max_detections=max_detections)
        matches = matcher.match(matcher.image_positions([r["image_id"] for r in results]),
                                matcher.category_positions([r["category_id"] for r in results]),
                                np.array([r["bbox"] for r in results]).reshape(-1, 4), [r["score"] for r in results])
        cuts = [-np.inf, 0.3, 0.7]
        for full, alone in zip(matches.evaluate(cuts), matches.evaluate(cuts, precision=False)):
            assert full.stats.tobytes() == alone.stats.tobytes() and alone.precision is None and full.f1 == alone.f1
        if max_detections == 100:
            np.testing.assert_array_equal(ours.stats, evaluator.stats)  # pycocotools' summarize itself
        elif 100 not in evaluator.params.maxDets:
            assert evaluator.stats[0] == -1  # what pycocotools' summarize (and Model Garden's log) says
            assert ours.stats[1:].tolist() == evaluator.stats[1:].tolist()


def test_more_than_100_detections_per_group_count_when_raised():
    """One image, one category: 150 ground truth boxes, each found by one detection. At 100 the
    first 100 count (recall 100/150); raised to 150, all of them (recall 1)."""
    boxes = [[float(10 * (i % 15)), float(10 * (i // 15)), 8.0, 8.0] for i in range(150)]
    dataset = {"images": [{"id": 1}], "categories": [{"id": 1}],
               "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 64.0, "iscrowd": 0}
                               for i, b in enumerate(boxes)]}
    results = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 1.0 - i / 1000} for i, b in enumerate(boxes)]
    assert round(cocoeval.evaluate_results(dataset, results).stats[8], 12) == round(100 / 150, 12)  # a mean of 10
    assert cocoeval.evaluate_results(dataset, results, max_detections=150).stats[8] == 1.0
    with pytest.raises(ValueError, match="max_detections"):
        cocoeval.evaluate_results(dataset, results, max_detections=0)
