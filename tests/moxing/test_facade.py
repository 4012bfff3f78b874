"""The MoXing facade in graph mode, on models small enough to check by hand.

The tests marked ``tf`` build and run graphs; the others check arguments that are refused before
TensorFlow is needed, and run without it."""

import numpy as np
import pytest

try:
    import tensorflow.compat.v1 as tf
except ImportError:  # the light tier: only the tests not marked tf run, and they never reach tf
    tf = None

import detsearch.moxing as mox
from detsearch.params import ParamSpec
from detsearch.selector.curves import LrSchedule, TrialSpec
from detsearch.training.graph import GraphTrainer


def constant_input_fn(train_value=1.0, eval_value=2.0, batch=4, auto_batch=False):
    def input_fn(run_mode, **kwargs):
        value = train_value if run_mode == mox.ModeKeys.TRAIN else eval_value
        shape = [3] if auto_batch else [batch, 3]
        ds = tf.data.Dataset.from_tensors(tf.fill(shape, value)).repeat()
        return ds.make_one_shot_iterator().get_next()
    return input_fn


def quadratic_model_fn(inputs, run_mode, **kwargs):
    # loss = (w - 1)^2 with w of shape [1, 1] (rank 2: weight decay applies to it)
    w = tf.get_variable("w", initializer=tf.zeros([1, 1]))
    loss = tf.reduce_sum(tf.square(w - 1.0))
    probe = tf.reduce_mean(inputs)
    return mox.ModelSpec(loss=loss, log_info={"loss": loss, "w": tf.reduce_sum(w), "probe": probe})


def sgd_optimizer_fn(**kwargs):
    return mox.get_optimizer_fn("sgd", learning_rate=kwargs["param_spec"].learning_rate)()


def trainer(input_fn=None, select_by_eval=False, num_batches=6, checkpoint_path=None, evaluation_total_steps=1,
            auto_batch=False):
    return GraphTrainer(input_fn or constant_input_fn(auto_batch=auto_batch), quadratic_model_fn, sgd_optimizer_fn,
                        ParamSpec(learning_rate=0.1), batch_size=4, auto_batch=auto_batch, num_batches=num_batches,
                        metric_names=["w"], loss_name="loss", select_by_eval=select_by_eval,
                        evaluation_total_steps=evaluation_total_steps, checkpoint_path=checkpoint_path)


def expected_w(learning_rates, weight_decay, start=0.0):
    # SGD on (w - 1)^2 + weight_decay * w^2 / 2; the metric is read before each update
    w, seen = start, []
    for lr in learning_rates:
        seen.append(w)
        w = w - lr * (2 * (w - 1) + weight_decay * w)
    return np.array(seen)


@pytest.mark.tf
def test_schedule_and_weight_decay_reach_the_update():
    schedule = LrSchedule(start=0.01, end=0.3, steps=4, warmup_steps=2, warmup_lr=0.05)
    curve = trainer().run(TrialSpec(schedule, None, weight_decay=0.5))
    np.testing.assert_allclose(curve.metric("w"), expected_w(schedule.values(), 0.5)[2:], rtol=1e-5)
    np.testing.assert_allclose(curve.learning_rates, schedule.values()[2:])
    assert curve.steps.tolist() == [1, 2, 3, 4] and curve.steps_run == 6


@pytest.mark.tf
def test_trials_are_fair_same_start_same_curve():
    t = trainer()
    trial = TrialSpec(LrSchedule(start=0.1, steps=5), None, 0.0)
    first = t.run(trial)
    t.run(TrialSpec(LrSchedule(start=0.3, steps=5), None, 0.1))
    again = t.run(trial)
    np.testing.assert_array_equal(first.metric("w"), again.metric("w"))


@pytest.mark.tf
def test_select_by_eval_reads_eval_batches():
    trial = TrialSpec(LrSchedule(start=0.1, steps=4), None, 0.0)
    assert trainer().run(trial).metric("probe").tolist() == [1.0] * 4
    assert trainer(select_by_eval=True).run(trial).metric("probe").tolist() == [2.0] * 4


@pytest.mark.tf
def test_auto_batch_stacks_examples():
    t = trainer(auto_batch=True)
    curve = t.run(TrialSpec(LrSchedule(start=0.1, steps=2), None, 0.0))
    assert curve.metric("probe").tolist() == [1.0, 1.0]
    assert t.batches[0][0].shape == (4, 3)


@pytest.mark.tf
def test_batch_size_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="batch_size=4"):
        trainer(input_fn=constant_input_fn(batch=5)).run(TrialSpec(LrSchedule(start=0.1, steps=2), None, 0.0))


