"""Detection threshold search end to end: data, detector, cache, sweep, report.

    detsearch search-det                                  # built-in demo, tiny SSD
    detsearch search-det --model faster_rcnn              # the four Faster R-CNN thresholds
    detsearch search-det --model ssd --preset standard --checkpoint runs/ssd/checkpoints/ckpt-90000 \\
        --dataset coco --annotations instances_val2017.json --images val2017 --train-run runs/ssd

With no arguments it builds the MNIST-detection demo set (real digits on 128 px canvases),
trains the tiny detector on its train split (``--steps``; a rerun resumes or reuses the run),
records the raw predictions of the val split once (``OUT/cache``), sweeps the thresholds on the
cache (no second pass through the network) and prints the chosen thresholds with their mAP next
to Model Garden's default thresholds. Writes ``OUT/sweep/result.json``, ``report.md`` and
``heatmap.png``, and ``OUT/summary.json``.

With ``--search-training`` the learning rate, momentum and weight decay are chosen first by the
HyperSelector (an LR range test and candidate trials of ``--trial-steps`` steps, from the same
initial weights and batches; ``OUT/selector/journal.jsonl`` keeps finished trials), the final model
is trained with the choice, then cached and swept as above, and exported with the chosen
thresholds (``OUT/export``, a SavedModel). The learning rate is chosen for the final budget
(``--steps``; with ``--experiment`` the config's ``trainer.train_steps``) by ``--horizon-rule``
(docs/hyperselector.md; none by default for detectors, where scaling measured worse). ``OUT/lr_range.png`` and ``OUT/candidates.png`` show the curves. A killed run started again with the same arguments reuses every finished trial,
resumes the final training from its last checkpoint and the cache from its last shard.

    detsearch search-det --search-training                      # demo, tiny SSD
    detsearch search-det --search-training --weight-decays 1e-4,1e-3 --momentums 0.9,0.95 \\
        --score-thresholds 0.05,0.3 --by-loss

With ``--experiment NAME`` the detector is a trained TF Model Garden experiment (RetinaNet with
``nms_version`` v2 or batched; Faster R-CNN with Model Garden's default post-processing): its
config (``--config-file``, ``--params-override``, as ``official.vision.train`` takes them), its
checkpoint (``--model-dir`` or ``--checkpoint``), its validation TFRecords and ground truth. It
writes ``OUT/thresholds.yaml`` (a Model Garden params override), ``OUT/cache`` (one shard per
record file when ``task.annotation_file`` is set, on ``--executor``, resumable),
``OUT/sweep/``; ``--export DIR`` a SavedModel through Model Garden's serving module; ``--verify``
compares rows of the table with Model Garden's own evaluation, each stat as float32 (a difference
is an error); ``--search-training --by-loss`` first chooses the
training parameters on the experiment's own train step, writes ``OUT/training.yaml`` and trains
with Model Garden's trainer into ``OUT/train`` (docs/garden.md).

    detsearch search-det --experiment retinanet_resnetfpn_coco --config-file my.yaml \\
        --model-dir runs/retinanet --out out/retinanet --verify
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


from detsearch.cli.args import (BadInput, check_objective, non_negatives, objective_arguments, operating_point_arguments,
                                operating_point_options, positives, thresholds)
from detsearch.cli.data import add_dataset_arguments, dataset_from_args
from detsearch.executor import add_executor_arguments
from detsearch.selector.hyperselector import DETECTOR_HORIZON_RULE
from detsearch.selector.rules import HORIZON_RULES

DEFAULT_GRIDS = {
    "ssd": {
        "score_threshold": [0.01, 0.05, 0.1, 0.2, 0.3, 0.5],
        "iou_threshold": [0.3, 0.4, 0.5, 0.6, 0.7],
    },
    "faster_rcnn": {
        "nms_score_threshold": [0.0, 0.1, 0.3],
        "nms_iou_threshold": [0.5, 0.6, 0.7, 0.8],
        "score_threshold": [0.01, 0.05, 0.1, 0.3],
        "iou_threshold": [0.4, 0.5, 0.6],
    },
}
"""Candidates per model when no flag gives them; Model Garden's defaults are always added."""


