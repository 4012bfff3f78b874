"""`step_learning_rates`: the k-th update of a Model Garden optimizer gets the trial's k-th
learning rate, for schedules of any length. `ExperimentTrainer`'s AP (``eval_images``) is Model
Garden's own (the task's ``validation_step`` and ``COCOEvaluator`` on the same images and
weights), as float32, for a RetinaNet and a Faster R-CNN of the session (`conftest`); and
`search_training` judges trials by it."""

import dataclasses

import pytest

pytestmark = pytest.mark.tf


def test_the_kth_update_uses_the_kth_learning_rate():
    import tensorflow as tf
    from official.modeling import optimization
    from official.modeling.optimization.configs import optimization_config

    from detsearch.models.experiment_training import step_learning_rates

    config = optimization_config.OptimizationConfig({
        "optimizer": {"type": "sgd", "sgd": {"momentum": 0.0}},
        "learning_rate": {"type": "constant", "constant": {"learning_rate": 0.1}}})
    optimizer = optimization.OptimizerFactory(config).build_optimizer(step_learning_rates([1.0, 2.0, 3.0]))
    v = tf.Variable(0.0)

    @tf.function
    def step():
        optimizer.apply_gradients([(tf.constant(1.0), v)])

    seen = []
    for _ in range(4):
        before = float(v)
        step()
        seen.append(before - float(v))
    assert seen == [1.0, 2.0, 3.0, 3.0]  # the last value holds beyond the end


def test_a_long_schedule_builds():
    from detsearch.models.experiment_training import step_learning_rates

    schedule = step_learning_rates([0.5] * 1999 + [0.25])
    assert float(schedule(1998)) == 0.5 and float(schedule(1999)) == 0.25 and float(schedule(10 ** 6)) == 0.25


# AP of the curves (eval_images): Model Garden's own evaluation is the oracle.

RETINANET = "retinanet_resnetfpn_coco"
FASTER_RCNN = "fasterrcnn_resnetfpn_coco"

EVAL_IMAGES = 12
"""One whole validation batch of 8 and half of the next: the cut falls inside a batch."""


def fine_tuning(name: str, trained, root, params_override: str = ""):
    """The session's experiment ``name`` trained by Model Garden (``trained``: a `conftest`
    fixture's value) as a config to train from its weights (its ``task.init_checkpoint``,
    modules ``all``): from scratch, a few steps leave an empty output, whose AP of 0 any
    evaluation reproduces."""
    import tensorflow as tf

    from detsearch.models.experiment import load_experiment

    _, config_file, model_dir = trained
    files = config_file.split(",")
    init = tf.train.latest_checkpoint(str(model_dir))  # Faster R-CNN's "all" reads Checkpoint(model=...)
    if name == RETINANET:  # RetinaNet's "all" reads the model's checkpoint_items
        _, model = load_experiment(name, files, model_dir=str(model_dir)).build()
        init = tf.train.Checkpoint(**model.checkpoint_items).write(str(root / "init" / "ckpt"))
    initial = f"task.init_checkpoint={init},task.init_checkpoint_modules=all"
    return load_experiment(name, files, ",".join(filter(None, [initial, params_override])), trained=False)


def model_garden_ap(experiment, num_images: int) -> float:
    """Model Garden's own AP of ``experiment``'s checkpoint on the first ``num_images``
    validation images: the task's ``validation_step`` (traced with the dataset's spec, as its
    trainer traces it) on the pipeline's batches, its ``COCOEvaluator`` (``aggregate_logs``,
    ``reduce_aggregated_logs``) given the step outputs of those images."""
    import contextlib
    import io

    import tensorflow as tf

    task, model = experiment.build(restore=False)
    metrics = task.build_metrics(training=False)
    step = tf.function(lambda inputs: task.validation_step(inputs, model, metrics), autograph=False)
    dataset = task.build_inputs(experiment.config.task.validation_data)
    step.get_concrete_function(dataset.element_spec)  # creates the variables the checkpoint is read into
    experiment.restore(model)
    state, left = None, num_images
    for inputs in dataset:
        truth, predictions = step(inputs)[task.coco_metric.name]
        first = lambda t: t[:left]  # noqa: E731
        state = task.aggregate_logs(state, {task.coco_metric.name: (tf.nest.map_structure(first, truth),
                                                                    tf.nest.map_structure(first, predictions))})
        left -= int(inputs[1]["image_info"].shape[0])
        if left <= 0:
            break
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' tables
        return float(task.reduce_aggregated_logs(state)["AP"])


