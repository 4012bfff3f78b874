"""Faster R-CNN (Model Garden Mask R-CNN without masks): presets, threshold mapping, training, the
two-stage cache, and the proof that the sweep on the cache equals re-running the model.

The exactness test trains the tiny preset for a few steps on the MNIST detection demo, records a
cache of a few val images (every anchor's proposal before first-stage NMS, the second stage on
each), and for several (nms_score_threshold, nms_iou_threshold, score_threshold, iou_threshold)
settings compares the 12 COCO stats the sweep reports from the cache with pycocotools on the
detections of a model that Model Garden's factory built with those thresholds (its own
first-stage NMS, ROI align, box head and batched NMS), boxes mapped back to original pixels: they
must be equal, bit for bit. The one way Model Garden's output can differ (its all-zero padding
ROIs, docs/models.md) is shown by its own test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from detsearch.datasets import demo
from detsearch.datasets.detection import DetectionDataset, make_tf_dataset
from detsearch.detection.boxes import yxyx_to_xywh
from detsearch.detection.sweep import pycocotools_stats, sweep
from detsearch.params import ParamSpec
from detsearch.models import faster_rcnn
from detsearch.models.data import dataset_categories
from detsearch.models.detector import build_detector, Detector
from detsearch.models.record import padded_batch, record_cache
from detsearch.models.restore import DETECTOR_FILE, load_detector
from detsearch.models.thresholds import read_thresholds
from detsearch.models.train import train_detector

pytestmark = [pytest.mark.tf, pytest.mark.slow]

TRAIN_STEPS = 150
NUM_VAL = 8
BATCH = 8
FLOOR = 0.01
NAMES = ("nms_score_threshold", "nms_iou_threshold", "score_threshold", "iou_threshold")
SETTINGS = [  # Model Garden's defaults, then one change at a time, then all at once.
    (0.0, 0.7, 0.05, 0.5),
    (0.5, 0.7, 0.05, 0.5),
    (0.0, 0.5, 0.05, 0.5),
    (0.0, 0.7, 0.3, 0.5),
    (0.0, 0.7, 0.05, 0.3),
    (0.9, 0.3, 0.01, 0.7),
]


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "set"
    demo.build_demo(root, num_train=TRAIN_STEPS * BATCH, num_val=NUM_VAL, image_size=128, seed=5)
    return {"train": demo.load_demo(root, "train"), "val": demo.load_demo(root, "val")}


@pytest.fixture(scope="module")
def trained(demo_set, tmp_path_factory):
    """A tiny Faster R-CNN trained TRAIN_STEPS steps: (run directory, train() result)."""
    run = tmp_path_factory.mktemp("frcnn") / "run"
    train = demo_set["train"]
    ids, names = dataset_categories(train)
    detector = build_detector("faster_rcnn", "tiny", ids, names, seed=0)
    result = train_detector(detector, train, run, steps=TRAIN_STEPS, batch_size=BATCH, learning_rate=0.04,
                            momentum=0.9, weight_decay=1e-4, warmup_steps=20, checkpoint_every=TRAIN_STEPS)
    return run, result


def model_garden_detections(detector: Detector, dataset: DetectionDataset) -> list[tuple[int, dict]]:
    """``(image_id, detector.predict(...) of that image)`` over ``dataset``."""
    found = []
    for batch in make_tf_dataset(dataset, detector.image_size, BATCH, training=False, shuffle=False).as_numpy_iterator():
        batch, count = padded_batch(batch, BATCH)
        found.extend(zip(batch["image_id"][:count].tolist(), detector.predict(batch)[:count]))
    return found


def tied_first_stage_scores(cache, setting) -> int:
    """Equal objectness values among the proposals the sweep's first stage keeps (all images).

    Where tied candidates compete, TensorFlow's NMS kernel and the sweep may order them
    differently (docs/models.md, "Where a re-run can differ"): the first thing to look at when
    the comparison fails.
    """
    from detsearch.detection import nms

    ties = 0
    for i in range(len(cache.meta.image_ids)):
        rows = slice(int(cache.row_offsets[i]), int(cache.row_offsets[i + 1]))
        kept = nms.class_agnostic_nms_tf(
            cache.row_boxes[rows], cache.row_objectness[rows], iou_threshold=setting[1], score_threshold=setting[0],
            max_output_size=cache.meta.num_proposals, levels=cache.row_level[rows])
        scores = np.asarray(cache.row_objectness[rows])[kept]
        ties += scores.size - np.unique(scores).size
    return ties


def coco_results(detections: list[tuple[int, dict]]) -> list[dict]:
    return [
        {"image_id": int(image_id), "category_id": int(category), "bbox": [float(v) for v in box], "score": float(score)}
        for image_id, found in detections
        for box, score, category in zip(yxyx_to_xywh(found["boxes"]), found["scores"], found["category_ids"])
    ]


# --------------------------------------------------------------------------------------------
# configuration (no training)


def test_threshold_names_map_onto_model_garden_fields():
    preset = faster_rcnn.PRESETS["tiny"]
    values = dict(zip(NAMES, (0.2, 0.6, 0.3, 0.4)))
    config = faster_rcnn.model_config(preset, 11, values)
    assert config.roi_generator.test_pre_nms_score_threshold == 0.2
    assert config.roi_generator.test_nms_iou_threshold == 0.6
    assert config.detection_generator.pre_nms_score_threshold == 0.3
    assert config.detection_generator.nms_iou_threshold == 0.4
    assert config.roi_generator.use_batched_nms is True and config.detection_generator.nms_version == "batched"
    assert config.roi_generator.test_num_proposals == preset.test_num_proposals
    assert config.include_mask is False and config.mask_head is None
    assert read_thresholds(config, "two_stage") == values
    default = read_thresholds(faster_rcnn.model_config(preset, 11), "two_stage")
    assert default == dict(zip(NAMES, (0.0, 0.7, 0.05, 0.5)))  # Model Garden's defaults
    with pytest.raises(ValueError, match="test_pre_nms_top_k"):
        faster_rcnn.FasterRcnnPreset(**{**preset.__dict__, "test_pre_nms_top_k": 100})


def test_presets_build():
    tiny = faster_rcnn.build("tiny")
    assert tiny.image_size == 128 and tiny.num_classes == 11 and tiny.kind == "two_stage"
    assert 400_000 < tiny.num_parameters() < 800_000
    assert tiny.proposals_per_level() == {"2": 3072, "3": 768, "4": 192, "5": 48}  # every anchor
    assert tiny.cache_meta() == {"top_k": None, "num_proposals": 300}
    standard = faster_rcnn.build("standard", category_ids=range(1, 81))
    config = standard.model_config
    assert (config.input_size, config.min_level, config.max_level) == ([1024, 1024, 3], 2, 6)
    assert (config.backbone.resnet.model_id, config.decoder.fpn.num_filters) == (50, 256)
    assert config.roi_generator.test_num_proposals == 1000
    assert 35_000_000 < standard.num_parameters() < 50_000_000
    assert standard.cache_meta() == {"top_k": 4000 * 3 + 3072 + 768, "num_proposals": 1000}


# --------------------------------------------------------------------------------------------
# training and the cache


def test_training_lowers_the_loss(trained):
    run, result = trained
    assert result["step"] == TRAIN_STEPS
    assert set(result["metrics"]) >= {"rpn_score_loss", "rpn_box_loss", "frcnn_cls_loss", "frcnn_box_loss", "l2_loss"}
    assert result["metrics"]["loss"] < 1.5  # about 3.7 at initialisation
    info = json.loads((run / DETECTOR_FILE).read_text())
    assert (info["model"], info["preset"], info["step"]) == ("faster_rcnn", "tiny", TRAIN_STEPS)


@pytest.fixture(scope="module")
def recorded(trained, demo_set, tmp_path_factory):
    run, _ = trained
    detector, checkpoint = load_detector(run)
    path = tmp_path_factory.mktemp("cache") / "frcnn_val"
    cache = record_cache(detector, demo_set["val"], path, score_floor=FLOOR, batch_size=BATCH,
                         images_per_shard=4, source={"checkpoint": checkpoint})
    return detector, cache


def test_cache_holds_every_proposal_and_its_second_stage(recorded, demo_set):
    detector, cache = recorded
    val = demo_set["val"]
    assert cache.meta.kind == "two_stage" and cache.meta.num_proposals == 300 and cache.meta.top_k is None
    assert list(cache.meta.image_ids) == [e.image_id for e in val.examples]
    batch = next(make_tf_dataset(val, 128, NUM_VAL, training=False, shuffle=False).as_numpy_iterator())
    raw = detector.raw_outputs(batch)
    level_sizes = detector.proposals_per_level()
    for i in range(NUM_VAL):
        rows = slice(cache.row_offsets[i], cache.row_offsets[i + 1])
        assert rows.stop - rows.start == sum(level_sizes.values()) == 4080
        levels = cache.row_level[rows]
        np.testing.assert_array_equal(levels, np.repeat([2, 3, 4, 5], [3072, 768, 192, 48]))
        objectness = cache.row_objectness[rows]
        for level in (2, 3, 4, 5):  # each level by descending objectness (Model Garden's top-k)
            assert (np.diff(objectness[levels == level]) <= 0).all()
        np.testing.assert_array_equal(cache.row_boxes[rows], raw["rois"][i])  # 128 px: scale 1
        entries = slice(cache.entry_offsets[i], cache.entry_offsets[i + 1])
        proposals, classes = np.nonzero(raw["scores"][i] >= np.float32(FLOOR))
        np.testing.assert_array_equal(cache.entry_row[entries] - rows.start, proposals)
        np.testing.assert_array_equal(cache.entry_class[entries], classes)
        np.testing.assert_array_equal(cache.entry_score[entries], raw["scores"][i][proposals, classes])
        np.testing.assert_array_equal(cache.entry_boxes[entries], raw["boxes"][i][proposals, classes])
    assert cache.entry_score.size > 0


def test_a_cache_for_declared_first_stage_settings_sweeps_the_same_numbers(trained, recorded, demo_set, tmp_path):
    """The second stage only on the proposals the declared first-stage settings can keep: every
    such setting gives the full cache's numbers bit for bit; others are refused."""
    run, _ = trained
    _, full = recorded
    detector, _ = load_detector(run)
    ious = sorted({setting[1] for setting in SETTINGS})
    narrowed = record_cache(detector, demo_set["val"], tmp_path / "narrowed", score_floor=FLOOR,
                            batch_size=BATCH, images_per_shard=4, first_stage=(ious, 0.0))
    assert narrowed.meta.first_stage_iou_thresholds == tuple(ious) and narrowed.meta.first_stage_min_score == 0.0
    np.testing.assert_array_equal(narrowed.row_boxes, full.row_boxes)
    np.testing.assert_array_equal(narrowed.row_objectness, full.row_objectness)
    # at most num_proposals rows per image and declared setting reach the second stage
    rows_with_entries = [len(np.unique(narrowed.entry_row[narrowed.entry_offsets[i]:narrowed.entry_offsets[i + 1]]))
                         for i in range(NUM_VAL)]
    assert max(rows_with_entries) <= 300 * len(ious) and narrowed.entry_score.size < full.entry_score.size / 3
    ground_truth = demo_set["val"].to_coco_json()
    grid = ParamSpec(nms_score_threshold=[0.0, 0.5], nms_iou_threshold=ious, score_threshold=[0.05, 0.3],
                     iou_threshold=[0.3, 0.5])
    assert sweep(narrowed, ground_truth, grid).table == sweep(full, ground_truth, grid).table
    with pytest.raises(ValueError, match="nms_iou_threshold 0.6: the cache's second stage was recorded"):
        sweep(narrowed, ground_truth, grid.replace(nms_iou_threshold=[0.6]))
    with pytest.raises(ValueError, match="nms_iou_threshold 0 is not swept"):
        sweep(full, ground_truth, grid.replace(nms_iou_threshold=[0.0, 0.5]))
    # a committed shard of other first-stage settings is not mixed in
    with pytest.raises(ValueError, match="recorded with other settings"):
        record_cache(detector, demo_set["val"], tmp_path / "narrowed", score_floor=FLOOR, batch_size=BATCH,
                     images_per_shard=4, first_stage=([0.5], 0.0))