HELP = "detector, cache, threshold sweep, report (the built-in demo by default)"
DESCRIPTION = __doc__


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=("ssd", "faster_rcnn"), default="ssd", help="detector (default ssd)")
    parser.add_argument("--preset", default="tiny", help="tiny (CPU, 128 px) or standard (default tiny)")
    parser.add_argument("--out", default=None, help="output directory (default out/search_det_MODEL)")
    add_dataset_arguments(parser, "val")
    parser.add_argument("--train-split", default="train", help="demo split to train on (default train)")
    parser.add_argument("--train-run", default=None,
                        help="a `detsearch train` run directory to use or create (default OUT/train), or "
                             "ssd_tiny_demo: the tiny SSD trained on the demo, shipped with the package")
    parser.add_argument("--checkpoint", default=None, help="checkpoint prefix in the run (default: its latest)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps when training (default 1500)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="training images per step (default: the preset's; at most the training images)")
    parser.add_argument("--learning-rate", type=float, default=0.02)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--score-floor", type=float, default=0.01, help="cache score floor (default 0.01)")
    parser.add_argument("--score-thresholds", dest="score_thresholds", default=None, help="comma-separated")
    parser.add_argument("--iou-thresholds", dest="iou_thresholds", default=None, help="comma-separated")
    parser.add_argument("--nms-score-thresholds", dest="nms_score_thresholds", default=None,
                        help="faster_rcnn first stage, comma-separated")
    parser.add_argument("--nms-iou-thresholds", dest="nms_iou_thresholds", default=None,
                        help="faster_rcnn first stage, comma-separated")
    objective_arguments(parser)
    operating_point_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="initial weights and data order (default 0)")
    garden = parser.add_argument_group("a Model Garden experiment as the detector (RetinaNet, Faster R-CNN)")
    garden.add_argument("--experiment", metavar="NAME",
                        help="registered Model Garden experiment, e.g. retinanet_resnetfpn_coco: the model, the "
                             "validation TFRecords and the ground truth come from its config")
    garden.add_argument("--config-file", metavar="A.yaml[,B.yaml]", help="the experiment's YAML overrides, in order")
    garden.add_argument("--params-override", metavar="TEXT", help="a last override, e.g. 'task.model.num_classes=11'")
    garden.add_argument("--model-dir", metavar="DIR", help="the experiment's model_dir: its latest checkpoint is used "
                                                           "(or give --checkpoint PREFIX)")
    garden.add_argument("--export", metavar="DIR",
                        help="with --experiment: a SavedModel at the chosen thresholds through Model Garden's own "
                             "serving module (DIR/saved_model, DIR/params.yaml); with --per-class, filtered by the "
                             "per-class thresholds after Model Garden's post-processing")
    add_executor_arguments(garden, gpus=True)  # one cache shard per record file, each a task
    garden.add_argument("--verify", action="store_true",
                        help="with --experiment: also run Model Garden's own evaluation at rows of the sweep's table "
                             "(the chosen, the config's, others spread over the axes) and compare each of the 12 "
                             "stats as float32; any difference is an error (exit 2)")
    garden.add_argument("--verify-rows", type=int, default=None, metavar="N",
                        help="rows --verify compares (default 6; all of the table when it has fewer)")
    group = parser.add_argument_group("--search-training (HyperSelector before the final training)")
    group.add_argument("--search-training", dest="search_training", action="store_true",
                       help="choose learning_rate, momentum and weight_decay first (--steps: final training)")
    group.add_argument("--trial-steps", type=int, default=200, help="steps of every selector trial (default 200)")
    group.add_argument("--weight-decays", dest="weight_decays", default="1e-4,1e-3",
                       help="weight_decay candidates (default 1e-4,1e-3)")
    group.add_argument("--momentums", default="0.9,0.95", help="momentum candidates (default 0.9,0.95)")
    group.add_argument("--learning-rates", dest="learning_rates", default=None,
                       help="learning_rate candidates instead of the LR range test")
    group.add_argument("--by-loss", action="store_true",
                       help="judge candidates by the training loss (default: validation AP, as by_acc=True)")
    group.add_argument("--eval-images", type=int, default=100, help="validation images per AP point (default 100)")
    group.add_argument("--evaluate-every-n-steps", type=int, default=10, help="steps per curve point (default 10)")
    group.add_argument("--window", type=int, default=5, help="curve points smoothed / scored (default 5)")
    group.add_argument("--max-thres", type=int, default=3, help="rising points before the LR curve is cut")
    group.add_argument("--warmup-steps", type=int, default=20, help="warm-up steps of every run (default 20)")
    group.add_argument("--warmup-lr", type=float, default=1e-3, help="warm-up learning rate (default 1e-3)")
    group.add_argument("--init-learning-rate", type=float, default=None, help="LR range start (default per size)")
    group.add_argument("--end-learning-rate", type=float, default=None, help="LR range end (default per size)")
    group.add_argument("--lr-rule", default=None, help="LR choice rule (default: the documented one)")
    group.add_argument("--horizon-rule", dest="horizon_rule", default=None, choices=HORIZON_RULES,
                       help="scale the trials' learning rate to the final budget (--steps, or the experiment's "
                            "trainer.train_steps): fourth_root, sqrt, fit or none (default none: measured best "
                            "for detectors)")
    group.add_argument("--lr-refine-factors", dest="lr_refine_factors", default="0.31623,3.1623",
                       help="also train the rule's pick times these (default 10^-0.5, 10^0.5; '' takes the pick)")
    group.add_argument("--checkpoint-path", default=None,
                       help="initial weights of every trial and of the final training (fine-tuning)")


def threshold_flags(args) -> dict[str, list[float] | None]:
    """The candidate lists given on the command line (None where a flag is absent).

    Raises:
      ValueError: a list that is not numbers, a value outside [0, 1], a first-stage flag for SSD,
        or a score threshold below the cache's score floor (checked before any training).
    """
    flags = {
        "score_threshold": thresholds(args.score_thresholds, "--score-thresholds"),
        "iou_threshold": thresholds(args.iou_thresholds, "--iou-thresholds"),
        "nms_score_threshold": thresholds(args.nms_score_thresholds, "--nms-score-thresholds"),
        "nms_iou_threshold": thresholds(args.nms_iou_thresholds, "--nms-iou-thresholds"),
    }
    from detsearch.params import ParamSpec

    ParamSpec(**{name: values for name, values in flags.items() if values is not None})  # range and type checks
    extra = [name for name, values in flags.items() if values is not None and name not in DEFAULT_GRIDS[args.model]]
    if extra:
        raise ValueError(f"{', '.join(extra)} do not apply to {args.model}")
    lowest = min(flags["score_threshold"] or DEFAULT_GRIDS[args.model]["score_threshold"])
    if lowest < args.score_floor:
        raise ValueError(f"score threshold {lowest} is below the cache's score floor {args.score_floor} "
                         "(lower --score-floor or raise the thresholds)")
    return flags


def threshold_grid(args, flags: dict[str, list[float] | None], defaults: dict[str, float]) -> dict[str, list[float]]:
    """The candidate lists: flags or `DEFAULT_GRIDS`, plus Model Garden's default of each."""
    grid = {}
    for name, default_values in DEFAULT_GRIDS[args.model].items():
        values = flags[name] if flags[name] is not None else default_values
        grid[name] = sorted(set(values) | {defaults[name]})
    return grid


def describe(params) -> str:
    from detsearch.detection.report import describe_params

    return describe_params(params)


def default_row(result, defaults):
    """The row at the default thresholds ``defaults`` (and, where swept and not in ``defaults``,
    Model Garden's default cap of 100 detections and class-aware NMS)."""
    from detsearch.models.thresholds import MAX_NUM_DETECTIONS

    wanted = dict(defaults)
    extra = {k: v for k, v in {"max_detections": MAX_NUM_DETECTIONS, "class_agnostic": False}.items() if k not in wanted}
    for row in result.table:
        if all(row.params[k] == wanted[k] for k in wanted) and all(row.params.get(k, v) == v for k, v in extra.items()):
            return row
    return None


def finish(args, out: Path, num_images: int, result, defaults, checkpoint, started, extra=None) -> None:
    """Writes the sweep's outputs and ``summary.json``; prints the choice next to the defaults."""
    from detsearch.atomic import write_json_atomic
    from detsearch.detection.report import summary_lines, write_outputs

    default = default_row(result, defaults)
    write_outputs(result, out / "sweep")
    best = result.best_row
    summary = {
        **({"experiment": args.experiment} if args.experiment else {"model": args.model, "preset": args.preset}),
        "checkpoint": checkpoint,
        "images": num_images, "objective": result.objective, "tolerance": result.tolerance,
        "chosen": {"params": result.best_params, "map": best.stats[0], "ap50": best.stats[1],
                   "dets_per_image": best.dets_per_image},
        "highest": {"params": dict(result.top_row.params), "map": result.top_row.stats[0],
                    "ap50": result.top_row.stats[1], "dets_per_image": result.top_row.dets_per_image},
        "model_garden_default": None if default is None else {
            "params": dict(default.params), "map": default.stats[0], "ap50": default.stats[1],
            "dets_per_image": default.dets_per_image},
        "configurations": len(result.table),
        **({} if result.per_class is None else {"per_class_rule": str(result.per_class.rule),
                                                "per_class_stats": list(result.per_class.stats)}),
        **({} if result.holdout is None else {"holdout": {"stats": list(result.holdout.stats),
                                                          "ci95": {k: list(v) for k, v in result.holdout.ci95.items()}}}),
        **(extra or {}),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "summary.json", summary)
    label = args.experiment or f"{args.model}/{args.preset}"
    print(f"\n{label} on {num_images} images, {len(result.table)} threshold configurations "
          f"from one cached pass ({result.objective}):")
    print(f"  chosen:               {describe(result.best_params)}  mAP {best.stats[0]:.4f}  AP50 "
          f"{best.stats[1]:.4f}  {best.dets_per_image:.1f} dets/image")
    if default is not None:
        print(f"  {'config thresholds:' if args.experiment else 'Model Garden default:':<22}{describe(default.params)}  mAP {default.stats[0]:.4f}  AP50 "
              f"{default.stats[1]:.4f}  {default.dets_per_image:.1f} dets/image")
    for line in summary_lines(result, out / "sweep"):
        print(f"  {line}")
    print(f"wrote {out / 'sweep'} (result.json, report.md, plots), {out / 'summary.json'} ({summary['seconds']:.0f} s)")


def training_lists(args) -> dict[str, list[float]]:
    """The training candidate lists of ``--weight-decays``, ``--momentums``, ``--learning-rates``."""
    return {"weight_decay": non_negatives(args.weight_decays, "--weight-decays"),
            "momentum": non_negatives(args.momentums, "--momentums"),
            "learning_rate": positives(args.learning_rates, "--learning-rates")}


def selector_config(args, lists, acc_name: str, loss_name: str, final_steps: int | None):
    """The `SelectorConfig` of the selector flags (the learning rate searched without a list),
    choosing for ``final_steps`` of final training."""
    from detsearch.selector import SelectorConfig

    return SelectorConfig(
        total_steps=args.trial_steps, by_acc=not args.by_loss, acc_name=acc_name, loss_name=loss_name, window=args.window,
        max_thres=args.max_thres, warmup_steps=args.warmup_steps, warmup_lr=args.warmup_lr,
        evaluate_every_n_steps=args.evaluate_every_n_steps, init_learning_rate=args.init_learning_rate,
        end_learning_rate=args.end_learning_rate, search_learning_rate=not lists["learning_rate"],
        lr_refine_factors=tuple(positives(args.lr_refine_factors, "--lr-refine-factors")
                                if args.lr_refine_factors.strip() else ()),
        final_steps=final_steps, horizon_rule=args.horizon_rule or DETECTOR_HORIZON_RULE,
        **({} if args.lr_rule is None else {"lr_rule": args.lr_rule}))


def experiment_training(args, experiment, out: Path):
    """``--search-training`` with ``--experiment``: the selector on the experiment's own train
    step, ``OUT/training.yaml``, Model Garden's trainer with the choice into ``OUT/train``
    (`detsearch.models.experiment_training`). Returns the trained experiment and the summary's
    entries."""
    from tqdm import tqdm

    from detsearch import report
    from detsearch.models.experiment_training import LOSS_NAME, config_training, search_training
    from detsearch.params import ParamSpec

    if not args.by_loss:
        raise BadInput("--search-training with --experiment judges trials by the task's loss: add --by-loss")
    lists = training_lists(args)
    config = selector_config(args, lists, "AP", LOSS_NAME, int(experiment.config.trainer.train_steps))
    own = config_training(experiment.config)  # the config's values are the defaults
    param_spec = ParamSpec(**{"momentum": args.momentum, **own})
    param_list_spec = ParamSpec(**{name: values for name, values in lists.items() if values})
    per_trial = args.trial_steps + args.warmup_steps
    bar = tqdm(desc="selector", unit="step", dynamic_ncols=True)
    try:
        selection, chosen, path, trained = search_training(
            experiment, out, param_spec=param_spec, param_list_spec=param_list_spec, config=config, seed=args.seed,
            on_trial=lambda name, index, reused, curve: (bar.update(max(0, index * per_trial - bar.n)),
                                                         bar.set_postfix_str(name)),
            on_step=lambda step: bar.update(1), on_train=bar.close)
    except ValueError as error:
        raise BadInput(str(error)) from None
    finally:
        bar.close()
    if selection is not None:
        print(report.summary_table(selection))
        report.plot_lr_test(selection, out / "lr_range.png", args.window)
        report.plot_stages(selection, out / "candidates.png", args.window)
    print(f"  training parameters:  {describe(chosen)} -> {path} (Model Garden trained with it into {out / 'train'})")
    return trained, {"selected": chosen, "training_yaml": str(path),
                     "selection": None if selection is None else selection.to_dict()}


def search_training(args, out: Path, flags, val, started, options) -> int:
    """``--search-training``: selector, final training, cache, sweep, export (`detsearch.models.search`)."""
    from tqdm import tqdm

    from detsearch import report
    from detsearch.params import ParamSpec
    from detsearch.models.export import export_detector
    from detsearch.models.restore import load_detector
    from detsearch.models.search import ACC_NAME, LOSS_NAME, search_detector

    train_args = argparse.Namespace(**{**vars(args), "split": args.train_split})
    train_set = dataset_from_args(train_args)
    lists = training_lists(args)
    lists.update({name: flags[name] if flags[name] is not None else values
                  for name, values in DEFAULT_GRIDS[args.model].items()})
    param_list_spec = ParamSpec(**{name: values for name, values in lists.items() if values})
    param_spec = ParamSpec(learning_rate=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay)
    config = selector_config(args, lists, ACC_NAME, LOSS_NAME, args.steps)
    trials = config.planned_trials(param_list_spec)
    per_trial = args.trial_steps + args.warmup_steps
    bar = tqdm(total=trials * per_trial, desc="selector", unit="step", dynamic_ncols=True)
    state = {"train": None, "cache": None}

    def on_trial(name, index, reused, curve):
        bar.update(max(0, index * per_trial - bar.n))  # reused and diverged trials count in full
        bar.set_postfix_str(name)

    def on_train_step(step, metrics):
        if state["train"] is None:
            bar.close()
            state["train"] = tqdm(total=args.steps + args.warmup_steps, initial=step - 1, desc="train", unit="step",
                                  dynamic_ncols=True)
        state["train"].update(1)

    def on_cache(count):
        if state["cache"] is None:
            for progress in (bar, state["train"]):
                if progress is not None:
                    progress.close()
            state["cache"] = tqdm(total=len(val), desc="cache", unit="img", dynamic_ncols=True)
        state["cache"].update(count)

    found = search_detector(
        args.model, args.preset, train_set, val, out, param_spec=param_spec, param_list_spec=param_list_spec,
        config=config, final_steps=args.steps, checkpoint_path=args.checkpoint_path, seed=args.seed,
        batch_size=args.batch_size,
        eval_images=args.eval_images, score_floor=args.score_floor, objective=args.objective, budget=args.budget,
        sweep_options=options, on_trial=on_trial, on_step=lambda step: bar.update(1), on_train_step=on_train_step, on_cache_progress=on_cache)
    for progress in (bar, state["train"], state["cache"]):
        if progress is not None:
            progress.close()
    selection = found.selection
    if selection is not None:
        print(report.summary_table(selection))
        report.plot_lr_test(selection, out / "lr_range.png", args.window)
        report.plot_stages(selection, out / "candidates.png", args.window)
    thresholds = {k: v for k, v in found.param_spec.to_dict().items() if k in found.default_thresholds}
    detector, _ = load_detector(found.run_dir, found.checkpoint, thresholds=thresholds)
    per_class = None if found.sweep is None or found.sweep.per_class is None else found.sweep.per_class.thresholds()
    export = export_detector(detector, out / "export", class_score_thresholds=per_class)
    extra = {
        "selected": found.param_spec.to_dict(),
        "steps": found.steps,
        "selection": None if selection is None else selection.to_dict(),
        "export": str(export),
        "export_per_class_thresholds": per_class is not None,
    }
    finish(args, out, len(val), found.sweep, found.default_thresholds, found.checkpoint, started, extra)
    training = {k: v for k, v in found.param_spec.to_dict().items() if k not in thresholds}
    print(f"  training parameters:  {describe(training)} ({found.steps['selector']} selector steps, "
          f"{found.steps['final']} final steps)")
    print(f"exported {export} (post-processing at the chosen thresholds)")
    return 0


def search_experiment(args, started) -> int:
    """``--experiment``: the user's Model Garden experiment, its validation records, the sweep,
    ``OUT/thresholds.yaml`` (`detsearch.models.experiment`)."""
    from tqdm import tqdm

    from detsearch.atomic import write_json_atomic
    from detsearch.detection.cache import CacheKind, write_cache
    from detsearch.detection.sweep import sweep
    from detsearch.models import experiment as garden
    from detsearch.params import ParamSpec

    options = operating_point_options(args)
    if options["class_agnostic"] is not None:
        raise BadInput("--class-agnostic: the experiment's NMS is class-aware as configured; sweep it with detsearch "
                       "sweep on OUT/cache")
    out = Path(args.out or f"out/search_det_{args.experiment}")
    files = [f for f in (args.config_file or "").split(",") if f.strip()]
    verify_rows = garden.VERIFY_ROWS if args.verify_rows is None else args.verify_rows
    if args.verify_rows is not None and not args.verify:
        raise BadInput("--verify-rows needs --verify")
    if verify_rows < 2:
        raise BadInput(f"--verify-rows must be >= 2 (the chosen and the config's rows), got {verify_rows}")
    try:
        if args.search_training and (args.model_dir or args.checkpoint):
            raise ValueError("--search-training trains the experiment into OUT/train: drop --model-dir and --checkpoint")
        experiment = garden.load_experiment(args.experiment, files, args.params_override, model_dir=args.model_dir,
                                            checkpoint=args.checkpoint, trained=not args.search_training)
    except ValueError as error:
        raise BadInput(str(error)) from None
    args.model = "faster_rcnn" if experiment.kind == CacheKind.TWO_STAGE else "ssd"  # the grid of its kind
    try:
        flags = threshold_flags(args)
    except ValueError as error:
        raise BadInput(str(error)) from None
    selected = {}
    if args.search_training:
        experiment, selected = experiment_training(args, experiment, out)
    defaults = experiment.thresholds
    grid = threshold_grid(args, flags, defaults)
    if options["max_detections"] is not None:  # the config's own cap is a candidate too
        defaults["max_detections"] = experiment.max_detections
        options["max_detections"] = sorted(set(options["max_detections"]) | {experiment.max_detections})
    bars = []

    def progress(count: int) -> None:  # the bar starts with the first batch, after the checkpoint is restored
        if not bars:
            bars.append(tqdm(desc="cache", unit="img", dynamic_ncols=True))
        bars[0].update(count)

    stage_started = time.perf_counter()
    seconds = {}
    if experiment.config.task.annotation_file:  # one shard per record file, resumable, on the executor
        from detsearch.executor import executor_from_args
        from detsearch.models.experiment_shards import record_sharded

        try:
            executor = executor_from_args(args)
            cache, ground_truth = record_sharded(experiment, out / "cache", args.score_floor, executor=executor,
                                                 progress=progress)
        except (ValueError, ImportError) as error:
            raise BadInput(str(error)) from None
    else:
        if args.executor != "local":
            raise BadInput("--executor ray needs task.annotation_file (the ground truth of each shard's records "
                           "would name its own categories)")
        cache, ground_truth = garden.record(experiment, args.score_floor, progress=progress)
        write_cache(out / "cache", cache)
    for bar in bars:
        bar.close()
    seconds["record"] = time.perf_counter() - stage_started
    # The ground truth the sweep scores against (built from the records, or the annotation file
    # with the model's classes it does not name), for detsearch sweep on OUT/cache.
    write_json_atomic(out / "annotations.json", ground_truth)
    ground_truth_file = None if experiment.config.task.annotation_file else out / "annotations.json"
    if options["max_detections"] is None:  # the config's own cap, per class and per image
        options.update(max_detections_per_class=experiment.max_detections, max_total_detections=experiment.max_detections)
    stage_started = time.perf_counter()
    result = sweep(cache, ground_truth, ParamSpec(**grid), objective=args.objective, budget=args.budget, **options,
                   **experiment.nms_options)
    seconds["sweep"] = time.perf_counter() - stage_started
    chosen = {name: value for name, value in result.best_params.items() if name in defaults}
    thresholds_file = garden.write_thresholds_yaml(out / "thresholds.yaml", experiment.kind, chosen)
    extra = {"thresholds_yaml": str(thresholds_file), "config_thresholds": defaults, "nms": experiment.nms_options,
             "stage_seconds": seconds, **selected}
    verification = None
    if args.verify:
        stage_started = time.perf_counter()
        table = result.table
        if options["holdout"] is not None:  # the table scores the selection images; Model Garden scores all of them
            table = sweep(cache, ground_truth, ParamSpec(**grid), objective=args.objective, budget=args.budget,
                          **{**options, "holdout": None, "per_class": None}, **experiment.nms_options).table
        # the chosen row by its grid values (the thresholds written may have moved off them: `sweep.cuts`)
        chosen_row = {name: result.best_row.params[name] for name in chosen}
        rows = garden.verification_rows(table, chosen_row, defaults, verify_rows)
        bar = tqdm(total=result.num_images, desc=f"verify {len(rows)} rows", unit="img", dynamic_ncols=True)
        verification = garden.verify_rows(experiment, rows, ground_truth_file=ground_truth_file,
                                          ties=garden.TieFinder(cache, experiment.nms_options), progress=bar.update)
        bar.close()
        extra["model_garden_verification"] = verification.to_dict()
        seconds["model_garden_verification"] = time.perf_counter() - stage_started
    if args.export:
        stage_started = time.perf_counter()
        per_class = None if result.per_class is None else result.per_class.thresholds()
        extra["export"] = str(garden.export_experiment(experiment, chosen, args.export, class_score_thresholds=per_class))
        extra["export_per_class_thresholds"] = per_class is not None
        seconds["export"] = time.perf_counter() - stage_started
    for name, value in seconds.items():
        seconds[name] = round(value, 2)
    finish(args, out, result.num_images, result, defaults, experiment.checkpoint, started, extra)
    print(f"  thresholds for Model Garden: {thresholds_file} (official.vision.train --config_file ...,{thresholds_file})")
    if args.export:
        print(f"  exported {extra['export']} (Model Garden's serving module, the chosen thresholds)")
    if verification is not None:
        for line in verification.lines():
            print(f"  {line}")
        verification.check()  # a difference: one line, exit 2 (summary.json holds every row)
    return 0


SHIPPED_RUNS = ("ssd_tiny_demo",)
"""Runs installed with the package (``detsearch/models/checkpoints/``): ``--train-run NAME``."""


def train_run_dir(value: str) -> Path:
    """``--train-run``: a directory, or the name of a shipped run when no such directory exists."""
    path = Path(value)
    if not path.exists() and value in SHIPPED_RUNS:
        import detsearch.models

        return Path(detsearch.models.__file__).parent / "checkpoints" / value
    return path


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tqdm import tqdm

    from detsearch.detection.sweep import sweep
    from detsearch.params import ParamSpec
    from detsearch.models.data import dataset_categories
    from detsearch.models.detector import build_detector
    from detsearch.models.record import record_cache
    from detsearch.models.restore import latest_checkpoint, load_detector
    from detsearch.models.train import train_detector

    if args.experiment:
        return search_experiment(args, time.perf_counter())
    for flag in ("config_file", "params_override", "model_dir", "verify", "verify_rows", "export", "ray_address"):
        value = getattr(args, flag)
        if value is not None and value is not False and value != "":  # --verify-rows 0 is given too
            raise BadInput(f"--{flag.replace('_', '-')} needs --experiment")
    if args.executor != "local":
        raise BadInput("--executor needs --experiment (detsearch cache --executor ray shards a trained run's cache)")
    out = Path(args.out or f"out/search_det_{args.model}" + ("_training" if args.search_training else ""))
    run_dir = train_run_dir(args.train_run) if args.train_run else out / "train"
    started = time.perf_counter()
    try:
        check_objective(args)
        flags = threshold_flags(args)
        options = operating_point_options(args)
        if args.search_training and (options["max_detections"] is not None or options["class_agnostic"] is not None):
            raise BadInput("--max-detections and --class-agnostic are not exported by --search-training; sweep them "
                           "without it (or with detsearch sweep on the cache)")
        val = dataset_from_args(args)
        if args.search_training:
            return search_training(args, out, flags, val, started, options)
        # A run of our own is trained (or resumed) to --steps; a given run is trained only when empty.
        if args.checkpoint is None and (args.train_run is None or latest_checkpoint(run_dir) is None):
            train_args = argparse.Namespace(**{**vars(args), "split": args.train_split})
            train_set = dataset_from_args(train_args)
            ids, names = dataset_categories(train_set)
            detector = build_detector(args.model, args.preset, ids, names, seed=args.seed)
            bar = tqdm(total=args.steps, desc="train", unit="step", dynamic_ncols=True)
            latest = latest_checkpoint(run_dir)
            bar.update(min(args.steps, int(latest.rsplit("-", 1)[-1])) if latest else 0)
            train_detector(detector, train_set, run_dir, steps=args.steps,
                           batch_size=args.batch_size or min(detector.preset.batch_size, len(train_set)),
                           learning_rate=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay,
                           warmup_steps=min(100, args.steps // 10), seed=args.seed,
                           on_step=lambda step, metrics: bar.update(1))
            bar.close()
        detector, checkpoint = load_detector(run_dir, args.checkpoint)
        defaults = dict(detector.thresholds)
        grid = threshold_grid(args, flags, defaults)
        if min(grid["score_threshold"]) < args.score_floor:
            raise ValueError(f"score threshold {min(grid['score_threshold'])} is below the cache's score floor "
                             f"{args.score_floor}")
        bar = tqdm(total=len(val), desc="cache", unit="img", dynamic_ncols=True)
        # Faster R-CNN: the second stage only for the proposals the swept first-stage settings keep.
        first_stage = ((grid["nms_iou_threshold"], min(grid["nms_score_threshold"]))
                       if "nms_iou_threshold" in grid else None)
        cache = record_cache(detector, val, out / "cache", score_floor=args.score_floor,
                             source={"checkpoint": str(Path(checkpoint).resolve())}, progress=bar.update,
                             first_stage=first_stage)
        bar.close()
        result = sweep(cache, val.to_coco_json(), ParamSpec(**grid), objective=args.objective, budget=args.budget,
                       **options)
    except (ValueError, TypeError, OSError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finish(args, out, len(val), result, defaults, checkpoint, started)
    return 0


