"""`detsearch.search`: the HyperSelector for Keras models and `tf.data` datasets."""

from __future__ import annotations

from typing import Callable, Mapping

from detsearch.checks import positive_int
from detsearch.params import TRAINING_PARAMS, ParamSpec
from detsearch.selector import HyperSelector, Journal, ModelSize, SearchResult, SelectorConfig
from detsearch.selector.hyperselector import check_search_specs, default_final_steps


def search(build_model: Callable, train_dataset, loss_fn: Callable, *, param_spec: ParamSpec,
           param_list_spec: ParamSpec | None = None, total_steps: int = 100, evaluation_total_steps: int = 10,
           metrics: Mapping[str, Callable] | None = None, eval_dataset=None, select_by_eval: bool = False,
           by_acc: bool = True, acc_name: str = "accuracy", loss_name: str = "loss", model_size: ModelSize | None = None,
           weight_decay_diff_thres: float = 0.05, max_thres: int = 10, window: int = 50, warmup_steps: int = 0,
           warmup_lr: float = 0.01, evaluate_every_n_steps: int = 1, init_learning_rate: float | None = None,
           end_learning_rate: float | None = None, search_learning_rate: bool = True, lr_rule: str | None = None,
           output_dir: str | None = None, seed: int = 0, log_every_n_steps: int = 0,
           on_trial: Callable | None = None, on_step: Callable | None = None, final_steps: int | None = None,
           horizon_rule: str | None = None) -> SearchResult:
    """Chooses learning_rate, weight_decay and momentum for a Keras model.

    The parameters mean what they mean in `detsearch.moxing.auto.search` (see
    docs/hyperselector.md); the model side is TF2-native:

    Args:
      build_model: ``build_model(param_spec) -> keras model`` returning predictions (logits).
      train_dataset: `tf.data.Dataset` of ``(inputs, labels)`` batches, at least
        ``warmup_steps + total_steps`` of them.
      loss_fn: ``loss_fn(labels, predictions) -> scalar``.
      metrics: name -> ``fn(labels, predictions)``; default ``{'accuracy': ...}``.
      eval_dataset: batches for ``select_by_eval`` (``evaluation_total_steps`` are used).
      output_dir: trial journal directory (a restarted search reuses finished trials).
      on_trial, on_step: progress callbacks (see `HyperSelector`).
      final_steps, horizon_rule: the final training budget the learning rate is scaled to, and
        how (as in `detsearch.moxing.auto.search`; None: 1000 steps or ``total_steps``).

    Returns:
      `SearchResult`; ``result.param_spec`` holds the chosen values.
    """
    from detsearch.training.keras import KerasTrainer

    param_list_spec = ParamSpec() if param_list_spec is None else param_list_spec
    config_kwargs = {} if lr_rule is None else {"lr_rule": lr_rule}
    if horizon_rule is not None:
        config_kwargs["horizon_rule"] = horizon_rule
    config = SelectorConfig(
        final_steps=default_final_steps(total_steps) if final_steps is None else final_steps,
        total_steps=total_steps, by_acc=by_acc, acc_name=acc_name, loss_name=loss_name, window=window,
        max_thres=max_thres, weight_decay_diff_thres=weight_decay_diff_thres, warmup_steps=warmup_steps,
        warmup_lr=warmup_lr, evaluate_every_n_steps=evaluate_every_n_steps, init_learning_rate=init_learning_rate,
        end_learning_rate=end_learning_rate, model_size=model_size, search_learning_rate=search_learning_rate,
        **config_kwargs)
    check_search_specs(param_spec, param_list_spec, search_learning_rate)
    extra = [n for n in param_list_spec.names() if n not in TRAINING_PARAMS]
    if extra:
        raise ValueError(f"param_list_spec names {', '.join(extra)}: thresholds are chosen by the detection sweep")
    if select_by_eval and eval_dataset is None:
        raise ValueError("select_by_eval=True needs eval_dataset")
    evaluation_total_steps = positive_int(evaluation_total_steps, "evaluation_total_steps")
    names = set(metrics or {"accuracy": None}) | {loss_name}
    if config.metric_name not in names:
        raise ValueError(f"{config.metric_name!r} is not a metric (metrics: {', '.join(sorted(names))})")
    trainer = KerasTrainer(build_model, train_dataset, loss_fn, num_batches=warmup_steps + total_steps,
                           param_spec=param_spec, metrics=metrics,
                           eval_dataset=eval_dataset if select_by_eval else None,
                           evaluation_total_steps=evaluation_total_steps, loss_name=loss_name, seed=seed,
                           log_every_n_steps=log_every_n_steps)
    selector = HyperSelector(trainer, config, Journal(output_dir), on_trial=on_trial, on_step=on_step)
    return selector.select(param_spec, param_list_spec)