@pytest.mark.tf
def test_checkpoint_path_sets_initial_weights(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        w = tf.get_variable("w", initializer=tf.fill([1, 1], 5.0))
        init, saver = tf.global_variables_initializer(), tf.train.Saver([w])
    with tf.Session(graph=graph) as session:
        session.run(init)
        saver.save(session, str(tmp_path / "init.ckpt"))
    curve = trainer(checkpoint_path=str(tmp_path / "init.ckpt")).run(TrialSpec(LrSchedule(start=0.1, steps=3), None, 0.0))
    np.testing.assert_allclose(curve.metric("w"), expected_w([0.1] * 3, 0.0, start=5.0), rtol=1e-5)


def search(**overrides):
    kwargs = dict(input_fn=constant_input_fn(), model_fn=quadratic_model_fn, optimizer_fn=sgd_optimizer_fn,
                  batch_size=4, auto_batch=False, total_steps=20, evaluation_total_steps=2, window=5, by_acc=False,
                  param_spec=ParamSpec(learning_rate=0.1, weight_decay=0.0),
                  param_list_spec=ParamSpec(weight_decay=[0.1, 0.0]))
    kwargs.update(overrides)
    return mox.auto.search(**kwargs)


@pytest.mark.parametrize("overrides, error, message", [
    (dict(total_steps=-5), ValueError, "total_steps"),
    (dict(evaluation_total_steps=0), ValueError, "evaluation_total_steps"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(window=0), ValueError, "window"),
    (dict(model_fn=None), TypeError, "model_fn must be callable"),
    (dict(param_spec=None), ValueError, "param_spec is required"),
    (dict(model_size="big"), TypeError, "model_size"),
    (dict(checkpoint_path="/nonexistent/ckpt"), ValueError, "does not exist"),
    (dict(param_list_spec=ParamSpec(score_threshold=[0.1, 0.2])), ValueError, "detection sweep"),
])
def test_bad_arguments_fail_before_training(overrides, error, message):
    with pytest.raises(error, match=message):
        search(**overrides)


def test_bad_param_specs_fail_before_training():
    with pytest.raises(ValueError, match="unknown parameter"):
        mox.auto.ParamSpec(weight_decays=[1e-2])
    with pytest.raises(ValueError, match="empty"):
        mox.auto.ParamSpec(momentum=[])


@pytest.mark.tf
def test_missing_acc_name_is_a_clear_error():
    with pytest.raises(ValueError, match="'accuracy' not in model_fn's log_info"):
        search(by_acc=True)


@pytest.mark.tf
def test_search_by_loss_picks_a_converging_lr_and_weight_decay():
    result = search(by_acc=False, init_learning_rate=1e-3, end_learning_rate=3.0, return_result=True)
    chosen = result.param_spec
    # (w - 1)^2 diverges for lr > 1; the range test must stay below that
    assert 1e-3 < chosen.learning_rate < 1.0
    # with no decay the loss reaches 0; decay 0.1 keeps w away from 1 (a real difference > 5%)
    assert chosen.weight_decay == 0.0
    # chosen for mox.auto.run's default 1000 steps: the ladder (4 constant learning rates, the
    # best shared with the weight_decay stage), then the scale (20 / 1000) ** 0.25
    assert result.trials_run == 6 and result.horizon.final_steps == 1000
    assert chosen.learning_rate == pytest.approx(result.horizon.learning_rate * (20 / 1000) ** 0.25)
    assert search(by_acc=False, init_learning_rate=1e-3, end_learning_rate=3.0) == chosen  # MoXing's return value
    # final_steps=total_steps: MoXing's stages only, no scaling
    moxing = search(by_acc=False, init_learning_rate=1e-3, end_learning_rate=3.0, return_result=True, final_steps=20)
    assert moxing.trials_run == 3 and moxing.horizon.factor == 1.0
    assert moxing.param_spec.learning_rate == moxing.lr_test.learning_rate


@pytest.mark.tf
def test_run_resumes_and_refuses_a_foreign_checkpoint(tmp_path):
    params = ParamSpec(learning_rate=0.1, weight_decay=0.0)
    kwargs = dict(input_fn=constant_input_fn(), model_fn=quadratic_model_fn, optimizer_fn=sgd_optimizer_fn,
                  batch_size=4, log_dir=str(tmp_path), log_every_n_steps=1, param_spec=params)
    first = mox.auto.run(max_number_of_steps=3, **kwargs)
    resumed = mox.auto.run(max_number_of_steps=5, **kwargs)  # continues from step 3
    assert resumed["w"] == pytest.approx(expected_w([0.1] * 5, 0.0)[4], rel=1e-5)
    assert first["w"] == pytest.approx(expected_w([0.1] * 3, 0.0)[2], rel=1e-5)

    def other_model_fn(inputs, run_mode, **kwargs):
        v = tf.get_variable("v", initializer=tf.zeros([2, 2]))
        loss = tf.reduce_sum(tf.square(v - 1.0))
        return mox.ModelSpec(loss=loss, log_info={"loss": loss})

    with pytest.raises(ValueError, match="holds a checkpoint of another model"):
        mox.auto.run(max_number_of_steps=5, **{**kwargs, "model_fn": other_model_fn})


@pytest.mark.tf
def test_export_serves(tmp_path):
    def model_fn(inputs, run_mode, **kwargs):
        w = tf.get_variable("w", initializer=tf.fill([3, 1], 2.0))
        y = tf.matmul(inputs, w)
        loss = tf.reduce_mean(tf.square(y))
        return mox.ModelSpec(loss=loss, log_info={"loss": loss},
                             export_spec=mox.ExportSpec(inputs_dict={"x": inputs}, outputs_dict={"y": y}))

    mox.auto.run(input_fn=constant_input_fn(), model_fn=model_fn, optimizer_fn=sgd_optimizer_fn, batch_size=4,
                 log_dir=str(tmp_path), max_number_of_steps=1, param_spec=ParamSpec(learning_rate=1e-9),
                 export_model=mox.ExportKeys.TF_SERVING)
    import tensorflow as tf2

    serving = tf2.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    out = serving(x=tf2.constant([[1.0, 2.0, 3.0]]))["y"].numpy()
    np.testing.assert_allclose(out, [[12.0]], rtol=1e-4)


@pytest.mark.tf
def test_search_leaves_the_logging_settings_as_they_were():
    import logging

    import tensorflow as tf

    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.WARN)
    before = (tf.compat.v1.logging.get_verbosity(), logging.getLogger("detsearch").level,
              list(logging.getLogger("detsearch").handlers))
    search(by_acc=False)
    after = (tf.compat.v1.logging.get_verbosity(), logging.getLogger("detsearch").level,
             list(logging.getLogger("detsearch").handlers))
    assert after == before
