"""Detection threshold search end to end: a Model Garden experiment, its cache, the sweep, its
thresholds (`detsearch.models.pipeline`).

    detsearch search-det                                  # the demo RetinaNet
    detsearch search-det --model faster_rcnn              # the four Faster R-CNN thresholds
    detsearch search-det --model-dir retinanet_demo       # the shipped trained RetinaNet: no training
    detsearch search-det --experiment retinanet_resnetfpn_coco --config-file my.yaml \\
        --model-dir runs/retinanet --out out/retinanet --verify --export out/retinanet/export

Every detector is a registered Model Garden experiment. With no arguments it is the demo's: the
MNIST-detection set (real digits on 128 px canvases) is built and converted once to TFRecords by
Model Garden's converter, ``retinanet_resnetfpn_coco`` with the shipped override
``models/experiments/retinanet_resnet18_demo.yaml`` is trained by Model Garden's trainer into
``OUT/train`` (a rerun resumes or reuses it; ``--steps``), the raw predictions of the validation
records are recorded once (``OUT/cache``, one shard per record file, resumable, on
``--executor``), the thresholds are swept on the cache with the config's own post-processing (no
second pass through the network), and the choice is printed next to the config's thresholds.
``--experiment NAME --config-file ... --model-dir DIR`` runs the same steps on a user's
experiment (its config, its records, its checkpoint; without ``--model-dir`` or
``--checkpoint`` it is trained into ``OUT/train`` first). ``--dataset coco|voc`` puts a COCO or
VOC set under the demo detector instead (converted once; VOC through a COCO json).

Writes ``OUT/thresholds.yaml`` (a Model Garden params override:
``official.vision.train --config_file ...,OUT/thresholds.yaml``), ``OUT/annotations.json``,
``OUT/sweep/`` (``result.json``, ``report.md``, plots) and ``OUT/summary.json``. ``--export DIR``
writes a SavedModel at the chosen thresholds through Model Garden's serving module;
``--verify`` compares rows of the table with Model Garden's own evaluation, each stat as
float32 (a difference is an error, exit 2).

With ``--search-training`` the learning rate, momentum and weight decay are chosen first by the
HyperSelector on the experiment's own train step (an LR range test and candidate trials of
``--trial-steps`` steps from the same initial weights and batches, judged by validation AP or,
with ``--by-loss``, by the task's loss; ``OUT/selector/journal.jsonl`` keeps finished trials),
written as ``OUT/training.yaml``, and Model Garden's trainer trains with them into ``OUT/train``
(``--steps``, else the config's ``trainer.train_steps``, is the final budget the learning rate
is chosen for, by ``--horizon-rule``). ``OUT/lr_range.png`` and ``OUT/candidates.png`` show the
curves. A killed run started again with the same arguments reuses every finished trial and
resumes the training and the cache.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from detsearch.cli.args import (BadInput, check_objective, non_negatives, objective_arguments, operating_point_arguments,
                                operating_point_options, positives, thresholds)
from detsearch.cli.detector import add_detector_arguments, experiment_config
from detsearch.executor import add_executor_arguments
from detsearch.selector.hyperselector import DETECTOR_HORIZON_RULE
from detsearch.selector.rules import HORIZON_RULES

HELP = "detector, cache, threshold sweep, thresholds.yaml (the built-in demo by default)"
DESCRIPTION = __doc__


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None,
                        help="output directory (default out/search_det_MODEL, or out/search_det_EXPERIMENT)")
    add_detector_arguments(parser, model_dir_help=(
        "a trained model directory (its latest checkpoint), or retinanet_demo: the demo RetinaNet shipped with the "
        "package; an empty directory is trained into (default: train into OUT/train)"))
    parser.add_argument("--score-floor", type=float, default=0.01, help="cache score floor (default 0.01)")
    parser.add_argument("--score-thresholds", dest="score_thresholds", default=None, help="comma-separated")
    parser.add_argument("--iou-thresholds", dest="iou_thresholds", default=None, help="comma-separated")
    parser.add_argument("--nms-score-thresholds", dest="nms_score_thresholds", default=None,
                        help="two-stage first stage, comma-separated")
    parser.add_argument("--nms-iou-thresholds", dest="nms_iou_thresholds", default=None,
                        help="two-stage first stage, comma-separated")
    objective_arguments(parser)
    operating_point_arguments(parser)
    outputs = parser.add_argument_group("proof and deployment")
    outputs.add_argument("--export", metavar="DIR",
                         help="a SavedModel at the chosen thresholds through Model Garden's own serving module "
                              "(DIR/saved_model, DIR/params.yaml); with --per-class, filtered by the per-class "
                              "thresholds after Model Garden's post-processing")
    outputs.add_argument("--verify", action="store_true",
                         help="also run Model Garden's own evaluation at rows of the sweep's table (the chosen, the "
                              "config's, others spread over the axes) and compare each of the 12 stats as float32; "
                              "any difference is an error (exit 2)")
    outputs.add_argument("--verify-rows", type=int, default=None, metavar="N",
                         help="rows --verify compares (default 6; all of the table when it has fewer)")
    add_executor_arguments(outputs, gpus=True)  # one cache shard per record file, each a task
    group = parser.add_argument_group("--search-training (HyperSelector before the final training)")
    group.add_argument("--search-training", dest="search_training", action="store_true",
                       help="choose learning_rate, momentum and weight_decay first, then train into OUT/train")
    group.add_argument("--seed", type=int, default=0, help="initial weights and data order of the trials (default 0)")
    group.add_argument("--trial-steps", type=int, default=200, help="steps of every selector trial (default 200)")
    group.add_argument("--weight-decays", dest="weight_decays", default="1e-4,1e-3",
                       help="weight_decay candidates (default 1e-4,1e-3)")
    group.add_argument("--momentums", default="0.9,0.95", help="momentum candidates (default 0.9,0.95)")
    group.add_argument("--learning-rates", dest="learning_rates", default=None,
                       help="learning_rate candidates instead of the LR range test")
    group.add_argument("--by-loss", action="store_true",
                       help="judge candidates by the task's training loss (default: validation AP, as by_acc=True)")
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
                       help="scale the trials' learning rate to the final budget (trainer.train_steps): fourth_root, "
                            "sqrt, fit or none (default none: measured best for detectors)")
    group.add_argument("--lr-refine-factors", dest="lr_refine_factors", default="0.31623,3.1623",
                       help="also train the rule's pick times these (default 10^-0.5, 10^0.5; '' takes the pick)")


def threshold_flags(args) -> dict[str, list[float] | None]:
    """The candidate lists given on the command line (None where a flag is absent)."""
    return {
        "score_threshold": thresholds(args.score_thresholds, "--score-thresholds"),
        "iou_threshold": thresholds(args.iou_thresholds, "--iou-thresholds"),
        "nms_score_threshold": thresholds(args.nms_score_thresholds, "--nms-score-thresholds"),
        "nms_iou_threshold": thresholds(args.nms_iou_thresholds, "--nms-iou-thresholds"),
    }


def describe(params) -> str:
    from detsearch.detection.report import describe_params

    return describe_params(params)


def default_row(result, defaults):
    """The row at the config's thresholds ``defaults`` (and, where swept and not in
    ``defaults``, class-aware NMS)."""
    for row in result.table:
        if all(row.params[k] == v for k, v in defaults.items()) and not row.params.get("class_agnostic", False):
            return row
    return None


def finish(args, out: Path, outcome, started, extra=None) -> None:
    """Writes the sweep's outputs and ``summary.json``; prints the choice next to the config's
    thresholds."""
    from detsearch.atomic import write_json_atomic
    from detsearch.detection.report import summary_lines, write_outputs

    result = outcome.result
    default = default_row(result, outcome.config_thresholds)
    write_outputs(result, out / "sweep")
    best = result.best_row
    experiment = outcome.experiment
    summary = {
        "experiment": experiment.name,
        **({} if args.experiment else {"model": "retinanet" if args.model == "ssd" else args.model}),
        "checkpoint": experiment.checkpoint,
        "images": result.num_images, "objective": result.objective, "tolerance": result.tolerance,
        "chosen": {"params": result.best_params, "map": best.stats[0], "ap50": best.stats[1],
                   "dets_per_image": best.dets_per_image},
        "highest": {"params": dict(result.top_row.params), "map": result.top_row.stats[0],
                    "ap50": result.top_row.stats[1], "dets_per_image": result.top_row.dets_per_image},
        "config_thresholds": outcome.config_thresholds,
        "config_row": None if default is None else {
            "params": dict(default.params), "map": default.stats[0], "ap50": default.stats[1],
            "dets_per_image": default.dets_per_image},
        "configurations": len(result.table),
        **({} if result.per_class is None else {"per_class_rule": str(result.per_class.rule),
                                                "per_class_stats": list(result.per_class.stats)}),
        **({} if result.holdout is None else {"holdout": {"stats": list(result.holdout.stats),
                                                          "ci95": {k: list(v) for k, v in result.holdout.ci95.items()}}}),
        "thresholds_yaml": str(outcome.thresholds_yaml),
        "post_processing": {k: v for k, v in outcome.post_processing.to_dict().items() if v is not None},
        **({"masks": "not evaluated"} if getattr(experiment.config.task.model, "include_mask", False) else {}),
        **({} if outcome.verification is None else {"model_garden_verification": outcome.verification.to_dict()}),
        **({} if outcome.export is None else {"export": str(outcome.export),
                                              "export_per_class_thresholds": result.per_class is not None}),
        **(extra or {}),
        "stage_seconds": {**(extra or {}).get("stage_seconds", {}), **outcome.seconds},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "summary.json", summary)
    print(f"\n{experiment.name} on {result.num_images} images, {len(result.table)} threshold configurations "
          f"from one cached pass ({result.objective}):")
    print(f"  chosen:               {describe(result.best_params)}  mAP {best.stats[0]:.4f}  AP50 "
          f"{best.stats[1]:.4f}  {best.dets_per_image:.1f} dets/image")
    if default is not None:
        print(f"  {'config thresholds:':<22}{describe(default.params)}  mAP {default.stats[0]:.4f}  AP50 "
              f"{default.stats[1]:.4f}  {default.dets_per_image:.1f} dets/image")
    for line in summary_lines(result, out / "sweep"):
        print(f"  {line}")
    print(f"wrote {out / 'sweep'} (result.json, report.md, plots), {out / 'summary.json'} ({summary['seconds']:.0f} s)")
    if summary.get("masks"):
        print("  masks: not evaluated (Mask R-CNN: the box thresholds and box mAP only; the mask head runs after "
              "NMS on the kept boxes)")
    print(f"  thresholds for Model Garden: {outcome.thresholds_yaml} "
          f"(official.vision.train --config_file ...,{outcome.thresholds_yaml})")
    if outcome.export is not None:
        print(f"  exported {outcome.export} (Model Garden's serving module, the chosen thresholds)")


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


def search_training(args, name: str, config, out: Path):
    """``--search-training``: the selector on the experiment's own train step,
    ``OUT/training.yaml``, Model Garden's trainer with the choice into ``OUT/train``
    (`detsearch.models.experiment_training`). Returns the trained experiment and the summary's
    entries."""
    from tqdm import tqdm

    from detsearch import report
    from detsearch.models.experiment import Experiment, check_records, check_supported
    from detsearch.models.experiment_training import ACC_NAME, LOSS_NAME, config_training, search_training
    from detsearch.params import ParamSpec

    experiment = Experiment(name=name, config=config, kind=check_supported(config), checkpoint="")
    check_records(config)
    lists = training_lists(args)
    selector = selector_config(args, lists, ACC_NAME, LOSS_NAME, int(config.trainer.train_steps))
    param_spec = ParamSpec(**{"momentum": 0.9, **config_training(config)})  # the config's values are the defaults
    param_list_spec = ParamSpec(**{name: values for name, values in lists.items() if values})
    per_trial = args.trial_steps + args.warmup_steps
    bar = tqdm(desc="selector", unit="step", dynamic_ncols=True)
    try:
        selection, chosen, path, trained = search_training(
            experiment, out, param_spec=param_spec, param_list_spec=param_list_spec, config=selector, seed=args.seed,
            eval_images=args.eval_images,
            on_trial=lambda name, index, reused, curve: (bar.update(max(0, index * per_trial - bar.n)),
                                                         bar.set_postfix_str(name)),
            on_step=lambda step: bar.update(1), on_train=bar.close)
    finally:
        bar.close()
    if selection is not None:
        print(report.summary_table(selection))
        report.plot_lr_test(selection, out / "lr_range.png", args.window)
        report.plot_stages(selection, out / "candidates.png", args.window)
    print(f"  training parameters:  {describe(chosen)} -> {path} (Model Garden trained with it into {out / 'train'})")
    return trained, {"selected": chosen, "training_yaml": str(path),
                     "selection": None if selection is None else selection.to_dict()}


class Bars:
    """One tqdm bar per stage of `detsearch.models.pipeline` (train, cache, verify), each
    started when its stage reports first and closed when the next one starts."""

    def __init__(self):
        self.bars = {}

    def start(self, stage: str, total: int | None = None, unit: str = "img"):
        from tqdm import tqdm

        self.close()
        self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, dynamic_ncols=True)
        return self.bars[stage]

    def update(self, stage: str, count: int) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.start(stage)
        bar.update(count)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from detsearch.executor import executor_from_args
    from detsearch.models import pipeline

    started = time.perf_counter()
    check_objective(args)
    given = threshold_flags(args)
    options = operating_point_options(args)
    if args.verify_rows is not None and not args.verify:
        raise BadInput("--verify-rows needs --verify")
    verify_rows = None
    if args.verify:
        from detsearch.models.experiment_verify import VERIFY_ROWS

        verify_rows = VERIFY_ROWS if args.verify_rows is None else args.verify_rows
        if verify_rows < 2:
            raise BadInput(f"--verify-rows must be >= 2 (the chosen and the config's rows), got {verify_rows}")
    if args.search_training and (args.model_dir or args.checkpoint):
        raise BadInput("--search-training trains into OUT/train: drop --model-dir and --checkpoint")
    out = Path(args.out or f"out/search_det_{args.experiment or ('retinanet' if args.model == 'ssd' else args.model)}"
               + ("_training" if args.search_training else ""))
    executor = executor_from_args(args)
    name, config = experiment_config(args, out / "records")
    from detsearch.detection.sweep import check_score_floor
    from detsearch.models.experiment import check_supported, read_thresholds

    kind = check_supported(config)
    grid = pipeline.threshold_grid(kind, given, read_thresholds(config, kind))
    check_score_floor(grid, args.score_floor)  # before any training
    bars = Bars()
    extra = {}
    if args.search_training:
        experiment, extra = search_training(args, name, config, out)
    else:
        # A directory given without a checkpoint is trained into; none given: OUT/train (resumed).
        experiment = pipeline.trained_experiment(
            name, config, checkpoint=args.checkpoint, model_dir=args.model_dir,
            train_into=None if args.experiment and args.model_dir else (args.model_dir or out / "train"),
            on_train=lambda: print(f"training {name} with Model Garden's trainer into {args.model_dir or out / 'train'} "
                                   f"({int(config.trainer.train_steps)} steps)"))
    grid = pipeline.threshold_grid(experiment.kind, given, experiment.thresholds)
    try:
        outcome = pipeline.search_thresholds(
            experiment, out, grid=grid, score_floor=args.score_floor, objective=args.objective, budget=args.budget,
            sweep_options=options, executor=executor, verify_rows=verify_rows, export=args.export,
            progress=bars.update)
    finally:
        bars.close()
    finish(args, out, outcome, started, extra)
    if outcome.verification is not None:
        for line in outcome.verification.lines():
            print(f"  {line}")
        outcome.verification.check()  # a difference: one line, exit 2 (summary.json holds every row)
    return 0
