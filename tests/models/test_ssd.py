"""SSD (Model Garden RetinaNet): presets, threshold mapping, training with checkpoints and resume,
the one-stage cache, and the proof that the sweep on the cache equals re-running the model.

The exactness test trains the tiny preset for a few steps on the MNIST detection demo, records a
cache of a few val images, and for several (score_threshold, iou_threshold) settings compares the
12 COCO stats the sweep reports from the cache with pycocotools on the detections of a model that
Model Garden's factory built with those thresholds (its own batched NMS), boxes mapped back to
original pixels: they must be equal, bit for bit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from detsearch.datasets import demo
from detsearch.datasets.detection import DetectionDataset, make_tf_dataset
from detsearch.detection.boxes import yxyx_to_xywh
from detsearch.detection.cache import read_cache
from detsearch.detection.sweep import pycocotools_stats, sweep
from detsearch.params import ParamSpec
from detsearch.models import ssd
from detsearch.models.data import dataset_categories
from detsearch.models.detector import build_detector, Detector
from detsearch.models.record import padded_batch, record_cache
from detsearch.models.restore import CheckpointMismatchError, DETECTOR_FILE, latest_checkpoint, load_detector, restore_checkpoint
from detsearch.models.thresholds import apply_thresholds, MAX_NUM_DETECTIONS, read_thresholds
from detsearch.models.train import train_detector

pytestmark = [pytest.mark.tf, pytest.mark.slow]

TRAIN_STEPS = 200
NUM_VAL = 8
BATCH = 8
FLOOR = 0.01
SETTINGS = [(0.01, 0.5), (0.05, 0.5), (0.3, 0.3), (0.5, 0.7)]  # (score_threshold, iou_threshold)


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "set"
    demo.build_demo(root, num_train=TRAIN_STEPS * BATCH, num_val=NUM_VAL, image_size=128, seed=3)
    return {"train": demo.load_demo(root, "train"), "val": demo.load_demo(root, "val")}


@pytest.fixture(scope="module")
def trained(demo_set, tmp_path_factory):
    """A tiny SSD trained TRAIN_STEPS steps: (run directory, train() result)."""
    run = tmp_path_factory.mktemp("ssd") / "run"
    train = demo_set["train"]
    ids, names = dataset_categories(train)
    detector = build_detector("ssd", "tiny", ids, names, seed=0)
    result = train_detector(detector, train, run, steps=TRAIN_STEPS, batch_size=BATCH, learning_rate=0.05,
                            momentum=0.9, weight_decay=1e-4, warmup_steps=20, checkpoint_every=TRAIN_STEPS)
    return run, result


def model_garden_results(detector: Detector, dataset: DetectionDataset) -> list[dict]:
    """COCO results of ``detector.predict`` (Model Garden's post-processing) on ``dataset``."""
    results = []
    for batch in make_tf_dataset(dataset, detector.image_size, BATCH, training=False, shuffle=False).as_numpy_iterator():
        batch, count = padded_batch(batch, BATCH)
        for image_id, found in zip(batch["image_id"][:count].tolist(), detector.predict(batch)[:count]):
            for box, score, category in zip(yxyx_to_xywh(found["boxes"]), found["scores"], found["category_ids"]):
                results.append({"image_id": int(image_id), "category_id": int(category),
                                "bbox": [float(v) for v in box], "score": float(score)})
    return results


# --------------------------------------------------------------------------------------------
# configuration (no training)


def test_threshold_names_map_onto_model_garden_fields():
    config = ssd.model_config(ssd.PRESETS["tiny"], 11, {"score_threshold": 0.3, "iou_threshold": 0.6})
    assert config.detection_generator.pre_nms_score_threshold == 0.3
    assert config.detection_generator.nms_iou_threshold == 0.6
    assert config.detection_generator.nms_version == "batched"
    assert config.detection_generator.return_decoded is True
    assert config.detection_generator.max_num_detections == MAX_NUM_DETECTIONS == 100
    assert read_thresholds(config, "one_stage") == {"score_threshold": 0.3, "iou_threshold": 0.6}
    default = ssd.model_config(ssd.PRESETS["tiny"], 11)
    assert read_thresholds(default, "one_stage") == {"score_threshold": 0.05, "iou_threshold": 0.5}
    with pytest.raises(ValueError, match="nms_score_threshold"):
        apply_thresholds(default, "one_stage", {"nms_score_threshold": 0.1})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        apply_thresholds(default, "one_stage", {"iou_threshold": 1.5})
    assert default.detection_generator.pre_nms_score_threshold == 0.05  # never modified


def test_presets_build():
    tiny = ssd.build("tiny")
    assert tiny.image_size == 128 and tiny.num_classes == 11 and tiny.kind == "one_stage"
    assert 300_000 < tiny.num_parameters() < 500_000
    standard = ssd.build("standard", category_ids=range(1, 81))
    config = standard.model_config
    assert (config.input_size, config.min_level, config.max_level) == ([640, 640, 3], 3, 7)
    assert (config.backbone.resnet.model_id, config.decoder.fpn.num_filters, config.head.num_convs) == (50, 256, 4)
    assert 30_000_000 < standard.num_parameters() < 40_000_000
    with pytest.raises(ValueError, match="unknown ssd preset"):
        ssd.build("huge")


# --------------------------------------------------------------------------------------------
# training, checkpoints, resume


def test_training_lowers_the_loss_and_writes_a_run(trained):
    run, result = trained
    assert result["step"] == TRAIN_STEPS and result["resumed_from"] is None
    info = json.loads((run / DETECTOR_FILE).read_text())
    assert (info["model"], info["preset"], info["category_ids"]) == ("ssd", "tiny", list(range(1, 11)))
    assert info["hyperparameters"]["learning_rate"] == 0.05 and info["step"] == TRAIN_STEPS
    assert info["metrics"]["loss"] < 1.0  # about 1.8 at initialisation
    assert latest_checkpoint(run).endswith(f"ckpt-{TRAIN_STEPS}")


def test_resume_continues_the_same_run(demo_set, tmp_path):
    train = demo_set["train"]

    def weights_after(run, stops):
        for steps in stops:
            detector = build_detector("ssd", "tiny", range(1, 11), seed=0)
            result = train_detector(detector, train, run, steps=steps, batch_size=2, learning_rate=0.01,
                                    momentum=0.9, weight_decay=1e-3, checkpoint_every=100)
        return result, [w.copy() for w in detector.model.get_weights()]

    straight, expected = weights_after(tmp_path / "straight", [4])
    resumed, actual = weights_after(tmp_path / "resumed", [2, 4])
    assert resumed["resumed_from"].endswith("ckpt-2") and resumed["step"] == straight["step"] == 4
    # Same data order, same momentum slots and step: the resumed run is the straight one.
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)
    detector = build_detector("ssd", "tiny", range(1, 11), seed=0)
    with pytest.raises(ValueError, match="batch_size 2; resuming needs the same"):
        train_detector(detector, train, tmp_path / "resumed", steps=6, batch_size=3, learning_rate=0.01)


