"""The grid sweep over image ranges (`detsearch.detection.sweep.shards`) gives the one-range
sweep's result, bit for bit, and the one-range sweep is the reference's (test_sweep)."""

import numpy as np
import pytest

import detsearch.detection.sweep as sweep_module
from detsearch.detection.cache import CACHE_VERSION, CacheError, CacheMeta, DetectionCache, read_cache, write_cache
from detsearch.detection.cocoeval import CocoMatcher, concatenate_matches, load_ground_truth
from detsearch.detection.sweep import PostProcessing
from detsearch.detection.sweep.holdout import subset_cache
from detsearch.detection.sweep.shards import image_shards
from detsearch.executor import ProcessExecutor
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import outcome, random_case
from tests.detection.test_nms_v1 import CHAIN, CHAIN_SCORES

ONE_STAGE = ParamSpec(score_threshold=[0.05, 0.3, 0.6], iou_threshold=[0.3, 0.45, 0.5, 1.0])
TWO_STAGE = ParamSpec(nms_score_threshold=[0.0, 0.4], nms_iou_threshold=[0.5, 0.7], score_threshold=[0.05, 0.4],
                      iou_threshold=[0.4, 0.6])

CASES = {
    "batched": (ONE_STAGE, PostProcessing(max_detections_per_class=4, max_total_detections=6), {}),
    "v2": (ONE_STAGE, PostProcessing(nms_version="v2", pre_nms_top_k=7, max_detections_per_class=5,
                                                     max_total_detections=5), {}),
    "v2 agnostic, caps": (ONE_STAGE, PostProcessing(nms_version="v2"), {"class_agnostic": [False, True],
                                                                       "max_detections": [2, 5, 100]}),
    "v1 soft": (ONE_STAGE, PostProcessing(nms_version="v1"), {"soft_nms_sigma": [0.0, 0.5]}),
    "bfloat16 scores": (ONE_STAGE, PostProcessing(nms_version="v2", score_dtype="bfloat16"), {}),
    "per class": (ONE_STAGE, PostProcessing(), {"per_class": "f1"}),
    "two-stage": (TWO_STAGE, PostProcessing(num_proposals=5), {}),
    "two-stage v2": (TWO_STAGE, PostProcessing(nms_version="v2", num_proposals=6, max_detections_per_class=4,
                                                          max_total_detections=4), {}),
}


def chosen_of(result):
    """The chosen configuration's details (`ChosenDetails`, for the plots), as plain values."""
    chosen = result.chosen

    def curve(c):
        return c.scores.tolist(), c.true_positives.tolist(), c.counted.tolist(), c.num_ground_truth

    evaluation = chosen.evaluation
    return (evaluation.stats.tolist(), evaluation.precision.tolist(), evaluation.num_detections, curve(chosen.pooled),
            [curve(c) for c in chosen.curves], chosen.category_ids, chosen.names)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_split_of_the_images_gives_the_whole_caches_result(name, seed):
    spec, post, axes = CASES[name]
    kind = "two_stage" if "nms_score_threshold" in spec else "one_stage"
    cache, dataset = random_case(seed, kind, num_images=7, ties=seed == 2)
    # tolerance 1 chooses the fewest detections: mostly a score threshold above the grid's
    # lowest, which the chosen details must cut at.
    whole = sweep_module.sweep(cache, dataset, spec, post, tolerance=1.0, **axes)
    # The chosen details are the chosen row's configuration.
    assert tuple(whole.chosen.evaluation.stats.tolist()) == whole.best_row.stats
    assert whole.chosen.evaluation.num_detections == round(whole.best_row.dets_per_image * 7)
    for shards, executor in ((2, None), (3, None), (7, None), (3, ProcessExecutor(2))):
        sharded = sweep_module.sweep(cache, dataset, spec, post, shards=shards, executor=executor, tolerance=1.0, **axes)
        assert sharded.to_json() == whole.to_json(), shards
        assert chosen_of(sharded) == chosen_of(whole), shards
    assert sweep_module.sweep(cache, dataset, spec, post, shards=3, **axes).to_json() == sweep_module.sweep(
        cache, dataset, spec, post, **axes).to_json()


