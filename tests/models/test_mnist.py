"""The MNIST programs (softmax, MLP, CNN): each builds, has the parameters its docstring says and
learns on seeded digit-like data."""

import pytest

from tests.tiny_mnist import TinyMnist

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("model, parameters", [
    ("softmax", 784 * 10 + 10),
    ("mlp", 784 * 256 + 256 + 256 * 10 + 10),
    ("cnn", 3 * 3 * 16 + 16 + 3 * 3 * 16 * 32 + 32 + 7 * 7 * 32 * 10 + 10),
])
def test_each_program_builds_and_learns(model, parameters):
    import detsearch.moxing as mox
    from detsearch.models.mnist import make_program
    from detsearch.selector.curves import LrSchedule, TrialSpec
    from detsearch.training.graph import GraphTrainer

    input_fn, model_fn, optimizer_fn = make_program(TinyMnist(examples=600, train=500), model, batch_size=20)
    trainer = GraphTrainer(input_fn, model_fn, optimizer_fn, mox.auto.ParamSpec(learning_rate=0.1, momentum=0.9),
                           batch_size=20, auto_batch=False, num_batches=60, metric_names=["accuracy"],
                           loss_name="loss", select_by_eval=True, evaluation_total_steps=5, log_every_n_steps=0)
    assert trainer.num_parameters() == parameters
    curve = trainer.run(TrialSpec(LrSchedule(start=0.05, steps=60), 0.9, 1e-4, evaluate_every_n_steps=20))
    loss = curve.metric("loss")
    assert not curve.diverged and loss[-1] < 0.7 * loss[0]
    assert curve.metric("accuracy")[-1] > 0.6  # chance: 0.1


def test_unknown_model_is_refused():
    from detsearch.models.mnist import make_program

    with pytest.raises(ValueError, match="unknown model 'resnet'; choose one of softmax, mlp, cnn"):
        make_program(TinyMnist(), "resnet")
