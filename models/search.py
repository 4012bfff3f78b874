"""HyperSelector for detectors: learning_rate, momentum and weight_decay of a Model Garden
detector from short training runs, then its thresholds from a cache of the final model.

- `DetectionTrainer` is the shared selector's trainer (`detsearch.training.base.Trainer`) for
  `detsearch.models.ssd` and `detsearch.models.faster_rcnn`: every trial starts from the same weights (a fresh
  build from ``seed``, or ``checkpoint_path`` for fine-tuning), sees the same batches in the
  same order (`detsearch.models.train.training_batches`), and trains with `detsearch.models.train.TrainLoop` (momentum SGD,
  weight decay on kernels) under the trial's learning-rate schedule. Curves hold the training
  losses (``loss`` = Model Garden's ``model_loss``, and its parts) and, with a validation set,
  a quick validation mAP (`ACC_NAME` = ``"AP"``: COCO AP@[.5:.95] of Model Garden's own
  post-processing at the default thresholds on the first ``eval_images`` images).
- `search_detector` is the whole flow on one `ParamSpec`: the training parameters of
  ``param_list_spec`` go to the selector, the final model is trained with the choice
  (`detsearch.models.train.train_detector`, resumable), its raw predictions on the validation set are cached once and
  the threshold lists of ``param_list_spec`` are swept on the cache.

Faster R-CNN samples anchors and ROIs at random in training (Model Garden's samplers), so two
runs of the same trial differ by that sampling noise; SSD (RetinaNet) trials are repeatable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from detsearch.datasets.detection import DetectionDataset
from detsearch.params import THRESHOLD_PARAMS, TRAINING_PARAMS, ParamSpec
from detsearch.selector import HyperSelector, Journal, SearchResult, SelectorConfig
from detsearch.selector.curves import Curve, TrialSpec
from detsearch.training.base import CurveRecorder, arrays_fingerprint, run_trial_steps, source_fingerprint
import tensorflow as tf

from detsearch.models.data import dataset_categories, dataset_max_boxes
from detsearch.models.detector import MODELS, build_detector
from detsearch.models.export import export_detector
from detsearch.models.record import predict_results, record_cache
from detsearch.models.restore import DETECTOR_FILE, latest_checkpoint, load_detector, restore_checkpoint
from detsearch.models.train import TrainLoop, train_detector, training_batches

__all__ = ["ACC_NAME", "DetectionSearch", "DetectionTrainer", "LOSS_NAME", "search_detector"]

logger = logging.getLogger(__name__)

ACC_NAME = "AP"
"""The accuracy metric of detection curves: COCO AP@[.5:.95] on the validation images."""
LOSS_NAME = "loss"
"""The loss metric of detection curves: Model Garden's ``model_loss`` (weight decay not included)."""

LR_REFINE_FACTORS = (10 ** -0.5, 10 ** 0.5)
"""`SelectorConfig.lr_refine_factors` for detectors: the range test's pick and its half-decade
neighbours are trained like candidates. On the tiny SSD (tools/bench_selector.py --task
detection) fastai's rules picked 0.003 (steep, valley, minimum/10) or 0.03 (minimum) where the
grid's best final mAP came at 0.0095, and 200-step trials at 0.001 / 0.003 / 0.0095 / 0.03 / 0.095
ranked 0.0095 first by both tail loss and tail AP."""


def resolve_checkpoint(path: str | os.PathLike) -> str:
    """A checkpoint prefix from a prefix or a `detsearch.models.train.train_detector` run directory (its latest).

    Raises:
      FileNotFoundError: neither.
    """
    path = str(path)
    if tf.io.gfile.exists(path + ".index"):
        return path
    if os.path.isdir(path):
        latest = latest_checkpoint(path) or tf.train.latest_checkpoint(path)
        if latest:
            return latest
    raise FileNotFoundError(f"checkpoint_path {path}: no checkpoint there (a prefix with .index, or a run directory)")


