"""A Model Garden experiment as the detector: TFRecords from Model Garden's own converter, a
short run of its own trainer, then ``detsearch search-det --experiment``; Model Garden's own
evaluation (the task's validation_step and COCOEvaluator) gives the sweep's 12 stats.

150 steps: before that the untrained head scores the demo's black canvas borders alike, and
tied scores above the thresholds make the order of equal candidates matter (docs/models.md,
"Tied scores")."""

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

tf = pytest.importorskip("tensorflow")

from detsearch import cli  # noqa: E402
from tests.models import garden_cases  # noqa: E402
from tests.models.garden_cases import train_experiment  # noqa: E402

EXPERIMENT = "retinanet_resnetfpn_coco"

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The shipped ``retinanet_resnet18_demo`` trained 150 steps on a small demo (`garden_cases`)."""
    return train_experiment(tmp_path_factory.mktemp("garden"), EXPERIMENT, "retinanet_resnet18_demo", num_train=32, steps=150)


def search(arguments, capsys):
    return garden_cases.search(EXPERIMENT, arguments, capsys)


@pytest.mark.parametrize("ground_truth", ["annotation_file", "records"])
def test_search_det_on_an_experiment_equals_model_garden(trained, tmp_path, capsys, ground_truth):
    from official.modeling import hyperparams

    from detsearch.models.experiment import load_config

    root, config_file, model_dir = trained
    out = tmp_path / "out"
    extra = ["--export", str(tmp_path / "export")] if ground_truth == "annotation_file" else [
        "--params-override", "{task: {annotation_file: ''}}", "--max-detections", "5,20"]
    code, printed, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                                 "--score-thresholds", "0.05,0.3,0.6", "--iou-thresholds", "0.4,0.5", "--verify", *extra],
                                capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == EXPERIMENT and summary["images"] == 12
    # Model Garden's own evaluation at the chosen thresholds and at the config's: the sweep's 12 stats.
    assert summary["model_garden_max_abs_diff"]["chosen"] <= 1e-6
    assert summary["model_garden_max_abs_diff"]["config"] <= 1e-6
    caps = {} if ground_truth == "annotation_file" else {"max_detections": 100}  # the config's cap joins the axis
    assert summary["model_garden_default"]["params"] == {"score_threshold": 0.05, "iou_threshold": 0.5, **caps}
    assert summary["configurations"] == 6 * (1 if ground_truth == "annotation_file" else 3)
    assert (out / "annotations.json").exists()
    # thresholds.yaml is a strict Model Garden override holding the choice.
    chosen = summary["chosen"]["params"]
    config = hyperparams.override_params_dict(load_config(EXPERIMENT, config_file.split(",")), str(out / "thresholds.yaml"),
                                              is_strict=True)
    generator = config.task.model.detection_generator
    assert (generator.pre_nms_score_threshold, generator.nms_iou_threshold) == (chosen["score_threshold"], chosen["iou_threshold"])
    assert generator.max_num_detections == chosen.get("max_detections", 100)
    assert "Model Garden's own evaluation: 12 stats max |diff|" in printed
    if ground_truth == "annotation_file":  # Model Garden's serving module, at the chosen thresholds
        exported = hyperparams.read_yaml_to_params_dict(str(tmp_path / "export" / "params.yaml"))
        assert exported.task.model.detection_generator.pre_nms_score_threshold == chosen["score_threshold"]
        serve = tf.saved_model.load(str(tmp_path / "export" / "saved_model")).signatures["serving_default"]
        first = sorted((root / "demo" / "val").iterdir())[0]
        image = tf.io.decode_image(tf.io.read_file(str(first)), channels=3)[None]
        outputs = serve(inputs=image)
        n = int(outputs["num_detections"][0])
        assert n > 0 and (outputs["detection_scores"][0, :n].numpy() > chosen["score_threshold"]).all()
    # the cache and the ground truth sweep again with detsearch sweep
    annotations = out / "annotations.json" if ground_truth == "records" else root / "demo" / "instances_val.json"
    assert json.loads((out / "annotations.json").read_text()) == json.loads(annotations.read_text())
    assert cli.main(["sweep", "--cache", str(out / "cache"), "--annotations", str(annotations), "--score-thresholds", "0.05",
                     "--iou-thresholds", "0.5", "--out", str(tmp_path / "again"), "--no-progress"]) == 0


def test_model_gardens_default_nms_v2_equals_model_garden(trained, tmp_path, capsys):
    # v2 at IoU thresholds below, at and above 0.5: its tiled NMS is not greedy below 0.5.
    root, config_file, model_dir = trained
    out = tmp_path / "out"
    code, _, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                           "--params-override", "task.model.detection_generator.nms_version=v2",
                           "--score-thresholds", "0.05,0.3", "--iou-thresholds", "0.3,0.4,0.6", "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nms"] == {"nms_version": "v2", "pre_nms_top_k": 5000}
    assert summary["model_garden_max_abs_diff"]["chosen"] <= 1e-6
    assert summary["model_garden_max_abs_diff"]["config"] <= 1e-6


@pytest.mark.parametrize("change, message", [
    (["--experiment", "retinanet_nonsense"], "unknown experiment 'retinanet_nonsense'; registered detection experiments:"),
    (["--params-override", "task.model.no_such_key=1"], "--params-override: Model Garden rejects it"),
    (["--params-override", "task.model.detection_generator.nms_version=v1"],
     "task.model.detection_generator.nms_version 'v1': the sweep reproduces batched and v2"),
    (["--params-override", "task.model.head.num_filters=16"], "does not fit experiment retinanet_resnetfpn_coco"),
    (["--params-override", "task.max_num_eval_detections=300"], "task.max_num_eval_detections 300"),
    (["--params-override", "task.validation_data.dtype=bfloat16"], "task.validation_data.dtype 'bfloat16'"),
    (["--model-dir", "/nonexistent"], "--model-dir /nonexistent: no checkpoint in it"),
])
def test_bad_experiments_are_one_line(trained, tmp_path, capsys, change, message):
    root, config_file, model_dir = trained
    arguments = {"--config-file": str(config_file), "--model-dir": str(model_dir), "--out": str(tmp_path / "out")}
    extra = []
    for flag, value in zip(change[::2], change[1::2]):
        if flag in arguments:
            arguments[flag] = value
        elif flag != "--experiment":
            extra += [flag, value]
    argv = [item for pair in arguments.items() for item in pair] + extra
    if change[0] == "--experiment":
        code = cli.main(["search-det", "--experiment", change[1], *argv])
        err = capsys.readouterr().err
    else:
        code, _, err = search(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert message in lines[-1] and len([line for line in lines if "error" in line]) == 1, err
    assert not (tmp_path / "out").exists()


def test_records_that_do_not_fit_are_one_line(trained, tmp_path, capsys):
    root, config_file, model_dir = trained
    lacking = tmp_path / "lacking.tfrecord"
    with tf.io.TFRecordWriter(str(lacking)) as writer:
        example = tf.train.Example(features=tf.train.Features(feature={
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"]))}))
        writer.write(example.SerializeToString())
    annotations = json.loads((root / "demo" / "instances_val.json").read_text())
    other_ids = tmp_path / "other_ids.json"
    other_ids.write_text(json.dumps({**annotations, "images": annotations["images"][1:],
                                     "annotations": [a for a in annotations["annotations"]
                                                     if a["image_id"] != annotations["images"][0]["id"]]}))
    first_id = annotations["images"][0]["id"]
    for override, message in (
        (f"task.validation_data.input_path={lacking}", f"{lacking}: the records lack image/source_id, image/height"),
        (f"task.validation_data.input_path={tmp_path}/none*", "task.validation_data.input_path"),
        (f"task.annotation_file={other_ids}", f"image id {first_id} of the records (source_id) is not among its images"),
    ):
        out = tmp_path / "out"
        code, _, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                               "--params-override", override], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_experiment_flags_need_experiment(capsys):
    assert cli.main(["search-det", "--model-dir", "somewhere"]) == 2
    assert "--model-dir needs --experiment" in capsys.readouterr().err
    assert cli.main(["search-det", "--executor", "ray"]) == 2
    assert "--executor needs --experiment" in capsys.readouterr().err


def test_search_training_on_the_experiments_own_train_step(trained, tmp_path, capsys):
    from official.modeling import hyperparams

    from detsearch.models.experiment import load_config

    root, config_file, _ = trained
    out = tmp_path / "out"
    arguments = ["--config-file", str(config_file), "--out", str(out), "--params-override", "trainer.train_steps=10",
                 "--search-training", "--by-loss", "--trial-steps", "10", "--warmup-steps", "0",
                 "--evaluate-every-n-steps", "5", "--weight-decays", "1e-4,1e-3", "--momentums", "0.9",
                 "--score-thresholds", "0.05", "--iou-thresholds", "0.5"]
    code, printed, err = search(arguments, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    selected = summary["selected"]
    assert set(selected) == {"learning_rate", "momentum", "weight_decay"} and summary["selection"]["trials_run"] > 0
    # training.yaml is a strict override holding the choice; Model Garden trained with it.
    config = hyperparams.override_params_dict(load_config(EXPERIMENT, config_file.split(",")), str(out / "training.yaml"),
                                              is_strict=True)
    optimizer = config.trainer.optimizer_config
    assert optimizer.learning_rate.constant.learning_rate == pytest.approx(selected["learning_rate"], rel=1e-12)
    assert optimizer.optimizer.sgd.momentum == selected["momentum"]
    assert config.task.losses.l2_weight_decay == selected["weight_decay"]
    assert summary["checkpoint"].endswith("ckpt-10") and (out / "thresholds.yaml").exists()
    # A rerun reuses every trial and the trained model.
    code, printed, err = search(arguments, capsys)
    assert code == 0, err
    again = json.loads((out / "summary.json").read_text())
    assert again["selection"]["trials_run"] == 0 and again["selected"] == selected


@pytest.mark.parametrize("extra, message", [
    ([], "judges trials by the task's loss: add --by-loss"),
    (["--by-loss", "--model-dir", "somewhere"], "drop --model-dir and --checkpoint"),
])
def test_search_training_bad_input_is_one_line(trained, tmp_path, capsys, extra, message):
    _, config_file, _ = trained
    code, _, err = search(["--config-file", str(config_file), "--out", str(tmp_path / "out"), "--search-training", *extra],
                          capsys)
    assert code == 2 and message in err.strip().splitlines()[-1], err
    assert not (tmp_path / "out").exists()


def test_export_with_per_class_thresholds_filters_model_gardens_output(trained, tmp_path):
    from detsearch.models import experiment as garden

    root, config_file, model_dir = trained
    experiment = garden.load_experiment(EXPERIMENT, config_file.split(","), model_dir=str(model_dir))
    chosen = {"score_threshold": 0.05, "iou_threshold": 0.5}
    limits = {c: 0.3 for c in range(1, 11, 2)} | {4: 0.0}
    garden.export_experiment(experiment, chosen, tmp_path / "plain")
    garden.export_experiment(experiment, chosen, tmp_path / "filtered", class_score_thresholds=limits)
    assert json.loads((tmp_path / "filtered" / "class_score_thresholds.json").read_text()) == {
        str(k): v for k, v in sorted(limits.items())}
    plain = tf.saved_model.load(str(tmp_path / "plain" / "saved_model")).signatures["serving_default"]
    filtered = tf.saved_model.load(str(tmp_path / "filtered" / "saved_model")).signatures["serving_default"]
    images = tf.stack([tf.io.decode_image(tf.io.read_file(str(p)), channels=3)
                       for p in sorted((root / "demo" / "val").iterdir())])
    ours = {k: v.numpy() for k, v in filtered(inputs=images).items()}
    theirs = {k: v.numpy() for k, v in plain(inputs=images).items()}
    assert sorted(ours) == sorted(theirs)
    dropped = 0
    for i in range(len(images)):
        n = int(theirs["num_detections"][i])
        classes, scores = theirs["detection_classes"][i, :n].astype(int), theirs["detection_scores"][i, :n]
        keep = np.array([c not in limits or s > np.float32(limits[c]) for c, s in zip(classes, scores)], bool)
        m = int(ours["num_detections"][i])
        assert m == keep.sum()
        dropped += n - m
        for key in ("detection_boxes", "detection_scores", "detection_classes"):
            np.testing.assert_array_equal(ours[key][i, :m], theirs[key][i, :n][keep])
            assert not ours[key][i, m:].any()
        np.testing.assert_array_equal(ours["image_info"], theirs["image_info"])
    assert dropped > 0  # the filter was put to work


def test_cache_in_shards_one_per_record_file_resumes(trained, tmp_path, capsys):
    import subprocess
    import sys

    root, config_file, model_dir = trained
    data = root / "demo"
    records = tmp_path / "records"
    records.mkdir()
    done = subprocess.run([sys.executable, "-m", "official.vision.data.create_coco_tf_record",
                           f"--image_dir={data / 'val'}", f"--object_annotations_file={data / 'instances_val.json'}",
                           f"--output_file_prefix={records / 'val'}", "--num_shards=3", "--num_processes=0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grid = ["--score-thresholds", "0.05,0.3", "--iou-thresholds", "0.4,0.5"]
    base = ["--config-file", str(config_file), "--model-dir", str(model_dir), *grid]
    assert search([*base, "--out", str(tmp_path / "one")], capsys)[0] == 0
    sharded = [*base, "--out", str(tmp_path / "three"), "--params-override",
               f"task.validation_data.input_path={records}/val*"]
    code, _, err = search([*sharded, "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "three" / "summary.json").read_text())
    assert summary["model_garden_max_abs_diff"]["chosen"] <= 1e-6 and summary["images"] == 12
    one = json.loads((tmp_path / "one" / "sweep" / "result.json").read_text())["table"]
    three = json.loads((tmp_path / "three" / "sweep" / "result.json").read_text())["table"]
    assert three == one  # one shard per file, the same rows as one pass
    shards = sorted((tmp_path / "three" / "cache" / "shards").iterdir())
    assert len(shards) == 3
    # A run killed before its last shard: the others are kept, that one is recorded again.
    import shutil

    kept = [(s / "meta.json").stat().st_mtime_ns for s in shards[:2]]
    shutil.rmtree(shards[2])
    (tmp_path / "three" / "cache" / "meta.json").unlink()
    assert search(sharded, capsys)[0] == 0
    assert [(s / "meta.json").stat().st_mtime_ns for s in shards[:2]] == kept and (shards[2] / "meta.json").exists()
    assert json.loads((tmp_path / "three" / "sweep" / "result.json").read_text())["table"] == one


def test_a_class_the_ground_truth_does_not_name_still_takes_its_places(trained, tmp_path, capsys):
    # Category 10 left out of the annotation file: Model Garden still outputs class 10, which takes
    # places among an image's max_num_detections (5 here) and is evaluated by no one.
    root, config_file, model_dir = trained
    annotations = json.loads((root / "demo" / "instances_val.json").read_text())
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({**annotations, "categories": [c for c in annotations["categories"] if c["id"] != 10],
                                   "annotations": [a for a in annotations["annotations"] if a["category_id"] != 10]}))
    out = tmp_path / "out"
    code, _, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                           "--params-override", f"task.annotation_file={partial},"
                           "task.model.detection_generator.max_num_detections=5",
                           "--score-thresholds", "0.05", "--iou-thresholds", "0.5", "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_garden_max_abs_diff"]["config"] <= 1e-6
    written = json.loads((out / "annotations.json").read_text())
    assert [c["id"] for c in written["categories"]] == [*range(1, 10), 10] and written["annotations"] == [
        a for a in annotations["annotations"] if a["category_id"] != 10]