# --------------------------------------------------------------------------------------------
# the sweep on the cache against a re-run of the model


def test_sweep_equals_running_model_garden_with_each_setting(trained, recorded, demo_set):
    run, _ = trained
    detector, cache = recorded
    val = demo_set["val"]
    ground_truth = val.to_coco_json()
    image_ids = [e.image_id for e in val.examples]
    grid = ParamSpec(**{name: sorted({setting[k] for setting in SETTINGS}) for k, name in enumerate(NAMES)})
    table = {tuple(row.params[name] for name in NAMES): row for row in sweep(cache, ground_truth, grid).table}
    # Model Garden fills its first-stage output up to test_num_proposals with all-zero ROIs; their
    # detections would differ from the sweep's, unless they score no higher than score_threshold.
    assert detector.max_padding_score <= min(setting[2] for setting in SETTINGS)
    maps, counts = [], []
    for setting in SETTINGS:
        model, _ = load_detector(run, thresholds=dict(zip(NAMES, setting)))
        detections = model_garden_detections(model, val)
        results = coco_results(detections)
        expected = pycocotools_stats(ground_truth, results, image_ids)
        row = table[setting]
        assert row.dets_per_image * len(image_ids) == len(results), (setting, tied_first_stage_scores(cache, setting))
        assert tuple(row.stats) == expected, (setting, tied_first_stage_scores(cache, setting))
        maps.append(expected[0])
        counts.append(len(results))
    assert max(maps) > 0.02  # non-trivial detections, not an empty comparison
    assert len(set(maps)) > 2 and len(set(counts)) > 2  # the settings matter


def test_model_garden_pads_missing_proposals_with_zero_rois(demo_set):
    # When no proposal survives the first stage (objectness > 1.0 is impossible), Model Garden
    # still runs the box head on test_num_proposals all-zero ROIs. With untrained weights their
    # class scores (about 1/11) pass score_threshold, and each class gives zero-area boxes at
    # the origin that no NMS suppresses: 100 detections per image where the sweep, which only
    # selects recorded proposals, has none.
    detector = faster_rcnn.build("tiny", thresholds={"nms_score_threshold": 1.0}, seed=1)
    batch = next(make_tf_dataset(demo_set["val"], 128, NUM_VAL, training=False, shuffle=False).as_numpy_iterator())
    padding_scores = detector.raw_outputs(batch)["padding_scores"]
    for i, found in enumerate(detector.predict(batch)):
        assert found["boxes"].shape == (100, 4) and not found["boxes"].any()
        np.testing.assert_array_equal(found["scores"], np.full(100, padding_scores[i].max(), np.float32))
        assert padding_scores[i].max() > detector.thresholds["score_threshold"]
