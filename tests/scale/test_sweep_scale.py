"""The sweep on Ray tasks gives the in-process table, row for row, bit for bit: one task per NMS
setting and range of images, each reading its range from the cache's directory."""

from pathlib import Path

import pytest

from detsearch.detection import cache as cache_module
from detsearch.detection.sweep import PostProcessing, sweep
from detsearch.executor import ProcessExecutor
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import random_case, table_dicts

pytestmark = pytest.mark.tf  # with the full install, which has the ray extra

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_val2014_100"


def test_one_stage_coco_fixture(ray_executor):
    annotations = DATA / "instances_val2014_100.json"
    cache = cache_module.import_coco_detections(DATA / "instances_val2014_fakebbox100_results.json", annotations)
    spec = ParamSpec(score_threshold=[0.0, 0.05, 0.3, 0.5], iou_threshold=[0.3, 0.5, 0.7, 1.0])
    calls = []
    on_ray = sweep(cache, annotations, spec, executor=ray_executor, progress=lambda done, total: calls.append((done, total)))
    local = sweep(cache, annotations, spec)
    assert table_dicts(on_ray) == table_dicts(local)
    assert on_ray.to_json() == local.to_json()
    assert len(on_ray.table) == 16
    assert sorted(done for done, _ in calls) == [1, 2, 3, 4] and {total for _, total in calls} == {4}


def test_ranges_read_from_the_cache_directory_on_ray(ray_executor, tmp_path):
    cache, dataset = random_case(31, "one_stage", num_images=11)
    cache_module.write_cache(tmp_path / "cache", cache)
    spec = ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.3, 0.5, 0.75])
    for post, axes in ((PostProcessing(nms_version="v2"), {"max_detections": [3, 100]}),
                       (PostProcessing(nms_version="v1"), {"soft_nms_sigma": [0.0, 0.5]})):
        local = sweep(cache, dataset, spec, post, per_class="f1", **axes)
        for shards in (None, 5):  # None: twice the cluster's 2 CPUs
            on_ray = sweep(tmp_path / "cache", dataset, spec, post, per_class="f1", executor=ray_executor, shards=shards,
                           **axes)
            assert on_ray.to_json() == local.to_json()


def test_two_stage_random_cache(ray_executor):
    cache, dataset = random_case(29, "two_stage", num_images=6)
    spec = ParamSpec(nms_score_threshold=[0.0, 0.4], nms_iou_threshold=[0.5, 0.7], score_threshold=[0.05, 0.4],
                     iou_threshold=[0.4, 0.6])
    on_ray = sweep(cache, dataset, spec, executor=ray_executor, shards=3)
    assert on_ray.to_json() == sweep(cache, dataset, spec).to_json()
    assert on_ray.to_json() == sweep(cache, dataset, spec, executor=ProcessExecutor(2)).to_json()


def test_executor_by_name_and_bad_combinations(ray_executor):
    cache, dataset = random_case(3, "one_stage", num_images=4)
    spec = ParamSpec(score_threshold=[0.05, 0.4], iou_threshold=[0.3, 0.6])
    # "ray" joins the cluster this process already started.
    assert sweep(cache, dataset, spec, executor="ray").to_json() == sweep(cache, dataset, spec, executor="local").to_json()
    with pytest.raises(ValueError, match="coordinate"):
        sweep(cache, dataset, spec, executor=ray_executor, strategy="coordinate")
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        sweep(cache, dataset, spec, executor="dask")


def test_command_line(ray_executor, tmp_path):
    from detsearch import cli

    arguments = ["sweep", "--detections", str(DATA / "instances_val2014_fakebbox100_results.json"),
                 "--annotations", str(DATA / "instances_val2014_100.json"), "--score-thresholds", "0.05,0.3",
                 "--iou-thresholds", "0.5,0.6", "--no-progress"]
    assert cli.main(arguments + ["--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert cli.main(arguments + ["--out", str(tmp_path / "local")]) == 0
    assert (tmp_path / "ray" / "result.json").read_bytes() == (tmp_path / "local" / "result.json").read_bytes()
    assert cli.main(arguments + ["--out", str(tmp_path / "bad"), "--ray-address", "auto"]) == 2


def test_a_stopped_sweep_on_ray_resumes_from_its_journal(ray_executor, tmp_path):
    from tests.detection.test_sweep_journal import run_in_two

    cache, dataset = random_case(33, "two_stage", num_images=6)
    cache_module.write_cache(tmp_path / "cache", cache)
    spec = ParamSpec(nms_score_threshold=[0.0, 0.4], nms_iou_threshold=[0.5, 0.7], score_threshold=[0.05, 0.4],
                     iou_threshold=[0.4, 0.6])
    result, again = run_in_two(tmp_path / "cache", dataset, spec, None, tmp_path / "journal", 3,
                               executor=ray_executor, shards=3)
    assert result.to_json() == sweep(cache, dataset, spec).to_json()
    assert again[0] == (3, 8) and [done for done, _ in again[1:]] == [4, 5, 6, 7, 8]