class DetectionTrainer:
    """Short training runs of a Model Garden detector for `detsearch.selector.HyperSelector`.

    Args:
      model: ``"ssd"`` or ``"faster_rcnn"``.
      preset: preset name of the model.
      train_set: training images (their categories are the detector's).
      val_set: validation images for the ``AP`` metric; None: curves hold losses only.
      batch_size: images per step (default: the preset's).
      checkpoint_path: initial weights of every trial (a checkpoint prefix or a `detsearch.models.train.train_detector`
        run directory); None starts from the weights a build with ``seed`` gives.
      seed: initial weights and data order.
      eval_images: validation images scored per ``AP`` point (the first ones).
      evaluation_total_steps: training batches averaged into a curve point's losses.
      log_every_n_steps: a log line every this many steps (0: none).
    """

    def __init__(
        self,
        model: str,
        preset: str,
        train_set: DetectionDataset,
        *,
        val_set: DetectionDataset | None = None,
        batch_size: int | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        seed: int = 0,
        eval_images: int = 100,
        evaluation_total_steps: int = 10,
        log_every_n_steps: int = 0,
    ) -> None:
        if evaluation_total_steps < 1 or eval_images < 1:
            raise ValueError(f"evaluation_total_steps and eval_images must be >= 1, got {evaluation_total_steps}, "
                             f"{eval_images}")
        ids, names = dataset_categories(train_set)
        self.detector = build_detector(model, preset, ids, names, seed=seed)
        self.checkpoint_path = None
        if checkpoint_path is not None:
            self.checkpoint_path = resolve_checkpoint(checkpoint_path)
            restore_checkpoint(self.detector, self.checkpoint_path)
        self.train_set = train_set
        self.batch_size = int(batch_size or self.detector.preset.batch_size)
        self.seed = int(seed)
        self.evaluation_total_steps = int(evaluation_total_steps)
        self.log_every_n_steps = int(log_every_n_steps)
        self.max_boxes = dataset_max_boxes(train_set)
        self.loop = TrainLoop(self.detector, self.batch_size, self.max_boxes)
        self._variables = list(self.detector.model.variables)
        self._initial = [v.numpy() for v in self._variables]
        self.val_set = None
        self._ground_truth = None
        if val_set is not None:
            val_ids, _ = dataset_categories(val_set)
            if val_ids != list(self.detector.category_ids):
                raise ValueError(f"validation categories {val_ids} differ from the training set's "
                                 f"{list(self.detector.category_ids)}")
            self.val_set = DetectionDataset(val_set.examples[:eval_images], val_set.categories, val_set.image_dir)
            self._ground_truth = self.val_set.to_coco_json()
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------------------ protocol

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256()
            setup = {
                "detector": self.detector.describe(), "preset": repr(self.detector.preset),
                "thresholds": self.detector.thresholds, "batch_size": self.batch_size, "seed": self.seed,
                "max_boxes": self.max_boxes, "evaluation_total_steps": self.evaluation_total_steps,
                "checkpoint": self.checkpoint_path,
            }
            digest.update(json.dumps(setup, sort_keys=True, default=str).encode())
            digest.update(json.dumps(self.train_set.to_coco_json(), sort_keys=True).encode())
            digest.update(json.dumps(self._ground_truth, sort_keys=True).encode())
            digest.update(arrays_fingerprint(self._initial).encode())
            digest.update(source_fingerprint(TrainLoop._step_fn, type(self.detector).losses,
                                             training_batches, DetectionTrainer.run).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def num_parameters(self) -> int:
        return self.detector.num_parameters()

    def metric_names(self) -> tuple[str, ...]:
        return (LOSS_NAME,) + ((ACC_NAME,) if self.val_set is not None else ())

    def evaluate(self) -> dict[str, float]:
        """``{"AP": ...}`` of the current weights on the validation images (Model Garden's
        post-processing at the default thresholds; 0 when nothing is detected)."""
        from detsearch.detection.cocoeval import evaluate_results

        results = predict_results(self.detector, self.val_set, self.batch_size)
        stats = evaluate_results(self._ground_truth, results).stats
        return {ACC_NAME: max(0.0, float(stats[0]))}

    def reset(self) -> None:
        """Back to the initial weights with zero momentum and step count."""
        for variable, value in zip(self._variables, self._initial):
            variable.assign(value)
        for slot in self.loop.slots:
            slot.assign(tf.zeros_like(slot))
        self.loop.step_count.assign(0)

    def run(self, trial: TrialSpec, on_step: Callable[[int], None] | None = None) -> Curve:
        self.reset()
        self.loop.set_hyperparameters(momentum=trial.momentum or 0.0, weight_decay=trial.weight_decay or 0.0)
        batches = training_batches(self.train_set, self.detector.image_size, self.batch_size, seed=self.seed,
                                   max_boxes=self.max_boxes)
        recorder = CurveRecorder(trial, LOSS_NAME, self.evaluation_total_steps,
                                 self.evaluate if self.val_set is not None else None)
        steps = len(trial.schedule.values())

        def step(index: int, learning_rate: float) -> dict[str, float]:
            return self.loop.step(next(batches), learning_rate)

        return run_trial_steps(trial, recorder, step, steps, on_step, self.log_every_n_steps, logger)


# ------------------------------------------------------------------------------------------
# the whole flow


@dataclass
class DetectionSearch:
    """What `search_detector` chose and where it wrote it.

    Attributes:
      param_spec: the chosen training parameters and thresholds (one value each).
      selection: the selector's `SearchResult` (None when no training parameter was searched).
      sweep: the threshold sweep's `detsearch.detection.sweep.SweepResult`.
      run_dir: the final training run (`detsearch.models.train.train_detector` output).
      checkpoint: the final checkpoint the cache was recorded from.
      default_thresholds: Model Garden's default thresholds of the model.
      steps: selector steps and final training steps.
    """

    param_spec: ParamSpec
    selection: SearchResult | None
    sweep: Any
    run_dir: Path
    checkpoint: str
    default_thresholds: dict[str, float]
    steps: dict[str, int] = field(default_factory=dict)


def split_spec(param_list_spec: ParamSpec) -> tuple[ParamSpec, ParamSpec]:
    """``(training candidates, threshold candidates)`` of one `ParamSpec`."""
    return param_list_spec.subset(TRAINING_PARAMS), param_list_spec.subset(THRESHOLD_PARAMS)


def select_training(
    model: str,
    preset: str,
    train_set: DetectionDataset,
    val_set: DetectionDataset | None,
    out_dir: str | os.PathLike,
    *,
    param_spec: ParamSpec,
    param_list_spec: ParamSpec,
    config: SelectorConfig,
    batch_size: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    seed: int = 0,
    eval_images: int = 100,
    evaluation_total_steps: int = 10,
    log_every_n_steps: int = 0,
    on_trial: Callable | None = None,
    on_step: Callable[[int], None] | None = None,
) -> SearchResult | None:
    """The selector part of `search_detector` and of ``mox.auto.search`` with a `DetectionModel`:
    learning_rate, momentum and weight_decay.

    Thresholds in the specs are ignored here. Finished trials go to ``out_dir/journal.jsonl``
    (``out_dir`` None: kept in memory). Returns None when nothing is searched (no LR range test
    and no training candidate list).

    Raises:
      ValueError: bad specs or config, before any training.
    """
    from detsearch.selector.hyperselector import check_search_specs

    if config.acc_name != ACC_NAME or config.loss_name != LOSS_NAME:
        raise ValueError(f"detection curves measure {LOSS_NAME!r} and {ACC_NAME!r}; got acc_name "
                         f"{config.acc_name!r}, loss_name {config.loss_name!r}")
    training_list = param_list_spec.subset(TRAINING_PARAMS)
    training_spec = param_spec.subset(TRAINING_PARAMS)
    check_search_specs(training_spec, training_list, config.search_learning_rate)
    if not (config.search_learning_rate or training_list.names()):
        return None
    if config.by_acc and val_set is None:
        raise ValueError(f"by_acc judges by validation {ACC_NAME}: validation images are needed")
    trainer = DetectionTrainer(model, preset, train_set, val_set=val_set if config.by_acc else None,
                               batch_size=batch_size, checkpoint_path=checkpoint_path, seed=seed,
                               eval_images=eval_images, evaluation_total_steps=evaluation_total_steps,
                               log_every_n_steps=log_every_n_steps)
    selector = HyperSelector(trainer, config, Journal(out_dir), on_trial=on_trial, on_step=on_step)
    return selector.select(training_spec, training_list)


def train_final(
    model: str,
    preset: str,
    train_set: DetectionDataset,
    val_set: DetectionDataset | None,
    out_dir: str | os.PathLike,
    *,
    param_spec: ParamSpec,
    steps: int,
    warmup_steps: int = 0,
    warmup_lr: float | None = None,
    batch_size: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    seed: int = 0,
    score_floor: float = 0.01,
    objective: str = "map",
    budget: float | None = None,
    sweep_options: Mapping[str, Any] | None = None,
    on_train_step: Callable[[int, Mapping[str, float]], None] | None = None,
    on_cache_progress: Callable[[int], None] | None = None,
) -> DetectionSearch:
    """Trains the final model with ``param_spec``'s training parameters, then chooses its thresholds.

    ``sweep_options`` are further keyword arguments of the sweep (`detsearch.detection.sweep.sweep`:
    ``tolerance``, ``per_class``, ``holdout``, ...).

    ``param_spec`` holds one value per training parameter (``learning_rate`` required) and, per
    threshold, one value (kept) or a candidate list (swept on a cache of ``val_set``, with Model
    Garden's default added). Writes ``out_dir/train`` (a `detsearch.models.train.train_detector` run: a rerun resumes it),
    ``out_dir/cache`` (resumable by shard) when anything is swept.

    Raises:
      ValueError: bad parameters, before any training.
    """
    from detsearch.detection.sweep import sweep

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for name in TRAINING_PARAMS:
        if isinstance(getattr(param_spec, name), tuple):
            raise ValueError(f"param_spec.{name} must be one value for the final training, got a list")
    if param_spec.learning_rate is None:
        raise ValueError("param_spec.learning_rate is needed for the final training")
    ids, names = dataset_categories(train_set)
    detector = build_detector(model, preset, ids, names, seed=seed)
    unknown = [n for n in param_spec.subset(THRESHOLD_PARAMS).names() if n not in detector.thresholds]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} do not apply to {model} (its thresholds: "
                         f"{', '.join(detector.thresholds)})")
    swept = [n for n in detector.thresholds if isinstance(getattr(param_spec, n), tuple)]
    if swept and val_set is None:
        raise ValueError(f"choosing {', '.join(swept)} needs validation images")
    out_dir = Path(out_dir)
    run_dir = out_dir / "train"
    if checkpoint_path is not None and latest_checkpoint(run_dir) is None:
        restore_checkpoint(detector, resolve_checkpoint(checkpoint_path))
    train_detector(detector, train_set, run_dir, steps=steps + warmup_steps,
                   batch_size=batch_size or detector.preset.batch_size, learning_rate=param_spec.learning_rate,
                   momentum=param_spec.momentum or 0.0, weight_decay=param_spec.weight_decay or 0.0,
                   warmup_steps=warmup_steps, warmup_lr=warmup_lr if warmup_steps else None, seed=seed,
                   on_step=on_train_step, extra_meta={"param_spec": param_spec.to_dict()})
    detector, checkpoint = load_detector(run_dir)
    defaults = dict(detector.thresholds)
    result = None
    chosen = {n: getattr(param_spec, n) for n in defaults if n in param_spec and n not in swept}
    if swept:
        grid = {n: sorted(set(param_spec.candidates(n) or ()) | {defaults[n]}) for n in defaults if n not in chosen}
        grid.update({n: [v] for n, v in chosen.items()})
        first_stage = ((grid["nms_iou_threshold"], min(grid["nms_score_threshold"]))
                       if "nms_iou_threshold" in grid else None)
        cache = record_cache(detector, val_set, out_dir / "cache", score_floor=score_floor,
                             source={"checkpoint": str(Path(checkpoint).resolve())},
                             progress=on_cache_progress, first_stage=first_stage)
        result = sweep(cache, val_set.to_coco_json(), ParamSpec(**grid), objective=objective, budget=budget,
                       **(sweep_options or {}))
        chosen = result.best.to_dict()
    final = param_spec.replace(**chosen)
    return DetectionSearch(final, None, result, run_dir, checkpoint, defaults, {"selector": 0, "final": int(steps)})


