"""mox.auto.search / mox.auto.run with a detection model: one ParamSpec carries the training
parameters and the thresholds; run trains, chooses the listed thresholds and exports them."""

from __future__ import annotations


import pytest

import detsearch.moxing as mox
from detsearch.datasets import demo

pytestmark = [pytest.mark.tf, pytest.mark.slow]


def detection_model(*args, **kwargs):
    """A `detsearch.models.detection_model.DetectionModel`, imported when a test runs."""
    from detsearch.models.detection_model import DetectionModel

    return DetectionModel(*args, **kwargs)


@pytest.fixture(scope="module")
def input_fn(tmp_path_factory, real_mnist_dir):
    root = tmp_path_factory.mktemp("demo") / "set"
    demo.build_demo(root, num_train=32, num_val=8, image_size=128, seed=7, mnist_dir=real_mnist_dir)
    sets = {mox.ModeKeys.TRAIN: demo.load_demo(root, "train"), mox.ModeKeys.EVAL: demo.load_demo(root, "val")}
    return lambda run_mode: sets[run_mode]


def optimizer_fn(**kwargs):
    param_spec = kwargs["param_spec"]
    return mox.get_optimizer_fn("momentum", learning_rate=param_spec.learning_rate, momentum=param_spec.momentum)()


def test_search_then_run_chooses_everything_and_exports_the_thresholds(input_fn, tmp_path):
    chosen = mox.auto.search(
        input_fn, detection_model("retinanet", eval_images=8), optimizer_fn, batch_size=4, auto_batch=False, total_steps=8,
        evaluation_total_steps=2, acc_name="AP", window=2, warmup_steps=2, evaluate_every_n_steps=4,
        param_spec=mox.auto.ParamSpec(momentum=0.9, weight_decay=1e-4),
        param_list_spec=mox.auto.ParamSpec(weight_decay=[1e-4, 1e-3], score_threshold=[0.05, 0.3]),
        output_dir=str(tmp_path / "search"), return_result=True)
    result, chosen = chosen, chosen.param_spec
    # range test, its pick and two neighbours, one more weight decay
    assert result.metric == "AP" and result.trials_run == 5
    assert [stage.name for stage in result.stages] == ["learning_rate", "weight_decay"]
    # a detection model's default horizon rule is none: the ladder's choice as is
    assert result.horizon.rule == "none" and result.horizon.factor == 1.0
    assert chosen.learning_rate == result.stages[1].learning_rates[result.stages[1].chosen]
    assert chosen.momentum == 0.9 and chosen.weight_decay in (1e-4, 1e-3)
    assert chosen.score_threshold == (0.05, 0.3)  # chosen on the final model by run

    metrics = mox.auto.run(input_fn, detection_model("retinanet"), optimizer_fn, batch_size=4, log_dir=str(tmp_path / "run"),
                           max_number_of_steps=6, param_spec=chosen, export_model=mox.ExportKeys.TF_SERVING,
                           return_details=True)
    assert "total_loss" in metrics["metrics"]  # Model Garden's trainer's own summaries
    final = metrics["param_spec"]
    assert final.score_threshold in (0.05, 0.3) and final.iou_threshold == 0.5
    assert final.learning_rate == chosen.learning_rate
    assert final.score_threshold == metrics["sweep"].best_params["score_threshold"]
    # Model Garden's serving module exported the model at the chosen thresholds (its params.yaml).
    import yaml  # with TensorFlow's extra; the module is collected without it too

    exported = yaml.safe_load((tmp_path / "run" / "model" / "params.yaml").read_text())
    generator = exported["task"]["model"]["detection_generator"]
    assert generator["pre_nms_score_threshold"] == final.score_threshold and generator["nms_iou_threshold"] == 0.5
    assert (tmp_path / "run" / "model" / "saved_model" / "saved_model.pb").exists()
    # Model Garden's trainer trained 6 steps with the chosen weight decay.
    assert metrics["checkpoint"].endswith("ckpt-6")
    assert exported["task"]["losses"]["l2_weight_decay"] == chosen.weight_decay


def test_a_detection_model_refuses_other_optimizers(input_fn, tmp_path):
    def adam(**kwargs):
        return mox.get_optimizer_fn("adam", learning_rate=kwargs["param_spec"].learning_rate)()

    with pytest.raises(ValueError, match="momentum SGD"):
        mox.auto.search(input_fn, detection_model("retinanet"), adam, batch_size=4, auto_batch=False, total_steps=8,
                        evaluation_total_steps=2, acc_name="AP", param_spec=mox.auto.ParamSpec(momentum=0.9))


def test_input_fn_must_give_detection_images(tmp_path):
    with pytest.raises(TypeError, match="DetectionDataset"):
        mox.auto.search(lambda mode: [1, 2, 3], detection_model("retinanet"), optimizer_fn, batch_size=4, auto_batch=False,
                        total_steps=8, evaluation_total_steps=2, acc_name="AP",
                        param_spec=mox.auto.ParamSpec(momentum=0.9))
