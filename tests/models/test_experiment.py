"""A Model Garden experiment as the detector: TFRecords from Model Garden's own converter, a
short run of its own trainer (`conftest.retinanet_trained`, shared by the session), then
``detsearch search-det --experiment``; Model Garden's own evaluation (the task's validation_step
and COCOEvaluator) gives the sweep's 12 stats, each equal as float32, on every verified row of
the table (`garden_cases.verified`), with mAP > 0 (an empty output would equal itself)."""

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

from detsearch import cli  # noqa: E402
from tests.models import garden_cases  # noqa: E402
from tests.models.garden_cases import NUM_VAL, verified  # noqa: E402

EXPERIMENT = "retinanet_resnetfpn_coco"


@pytest.fixture
def trained(retinanet_trained):
    """``(data root, --config-file, model_dir)`` of the session's RetinaNet."""
    return retinanet_trained


def search(arguments, capsys):
    return garden_cases.search(EXPERIMENT, arguments, capsys)


@pytest.mark.parametrize("ground_truth", ["annotation_file", "records"])
def test_search_det_on_an_experiment_equals_model_garden(trained, tmp_path, capsys, ground_truth):
    import tensorflow as tf
    from official.modeling import hyperparams

    from detsearch.models.experiment import load_config

    root, config_file, model_dir = trained
    out = tmp_path / "out"
    # With --holdout the table scores a part of the images: --verify compares the rows on all of them.
    extra = ["--export", str(tmp_path / "export")] if ground_truth == "annotation_file" else [
        "--params-override", "{task: {annotation_file: ''}}", "--max-detections", "5,20", "--holdout", "0.25"]
    code, printed, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                                 "--score-thresholds", "0.05,0.3,0.6", "--iou-thresholds", "0.4,0.5", "--verify", *extra],
                                capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    # --holdout 0.25: the sweep chooses on 24 images (--verify compares rows of all 32)
    assert summary["experiment"] == EXPERIMENT and summary["images"] == (NUM_VAL if ground_truth == "annotation_file" else 24)
    # Model Garden's own evaluation at 6 rows, the chosen and the config's among them: the sweep's 12 stats.
    rows = verified(summary)["rows"]
    assert summary["chosen"]["map"] > 0
    if ground_truth == "annotation_file":  # --verify's Model Garden evaluation is its trainer's (its orbit loop)
        config_row = next(row for row in rows if "config" in row["labels"])
        assert garden_cases.trainer_evaluation(EXPERIMENT, config_file, model_dir) == config_row["theirs"]
    caps = {} if ground_truth == "annotation_file" else {"max_detections": 100}  # the config's cap joins the axis
    assert summary["config_row"]["params"] == {"score_threshold": 0.05, "iou_threshold": 0.5, **caps}
    assert summary["configurations"] == 6 * (1 if ground_truth == "annotation_file" else 3)
    assert (out / "annotations.json").exists()
    # thresholds.yaml is a strict Model Garden override holding the choice.
    chosen = summary["chosen"]["params"]
    config = hyperparams.override_params_dict(load_config(EXPERIMENT, config_file.split(",")), str(out / "thresholds.yaml"),
                                              is_strict=True)
    generator = config.task.model.detection_generator
    assert (generator.pre_nms_score_threshold, generator.nms_iou_threshold) == (chosen["score_threshold"], chosen["iou_threshold"])
    assert generator.max_num_detections == chosen.get("max_detections", 100)
    assert "Model Garden's own evaluation: 6 rows x 12 stats = 72 compared as float32" in printed and "all equal" in printed
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