@pytest.mark.parametrize("executor", [None, ProcessExecutor(2)])
def test_settings_in_waves(monkeypatch, caplog, executor):
    import re

    import detsearch.detection.sweep.shards as shards_module

    cache, dataset = random_case(12, "two_stage", num_images=8)
    whole = sweep_module.sweep(cache, dataset, TWO_STAGE, executor=executor, shards=3)
    # Room for three settings' detections (8 images x 100) at a time: the 8 settings go in 3 waves.
    monkeypatch.setattr(shards_module, "_HELD_BYTES", 3 * 8 * 100 * shards_module._BYTES_PER_DETECTION)
    with caplog.at_level("INFO", logger=shards_module.__name__):
        assert sweep_module.sweep(cache, dataset, TWO_STAGE, executor=executor, shards=3).to_json() == whole.to_json()
    waves = [int(w) for w in re.findall(r"NMS settings x 3 image ranges, (\d+) waves", caplog.text)]
    assert waves == [3, 1]  # the grid, then the chosen setting again


def test_a_cache_read_from_a_directory_travels_as_its_path(tmp_path, monkeypatch):
    import pickle

    import detsearch.detection.sweep.shards as shards_module
    from detsearch.detection.cache import CacheKind
    from detsearch.detection.sweep.grid import Grid
    from detsearch.executor import LocalExecutor

    cache, dataset = random_case(5, "two_stage", num_images=9)
    write_cache(tmp_path / "cache", cache)
    whole = sweep_module.sweep(cache, dataset, TWO_STAGE, holdout=0.3, per_class="precision:0.5")
    assert sweep_module.sweep(tmp_path / "cache", dataset, TWO_STAGE, shards=4, holdout=0.3,
                              per_class="precision:0.5").to_json() == whole.to_json()
    assert sweep_module.sweep(str(tmp_path / "cache"), dataset, TWO_STAGE, shards=4,
                              executor=ProcessExecutor(2)).to_json() == sweep_module.sweep(cache, dataset, TWO_STAGE).to_json()
    # What a Ray worker gets: the path, not the arrays; its task reads its range from there.
    read = []
    monkeypatch.setattr(shards_module, "read_cache", lambda path, **kwargs: read.append((path, kwargs)) or read_cache(
        path, **kwargs))
    post = PostProcessing().checked(cache, TWO_STAGE)
    on_disk = read_cache(tmp_path / "cache")
    sharded = shards_module.ShardedSweep(on_disk, load_ground_truth(dataset), Grid.build(CacheKind.TWO_STAGE, TWO_STAGE, post),
                                         post, sweep_module.NmsBackend.FAST, 3, LocalExecutor(), "token")
    shipped = pickle.loads(pickle.dumps(sharded.source))
    assert shipped.cache is None and shipped.path == str(tmp_path / "cache")
    engine, _ = shipped.engine((3, 6))
    assert read == [(str(tmp_path / "cache"), {"verify": False, "images": (3, 6)})]
    assert engine.cache.meta.image_ids == on_disk.meta.image_ids[3:6]
    in_memory = shards_module.ShardedSweep(cache, load_ground_truth(dataset), sharded.grid, post,
                                           sweep_module.NmsBackend.FAST, 3, LocalExecutor(), "token")
    assert pickle.loads(pickle.dumps(in_memory.source)).cache is not None  # made in memory: sent whole
    sharded.close()