def test_a_checkpoint_of_another_model_is_refused_clearly(trained, demo_set):
    from detsearch.models import faster_rcnn

    run, _ = trained
    checkpoint = latest_checkpoint(run)
    other = ssd.build("tiny", category_ids=range(1, 4))  # 3 classes: other head shapes
    with pytest.raises(CheckpointMismatchError, match=r"written by ssd/tiny with 10 categories.*ssd/tiny with 3"):
        restore_checkpoint(other, checkpoint)
    frcnn = faster_rcnn.build("tiny")
    with pytest.raises(CheckpointMismatchError, match="does not fit the model faster_rcnn/tiny"):
        restore_checkpoint(frcnn, checkpoint)
    with pytest.raises(ValueError, match="holds a run of ssd/tiny"):
        train_detector(frcnn, demo_set["train"], run, steps=1, batch_size=1, learning_rate=0.01)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        restore_checkpoint(other, str(run / "checkpoints" / "ckpt-999"))


# --------------------------------------------------------------------------------------------
# the cache, and the sweep on it against a re-run of the model


@pytest.fixture(scope="module")
def recorded(trained, demo_set, tmp_path_factory):
    run, _ = trained
    detector, checkpoint = load_detector(run)
    path = tmp_path_factory.mktemp("cache") / "ssd_val"
    cache = record_cache(detector, demo_set["val"], path, score_floor=FLOOR, batch_size=BATCH,
                         images_per_shard=5, source={"checkpoint": checkpoint})
    return detector, cache, path