def test_model_gardens_default_nms_v2_and_bfloat16_data_in_a_crowded_scene_equal_model_garden(trained, tmp_path, capsys):
    # v2 at IoU thresholds below, at and above 0.5: its tiled NMS is not greedy below 0.5. The
    # validation images as Model Garden's registered experiments give them: bfloat16. A crowded
    # scene: 1000 detections per image, and COCO's maxDets raised to 1000 to count them.
    from collections import Counter

    from detsearch.detection.cache import read_cache
    from detsearch.detection.sweep import PostProcessing
    from detsearch.detection.sweep._reference import reference_detections

    root, config_file, model_dir = trained
    out = tmp_path / "out"
    code, printed, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                                 "--params-override", "task.model.detection_generator.nms_version=v2,"
                                                      "task.validation_data.dtype=bfloat16,task.max_num_eval_detections=1000,"
                                                      "task.model.detection_generator.max_num_detections=1000",
                                 "--score-floor", "0.001", "--score-thresholds", "0.001,0.05,0.3",
                                 "--iou-thresholds", "0.3,0.4,0.9", "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rows = verified(summary)["rows"]
    # Model Garden logs AP as -1 at maxDets 1000 (pycocotools' summarize reads AP at 100): the other 11 are compared.
    assert all(row["not_compared"] == ["AP"] and row["theirs"][0] == -1 for row in rows)
    assert "6 rows, 66 stats compared as float32" in printed and "all equal" in printed
    # The crowd is there: at the lowest thresholds some image keeps more than 100 detections of
    # one category, which COCO's default maxDets would not have counted.
    cache = read_cache(out / "cache")
    post = PostProcessing(**summary["post_processing"])
    crowded = reference_detections(cache, {"score_threshold": 0.001, "iou_threshold": 0.9}, post.checked(cache))
    assert max(Counter((d["image_id"], d["category_id"]) for d in crowded).values()) > 100
    # the dtype took effect: the float32 images give other raw scores
    code, _, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(tmp_path / "f32"),
                           "--score-thresholds", "0.05", "--iou-thresholds", "0.5"], capsys)
    assert code == 0, err
    bf16, f32 = read_cache(out / "cache"), read_cache(tmp_path / "f32" / "cache")
    assert bf16.entry_score.shape != f32.entry_score.shape or not np.array_equal(bf16.entry_score, f32.entry_score)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["post_processing"] == {"nms_version": "v2", "max_detections_per_class": 1000,
                                         "max_total_detections": 1000, "class_agnostic": False, "pre_nms_top_k": 5000,
                                         "proposal_nms": "batched", "per_level": False, "max_eval_detections": 1000,
                                         "score_dtype": "float32"}
    ious = {row["params"]["iou_threshold"] for row in verified(summary)["rows"]}
    assert min(ious) < 0.5 < max(ious)  # rows where the tiled NMS is greedy and where it is not


@pytest.mark.parametrize("precision, agnostic", [("bfloat16", False), ("float32", True)])
def test_mixed_precision_and_class_agnostic_v2_equal_model_garden(trained, tmp_path, capsys, precision, agnostic):
    # Model Garden's v2 under its ResNet-FPN experiments' mixed bfloat16 (scores in bfloat16,
    # filtered at the threshold as bfloat16), and v2's class-agnostic path (use_class_agnostic_nms).
    root, config_file, model_dir = trained
    out = tmp_path / "out"
    override = (f"task.model.detection_generator.nms_version=v2,runtime.mixed_precision_dtype={precision},"
                f"task.model.detection_generator.use_class_agnostic_nms={str(agnostic).lower()}")
    code, printed, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                                 "--params-override", override, "--score-thresholds", "0.05,0.3",
                                 "--iou-thresholds", "0.4,0.6", "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    verified(summary)
    post = summary["post_processing"]
    assert (post["score_dtype"], post["class_agnostic"]) == (precision, agnostic)
    chosen = summary["chosen"]["params"]["score_threshold"]
    if precision == "bfloat16":  # written as bfloat16 compares it: Model Garden rounds it to itself
        import ml_dtypes

        from detsearch.detection.cache import read_cache
        from detsearch.detection.sweep.cuts import reduced_threshold

        assert chosen == reduced_threshold(chosen, "bfloat16") and chosen not in (0.05, 0.3, 0.5)
        # the model ran in bfloat16: every cached score is a bfloat16 value
        scores = np.asarray(read_cache(out / "cache").entry_score, np.float32)
        assert len(scores) and (scores.astype(ml_dtypes.bfloat16).astype(np.float32) == scores).all()


