"""Graph-mode (TF1-style) training of MoXing ``input_fn`` / ``model_fn`` / ``optimizer_fn`` programs.

The user's functions build a `tf.compat.v1` graph. The framework feeds that graph through
placeholders: the input_fn runs in a graph and session of its own and its batches are fed to the
model. This is what makes trials fair (a search records the batches once and every trial replays
the same ones) and what lets an exported SavedModel take plain tensors as inputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from detsearch.moxing.specs import ExportSpec, ModeKeys, ModelSpec
from detsearch.params import ParamSpec
from detsearch.selector.curves import Curve, TrialSpec
from detsearch.training.base import (CurveRecorder, arrays_fingerprint, is_decayed, run_trial_steps,
                                     source_fingerprint)

logger = logging.getLogger(__name__)


def _tf():
    import tensorflow as tf

    return tf


class BatchStream:
    """Batches from a MoXing input_fn, as flat lists of NumPy arrays.

    ``input_fn(run_mode)`` may return a (nested) tensor structure, such as an iterator's
    ``get_next()``, or a `tf.data.Dataset`. With ``auto_batch`` it yields single examples and
    ``batch_size`` of them are stacked into a batch; without it, every batch must have
    ``batch_size`` rows.
    """

    def __init__(self, input_fn: Callable, run_mode: str, batch_size: int, auto_batch: bool):
        tf = _tf()
        self.batch_size = batch_size
        self.auto_batch = auto_batch
        self.run_mode = run_mode
        self.graph = tf.Graph()
        with self.graph.as_default():
            out = input_fn(run_mode)
            if isinstance(out, (tf.data.Dataset, tf.compat.v1.data.Dataset)):
                if auto_batch:
                    out = out.batch(batch_size)
                    self.auto_batch = False
                out = tf.compat.v1.data.make_one_shot_iterator(out).get_next()
            self.structure = tf.nest.map_structure(lambda _: 0, out)
            self._fetches = tf.nest.flatten(out)
            if not self._fetches:
                raise ValueError(f"input_fn({run_mode!r}) returned no tensors")
            self.session = tf.compat.v1.Session(graph=self.graph)
        self.batches_read = 0

    def next(self) -> list[np.ndarray]:
        tf = _tf()
        try:
            if self.auto_batch:
                examples = [self.session.run(self._fetches) for _ in range(self.batch_size)]
                batch = [np.stack(parts) for parts in zip(*examples)]
            else:
                batch = [np.asarray(a) for a in self.session.run(self._fetches)]
        except tf.errors.OutOfRangeError as exc:
            raise ValueError(f"input_fn({self.run_mode!r}) ran out of data after {self.batches_read} batches") from exc
        for array in batch:
            if array.ndim == 0 or array.shape[0] != self.batch_size:
                shape = array.shape
                raise ValueError(f"input_fn({self.run_mode!r}) gave a batch with shape {shape}, expected a leading "
                                 f"dimension of batch_size={self.batch_size} (set auto_batch=True if input_fn "
                                 "yields single examples)")
        self.batches_read += 1
        return batch

    def take(self, count: int) -> list[list[np.ndarray]]:
        return [self.next() for _ in range(count)]

    def close(self) -> None:
        self.session.close()


@contextlib.contextmanager
def info_logs() -> Iterator[None]:
    """Within the block, shows INFO logs of TensorFlow's logger and of detsearch, as MoXing
    programs expect (their ``tf.logging.info`` lines report the search); a more verbose setting
    the user made is kept, and every setting is restored on exit."""
    tf = _tf()
    verbosity = tf.compat.v1.logging.get_verbosity()
    package_logger = logging.getLogger("detsearch")
    level = package_logger.level
    handler = None
    if verbosity > tf.compat.v1.logging.INFO:
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    if level == logging.NOTSET:
        package_logger.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not package_logger.handlers:
        handler = logging.StreamHandler()
        package_logger.addHandler(handler)
    try:
        yield
    finally:
        tf.compat.v1.logging.set_verbosity(verbosity)
        package_logger.setLevel(level)
        if handler is not None:
            package_logger.removeHandler(handler)


def _placeholders(batch: Sequence[np.ndarray], prefix: str) -> list:
    tf = _tf()
    return [tf.compat.v1.placeholder(tf.as_dtype(a.dtype), (None,) + a.shape[1:], name=f"{prefix}_{i}")
            for i, a in enumerate(batch)]


def _check_model_spec(spec: Any, run_mode: str, required: Sequence[str]) -> ModelSpec:
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"model_fn must return mox.ModelSpec, got {type(spec).__name__} (run_mode={run_mode!r})")
    if spec.loss is None:
        raise ValueError(f"model_fn's ModelSpec has no loss (run_mode={run_mode!r})")
    log_info = dict(spec.log_info or {})
    missing = [name for name in required if name not in log_info]
    if missing:
        raise ValueError(f"{', '.join(repr(m) for m in missing)} not in model_fn's log_info "
                         f"(keys: {', '.join(sorted(log_info)) or 'none'}); set acc_name / loss_name to one of them")
    return spec


class _Model:
    """The training graph of one program: model, weight decay, optimizer, and reset ops."""

    def __init__(self, model_fn: Callable, optimizer_fn: Callable, param_spec: ParamSpec, example_batch,
                 structure, required: Sequence[str], loss_name: str, seed: int, eval_batch=None,
                 eval_structure=None, checkpoint_path: str | None = None):
        tf = _tf()
        v1 = tf.compat.v1
        self.graph = tf.Graph()
        with self.graph.as_default():
            v1.set_random_seed(seed)
            self.inputs = _placeholders(example_batch, "input")
            self.learning_rate = v1.placeholder(tf.float32, (), name="learning_rate")
            self.momentum = None if param_spec.momentum is None else v1.placeholder(tf.float32, (), name="momentum")
            self.weight_decay = v1.placeholder(tf.float32, (), name="weight_decay")
            with v1.variable_scope(v1.get_variable_scope(), reuse=v1.AUTO_REUSE):
                spec = _check_model_spec(model_fn(tf.nest.pack_sequence_as(structure, self.inputs), ModeKeys.TRAIN),
                                         ModeKeys.TRAIN, required)
                self.eval_inputs = self.eval_metrics = None
                if eval_batch is not None:
                    self.eval_inputs = _placeholders(eval_batch, "eval_input")
                    eval_spec = _check_model_spec(
                        model_fn(tf.nest.pack_sequence_as(eval_structure, self.eval_inputs), ModeKeys.EVAL),
                        ModeKeys.EVAL, required)
                    self.eval_metrics = self._metrics(eval_spec, loss_name)
            self.metrics = self._metrics(spec, loss_name)
            decayed = [v for v in v1.trainable_variables() if is_decayed(v.name, v.shape)]
            self.decayed_names = [v.name for v in decayed]
            loss = spec.loss
            if decayed:
                loss = loss + self.weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in decayed])
            trial_params = param_spec.replace(learning_rate=self.learning_rate, momentum=self.momentum)
            optimizer = optimizer_fn(param_spec=trial_params)
            self.global_step = v1.train.get_or_create_global_step()
            with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
                self.train_op = optimizer.minimize(loss, global_step=self.global_step)
            self.variables = v1.global_variables()
            self.trainable = v1.trainable_variables()
            self.init_op = v1.global_variables_initializer()
            self.value_inputs = [v1.placeholder(v.dtype.base_dtype, v.shape) for v in self.variables]
            self.assign_op = tf.group(*[v.assign(p) for v, p in zip(self.variables, self.value_inputs)])
            self.saver = v1.train.Saver(max_to_keep=3)
            self.warm_start = None if not checkpoint_path else matching_saver(self.variables, checkpoint_path)
            self.graph.finalize()
        self.session = v1.Session(graph=self.graph)

    @staticmethod
    def _metrics(spec: ModelSpec, loss_name: str) -> dict:
        metrics = dict(spec.log_info or {})
        metrics.setdefault(loss_name, spec.loss)
        return metrics

    def num_parameters(self) -> int:
        return int(sum(np.prod(v.shape.as_list()) for v in self.trainable))

    def initialize(self) -> None:
        """Runs the initialisers, then restores the warm-start checkpoint if there is one."""
        self.session.run(self.init_op)
        if self.warm_start is not None:
            saver, path = self.warm_start
            with self.graph.as_default():  # Saver works eagerly outside its graph
                saver.restore(self.session, path)
            logger.info("initial weights restored from %s", path)

    def snapshot(self) -> list[np.ndarray]:
        return self.session.run(self.variables)

    def load(self, values: Sequence[np.ndarray]) -> None:
        self.session.run(self.assign_op, dict(zip(self.value_inputs, values)))

    def feed(self, batch, learning_rate: float, momentum: float | None, weight_decay: float) -> dict:
        feed = dict(zip(self.inputs, batch))
        feed[self.learning_rate] = learning_rate
        feed[self.weight_decay] = weight_decay
        if self.momentum is not None:
            feed[self.momentum] = momentum
        return feed


def matching_variables(variables, checkpoint_path: str) -> tuple[dict, str]:
    """The variables that ``checkpoint_path`` holds, checked against the model.

    Args:
      variables: the model's variables.
      checkpoint_path: a checkpoint prefix, or a directory (its latest checkpoint).

    Returns:
      ({checkpoint name: variable}, checkpoint prefix).

    Raises:
      ValueError: no checkpoint there, a trainable variable missing from it, or a shape that
        differs.
    """
    tf = _tf()
    path = tf.train.latest_checkpoint(checkpoint_path) if os.path.isdir(checkpoint_path) else checkpoint_path
    if not path:
        raise ValueError(f"no checkpoint found in {checkpoint_path}")
    try:
        stored = dict(tf.train.list_variables(path))
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    matched = {}
    for variable in variables:
        name = variable.op.name
        if name in stored:
            if list(stored[name]) != variable.shape.as_list():
                raise ValueError(f"checkpoint {path}: variable {name} has shape {stored[name]}, "
                                 f"the model's has {variable.shape.as_list()}")
            matched[name] = variable
    trainable_missing = [v.op.name for v in variables if v.trainable and v.op.name not in matched]
    if not matched or trainable_missing:
        raise ValueError(f"checkpoint {path} does not match the model: missing "
                         f"{', '.join(trainable_missing[:5]) or 'every variable'}")
    return matched, path


def matching_saver(variables, checkpoint_path: str):
    """A Saver (built in the current graph) restoring ``variables`` from ``checkpoint_path``;
    returns (saver, checkpoint prefix). Raises as `matching_variables`."""
    matched, path = matching_variables(variables, checkpoint_path)
    return _tf().compat.v1.train.Saver(var_list=matched), path


class GraphTrainer:
    """`Trainer` for MoXing programs (see `detsearch.training.base.Trainer`).

    The first call records ``num_batches`` training batches from ``input_fn(TRAIN)`` (and, when
    ``select_by_eval``, ``evaluation_total_steps`` batches from ``input_fn(EVAL)``), builds the
    graph once, and snapshots the initial weights (after restoring ``checkpoint_path``). Every
    trial restores that snapshot (optimizer slots and global step included) and replays the
    recorded batches, feeding the learning rate, momentum and weight decay of the trial.

    Args:
      input_fn, model_fn, optimizer_fn: the user's MoXing functions.
      param_spec: default parameters; ``learning_rate`` and ``momentum`` reach optimizer_fn as
        scalar tensors fed per step.
      batch_size, auto_batch: as in `mox.auto.search`.
      num_batches: training batches per trial (warm-up + total steps).
      metric_names: names that must be in model_fn's log_info.
      loss_name: the loss metric (model_fn's ``loss`` when log_info lacks it).
      select_by_eval: curve points from evaluation batches instead of training batches.
      evaluation_total_steps: batches per curve point.
      checkpoint_path: optional initial weights.
      log_every_n_steps: log a line every this many steps.
      seed: graph-level random seed for initialisation.
    """

    def __init__(self, input_fn: Callable, model_fn: Callable, optimizer_fn: Callable, param_spec: ParamSpec, *,
                 batch_size: int, auto_batch: bool, num_batches: int, metric_names: Sequence[str], loss_name: str,
                 select_by_eval: bool, evaluation_total_steps: int, checkpoint_path: str | None = None,
                 log_every_n_steps: int = 10, seed: int = 0):
        self.input_fn = input_fn
        self.model_fn = model_fn
        self.optimizer_fn = optimizer_fn
        self.param_spec = param_spec
        self.batch_size = batch_size
        self.auto_batch = auto_batch
        self.num_batches = num_batches
        self.required = tuple(metric_names)
        self.loss_name = loss_name
        self.select_by_eval = select_by_eval
        self.evaluation_total_steps = evaluation_total_steps
        self.checkpoint_path = checkpoint_path
        self.log_every_n_steps = log_every_n_steps
        self.seed = seed
        self._model = None

    def _setup(self) -> _Model:
        if self._model is not None:
            return self._model
        if not hasattr(self, "batches"):  # else recorded by the process this copy came from
            stream = BatchStream(self.input_fn, ModeKeys.TRAIN, self.batch_size, self.auto_batch)
            self.batches = stream.take(self.num_batches)
            self._structure = stream.structure
            stream.close()
            self.eval_batches = self._eval_structure = None
            if self.select_by_eval:
                stream = BatchStream(self.input_fn, ModeKeys.EVAL, self.batch_size, self.auto_batch)
                self.eval_batches = stream.take(self.evaluation_total_steps)
                self._eval_structure = stream.structure
                stream.close()
        model = _Model(self.model_fn, self.optimizer_fn, self.param_spec, self.batches[0], self._structure,
                       self.required, self.loss_name, self.seed,
                       None if self.eval_batches is None else self.eval_batches[0], self._eval_structure,
                       self.checkpoint_path)
        model.initialize()
        if not hasattr(self, "initial_values"):
            self.initial_values = model.snapshot()
        self._model = model
        return model

    def __getstate__(self) -> dict:
        """A copy for another process (e.g. a Ray worker, `detsearch.executor`): the recorded
        batches and initial weights travel, so the copy trains on exactly the same data from
        exactly the same weights; its graph and session are rebuilt there from ``model_fn`` and
        ``optimizer_fn``. ``input_fn`` (often holding a whole dataset) stays here."""
        self._setup()
        state = dict(self.__dict__)
        state["_model"] = None
        state["input_fn"] = None
        return state

    def fingerprint(self) -> str:
        self._setup()
        arrays = [a for batch in self.batches for a in batch]
        if self.eval_batches is not None:
            arrays += [a for batch in self.eval_batches for a in batch]
        parts = [arrays_fingerprint(arrays), arrays_fingerprint(self.initial_values),
                 source_fingerprint(self.model_fn, self.optimizer_fn),
                 repr((self.batch_size, self.select_by_eval, self.evaluation_total_steps, self.loss_name))]
        return arrays_fingerprint([np.frombuffer("|".join(parts).encode(), dtype=np.uint8)])

    def num_parameters(self) -> int:
        return self._setup().num_parameters()

    def metric_names(self) -> tuple[str, ...]:
        return tuple(self._setup().metrics)

    def _evaluate(self) -> dict[str, float]:
        model = self._model
        totals: dict[str, float] = {}
        for batch in self.eval_batches:
            values = model.session.run(model.eval_metrics, dict(zip(model.eval_inputs, batch)))
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + float(v)
        return {k: v / len(self.eval_batches) for k, v in totals.items()}

    def run(self, trial: TrialSpec, on_step: Callable[[int], None] | None = None) -> Curve:
        model = self._setup()
        model.load(self.initial_values)
        recorder = CurveRecorder(trial, self.loss_name, self.evaluation_total_steps,
                                 self._evaluate if self.select_by_eval else None)

        def step(index, lr):
            feed = model.feed(self.batches[index], lr, trial.momentum, trial.weight_decay)
            return model.session.run([model.train_op, model.metrics], feed)[1]

        return run_trial_steps(trial, recorder, step, len(self.batches), on_step, self.log_every_n_steps, logger)


def _write_scalars(writer, step: int, values: Mapping[str, float]) -> None:
    tf = _tf()
    summary = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag=k, simple_value=float(v))
                                          for k, v in values.items()])
    writer.add_summary(summary, step)


def train(input_fn: Callable, model_fn: Callable, optimizer_fn: Callable, param_spec: ParamSpec, *,
          batch_size: int, auto_batch: bool, log_dir: str, max_number_of_steps: int, log_every_n_steps: int = 10,
          save_checkpoint_steps: int = 500, checkpoint_path: str | None = None, loss_name: str = "loss",
          seed: int = 0, on_step: Callable[[int], None] | None = None) -> dict[str, float]:
    """Trains with fixed hyperparameters, with TensorBoard scalars and checkpoints in ``log_dir``.

    Resumes from the latest checkpoint in ``log_dir`` when there is one (a killed run loses at
    most ``save_checkpoint_steps`` steps); otherwise starts from ``checkpoint_path`` or from the
    initialisation. Weight decay ``param_spec.weight_decay`` is added to the loss as in a search.

    Returns:
      The last step's metrics.
    """
    os.makedirs(log_dir, exist_ok=True)
    stream = BatchStream(input_fn, ModeKeys.TRAIN, batch_size, auto_batch)
    first = stream.next()
    model = _Model(model_fn, optimizer_fn, param_spec, first, stream.structure, (), loss_name, seed,
                   checkpoint_path=checkpoint_path)
    with model.graph.as_default():  # Saver works eagerly outside its graph
        return _train_loop(model, stream, first, param_spec, log_dir, max_number_of_steps, log_every_n_steps,
                           save_checkpoint_steps, on_step)


def _train_loop(model, stream, first, param_spec, log_dir, max_number_of_steps, log_every_n_steps,
                save_checkpoint_steps, on_step) -> dict[str, float]:
    tf = _tf()
    latest = tf.train.latest_checkpoint(log_dir)
    if latest:
        try:
            matching_variables(model.variables, latest)
        except ValueError as exc:
            raise ValueError(f"log_dir {log_dir} holds a checkpoint of another model or run ({exc}); "
                             "use a new log_dir") from exc
        model.saver.restore(model.session, latest)
        logger.info("resumed from %s", latest)
    else:
        model.initialize()
    step = int(model.session.run(model.global_step))
    weight_decay = 0.0 if param_spec.weight_decay is None else param_spec.weight_decay
    writer = tf.compat.v1.summary.FileWriter(log_dir, graph=model.graph if step == 0 else None)
    metrics: dict[str, float] = {}
    batch = first
    prefix = os.path.join(log_dir, "model.ckpt")
    while step < max_number_of_steps:
        feed = model.feed(batch, param_spec.learning_rate, param_spec.momentum, weight_decay)
        # The step counts in Python: reading global_step in the same run as its increment races.
        _, values = model.session.run([model.train_op, model.metrics], feed)
        step += 1
        metrics = {k: float(v) for k, v in values.items()}
        if on_step is not None:
            on_step(step)
        if log_every_n_steps and step % log_every_n_steps == 0:
            _write_scalars(writer, step, {**metrics, "learning_rate": param_spec.learning_rate})
            logger.info("step %d/%d %s", step, max_number_of_steps, " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if save_checkpoint_steps and step % save_checkpoint_steps == 0:
            model.saver.save(model.session, prefix, global_step=step)
        if step < max_number_of_steps:
            batch = stream.next()
    model.saver.save(model.session, prefix, global_step=step)
    writer.close()
    stream.close()
    model.session.close()
    return metrics


def export_saved_model(input_fn: Callable, model_fn: Callable, *, batch_size: int, auto_batch: bool,
                       log_dir: str) -> str:
    """Exports the latest checkpoint in ``log_dir`` as a TF Serving SavedModel.

    The model is rebuilt with ``run_mode=EXPORT`` on placeholders shaped like input_fn's batches
    (batch dimension None); ``export_spec.inputs_dict`` / ``outputs_dict`` name the signature's
    tensors (signature ``serving_default``). The SavedModel is written to a temporary directory
    and then renamed to ``log_dir/<export_spec.version>``.

    Returns:
      The SavedModel directory.
    """
    tf = _tf()
    v1 = tf.compat.v1
    latest = tf.train.latest_checkpoint(log_dir)
    if not latest:
        raise ValueError(f"no checkpoint in {log_dir} to export")
    stream = BatchStream(input_fn, ModeKeys.TRAIN, batch_size, auto_batch)
    example, structure = stream.next(), stream.structure
    stream.close()
    graph = tf.Graph()
    with graph.as_default():
        inputs = _placeholders(example, "input")
        spec = model_fn(tf.nest.pack_sequence_as(structure, inputs), ModeKeys.EXPORT)
        if not isinstance(spec, ModelSpec) or not isinstance(spec.export_spec, ExportSpec):
            raise ValueError("export_model needs model_fn to return a ModelSpec with export_spec=mox.ExportSpec(...)")
        export_spec = spec.export_spec
        if not export_spec.inputs_dict or not export_spec.outputs_dict:
            raise ValueError("ExportSpec needs non-empty inputs_dict and outputs_dict")
        v1.train.get_or_create_global_step()
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            saver.restore(session, latest)  # inside graph.as_default(): graph-mode restore
            target = os.path.join(log_dir, export_spec.version)
            staging = tempfile.mkdtemp(prefix=".export-", dir=log_dir)
            os.rmdir(staging)  # the builder wants to create it
            builder = v1.saved_model.Builder(staging)
            signature = v1.saved_model.predict_signature_def(dict(export_spec.inputs_dict),
                                                             dict(export_spec.outputs_dict))
            builder.add_meta_graph_and_variables(session, [v1.saved_model.SERVING],
                                                 signature_def_map={"serving_default": signature})
            builder.save()
    if os.path.exists(target):
        shutil.rmtree(target)
    os.replace(staging, target)
    logger.info("exported SavedModel to %s", target)
    return target