def search_detector(
    model: str,
    preset: str,
    train_set: DetectionDataset,
    val_set: DetectionDataset,
    out_dir: str | os.PathLike,
    *,
    param_spec: ParamSpec,
    param_list_spec: ParamSpec,
    config: SelectorConfig,
    final_steps: int,
    batch_size: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    seed: int = 0,
    eval_images: int = 100,
    evaluation_total_steps: int = 10,
    score_floor: float = 0.01,
    objective: str = "map",
    budget: float | None = None,
    sweep_options: Mapping[str, Any] | None = None,
    on_trial: Callable | None = None,
    on_step: Callable[[int], None] | None = None,
    on_train_step: Callable[[int, Mapping[str, float]], None] | None = None,
    on_cache_progress: Callable[[int], None] | None = None,
) -> DetectionSearch:
    """Selector, final training, cache and threshold sweep for one detector, on one `ParamSpec`.

    Args:
      model, preset: the detector.
      train_set, val_set: training images; validation images (cache, sweep and, with
        ``config.by_acc``, the ``AP`` curve points).
      out_dir: ``selector/journal.jsonl`` (finished trials; a rerun reuses them), ``train/``
        (the final run; a rerun resumes it), ``cache/`` (resumable by shard).
      param_spec: defaults (``learning_rate`` when not searched, ``momentum``,
        ``weight_decay``; thresholds here are ignored).
      param_list_spec: candidate lists: training parameters go to the selector, thresholds to
        the sweep with Model Garden's default added (a threshold not listed stays at Model
        Garden's default).
      config: the selector's settings (``acc_name`` must be `ACC_NAME`, ``loss_name``
        `LOSS_NAME`).
      final_steps: training steps of the final model (warm-up ``config.warmup_steps`` at
        ``config.warmup_lr`` first, as in the trials).
      checkpoint_path: initial weights of every trial and of the final training (fine-tuning).
      sweep_options: further keyword arguments of the threshold sweep (see `train_final`).

    Raises:
      ValueError: bad specs or config, before any training.
    """
    if final_steps < 1:
        raise ValueError(f"final_steps must be >= 1, got {final_steps}")
    out_dir = Path(out_dir)
    selection = select_training(model, preset, train_set, val_set, out_dir / "selector", param_spec=param_spec,
                                param_list_spec=param_list_spec, config=config, batch_size=batch_size,
                                checkpoint_path=checkpoint_path, seed=seed, eval_images=eval_images,
                                evaluation_total_steps=evaluation_total_steps, on_trial=on_trial, on_step=on_step)
    training = param_spec.subset(TRAINING_PARAMS) if selection is None else selection.param_spec
    thresholds = {n: list(param_list_spec.candidates(n)) for n in param_list_spec.subset(THRESHOLD_PARAMS).names()}
    found = train_final(model, preset, train_set, val_set, out_dir, param_spec=training.replace(**thresholds),
                        steps=final_steps, warmup_steps=config.warmup_steps, warmup_lr=config.warmup_lr,
                        batch_size=batch_size, checkpoint_path=checkpoint_path, seed=seed, score_floor=score_floor,
                        objective=objective, budget=budget, sweep_options=sweep_options, on_train_step=on_train_step,
                        on_cache_progress=on_cache_progress)
    found.selection = selection
    found.steps["selector"] = 0 if selection is None else selection.steps_spent
    return found