def test_v1_and_soft_nms_equal_model_garden(trained, tmp_path, capsys):
    # nms_version v1 with the config's soft_nms_sigma 0.5, swept with 0 (TensorFlow's hard NMS
    # kernel) and 0.3: soft NMS decays overlapping boxes' scores, which COCO then ranks by.
    from official.modeling import hyperparams

    from detsearch.models.experiment import load_config

    root, config_file, model_dir = trained
    out = tmp_path / "out"
    # drop_remainder: Model Garden's v1 loops over a static batch size (32 images, batches of 8).
    override = ("task.model.detection_generator.nms_version=v1,task.model.detection_generator.soft_nms_sigma=0.5,"
                "task.validation_data.drop_remainder=true")
    code, printed, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                                 "--params-override", override, "--soft-nms-sigmas", "0,0.3", "--score-thresholds",
                                 "0.05,0.3", "--iou-thresholds", "0.4,0.6", "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rows = verified(summary)["rows"]
    # the config's sigma (soft) and the far end 0 (hard) are always among the verified rows; the
    # interior 0.3 only when the evenly spaced ones reach it, which depends on the chosen row
    assert {0.0, 0.5} <= {row["params"]["soft_nms_sigma"] for row in rows}
    assert summary["config_row"]["params"]["soft_nms_sigma"] == 0.5 and summary["configurations"] == 18  # the config IoU 0.5 joins
    assert summary["post_processing"]["nms_version"] == "v1"
    table = json.loads((out / "sweep" / "result.json").read_text())["table"]
    assert {row["params"]["soft_nms_sigma"] for row in table} == {0.0, 0.3, 0.5}
    soft = {tuple(row["params"].values()): row["stats"] for row in table}
    assert soft[(0.05, 0.4, 0.5)] == soft[(0.05, 0.6, 0.5)] != soft[(0.05, 0.4, 0.0)]  # soft NMS reads no IoU threshold
    chosen = summary["chosen"]["params"]
    config = hyperparams.override_params_dict(load_config(EXPERIMENT, config_file.split(",")), str(out / "thresholds.yaml"),
                                              is_strict=True)
    assert config.task.model.detection_generator.soft_nms_sigma == chosen["soft_nms_sigma"]


