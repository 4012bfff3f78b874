"""`step_learning_rates`: the k-th update of a Model Garden optimizer gets the trial's k-th
learning rate, for schedules of any length."""

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
