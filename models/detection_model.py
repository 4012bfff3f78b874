"""A Model Garden detector in MoXing's ``model_fn`` slot of ``mox.auto.search`` and
``mox.auto.run``: the demo experiments of `detsearch.models.pipeline` on the user's data.

    import detsearch.moxing as mox
    from detsearch.models.detection_model import DetectionModel

    def input_fn(run_mode):          # a detsearch.datasets.detection.DetectionDataset per mode
        return train_set if run_mode == mox.ModeKeys.TRAIN else val_set

    chosen = mox.auto.search(input_fn, DetectionModel("retinanet"), optimizer_fn, batch_size=8,
                             total_steps=200, evaluation_total_steps=10, acc_name="AP", window=5,
                             param_spec=mox.auto.ParamSpec(...),
                             param_list_spec=mox.auto.ParamSpec(weight_decay=[...], momentum=[...],
                                 score_threshold=[...], iou_threshold=[...]))
    mox.auto.run(input_fn, DetectionModel("retinanet"), optimizer_fn, batch_size=8,
                 log_dir="runs/retinanet", max_number_of_steps=1500, param_spec=chosen,
                 export_model=mox.ExportKeys.TF_SERVING)

The datasets are converted once to TFRecords by Model Garden's converter
(`pipeline.write_records`). ``search`` runs the selector with `ExperimentTrainer` (the
experiment's own train step; curves hold ``"loss"`` and, with ``by_acc``, ``"AP"`` on the first
``eval_images`` images of ``input_fn(EVAL)``) and returns the training parameters with the
threshold candidate lists of ``param_list_spec``; ``run`` trains with them by Model Garden's
trainer into ``log_dir`` (resumed), chooses the listed thresholds on a cache of the validation
records (`pipeline.search_thresholds`, ``log_dir/search``) and exports a SavedModel at them by
Model Garden's serving module (``log_dir/model``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable

from detsearch.params import THRESHOLD_PARAMS, TRAINING_PARAMS, ParamSpec

__all__ = ["DetectionModel", "LR_REFINE_FACTORS"]

LR_REFINE_FACTORS = (10 ** -0.5, 10 ** 0.5)
"""`SelectorConfig.lr_refine_factors` for detectors: the range test's pick and its half-decade
neighbours are trained like candidates (docs/hyperselector.md#detectors)."""


def _check_optimizer_fn(optimizer_fn: Callable) -> None:
    """Model Garden's trainer runs SGD with momentum (`experiment_training.training_override`):
    ``optimizer_fn`` must build a plain momentum optimizer, which is what MoXing's detection
    programs use."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        optimizer = optimizer_fn(param_spec=ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=0.0))
    if not isinstance(optimizer, tf.compat.v1.train.MomentumOptimizer) or getattr(optimizer, "_use_nesterov", False):
        raise ValueError(f"detection models train with momentum SGD; optimizer_fn builds "
                         f"{type(optimizer).__name__} (use mox.get_optimizer_fn('momentum', ...))")


def _last_scalars(model_dir: Path) -> dict[str, float]:
    """The last value of each scalar Model Garden's trainer wrote to ``model_dir/train``."""
    import tensorflow as tf

    values: dict[str, tuple[int, float]] = {}
    for path in sorted((model_dir / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else float(value.simple_value)
                if value.tag not in values or event.step >= values[value.tag][0]:
                    values[value.tag] = (event.step, number)
    return {tag: number for tag, (_, number) in values.items()}


@dataclasses.dataclass(frozen=True)
class DetectionModel:
    """A demo detector (`detsearch.models.pipeline.DEMO_MODELS`: ``retinanet``, ``ssd`` for the
    same, ``faster_rcnn``) for ``mox.auto.search`` / ``mox.auto.run``; ``params_override`` is a
    last Model Garden override of its config (e.g. ``"task.model.input_size=[256,256,3]"``)."""

    model: str = "retinanet"
    eval_images: int = 100
    score_floor: float = 0.01
    lr_refine_factors: tuple[float, ...] = LR_REFINE_FACTORS
    params_override: str | None = None

    def __post_init__(self) -> None:
        from detsearch.models.pipeline import demo_model

        demo_model(self.model)  # an unknown name is refused here

    def __call__(self, inputs, run_mode):
        raise TypeError("DetectionModel is run by mox.auto.search / mox.auto.run, not called as a model_fn")

    def _config(self, input_fn: Callable, directory: Path, *, batch_size: int, steps: int | None = None,
                checkpoint_path=None, training: dict[str, float] | None = None):
        """``(experiment name, config)`` on ``input_fn``'s sets, their records in ``directory``."""
        from official.modeling import hyperparams

        from detsearch.datasets.detection import DetectionDataset
        from detsearch.models.experiment_training import config_training, training_override
        from detsearch.models.pipeline import demo_config
        from detsearch.moxing.specs import ModeKeys

        sets = {}
        for mode in (ModeKeys.TRAIN, ModeKeys.EVAL):
            sets[mode] = input_fn(mode)
            if not isinstance(sets[mode], DetectionDataset):
                raise TypeError(f"input_fn({mode!r}) must return a detsearch.datasets.detection.DetectionDataset for "
                                f"a detection model, got {type(sets[mode]).__name__}")
        name, config = demo_config(self.model, train_set=sets[ModeKeys.TRAIN], validation_set=sets[ModeKeys.EVAL],
                                   records_dir=directory, steps=steps, params_override=self.params_override)
        override: dict[str, Any] = {"task": {"train_data": {"global_batch_size": int(batch_size)}}}
        if checkpoint_path is not None:
            override["task"]["init_checkpoint"] = str(checkpoint_path)
        config = hyperparams.override_params_dict(config, override, is_strict=True)
        if training:
            values = {**config_training(config), **training}
            config = hyperparams.override_params_dict(config, training_override(
                values["learning_rate"], values.get("momentum") or 0.0, values.get("weight_decay") or 0.0),
                is_strict=True)
        return name, config

    def moxing_search(self, *, input_fn: Callable, optimizer_fn: Callable, config, batch_size: int,
                      evaluation_total_steps: int, checkpoint_path, log_every_n_steps: int, param_spec: ParamSpec,
                      param_list_spec: ParamSpec, output_dir, seed: int, on_trial=None, on_step=None):
        """`mox.auto.search` for this detector (called by the facade after its argument checks):
        the selector on the experiment's own train step; None when nothing is searched."""
        from detsearch.models.experiment import Experiment, check_supported
        from detsearch.models.experiment_training import ExperimentTrainer, check_judged
        from detsearch.selector import HyperSelector, Journal
        from detsearch.selector.hyperselector import check_search_specs

        _check_optimizer_fn(optimizer_fn)
        config_ = dataclasses.replace(config, lr_refine_factors=tuple(self.lr_refine_factors))
        training_spec, training_list = param_spec.subset(TRAINING_PARAMS), param_list_spec.subset(TRAINING_PARAMS)
        check_search_specs(training_spec, training_list, config_.search_learning_rate)
        check_judged(config_, self.eval_images)
        if not config_.search_learning_rate and not training_list.names():
            return None
        directory = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="detsearch-"))
        name, experiment_config = self._config(input_fn, directory / "records", batch_size=batch_size,
                                               checkpoint_path=checkpoint_path)
        experiment = Experiment(name=name, config=experiment_config, kind=check_supported(experiment_config),
                                checkpoint="")
        trainer = ExperimentTrainer(experiment, num_batches=config_.total_steps + config_.warmup_steps, seed=seed,
                                    evaluation_total_steps=evaluation_total_steps, log_every_n_steps=log_every_n_steps,
                                    eval_images=self.eval_images if config_.by_acc else None)
        selector = HyperSelector(trainer, config_, Journal(None if output_dir is None else directory / "selector"),
                                 on_trial=on_trial, on_step=on_step)
        return selector.select(training_spec, training_list)

    def moxing_run(self, *, input_fn: Callable, optimizer_fn: Callable, batch_size: int, log_dir,
                   max_number_of_steps: int, export_model: str | None, param_spec: ParamSpec, checkpoint_path,
                   seed: int) -> dict[str, Any]:
        """`mox.auto.run` for this detector: Model Garden's trainer with ``param_spec``'s training
        values into ``log_dir``, the listed thresholds chosen on the validation records, the export."""
        from detsearch.models import pipeline
        from detsearch.models.experiment import export_experiment
        from detsearch.moxing.specs import ExportKeys

        _check_optimizer_fn(optimizer_fn)
        log_dir = Path(log_dir)
        training = {n: getattr(param_spec, n) for n in TRAINING_PARAMS if n in param_spec}
        name, config = self._config(input_fn, log_dir / "records", batch_size=batch_size, steps=max_number_of_steps,
                                    checkpoint_path=checkpoint_path, training=training)
        experiment = pipeline.trained_experiment(name, config, train_into=log_dir)
        thresholds = param_spec.subset(THRESHOLD_PARAMS)
        config_thresholds = experiment.thresholds
        unknown = sorted(set(thresholds.names()) - set(config_thresholds))
        if unknown:
            raise ValueError(f"param_spec names {', '.join(unknown)}: not thresholds of a {experiment.kind} detector "
                             f"({', '.join(config_thresholds)})")
        search = None
        chosen = {n: getattr(thresholds, n) for n in thresholds.names()}
        if any(isinstance(value, tuple) for value in chosen.values()):
            grid = {}
            for n, value in config_thresholds.items():
                given = chosen.get(n, value)
                grid[n] = sorted(set(given)) if isinstance(given, tuple) else [given]
            grid = ParamSpec(**grid)
            search = pipeline.search_thresholds(experiment, log_dir / "search", grid=grid, score_floor=self.score_floor)
            chosen = search.chosen
        export = None
        if export_model == ExportKeys.TF_SERVING:
            export = str(export_experiment(experiment, {**config_thresholds, **chosen}, log_dir / "model"))
        return {"param_spec": param_spec.replace(**chosen), "checkpoint": experiment.checkpoint,
                "metrics": _last_scalars(log_dir), "sweep": None if search is None else search.result,
                "export": export}