@pytest.mark.parametrize("change, message", [
    (["--experiment", "retinanet_nonsense"], "unknown experiment 'retinanet_nonsense'; registered detection experiments:"),
    (["--params-override", "task.model.no_such_key=1"], "--params-override: Model Garden rejects it"),
    (["--params-override", "task.model.detection_generator.nms_version=v3"],
     "task.model.detection_generator.nms_version 'v3' (the Edge TPU NMS, which orders in the scores' dtype): the sweep "
     "reproduces batched, v2, v1 (v2 is Model Garden's default); set one of them"),
    (["--params-override", "task.model.detection_generator.nms_version=v1"],
     "nms_version 'v1' with soft_nms_sigma null: Model Garden then fills each image's output"),
    (["--params-override", "task.model.detection_generator.nms_version=v1,task.model.detection_generator.soft_nms_sigma=0.0"],
     "nms_version 'v1' with task.validation_data.drop_remainder false: Model Garden's v1 loops over the batch's static"),
    (["--params-override", "task.model.detection_generator.soft_nms_sigma=0.5"],
     "soft_nms_sigma 0.5: Model Garden reads it with nms_version v1 only, not 'batched'"),
    (["--params-override", "task.model.detection_generator.nms_version=tflite"],
     "nms_version 'tflite' (TFLite's post-processing: in TensorFlow its function returns zeros, so it cannot be "
     "evaluated)"),
    (["--params-override", "task.model.head.num_filters=16"], "does not fit experiment retinanet_resnetfpn_coco"),
    (["--params-override", "task.max_num_eval_detections=0"], "task.max_num_eval_detections 0: COCO's maxDets needs an int >= 1"),
    (["--params-override", "runtime.mixed_precision_dtype=bfloat16"], "runtime.mixed_precision_dtype 'bfloat16'"),
    (["--model-dir", "/nonexistent"], "model_dir /nonexistent: no checkpoint in it"),
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
    import tensorflow as tf

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


def test_the_demo_and_an_experiment_take_their_own_flags(capsys):
    assert cli.main(["search-det", "--config-file", "my.yaml"]) == 2
    assert "--config-file needs --experiment" in capsys.readouterr().err
    assert cli.main(["search-det", "--experiment", EXPERIMENT, "--dataset", "coco"]) == 2
    assert "--experiment reads its data from its config" in capsys.readouterr().err


@pytest.fixture(scope="module")
def init_checkpoint(retinanet_trained, tmp_path_factory):
    """The trained RetinaNet as a Model Garden ``task.init_checkpoint`` (the task's
    ``checkpoint_items``, as ``init_checkpoint_modules: all`` reads them)."""
    import tensorflow as tf

    from detsearch.models.experiment import load_experiment

    _, config_file, model_dir = retinanet_trained
    _, model = load_experiment(EXPERIMENT, config_file.split(","), model_dir=str(model_dir)).build()
    return tf.train.Checkpoint(**model.checkpoint_items).write(str(tmp_path_factory.mktemp("init") / "ckpt"))


def test_search_training_on_the_experiments_own_train_step(trained, init_checkpoint, tmp_path, capsys):
    from official.modeling import hyperparams

    from detsearch.models.experiment import load_config

    root, config_file, _ = trained
    out = tmp_path / "out"
    # Fine-tuning the trained model (its init_checkpoint): ten steps from scratch would leave an
    # empty output, whose mAP of 0 the sweep would reproduce without proving anything.
    override = f"trainer.train_steps=10,task.init_checkpoint={init_checkpoint},task.init_checkpoint_modules=all"
    arguments = ["--config-file", str(config_file), "--out", str(out), "--params-override", override,
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
    assert summary["chosen"]["map"] > 0
    # A rerun reuses every trial and the trained model.
    code, printed, err = search(arguments, capsys)
    assert code == 0, err
    again = json.loads((out / "summary.json").read_text())
    assert again["selection"]["trials_run"] == 0 and again["selected"] == selected


@pytest.mark.parametrize("extra, message", [
    (["--by-loss", "--model-dir", "somewhere"], "drop --model-dir and --checkpoint"),
    (["--checkpoint", "somewhere"], "drop --model-dir and --checkpoint"),
])
def test_search_training_bad_input_is_one_line(trained, tmp_path, capsys, extra, message):
    _, config_file, _ = trained
    code, _, err = search(["--config-file", str(config_file), "--out", str(tmp_path / "out"), "--search-training", *extra],
                          capsys)
    assert code == 2 and message in err.strip().splitlines()[-1], err
    assert not (tmp_path / "out").exists()


def test_export_with_per_class_thresholds_filters_model_gardens_output(trained, tmp_path):
    import tensorflow as tf

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
    root, config_file, model_dir = trained
    records = tmp_path / "records"
    records.mkdir()
    garden_cases.convert_records(root / "demo", "val", records / "val", num_shards=3)
    grid = ["--score-thresholds", "0.05,0.3,0.6", "--iou-thresholds", "0.4,0.5"]
    base = ["--config-file", str(config_file), "--model-dir", str(model_dir), *grid]
    assert search([*base, "--out", str(tmp_path / "one")], capsys)[0] == 0
    sharded = [*base, "--out", str(tmp_path / "three"), "--params-override",
               f"task.validation_data.input_path={records}/val*"]
    code, _, err = search([*sharded, "--verify"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "three" / "summary.json").read_text())
    assert summary["images"] == NUM_VAL
    verified(summary)  # the merged cache is Model Garden's too
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
                           "--score-thresholds", "0.05,0.3,0.6", "--iou-thresholds", "0.4,0.5", "--verify"], capsys)
    assert code == 0, err
    verified(json.loads((out / "summary.json").read_text()))
    written = json.loads((out / "annotations.json").read_text())
    assert [c["id"] for c in written["categories"]] == [*range(1, 10), 10] and written["annotations"] == [
        a for a in annotations["annotations"] if a["category_id"] != 10]


def test_a_difference_from_model_garden_is_one_line_and_exit_2(trained, tmp_path, capsys, monkeypatch):
    # Model Garden's evaluation stood in for by one that reports the sweep's rows with AP50 one
    # float32 step higher: every row is then compared and listed, summary.json keeps them, exit 2.
    # No row claims a tie: whether the trained model's scores tie varies from training to training
    # (TensorFlow's threads), and a tied row is excused
    # (test_a_difference_is_an_error_unless_a_documented_tie_explains_it covers that).
    from detsearch.models import experiment_verify as garden

    def shifted(experiment, rows, **kwargs):
        return garden.Verification(tuple(
            garden.VerifiedRow(params=dict(row.params), labels=labels, ours=tuple(row.stats),
                               theirs=tuple(float(np.nextafter(np.float32(v), np.float32(2))) if i == 1 else float(np.float32(v))
                                            for i, v in enumerate(row.stats)),
                               tie=None)
            for row, labels in rows))

    monkeypatch.setattr(garden, "verify_rows", shifted)
    root, config_file, model_dir = trained
    out = tmp_path / "out"
    code, printed, err = search(["--config-file", str(config_file), "--model-dir", str(model_dir), "--out", str(out),
                                 "--score-thresholds", "0.05,0.3,0.6", "--iou-thresholds", "0.4,0.5", "--verify",
                                 "--verify-rows", "3"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len([line for line in lines if "error" in line]) == 1, err
    assert "--verify: Model Garden's own evaluation differs from the sweep in 3 of 36 stats; first: " in lines[-1]
    assert "(chosen" in lines[-1] and "): AP50 ours " in lines[-1]
    assert "3 rows x 12 stats = 36 compared as float32 (np.float32(sweep) == Model Garden): 3 differ" in printed
    assert printed.count("    AP50: ours ") == 3
    verification = json.loads((out / "summary.json").read_text())["model_garden_verification"]
    assert [m["stat"] for m in verification["mismatches"]] == ["AP50"] * 3 and verification["stats_compared"] == 36


def test_verify_rows_needs_verify_and_two_rows(tmp_path, capsys):
    # on the demo and on an experiment alike, before any work
    base = ["--out", str(tmp_path / "out")]
    for extra, message in ((["--verify-rows", "8"], "--verify-rows needs --verify"),
                           (["--verify", "--verify-rows", "1"], "--verify-rows must be >= 2"),
                           (["--experiment", EXPERIMENT, "--model-dir", str(tmp_path), "--verify", "--verify-rows", "0"],
                            "--verify-rows must be >= 2")):
        assert cli.main(["search-det", *base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err.strip().splitlines()[-1], err
    assert not (tmp_path / "out").exists()


def rows_of(grid: dict) -> list:
    import itertools
    from types import SimpleNamespace

    names = list(grid)
    return [SimpleNamespace(params=dict(zip(names, values))) for values in itertools.product(*grid.values())]


def test_verification_rows_are_the_chosen_the_configs_and_the_ends_of_every_axis():
    from detsearch.models.experiment_verify import verification_rows

    table = rows_of({"score_threshold": [0.05, 0.1, 0.3, 0.5], "iou_threshold": [0.4, 0.5, 0.6]})
    chosen, config = {"score_threshold": 0.1, "iou_threshold": 0.6}, {"score_threshold": 0.05, "iou_threshold": 0.5}
    picked = verification_rows(table, chosen, config)
    assert [(dict(row.params), labels) for row, labels in picked[:2]] == [(chosen, ("chosen",)), (config, ("config",))]
    # each axis's far end, then its near end (0.6 is the chosen's), then the table's first row
    assert [tuple(row.params.values()) for row, _ in picked[2:]] == [(0.5, 0.6), (0.1, 0.4), (0.05, 0.6), (0.05, 0.4)]
    assert len({id(row) for row, _ in picked}) == 6
    # the chosen row is the config's: one row, both labels
    both = verification_rows(table, config, config, count=2)
    assert len(both) == 2 and both[0][1] == ("chosen", "config")
    assert len(verification_rows(table, chosen, config, count=12)) == 12
    assert len(verification_rows(table[:4], table[0].params, table[1].params)) == 4  # all of a small table
    with pytest.raises(ValueError, match="no row of the sweep has"):
        verification_rows(table, {"score_threshold": 0.2, "iou_threshold": 0.5}, config)


def test_a_difference_is_an_error_unless_a_documented_tie_explains_it():
    from detsearch.models.experiment_verify import ModelGardenMismatch, Verification, VerifiedRow

    stats = tuple(float(np.float32(0.1 * i)) for i in range(12))
    above = tuple(float(np.nextafter(np.float32(v), np.float32(2))) for v in stats)
    equal = VerifiedRow({"score_threshold": 0.05, "iou_threshold": 0.5}, ("chosen",), stats, stats)
    close = VerifiedRow({"score_threshold": 0.3, "iou_threshold": 0.5}, (), tuple(v * (1 + 1e-12) for v in stats), stats)
    Verification((equal, close)).check()  # float32 equality: a relative 1e-12 is below its last digit
    tied = VerifiedRow({"score_threshold": 0.1, "iou_threshold": 0.5}, (), stats, above, tie="2 scores tie")
    verification = Verification((equal, tied))
    verification.check()  # reported, not an error
    assert verification.excused == [tied] and "1 rows differ where scores tie" in verification.lines()[0]
    assert "score_threshold=0.1, iou_threshold=0.5: mAP 0.0000, 12 differ where 2 scores tie" in "\n".join(verification.lines())
    wrong = VerifiedRow({"score_threshold": 0.1, "iou_threshold": 0.5}, ("config",), stats, above)
    with pytest.raises(ModelGardenMismatch, match=r"differs from the sweep in 12 of 24 stats; first: score_threshold=0.1, "
                                                  r"iou_threshold=0.5 \(config\): AP ours 0.0 theirs 1.4"):
        Verification((equal, wrong)).check()


def test_ties_are_found_where_the_kernel_orders_equal_scores_freely():
    from detsearch.detection.cache import CacheBuilder, CacheKind, CacheSettings
    from detsearch.detection.sweep.settings import PostProcessing
    from detsearch.models.experiment_verify import TieFinder

    builder = CacheBuilder(CacheSettings(kind=CacheKind.ONE_STAGE, category_ids=(1, 2), score_floor=0.01))
    boxes = np.array([[0, 0, 10, 10], [0, 1, 10, 11], [20, 20, 30, 30]], np.float32)
    # class 0: 0.4 twice (a tie); class 1: 0.7 once, 0.4 once (no tie across classes)
    builder.add_image(1, (64, 64), row_boxes=boxes, entry_row=[0, 0, 1, 2], entry_class=[0, 1, 0, 1],
                      entry_score=np.float32([0.4, 0.7, 0.4, 0.4]))
    builder.add_image(2, (64, 64), row_boxes=boxes[:1], entry_row=[0], entry_class=[0], entry_score=np.float32([0.9]))
    cache = builder.build()
    batched = TieFinder(cache, PostProcessing(nms_version="batched"))
    assert batched.reason({"score_threshold": 0.3}).startswith(
        "scores above score_threshold tie within one class of one image (1 such scores); combined_non_max_suppression")
    assert batched.reason({"score_threshold": 0.4}) is None  # score > 0.4 keeps neither
    assert TieFinder(cache, PostProcessing(nms_version="v2", pre_nms_top_k=5000)).reason({"score_threshold": 0.3}) is None
