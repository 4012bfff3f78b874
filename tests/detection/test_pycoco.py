"""The pycocotools oracle: the same stats from a dict or a `GroundTruth`, inputs left alone."""

import copy
import json
from pathlib import Path

from detsearch.detection import cocoeval, pycoco

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_val2014_100"


def test_dict_and_ground_truth_give_the_known_answer_and_inputs_stay():
    dataset = json.loads((DATA / "instances_val2014_100.json").read_text())
    results = json.loads((DATA / "instances_val2014_fakebbox100_results.json").read_text())
    dataset_before, results_before = copy.deepcopy(dataset), copy.deepcopy(results)
    from_dict = pycoco.pycocotools_stats(dataset, results)
    image_ids = [image["id"] for image in dataset["images"]]
    from_ground_truth = pycoco.pycocotools_stats(cocoeval.load_ground_truth(dataset), results, image_ids)
    assert from_dict == from_ground_truth
    assert round(from_dict[0], 3) == 0.505  # the COCO API demo's AP on these detections
    assert dataset == dataset_before and results == results_before
    assert from_dict == tuple(cocoeval.evaluate_results(dataset, results).stats)


def test_no_detections_and_f1():
    dataset = json.loads((DATA / "instances_val2014_100.json").read_text())
    coco_gt = pycoco.coco_ground_truth(dataset)
    empty = pycoco.pycocotools_eval(coco_gt, pycoco.load_results(coco_gt, []))
    assert all(value in (0.0, -1.0) for value in empty.stats)
    assert pycoco.pycocotools_f1(empty) == (0.0, 0.0, None)
    results = json.loads((DATA / "instances_val2014_fakebbox100_results.json").read_text())
    f1, best, best_score = pycoco.pycocotools_f1(pycoco.pycocotools_eval(coco_gt, pycoco.load_results(coco_gt, results)))
    assert 0.0 < f1 <= best <= 1.0 and best_score is not None
