"""The MoXing facade's search on Ray tasks: the graph-mode trainer travels with its recorded
batches and initial weights, so every curve, the choice and the journal equal the in-process
search's."""

import json
import pickle

import numpy as np
import pytest

from tests.tiny_mnist import TinyMnist

pytestmark = pytest.mark.tf

STEPS = 30


def search(directory, executor):
    import detsearch.moxing as mox
    from detsearch.models.mnist import make_program

    input_fn, model_fn, optimizer_fn = make_program(TinyMnist(), "softmax", batch_size=20)
    found = mox.auto.search(
        input_fn=input_fn, model_fn=model_fn, optimizer_fn=optimizer_fn, batch_size=20, auto_batch=False,
        total_steps=STEPS, evaluation_total_steps=5, window=5, max_thres=5, log_every_n_steps=0,
        param_spec=mox.auto.ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-4),
        param_list_spec=mox.auto.ParamSpec(weight_decay=[1e-2, 1e-4], momentum=[0.95, 0.9]),
        output_dir=str(directory), executor=executor, return_result=True)
    chosen, result = found.param_spec, found.to_dict()
    result.pop("seconds")
    return chosen, json.dumps(result, sort_keys=True), (directory / "journal.jsonl").read_bytes()


def test_a_pickled_graph_trainer_trains_like_the_original():
    from detsearch.selector.curves import LrSchedule, TrialSpec
    from detsearch.training.graph import GraphTrainer
    from detsearch.models.mnist import make_program
    import detsearch.moxing as mox

    input_fn, model_fn, optimizer_fn = make_program(TinyMnist(), "softmax", batch_size=20)
    trainer = GraphTrainer(input_fn, model_fn, optimizer_fn, mox.auto.ParamSpec(learning_rate=0.1, momentum=0.9),
                           batch_size=20, auto_batch=False, num_batches=10, metric_names=["accuracy"],
                           loss_name="loss", select_by_eval=False, evaluation_total_steps=2, log_every_n_steps=0)
    cloudpickle = pytest.importorskip("cloudpickle", reason="needs cloudpickle (comes with Ray): pip install 'detsearch[ray]'")
    copy = pickle.loads(cloudpickle.dumps(trainer))  # as Ray ships it
    assert copy.input_fn is None and copy._model is None  # the data pipeline and the session stay here
    flat = lambda t: [a for batch in t.batches for a in batch] + list(t.initial_values)  # noqa: E731
    assert len(flat(copy)) == len(flat(trainer)) > 2 * 10  # batches, then every variable (slots included)
    for ours, theirs in zip(flat(copy), flat(trainer)):
        np.testing.assert_array_equal(ours, theirs)
    trial = TrialSpec(LrSchedule(start=0.1, steps=10), 0.9, 1e-3, 1, name="t")
    assert copy.run(trial).to_dict() == trainer.run(trial).to_dict()


def test_search_on_ray_equals_in_process(ray_executor, tmp_path):
    local = search(tmp_path / "local", None)
    on_ray = search(tmp_path / "ray", ray_executor)
    assert on_ray[0] == local[0]
    assert on_ray[1] == local[1]
    assert on_ray[2] == local[2]