def _mixed_exactness_case():
    """Three images: random boxes, `CHAIN` (where v1's padded NMS at IoU 0.5 needs a run per
    score threshold), random boxes; one class, ground truth on some boxes of each."""
    rng = np.random.default_rng(4)
    boxes, scores, annotations = [], [], []
    for image in range(3):
        if image == 1:
            image_boxes, image_scores = CHAIN, CHAIN_SCORES
        else:
            corner = rng.uniform(0, 12, (8, 2))
            image_boxes = np.c_[corner, corner + rng.uniform(2, 8, (8, 2))].astype(np.float32)
            image_scores = rng.uniform(0.05, 1, 8).astype(np.float32)
        boxes.append(image_boxes)
        scores.append(image_scores)
        for y0, x0, y1, x1 in image_boxes[::2]:
            annotations.append({"id": len(annotations) + 1, "image_id": image + 1, "category_id": 1,
                                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                                "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0})
    counts = np.r_[0, np.cumsum([len(b) for b in boxes])]
    meta = CacheMeta(version=CACHE_VERSION, kind="one_stage", image_ids=(1, 2, 3), image_sizes=((20, 20),) * 3,
                     category_ids=(1,), score_floor=0.01)
    cache = DetectionCache.from_arrays(meta, row_offsets=counts, row_boxes=np.concatenate(boxes), entry_offsets=counts,
                                       entry_row=np.arange(counts[-1], dtype=np.int32),
                                       entry_class=np.zeros(counts[-1], np.int32), entry_score=np.concatenate(scores))
    dataset = {"images": [{"id": i, "height": 20, "width": 20} for i in (1, 2, 3)],
               "categories": [{"id": 1, "name": "a"}], "annotations": annotations}
    return cache, dataset


def test_ranges_where_only_some_need_a_run_per_threshold():
    cache, dataset = _mixed_exactness_case()
    spec = ParamSpec(score_threshold=[0.05, 0.45, 0.7], iou_threshold=[0.5, 0.6])
    post = PostProcessing(nms_version="v1")
    whole = sweep_module.sweep(cache, dataset, spec, post, max_detections=[3, 100])
    assert outcome(whole) == outcome(sweep_module.sweep_reference(cache, dataset, spec, post, max_detections=[3, 100]))
    # One range per image: the chain's range runs each threshold, the others are cut.
    sharded = sweep_module.sweep(cache, dataset, spec, post, max_detections=[3, 100], shards=3)
    assert sharded.to_json() == whole.to_json()
    assert chosen_of(sharded) == chosen_of(whole)


def test_matches_of_image_sets_concatenate_to_the_matches_of_all():
    cache, dataset = random_case(8, "one_stage", num_images=6)
    gt = load_ground_truth(dataset)
    image_ids = np.asarray(cache.meta.image_ids)
    image = np.repeat(np.arange(6), np.diff(np.asarray(cache.entry_offsets)))
    boxes = np.asarray(cache.row_boxes)[np.asarray(cache.entry_row)]
    xywh = np.c_[boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]].astype(np.float64)
    scores = np.asarray(cache.entry_score, np.float64)
    categories = np.asarray(cache.meta.category_ids)[np.asarray(cache.entry_class)]

    def matched(matcher, rows):
        return matcher.match(matcher.image_positions(image_ids[image[rows]]), matcher.category_positions(categories[rows]),
                             xywh[rows], scores[rows])

    everything = CocoMatcher(gt, image_ids=image_ids)
    expected = matched(everything, np.arange(len(scores)))
    parts, start = [], 0
    for ids in (image_ids[[4, 1]], image_ids[[0, 5, 2]], image_ids[[3]]):
        rows = np.flatnonzero(np.isin(image_ids[image], ids))
        # Give each part its rows in the order the whole input has them, and its input offset.
        part_matcher = CocoMatcher(gt, image_ids=ids)
        parts.append((matched(part_matcher, rows).detached(), everything.image_positions(part_matcher.image_ids), start))
        start += len(rows)
    order = np.concatenate([np.flatnonzero(np.isin(image_ids[image], ids))
                            for ids in (image_ids[[4, 1]], image_ids[[0, 5, 2]], image_ids[[3]])])
    merged = concatenate_matches(everything, parts)
    for name in ("image_pos", "category_pos", "rank", "scores", "true_positive", "counted", "area_out", "has_pairs"):
        assert np.array_equal(getattr(merged, name), getattr(expected, name)), name
    assert np.array_equal(order[merged.input_index], expected.input_index)
    assert [e.stats.tolist() for e in merged.evaluate([0.1, 0.5])] == [e.stats.tolist() for e in expected.evaluate([0.1, 0.5])]


def test_image_ranges_of_a_cache(tmp_path):
    cache, _ = random_case(6, "two_stage", num_images=6)
    write_cache(tmp_path / "cache", cache)
    for start, stop in ((0, 6), (2, 5), (5, 6)):
        expected = subset_cache(cache, np.arange(start, stop))
        for part in (cache.images(start, stop), read_cache(tmp_path / "cache", images=(start, stop))):
            assert part.meta == expected.meta
            for name, array in expected.arrays().items():
                assert np.array_equal(part.arrays()[name], array) and part.arrays()[name].dtype == array.dtype, name
    part = read_cache(tmp_path / "cache", verify=False, images=(1, 3))
    assert isinstance(part.entry_score, np.memmap) and part.path is None
    assert read_cache(tmp_path / "cache").path == tmp_path / "cache" and cache.path is None
    for bad in ((3, 3), (-1, 2), (0, 7)):
        with pytest.raises(ValueError, match="not a non-empty range of the cache's 6 images"):
            cache.images(*bad)
    # A range is checked as it is read: a broken score in image 4 is caught reading 3:6, not 0:3.
    scores = np.load(tmp_path / "cache" / "entry_score.npy", mmap_mode="r+")
    scores[int(cache.entry_offsets[4])] = 2.0
    scores.flush()
    del scores
    read_cache(tmp_path / "cache", verify=False, images=(0, 3))
    with pytest.raises(CacheError, match="images 3:6"):
        read_cache(tmp_path / "cache", verify=False, images=(3, 6))


def test_image_shards():
    assert image_shards(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert image_shards(2, 5) == [(0, 1), (1, 2)]
    assert image_shards(4, 1) == [(0, 4)]