def test_cache_holds_every_candidate_above_the_floor(recorded, demo_set):
    detector, cache, path = recorded
    val = demo_set["val"]
    assert cache.meta.kind == "one_stage" and cache.meta.score_floor == FLOOR
    assert list(cache.meta.image_ids) == [e.image_id for e in val.examples]
    assert list(cache.meta.category_ids) == list(range(1, 11))
    assert cache.meta.source["model"] == "ssd" and cache.meta.source["preset"] == "tiny"
    assert read_cache(path).meta == cache.meta  # merged from two shards, reads back
    batch = next(make_tf_dataset(val, 128, NUM_VAL, training=False, shuffle=False).as_numpy_iterator())
    raw = detector.raw_outputs(batch)
    for i in range(NUM_VAL):
        scores = raw["scores"][i]
        rows = slice(cache.row_offsets[i], cache.row_offsets[i + 1])
        entries = slice(cache.entry_offsets[i], cache.entry_offsets[i + 1])
        anchors, classes = np.nonzero(scores >= np.float32(FLOOR))
        assert cache.entry_score[entries].size == anchors.size > 0
        np.testing.assert_array_equal(cache.entry_score[entries], scores[anchors, classes])
        np.testing.assert_array_equal(cache.entry_class[entries], classes)
        used = np.unique(anchors)
        # The demo images are 128 px: scale 1, boxes unchanged.
        np.testing.assert_array_equal(cache.row_boxes[rows], raw["boxes"][i][used])


def test_sweep_equals_running_model_garden_with_each_setting(trained, recorded, demo_set):
    run, _ = trained
    _, cache, _ = recorded
    val = demo_set["val"]
    ground_truth = val.to_coco_json()
    image_ids = [e.image_id for e in val.examples]
    grid = ParamSpec(score_threshold=sorted({s for s, _ in SETTINGS}), iou_threshold=sorted({i for _, i in SETTINGS}))
    table = {(row.params["score_threshold"], row.params["iou_threshold"]): row for row in sweep(cache, ground_truth, grid).table}
    maps = []
    for score_threshold, iou_threshold in SETTINGS:
        detector, _ = load_detector(run, thresholds={"score_threshold": score_threshold,
                                                            "iou_threshold": iou_threshold})
        results = model_garden_results(detector, val)
        expected = pycocotools_stats(ground_truth, results, image_ids)
        row = table[(score_threshold, iou_threshold)]
        assert row.dets_per_image * len(image_ids) == len(results)
        assert tuple(row.stats) == expected, (score_threshold, iou_threshold)
        maps.append(expected[0])
    assert max(maps) > 0.02  # non-trivial detections, not an empty comparison
    assert len(set(maps)) > 1  # the settings matter


def load_tool(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tools_train_then_record_a_cache_resumably(demo_set, tmp_path, capsys):
    root = demo_set["train"].image_dir.parent
    run, cache = tmp_path / "run", tmp_path / "cache"
    train_det, cache_det = load_tool("train_det"), load_tool("cache_det")
    assert train_det.main(["--model", "ssd", "--dataset", "demo", "--data_dir", str(root), "--max_images", "16",
                           "--out", str(run), "--steps", "2", "--batch_size", "4", "--log_every", "0"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    arguments = ["--run", str(run), "--dataset", "demo", "--data_dir", str(root), "--split", "val",
                 "--out", str(cache), "--images_per_shard", "3", "--score_floor", "0.005"]
    assert cache_det.main(arguments) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["kind"], summary["images"]) == ("one_stage", NUM_VAL)
    first = read_cache(cache)
    assert first.meta.source["checkpoint"].endswith("ckpt-2")
    # Again: every shard is kept (none recorded), the merge gives the same cache.
    assert cache_det.main(arguments) == 0
    again = read_cache(cache)
    assert again.meta == first.meta
    np.testing.assert_array_equal(again.entry_score, first.entry_score)
    # Other settings do not mix with the committed shards.
    assert cache_det.main([*arguments[:-1], "0.01"]) == 1
    assert "recorded with other settings" in capsys.readouterr().err