# ------------------------------------------------------------------------------------------
# MoXing's API


def _check_optimizer_fn(optimizer_fn: Callable) -> None:
    """Detectors train with `detsearch.models.train.TrainLoop` (momentum SGD): ``optimizer_fn`` must build a
    plain momentum optimizer, which is what MoXing's detection programs use."""
    from detsearch.moxing.specs import ModeKeys  # noqa: F401  (the facade is loaded)

    graph = tf.Graph()
    with graph.as_default():
        optimizer = optimizer_fn(param_spec=ParamSpec(learning_rate=0.1, momentum=0.9, weight_decay=0.0))
    if not isinstance(optimizer, tf.compat.v1.train.MomentumOptimizer) or getattr(optimizer, "_use_nesterov", False):
        raise ValueError(f"detection models train with momentum SGD; optimizer_fn builds "
                         f"{type(optimizer).__name__} (use mox.get_optimizer_fn('momentum', ...))")


@dataclass(frozen=True)
class DetectionModel:
    """A Model Garden detector in MoXing's ``model_fn`` slot of ``mox.auto.search`` and
    ``mox.auto.run``::

        import detsearch.moxing as mox
        from detsearch.models.search import DetectionModel

        def input_fn(run_mode):          # a detsearch.datasets.detection.DetectionDataset per mode
            return train_set if run_mode == mox.ModeKeys.TRAIN else val_set

        chosen = mox.auto.search(input_fn, DetectionModel("ssd"), optimizer_fn, batch_size=8,
                                 auto_batch=False, total_steps=200, evaluation_total_steps=10,
                                 acc_name="AP", window=5, param_spec=mox.auto.ParamSpec(...),
                                 param_list_spec=mox.auto.ParamSpec(weight_decay=[...],
                                     momentum=[...], score_threshold=[...], iou_threshold=[...]))
        mox.auto.run(input_fn, DetectionModel("ssd"), optimizer_fn, batch_size=8,
                     log_dir="runs/ssd", max_number_of_steps=1500, param_spec=chosen,
                     export_model=mox.ExportKeys.TF_SERVING)

    ``search`` chooses the training parameters and returns them with the threshold candidate
    lists of ``param_list_spec``; ``run`` trains with them, sweeps the threshold lists on a cache
    of ``input_fn(EVAL)`` and exports a SavedModel whose post-processing runs at the chosen
    thresholds (`detsearch.models.export.export_detector`). The curves' metrics are ``"loss"`` and ``"AP"``
    (with ``by_acc``, measured on the first ``eval_images`` images of ``input_fn(EVAL)``);
    ``auto_batch`` and ``select_by_eval`` have no effect (images are batched by the framework;
    AP is always measured on evaluation images). The range test's pick is refined over
    ``lr_refine_factors`` (`LR_REFINE_FACTORS`; ``()`` takes the pick as is).
    """

    model: str
    preset: str = "tiny"
    eval_images: int = 100
    score_floor: float = 0.01
    lr_refine_factors: tuple[float, ...] = LR_REFINE_FACTORS

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {', '.join(MODELS)}")

    def __call__(self, inputs, run_mode):
        raise TypeError("DetectionModel is run by mox.auto.search / mox.auto.run, not called as a model_fn")

    @staticmethod
    def _dataset(input_fn: Callable, mode: str) -> DetectionDataset:
        data = input_fn(mode)
        if not isinstance(data, DetectionDataset):
            raise TypeError(f"input_fn({mode!r}) must return a detsearch.datasets.detection.DetectionDataset for a detection "
                            f"model, got {type(data).__name__}")
        return data

    def moxing_search(self, *, input_fn: Callable, optimizer_fn: Callable, config: SelectorConfig, batch_size: int,
                      evaluation_total_steps: int, checkpoint_path, log_every_n_steps: int, param_spec: ParamSpec,
                      param_list_spec: ParamSpec, output_dir, seed: int, on_trial=None,
                      on_step=None) -> SearchResult | None:
        """`mox.auto.search` for this detector (called by the facade after its argument checks):
        `select_training`; None when nothing is searched."""
        from detsearch.moxing.specs import ModeKeys

        _check_optimizer_fn(optimizer_fn)
        config = replace(config, lr_refine_factors=tuple(self.lr_refine_factors))
        train_set = self._dataset(input_fn, ModeKeys.TRAIN)
        val_set = self._dataset(input_fn, ModeKeys.EVAL) if config.by_acc else None
        return select_training(self.model, self.preset, train_set, val_set, output_dir, param_spec=param_spec,
                               param_list_spec=param_list_spec, config=config, batch_size=batch_size,
                               checkpoint_path=checkpoint_path, seed=seed, eval_images=self.eval_images,
                               evaluation_total_steps=evaluation_total_steps, log_every_n_steps=log_every_n_steps,
                               on_trial=on_trial, on_step=on_step)

    def moxing_run(self, *, input_fn: Callable, optimizer_fn: Callable, batch_size: int, log_dir, max_number_of_steps: int,
                   export_model: str | None, param_spec: ParamSpec, checkpoint_path, seed: int) -> dict[str, Any]:
        """`mox.auto.run` for this detector: train, choose listed thresholds, export."""
        from detsearch.moxing.specs import ExportKeys, ModeKeys

        _check_optimizer_fn(optimizer_fn)
        swept = any(isinstance(getattr(param_spec, n), tuple) for n in param_spec.subset(THRESHOLD_PARAMS).names())
        train_set = self._dataset(input_fn, ModeKeys.TRAIN)
        val_set = self._dataset(input_fn, ModeKeys.EVAL) if swept else None
        found = train_final(self.model, self.preset, train_set, val_set, log_dir, param_spec=param_spec,
                            steps=max_number_of_steps, batch_size=batch_size, checkpoint_path=checkpoint_path,
                            seed=seed, score_floor=self.score_floor)
        thresholds = {n: v for n, v in found.param_spec.to_dict().items() if n in found.default_thresholds}
        info = json.loads((found.run_dir / DETECTOR_FILE).read_text())
        outcome = {"param_spec": found.param_spec, "checkpoint": found.checkpoint, "metrics": info.get("metrics", {}),
                   "sweep": found.sweep, "export": None}
        if export_model == ExportKeys.TF_SERVING:
            detector, _ = load_detector(found.run_dir, found.checkpoint, thresholds=thresholds)
            outcome["export"] = str(export_detector(detector, Path(log_dir) / "model"))
        return outcome
