"""`mox.auto`: `search` (HyperSelector) and `run` (train with the chosen parameters)."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Protocol, runtime_checkable

from detsearch.moxing.specs import ExportKeys, ModeKeys
from detsearch.params import TRAINING_PARAMS, ParamSpec
from detsearch.selector import HyperSelector, Journal, ModelSize, SearchResult, SelectorConfig
from detsearch.selector.hyperselector import DEFAULT_FINAL_STEPS, DETECTOR_HORIZON_RULE, default_final_steps

logger = logging.getLogger(__name__)

SEARCH_DIR_ENV = "DETSEARCH_SEARCH_DIR"
"""When `search` gets no ``output_dir``, this environment variable names one."""


@runtime_checkable
class SearchableModel(Protocol):
    """A model that brings its own trainer to `search` and `run` instead of a ``model_fn``:
    `detsearch.models.detection_model.DetectionModel` (a Model Garden RetinaNet or Faster R-CNN experiment)."""

    def moxing_search(self, **kwargs: Any) -> SearchResult | None: ...

    def moxing_run(self, **kwargs: Any) -> dict[str, Any]: ...


def _check_function(name: str, value: Any) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def search(input_fn: Callable, model_fn: Callable, optimizer_fn: Callable, batch_size: int, auto_batch: bool,
           total_steps: int, evaluation_total_steps: int, model_size: ModelSize | None = None, by_acc: bool = True,
           checkpoint_path: str | None = None, select_by_eval: bool = False, weight_decay_diff_thres: float = 0.05,
           max_thres: int = 10, window: int = 50, warmup_steps: int = 0, warmup_lr: float = 0.01,
           evaluate_every_n_steps: int = 1, log_every_n_steps: int = 10, init_learning_rate: float | None = None,
           end_learning_rate: float | None = None, acc_name: str = "accuracy", loss_name: str = "loss",
           search_learning_rate: bool = True, param_spec: ParamSpec | None = None,
           param_list_spec: ParamSpec | None = None, *, output_dir: str | None = None, seed: int = 0,
           lr_rule: str | None = None, on_trial: Callable | None = None,
           on_step: Callable | None = None, executor=None, return_result: bool = False,
           final_steps: int | None = None, horizon_rule: str | None = None) -> ParamSpec | SearchResult:
    """Chooses learning_rate, weight_decay and momentum from short pre-training runs.

    Every argument of MoXing's ``mox.auto.search`` has the effect documented in
    docs/hyperselector.md; in short:

    Args:
      input_fn: ``input_fn(run_mode)`` returning a tensor structure (an iterator's ``get_next()``)
        or a ``tf.data.Dataset``.
      model_fn: ``model_fn(inputs, run_mode)`` returning `mox.ModelSpec`; or a `SearchableModel`
        (``detsearch.models.detection_model.DetectionModel``: a Model Garden RetinaNet or Faster R-CNN
        experiment, with
        ``input_fn(run_mode)`` returning a ``detsearch.datasets.detection.DetectionDataset``).
      optimizer_fn: ``optimizer_fn(param_spec=...)`` returning a ``tf.compat.v1`` optimizer; it
        receives ``learning_rate`` (the per-step schedule) and ``momentum`` as scalar tensors.
      batch_size: rows per batch; with ``auto_batch`` the framework stacks this many examples.
      auto_batch: input_fn yields single examples (True) or whole batches (False).
      total_steps: training steps of every trial (after warm-up).
      evaluation_total_steps: batches averaged into one curve point (evaluation batches with
        ``select_by_eval``, else the most recent training batches).
      model_size: `ModelSize` choosing the default LR range; None: from the parameter count.
      by_acc: judge by ``acc_name`` (higher better) rather than ``loss_name`` (lower better).
      checkpoint_path: initial weights of every trial (a checkpoint prefix or directory).
      select_by_eval: curve points from ``input_fn(EVAL)`` batches through ``model_fn(EVAL)``;
        False (the faster default) uses the training batches' own metrics.
      weight_decay_diff_thres: relative difference within which weight_decay candidates tie.
      max_thres: consecutive worsening curve points tolerated before the LR curve is cut.
      window: smoothing window of the LR curve; also the number of final points scoring a
        candidate trial.
      warmup_steps, warmup_lr: steps at a fixed learning rate at the start of every trial.
      evaluate_every_n_steps: training steps per curve point.
      log_every_n_steps: training steps per log line.
      init_learning_rate, end_learning_rate: the LR range test's range (defaults per model size).
      acc_name, loss_name: keys of model_fn's ``log_info``.
      search_learning_rate: run the LR range test (else use param_spec / a learning_rate list).
      param_spec: default values (``learning_rate``, ``momentum``, ``weight_decay``).
      param_list_spec: candidate lists (``weight_decay``, ``momentum``; ``learning_rate`` when
        ``search_learning_rate=False``; for a detection model also thresholds, which the result
        keeps as lists for `run` to choose on the final model).
      output_dir: (detsearch) directory of the trial journal; a restarted search with the same
        arguments reuses its finished trials. Default: ``$DETSEARCH_SEARCH_DIR`` or none.
      seed: (detsearch) graph-level seed of every trial's initialisation.
      lr_rule: (detsearch) LR choice rule name (default: the documented one).
      on_trial, on_step: (detsearch) progress callbacks, see `detsearch.selector.HyperSelector`.
      executor: (detsearch) where trials run: None or ``"local"`` (this process), ``"ray"`` or a
        `detsearch.executor.Executor` (docs/scale.md). Other than local, the trainer travels with
        its recorded batches and initial weights, and ``model_fn`` / ``optimizer_fn`` are
        pickled (cloudpickle) and traced again in each worker; ``on_step`` is not called.
      return_result: (detsearch) return the full `SearchResult` (curves, scores, trials) instead
        of its ``param_spec``. For a detection model its ``param_spec`` keeps the threshold lists
        of ``param_list_spec`` (what `run` takes).
      final_steps: (detsearch) the steps of the final training the choice is for (``run``'s
        ``max_number_of_steps``): the learning rate found on ``total_steps``-step trials is
        scaled to it (docs/hyperselector.md, "Horizon"). None: ``run``'s default budget
        (`DEFAULT_FINAL_STEPS`), or ``total_steps`` when larger. ``final_steps=total_steps``
        turns the correction off.
      horizon_rule: (detsearch) how the learning rate is scaled (`rules.HORIZON_RULES`;
        default: ``fourth_root``, ``none`` for a detection model).

    Returns:
      ``param_spec`` with the chosen values (MoXing's contract), or with ``return_result`` the
      `SearchResult`.

    Raises:
      TypeError, ValueError: a bad argument, before any training.
    """
    from detsearch.training.graph import GraphTrainer, info_logs

    for name, fn in (("input_fn", input_fn), ("model_fn", model_fn), ("optimizer_fn", optimizer_fn)):
        _check_function(name, fn)
    _check_int("batch_size", batch_size, 1)
    _check_int("evaluation_total_steps", evaluation_total_steps, 1)
    _check_int("log_every_n_steps", log_every_n_steps, 0)
    if param_spec is None:
        raise ValueError("param_spec is required: the default learning_rate / momentum / weight_decay")
    param_list_spec = ParamSpec() if param_list_spec is None else param_list_spec
    if checkpoint_path is not None and not os.path.exists(checkpoint_path) and not os.path.exists(checkpoint_path + ".index"):
        raise ValueError(f"checkpoint_path {checkpoint_path} does not exist")
    config_kwargs = {} if lr_rule is None else {"lr_rule": lr_rule}
    if horizon_rule is None and isinstance(model_fn, SearchableModel):
        horizon_rule = DETECTOR_HORIZON_RULE
    if horizon_rule is not None:
        config_kwargs["horizon_rule"] = horizon_rule
    config = SelectorConfig(
        final_steps=default_final_steps(total_steps) if final_steps is None else final_steps,
        total_steps=total_steps, by_acc=bool(by_acc), acc_name=acc_name, loss_name=loss_name, window=window,
        max_thres=max_thres, weight_decay_diff_thres=weight_decay_diff_thres, warmup_steps=warmup_steps,
        warmup_lr=warmup_lr, evaluate_every_n_steps=evaluate_every_n_steps, init_learning_rate=init_learning_rate,
        end_learning_rate=end_learning_rate, model_size=model_size, search_learning_rate=bool(search_learning_rate),
        **config_kwargs)
    from detsearch.selector.hyperselector import check_search_specs

    check_search_specs(param_spec, param_list_spec, config.search_learning_rate)
    if output_dir is None:
        output_dir = os.environ.get(SEARCH_DIR_ENV)
    if isinstance(model_fn, SearchableModel):
        # A detection model (detsearch.models.detection_model.DetectionModel): its own trainer; thresholds listed in
        # param_list_spec stay lists in the result, for mox.auto.run to choose on the final model.
        from detsearch.executor import LocalExecutor, as_executor

        if not isinstance(as_executor(executor), LocalExecutor):
            raise ValueError("a detection model's trials run in this process: executor must be None or 'local' "
                             "(its cache and sweep scale out with detsearch cache and the sweep's --executor)")
        result = model_fn.moxing_search(
            input_fn=input_fn, optimizer_fn=optimizer_fn, config=config, batch_size=batch_size,
            evaluation_total_steps=evaluation_total_steps, checkpoint_path=checkpoint_path,
            log_every_n_steps=log_every_n_steps, param_spec=param_spec, param_list_spec=param_list_spec,
            output_dir=output_dir, seed=seed, on_trial=on_trial, on_step=on_step)
        thresholds = {n: list(param_list_spec.candidates(n)) for n in param_list_spec.names()
                      if n not in TRAINING_PARAMS}
        chosen = (param_spec.subset(TRAINING_PARAMS) if result is None else result.param_spec).replace(**thresholds)
        if return_result and result is not None:
            return dataclasses.replace(result, param_spec=chosen)
        return chosen
    ignored = [n for n in param_list_spec.names() if n not in TRAINING_PARAMS]
    if ignored:
        raise ValueError(f"param_list_spec names {', '.join(ignored)}: thresholds are chosen by the detection sweep "
                         "(detsearch.detection), not by a classification search")
    trainer = GraphTrainer(input_fn, model_fn, optimizer_fn, param_spec, batch_size=batch_size, auto_batch=auto_batch,
                           num_batches=warmup_steps + total_steps, metric_names=[acc_name] if by_acc else [],
                           loss_name=loss_name, select_by_eval=bool(select_by_eval),
                           evaluation_total_steps=evaluation_total_steps, checkpoint_path=checkpoint_path,
                           log_every_n_steps=log_every_n_steps, seed=seed)
    journal = Journal(output_dir)
    with info_logs():
        selector = HyperSelector(trainer, config, journal, on_trial=on_trial, on_step=on_step, executor=executor)
        result = selector.select(param_spec, param_list_spec)
        logger.info("search chose %s in %.1f s (%d trials run, %d reused, %d steps)", result.param_spec,
                    result.seconds, result.trials_run, result.trials_reused, result.steps_spent)
    return result if return_result else result.param_spec


def run(input_fn: Callable, model_fn: Callable, optimizer_fn: Callable, run_mode: str = ModeKeys.TRAIN,
        batch_size: int = 1, auto_batch: bool = False, log_dir: str | None = None, max_number_of_steps: int = DEFAULT_FINAL_STEPS,
        log_every_n_steps: int = 10, export_model: str | None = None, param_spec: ParamSpec | None = None,
        checkpoint_path: str | None = None, save_checkpoint_steps: int = 500, seed: int = 0,
        return_details: bool = False) -> dict[str, Any]:
    """Trains with ``param_spec`` (the result of `search`), then optionally exports.

    Writes TensorBoard scalars (every log_info metric and the learning rate) and checkpoints to
    ``log_dir``; a restarted run resumes from the latest checkpoint there. With
    ``export_model=mox.ExportKeys.TF_SERVING`` it writes a SavedModel (signature
    ``serving_default`` from model_fn's ExportSpec) to ``log_dir/<export_spec.version>``.

    ``return_details`` (detsearch) returns, instead of the metrics, a dict with ``metrics`` and,
    for a detection model, what it chose: ``param_spec`` (thresholds included), ``checkpoint``,
    ``sweep`` (the threshold sweep, or None) and ``export``.

    Returns:
      The last training step's metrics (or the details above).
    """
    from detsearch.training.graph import export_saved_model, info_logs, train

    for name, fn in (("input_fn", input_fn), ("model_fn", model_fn), ("optimizer_fn", optimizer_fn)):
        _check_function(name, fn)
    if run_mode != ModeKeys.TRAIN:
        raise ValueError(f"mox.auto.run supports run_mode=mox.ModeKeys.TRAIN only, got {run_mode!r}")
    if not log_dir:
        raise ValueError("log_dir is required")
    _check_int("batch_size", batch_size, 1)
    _check_int("max_number_of_steps", max_number_of_steps, 1)
    _check_int("log_every_n_steps", log_every_n_steps, 0)
    if export_model not in (None, ExportKeys.TF_SERVING):
        raise ValueError(f"export_model must be None or mox.ExportKeys.TF_SERVING, got {export_model!r}")
    if param_spec is None or param_spec.learning_rate is None:
        raise ValueError("param_spec with a learning_rate is required (the result of mox.auto.search)")
    if isinstance(model_fn, SearchableModel):
        # A detection model: threshold lists in param_spec are chosen on the trained model.
        details = model_fn.moxing_run(input_fn=input_fn, optimizer_fn=optimizer_fn, batch_size=batch_size,
                                      log_dir=log_dir, max_number_of_steps=max_number_of_steps,
                                      export_model=export_model, param_spec=param_spec,
                                      checkpoint_path=checkpoint_path, seed=seed)
        return details if return_details else details["metrics"]
    for name in param_spec.names():
        if isinstance(getattr(param_spec, name), tuple):
            raise ValueError(f"param_spec.{name} must be one value, got a list")
    with info_logs():
        metrics = train(input_fn, model_fn, optimizer_fn, param_spec, batch_size=batch_size, auto_batch=auto_batch,
                        log_dir=log_dir, max_number_of_steps=max_number_of_steps, log_every_n_steps=log_every_n_steps,
                        save_checkpoint_steps=save_checkpoint_steps, checkpoint_path=checkpoint_path, seed=seed)
        export = None
        if export_model == ExportKeys.TF_SERVING:
            export = export_saved_model(input_fn, model_fn, batch_size=batch_size, auto_batch=auto_batch, log_dir=log_dir)
    return {"metrics": metrics, "export": export} if return_details else metrics


ParamSpec = ParamSpec
ModelSize = ModelSize