@pytest.mark.slow
def test_the_ap_of_a_curve_point_is_model_gardens_own(retinanet_trained, tmp_path):
    import numpy as np

    from detsearch.models.experiment_training import ExperimentTrainer
    from detsearch.selector.curves import LrSchedule, TrialSpec

    experiment = fine_tuning(RETINANET, retinanet_trained, tmp_path)
    trainer = ExperimentTrainer(experiment, num_batches=2, evaluation_total_steps=1, eval_images=EVAL_IMAGES)
    assert trainer.metric_names() == ("loss", "AP")
    curve = trainer.run(TrialSpec(LrSchedule(start=1e-3, steps=2), momentum=0.9, weight_decay=1e-4,
                                  evaluate_every_n_steps=2))
    assert set(curve.metrics) == {"loss", "AP"} and list(curve.steps) == [2]
    # The point is taken after the last step: the weights save() writes.
    checkpoint = trainer.save(1e-4, str(tmp_path / "trial" / "ckpt"))
    theirs = model_garden_ap(dataclasses.replace(experiment, checkpoint=checkpoint), EVAL_IMAGES)
    ours = curve.metric("AP")[-1]
    assert theirs > 0, "Model Garden's AP is 0: an empty output equals itself"
    assert np.float32(ours) == np.float32(theirs), (ours, theirs)
    # The journal keeps curves of another image count apart.
    other = ExperimentTrainer(experiment, num_batches=2, evaluation_total_steps=1, eval_images=8)
    assert other.fingerprint() != trainer.fingerprint()


@pytest.mark.slow
def test_the_ap_of_a_two_stage_experiment_is_model_gardens_own(fasterrcnn_trained, tmp_path):
    """Faster R-CNN's post-processing and class numbering, at the initial weights (the trained
    checkpoint, read as the init_checkpoint): what a curve point calls (`evaluate`)."""
    import numpy as np

    from detsearch.models.experiment import load_experiment
    from detsearch.models.experiment_training import ExperimentTrainer

    experiment = fine_tuning(FASTER_RCNN, fasterrcnn_trained, tmp_path)
    trainer = ExperimentTrainer(experiment, num_batches=1, eval_images=EVAL_IMAGES)
    ours = trainer.evaluate(experiment.config.task.losses.l2_weight_decay)["AP"]
    _, config_file, model_dir = fasterrcnn_trained
    theirs = model_garden_ap(load_experiment(FASTER_RCNN, config_file.split(","), model_dir=str(model_dir)),
                             EVAL_IMAGES)
    assert theirs > 0, "Model Garden's AP is 0: an empty output equals itself"
    assert np.float32(ours) == np.float32(theirs), (ours, theirs)


@pytest.mark.slow
def test_search_training_by_ap_picks_the_learning_rate_of_the_best_ap(retinanet_trained, tmp_path):
    import numpy as np

    from detsearch.models.experiment_training import search_training
    from detsearch.params import ParamSpec
    from detsearch.selector import SelectorConfig

    experiment = fine_tuning(RETINANET, retinanet_trained, tmp_path, "trainer.train_steps=1")
    config = SelectorConfig(total_steps=2, by_acc=True, acc_name="AP", window=2, search_learning_rate=False)
    selection, chosen, path, trained = search_training(
        experiment, tmp_path / "out", param_spec=ParamSpec(momentum=0.9, weight_decay=1e-4),
        param_list_spec=ParamSpec(learning_rate=[1e-3, 0.1]), config=config, eval_images=8)
    stage, = selection.stages
    aps = [curve.metric("AP") for curve in stage.curves]
    assert selection.metric == "AP" and selection.by_acc and all(len(ap) == 2 for ap in aps)
    # Judged by AP: a candidate's badness is minus its mean AP; the higher AP is chosen.
    assert list(stage.scores) == [-float(np.mean(ap)) for ap in aps]
    assert np.mean(aps[0]) != np.mean(aps[1])
    assert chosen["learning_rate"] == stage.candidates[int(np.argmax([np.mean(ap) for ap in aps]))]
    assert path.is_file() and trained.checkpoint.endswith("ckpt-1")
