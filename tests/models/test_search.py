"""HyperSelector for detectors: the detection trainer's contract, the one-ParamSpec flow
(selector, final training, cache, sweep) with its resume, and the export with chosen thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from detsearch.datasets import demo
from detsearch.datasets.detection import make_tf_dataset
from detsearch.params import ParamSpec
from detsearch.selector import SelectorConfig
from detsearch.selector.curves import LrSchedule, TrialSpec
from detsearch.models.detector import build_detector
from detsearch.models.export import export_detector
from detsearch.models.restore import checkpoint_layout, CheckpointMismatchError, DETECTOR_FILE, load_detector, restore_checkpoint
from detsearch.models.search import ACC_NAME, DetectionTrainer, search_detector

pytestmark = [pytest.mark.tf, pytest.mark.slow]

BATCH = 4


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "set"
    demo.build_demo(root, num_train=48, num_val=12, image_size=128, seed=5)
    return {"train": demo.load_demo(root, "train"), "val": demo.load_demo(root, "val")}


@pytest.fixture(scope="module")
def trainer(demo_set):
    return DetectionTrainer("ssd", "tiny", demo_set["train"], val_set=demo_set["val"], batch_size=BATCH,
                            eval_images=8, evaluation_total_steps=2)


def trial(learning_rate, steps=8, momentum=0.9, weight_decay=1e-4, end=None):
    schedule = LrSchedule(start=learning_rate, end=end, steps=steps, warmup_steps=2, warmup_lr=1e-3)
    return TrialSpec(schedule, momentum, weight_decay, 4, name=f"lr={learning_rate:g}")


def test_trials_are_repeatable_and_follow_their_hyperparameters(trainer):
    spec = trial(0.02, momentum=0.8, weight_decay=1e-3, end=0.2)
    first = trainer.run(spec)
    # the last step ran at the schedule's last learning rate, with the trial's momentum and decay
    assert float(trainer.loop.learning_rate.numpy()) == pytest.approx(spec.schedule.values()[-1], rel=1e-6)
    assert float(trainer.loop.momentum.numpy()) == pytest.approx(0.8)
    assert float(trainer.loop.weight_decay.numpy()) == pytest.approx(1e-3)
    assert int(trainer.loop.step_count.numpy()) == 10
    other = trainer.run(trial(0.002))
    again = trainer.run(spec)
    assert trainer.metric_names() == ("loss", ACC_NAME)
    assert list(first.steps) == [4, 8] and first.steps_run == 10
    for name in ("loss", ACC_NAME):
        np.testing.assert_array_equal(first.metric(name), again.metric(name))
    assert np.all((first.metric(ACC_NAME) >= 0) & (first.metric(ACC_NAME) <= 1))
    assert not np.array_equal(first.metric("loss"), other.metric("loss"))


def test_fingerprint_follows_initial_weights_and_data(trainer, demo_set):
    assert trainer.fingerprint() == trainer.fingerprint()
    other_seed = DetectionTrainer("ssd", "tiny", demo_set["train"], val_set=demo_set["val"], batch_size=BATCH,
                                  eval_images=8, evaluation_total_steps=2, seed=1)
    assert other_seed.fingerprint() != trainer.fingerprint()


CONFIG = SelectorConfig(total_steps=8, by_acc=False, acc_name="AP", loss_name="loss", window=2, warmup_steps=2,
                        warmup_lr=1e-3, evaluate_every_n_steps=4, init_learning_rate=1e-3, end_learning_rate=1.0)
PARAM_SPEC = ParamSpec(momentum=0.9, weight_decay=1e-4)
LIST_SPEC = ParamSpec(weight_decay=[1e-4, 1e-3], momentum=[0.8, 0.9], score_threshold=[0.05, 0.3],
                      iou_threshold=[0.4, 0.5])
FINAL_STEPS = 12


def run_search(demo_set, out, **callbacks):
    return search_detector("ssd", "tiny", demo_set["train"], demo_set["val"], out, param_spec=PARAM_SPEC,
                           param_list_spec=LIST_SPEC, config=CONFIG, final_steps=FINAL_STEPS, batch_size=BATCH,
                           evaluation_total_steps=2, **callbacks)


@pytest.fixture(scope="module")
def searched(demo_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    return out, run_search(demo_set, out)


def test_one_param_spec_drives_selector_training_and_sweep(searched):
    out, result = searched
    spec = result.param_spec
    assert spec.names() == ("learning_rate", "momentum", "weight_decay", "score_threshold", "iou_threshold")
    selection = result.selection
    # range test + 2 weight decays + 2 momenta; momentum 0.9 at the chosen weight decay is the
    # weight-decay stage's trial again (same schedule), taken from the journal
    assert selection.trials_run == 4 and selection.trials_reused == 1
    assert [s.name for s in selection.stages] == ["weight_decay", "momentum"]
    for name in ("learning_rate", "momentum", "weight_decay"):
        assert getattr(spec, name) == getattr(selection.param_spec, name)
    assert {k: getattr(spec, k) for k in result.sweep.best_params} == result.sweep.best_params
    # the sweep saw the listed thresholds plus Model Garden's defaults
    assert sorted({row.params["iou_threshold"] for row in result.sweep.table}) == [0.4, 0.5]
    assert result.default_thresholds == {"score_threshold": 0.05, "iou_threshold": 0.5}
    # the final model was trained with the selector's choice
    info = json.loads((out / "train" / DETECTOR_FILE).read_text())
    assert info["step"] == FINAL_STEPS + CONFIG.warmup_steps
    hyper = info["hyperparameters"]
    assert (hyper["learning_rate"], hyper["momentum"], hyper["weight_decay"]) == (
        spec.learning_rate, spec.momentum, spec.weight_decay)
    # the 4 distinct trials (the shared one counts once)
    assert result.steps == {"selector": 4 * (CONFIG.total_steps + CONFIG.warmup_steps), "final": FINAL_STEPS}


def test_a_rerun_reuses_every_trial_and_the_trained_model(searched, demo_set):
    out, first = searched
    trained_steps = []
    again = run_search(demo_set, out, on_train_step=lambda step, metrics: trained_steps.append(step))
    assert again.selection.trials_run == 0 and again.selection.trials_reused == 5
    assert trained_steps == []
    assert again.param_spec == first.param_spec
    assert again.sweep.table == first.sweep.table


def test_fine_tuning_starts_every_trial_from_the_checkpoint(searched, demo_set):
    out, result = searched
    tuned = DetectionTrainer("ssd", "tiny", demo_set["train"], batch_size=BATCH, checkpoint_path=out / "train")
    loaded, _ = load_detector(out / "train")
    tuned.run(trial(0.01))
    tuned.reset()
    for mine, theirs in zip(tuned.detector.model.variables, loaded.model.variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert tuned.fingerprint() != DetectionTrainer("ssd", "tiny", demo_set["train"], batch_size=BATCH).fingerprint()


def test_export_runs_the_chosen_thresholds(searched, demo_set, tmp_path):
    import tensorflow as tf

    out, result = searched
    thresholds = {"score_threshold": 0.3, "iou_threshold": 0.4}
    detector, _ = load_detector(out / "train", thresholds=thresholds)
    path = export_detector(detector, tmp_path / "export")
    assert json.loads((path / "detector.json").read_text())["thresholds"] == thresholds
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    default, _ = load_detector(out / "train")
    batch = next(make_tf_dataset(demo_set["val"], detector.image_size, BATCH, training=False,
                                 shuffle=False).as_numpy_iterator())
    outputs = serve(images=tf.constant(batch["image"]), original_size=tf.constant(batch["original_size"], tf.int32))
    outputs = {k: v.numpy() for k, v in outputs.items()}
    expected = detector.predict(batch)
    for i, found in enumerate(expected):
        n = int(outputs["num_detections"][i])
        assert n == len(found["scores"])
        np.testing.assert_array_equal(outputs["detection_boxes"][i, :n], found["boxes"])
        np.testing.assert_array_equal(outputs["detection_scores"][i, :n], found["scores"])
        np.testing.assert_array_equal(outputs["detection_category_ids"][i, :n], found["category_ids"])
        assert np.all(found["scores"] > 0.3)
    # Model Garden's default thresholds give other detections: the export did not run them
    assert any(not np.array_equal(d["scores"], e["scores"]) for d, e in zip(default.predict(batch), expected))


def test_detsearch_train_takes_the_chosen_params_and_exports_them(demo_set, tmp_path, capsys):
    from detsearch import cli

    root = demo_set["train"].image_dir.parent
    params = tmp_path / "summary.json"
    params.write_text(json.dumps({"selected": {"learning_rate": 0.01, "momentum": 0.8, "weight_decay": 1e-3,
                                               "score_threshold": 0.3, "iou_threshold": 0.4}}))
    arguments = ["--model", "ssd", "--dataset", "demo", "--data_dir", str(root), "--max_images", "8",
                 "--steps", "2", "--batch_size", "4", "--log_every", "0", "--warmup_steps", "0"]
    assert cli.main(["train", *arguments, "--out", str(tmp_path / "run"), "--params", str(params),
                     "--export", str(tmp_path / "export")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["thresholds"] == {"score_threshold": 0.3, "iou_threshold": 0.4}
    assert json.loads((tmp_path / "export" / "detector.json").read_text())["thresholds"] == summary["thresholds"]
    hyper = json.loads((tmp_path / "run" / DETECTOR_FILE).read_text())["hyperparameters"]
    assert (hyper["learning_rate"], hyper["momentum"], hyper["weight_decay"]) == (0.01, 0.8, 1e-3)
    # a list is not a choice: one line, no run directory
    params.write_text(json.dumps({"learning_rate": 0.01, "score_threshold": [0.05, 0.3]}))
    assert cli.main(["train", *arguments, "--out", str(tmp_path / "other"), "--params", str(params)]) == 1
    error = capsys.readouterr().err.strip()
    assert "score_threshold must be one value" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_model_garden_module_checkpoints_restore_what_they_hold(searched, demo_set, tmp_path):
    """Model Garden's published checkpoints hold modules at the top (``backbone/...``: an
    ImageNet backbone; ``backbone``, ``decoder``, ``head``: a whole detector), not ``model/...``."""
    import tensorflow as tf

    out, _ = searched
    trained, _ = load_detector(out / "train")
    items = trained.model.checkpoint_items
    backbone = tf.train.Checkpoint(backbone=items["backbone"]).write(str(tmp_path / "backbone"))
    whole = tf.train.Checkpoint(**items).write(str(tmp_path / "whole"))
    assert checkpoint_layout(backbone) == ("backbone",)
    assert checkpoint_layout(whole) == ("backbone", "decoder", "head")

    fresh = build_detector("ssd", "tiny", trained.category_ids, seed=3)
    head_before = [v.numpy() for v in fresh.model.head.variables]
    assert restore_checkpoint(fresh, backbone) == ("backbone",)
    for mine, theirs in zip(fresh.model.backbone.variables, trained.model.backbone.variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    for mine, before in zip(fresh.model.head.variables, head_before):
        np.testing.assert_array_equal(mine.numpy(), before)  # not in the checkpoint: kept
    # fine-tuning from the whole-detector checkpoint: every trial starts from its weights
    tuned = DetectionTrainer("ssd", "tiny", demo_set["train"], batch_size=BATCH, checkpoint_path=whole)
    for mine, theirs in zip(tuned.detector.model.trainable_variables, trained.model.trainable_variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # a module checkpoint of another architecture is refused, naming the checkpoint
    other = build_detector("ssd", "tiny", (1, 2, 3), seed=0)
    with pytest.raises(CheckpointMismatchError, match="does not fit the model ssd/tiny with 3 categories"):
        restore_checkpoint(other, whole)
