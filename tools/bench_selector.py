"""HyperSelector vs an exhaustive grid on real MNIST (the seed's softmax model and a small CNN).

    python tools/bench_selector.py                  # both models
    python tools/bench_selector.py --models softmax

For each model: run the search with the seed's settings (100-step trials, weight_decay
[1e-2, 1e-3, 1e-4], momentum [0.99, 0.95, 0.9]), train its choice for the final budget (1000
steps, as the seed's mox.auto.run), and train every point of a grid (``--grid-lrs`` log-spaced
learning rates x the weight_decay list x the momentum list) for the same budget. Every final run
replays the same recorded batches from the same initial weights and is scored on the full MNIST
test split. Also trains what each LR rule (fastai's valley / steep / minimum-over-10, and plain
minimum) would have picked on the same range test. Prints accuracies and steps.

    python tools/bench_selector.py --task detection

Detection: the tiny SSD on the MNIST detection demo (2000 train / 500 val images). The selector
(LR range test, the rule's pick refined over x10^-0.5, x1, x10^0.5, then weight_decay [1e-4,
1e-3] and momentum [0.9, 0.95] trials, all of 200 steps, judged by the training loss and,
separately, by validation AP) against a grid of ``--grid-lrs``
log-spaced learning rates x the same lists; every final run trains ``--det-final-steps`` steps
(after the same warm-up) from the same initial weights on the same batches, and is scored by COCO
mAP on all 500 val images through Model Garden's own post-processing at its default thresholds.
Finished runs are kept in ``--out`` (a rerun reuses them).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

WEIGHT_DECAYS = (1e-2, 1e-3, 1e-4)
MOMENTUMS = (0.99, 0.95, 0.9)
DEFAULT_MOMENTUM = 0.9  # the seed's param_spec
BATCH_SIZE = 50
TEST_BATCHES = 10000 // BATCH_SIZE


def final_accuracy(trainer, final_steps, learning_rate, momentum, weight_decay) -> float:
    from detsearch.selector.curves import LrSchedule, TrialSpec

    curve = trainer.run(TrialSpec(LrSchedule(start=learning_rate, steps=final_steps), momentum, weight_decay,
                                  evaluate_every_n_steps=final_steps))
    if curve.diverged or not len(curve):
        return 0.0
    accuracy = float(curve.metric("accuracy")[-1])
    return accuracy if math.isfinite(accuracy) else 0.0


def bench(model: str, args) -> dict:
    import detsearch.moxing as mox
    from detsearch.datasets import mnist as mnist_data
    from detsearch.selector.hyperselector import coupled_learning_rate
    from detsearch.training.graph import GraphTrainer
    from detsearch.models.mnist import make_program

    mnist = mnist_data.input_data.read_data_sets(str(mnist_data.ensure(None)), one_hot=True, seed=args.seed)
    input_fn, model_fn, optimizer_fn = make_program(mnist, model, BATCH_SIZE)

    started = time.perf_counter()
    chosen = mox.auto.search(input_fn=input_fn, model_fn=model_fn, optimizer_fn=optimizer_fn, batch_size=BATCH_SIZE,
                             auto_batch=False, total_steps=100, evaluation_total_steps=10, select_by_eval=False,
                             log_every_n_steps=0, seed=args.seed,
                             param_spec=mox.auto.ParamSpec(weight_decay=1e-4, momentum=DEFAULT_MOMENTUM,
                                                           learning_rate=0.1),
                             param_list_spec=mox.auto.ParamSpec(weight_decay=list(WEIGHT_DECAYS),
                                                                momentum=list(MOMENTUMS)),
                             return_result=True)
    search_seconds = time.perf_counter() - started
    result, chosen = chosen, chosen.param_spec

    # One trainer for every final run: same recorded batches, same initial weights, test-split scoring.
    trainer = GraphTrainer(input_fn, model_fn, optimizer_fn, mox.auto.ParamSpec(learning_rate=0.1, momentum=0.9),
                           batch_size=BATCH_SIZE, auto_batch=False, num_batches=args.final_steps,
                           metric_names=["accuracy"], loss_name="loss", select_by_eval=True,
                           evaluation_total_steps=TEST_BATCHES, log_every_n_steps=0, seed=args.seed)
    started = time.perf_counter()
    ours = final_accuracy(trainer, args.final_steps, chosen.learning_rate, chosen.momentum, chosen.weight_decay)
    final_seconds = time.perf_counter() - started
    # What each rule's pick would have become: rescaled from the range test's momentum to the
    # chosen one as the momentum stage does.
    rules = {}
    for name, lr in result.lr_test.picks.items():
        lr = coupled_learning_rate(lr, DEFAULT_MOMENTUM, chosen.momentum)
        rules[name] = (lr, final_accuracy(trainer, args.final_steps, lr, chosen.momentum, chosen.weight_decay))

    learning_rates = np.logspace(math.log10(args.grid_min_lr), math.log10(args.grid_max_lr), args.grid_lrs)
    grid = {}
    started = time.perf_counter()
    for i, (lr, wd, momentum) in enumerate(itertools.product(learning_rates, WEIGHT_DECAYS, MOMENTUMS)):
        grid[(float(lr), wd, momentum)] = final_accuracy(trainer, args.final_steps, lr, momentum, wd)
        print(f"  [{model}] grid {i + 1}/{len(learning_rates) * 9}: lr {lr:.4g} wd {wd:g} momentum {momentum:g} "
              f"-> {grid[(float(lr), wd, momentum)]:.4f}", file=sys.stderr, flush=True)
    grid_seconds = time.perf_counter() - started
    best = max(grid, key=grid.get)
    return {
        "model": model, "chosen": chosen, "ours": ours, "rules": rules, "rule": result.lr_test.rule,
        "search_steps": result.steps_spent, "search_seconds": search_seconds, "final_seconds": final_seconds,
        "grid": grid, "best": best, "grid_seconds": grid_seconds, "final_steps": args.final_steps,
    }


def report(r: dict) -> None:
    grid_values = np.array(list(r["grid"].values()))
    best_params, best = r["best"], r["grid"][r["best"]]
    ours_steps = r["search_steps"] + r["final_steps"]
    grid_steps = len(r["grid"]) * r["final_steps"]
    chosen = r["chosen"]
    print(f"\n== {r['model']} ==")
    print(f"ours:        lr {chosen.learning_rate:.4g} wd {chosen.weight_decay:g} momentum {chosen.momentum:g} "
          f"-> test accuracy {r['ours']:.4f}  ({r['search_steps']} search + {r['final_steps']} final = {ours_steps} steps; "
          f"search {r['search_seconds']:.1f} s)")
    print(f"grid best:   lr {best_params[0]:.4g} wd {best_params[1]:g} momentum {best_params[2]:g} "
          f"-> test accuracy {best:.4f}  ({len(r['grid'])} runs = {grid_steps} steps; {r['grid_seconds']:.0f} s)")
    print(f"grid median: {np.median(grid_values):.4f}   grid worst: {grid_values.min():.4f}")
    gap = (best - r["ours"]) * 100
    print(f"gap to grid best: {gap:.2f} points (target <= 0.5)   steps: {ours_steps / grid_steps:.1%} of the grid's "
          f"(target <= 10%)   -> {'MET' if gap <= 0.5 and ours_steps <= 0.1 * grid_steps else 'MISSED'}")
    print("LR rules on the same range test (each pick rescaled to, and trained with, the chosen wd/momentum):")
    for name, (lr, accuracy) in r["rules"].items():
        mark = "  <- shipped" if name == r["rule"] else ""
        print(f"  {name:<16} lr {lr:<10.4g} test accuracy {accuracy:.4f}{mark}")


DET_WEIGHT_DECAYS = (1e-4, 1e-3)
DET_MOMENTUMS = (0.9, 0.95)
DET_DEFAULTS = {"momentum": 0.9, "weight_decay": 1e-4}
DET_WARMUP = (20, 1e-3)
DET_LR_REFINE = (10 ** -0.5, 10 ** 0.5)  # detsearch.models.search.LR_REFINE_FACTORS  # steps, learning rate: every trial and final run starts this way


def bench_detection(args) -> dict:
    import json

    from detsearch.atomic import write_json_atomic
    from detsearch.detection.cocoeval import evaluate_results
    from detsearch.params import ParamSpec
    from detsearch.selector import HyperSelector, Journal, SelectorConfig
    from detsearch.selector.curves import LrSchedule, TrialSpec
    from detsearch.models.data import load_dataset
    from detsearch.models.record import predict_results
    from detsearch.models.search import ACC_NAME, LOSS_NAME, DetectionTrainer

    out = Path(args.out)
    train_set = load_dataset("demo", "train")
    val_set = load_dataset("demo", "val")
    ground_truth = val_set.to_coco_json()
    trainer = DetectionTrainer("ssd", "tiny", train_set, val_set=val_set, eval_images=100, seed=args.seed,
                               evaluation_total_steps=5)
    warmup_steps, warmup_lr = DET_WARMUP
    final_steps = args.det_final_steps
    done_path = out / "final_runs.json"
    done = json.loads(done_path.read_text()) if done_path.is_file() else {}

    def final_map(lr: float, momentum: float, weight_decay: float) -> float:
        """val mAP after the final budget; kept in final_runs.json (a rerun reuses it)."""
        key = f"{trainer.fingerprint()[:16]} {final_steps} {lr!r} {momentum!r} {weight_decay!r}"
        if key not in done:
            schedule = LrSchedule(start=lr, steps=final_steps, warmup_steps=warmup_steps, warmup_lr=warmup_lr)
            curve = trainer.run(TrialSpec(schedule, momentum, weight_decay, evaluate_every_n_steps=final_steps))
            value = 0.0
            if not curve.diverged:
                stats = evaluate_results(ground_truth, predict_results(trainer.detector, val_set)).stats
                value = max(0.0, float(stats[0]))
            done[key] = value
            write_json_atomic(done_path, done)
        return done[key]

    selections = {}
    for judge in ("loss", "AP"):
        config = SelectorConfig(total_steps=args.det_trial_steps, by_acc=judge == "AP", acc_name=ACC_NAME,
                                loss_name=LOSS_NAME, window=5, max_thres=3, warmup_steps=warmup_steps,
                                warmup_lr=warmup_lr, evaluate_every_n_steps=5, lr_refine_factors=DET_LR_REFINE)
        started = time.perf_counter()
        result = HyperSelector(trainer, config, Journal(out / "journal")).select(
            ParamSpec(**DET_DEFAULTS), ParamSpec(weight_decay=list(DET_WEIGHT_DECAYS), momentum=list(DET_MOMENTUMS)))
        seconds = time.perf_counter() - started
        chosen = result.param_spec
        value = final_map(chosen.learning_rate, chosen.momentum, chosen.weight_decay)
        # steps_spent: every distinct trial of this search (also those the other judge ran first)
        steps = result.steps_spent + warmup_steps + final_steps
        selections[judge] = {"chosen": chosen, "map": value, "steps": steps, "seconds": seconds, "result": result}
        print(f"  [detection] selector by {judge}: lr {chosen.learning_rate:.4g} wd {chosen.weight_decay:g} "
              f"momentum {chosen.momentum:g} -> val mAP {value:.4f}", file=sys.stderr, flush=True)
    learning_rates = np.logspace(math.log10(args.det_grid_min_lr), math.log10(args.det_grid_max_lr), args.grid_lrs)
    grid = {}
    started = time.perf_counter()
    combos = list(itertools.product(learning_rates, DET_WEIGHT_DECAYS, DET_MOMENTUMS))
    for i, (lr, wd, momentum) in enumerate(combos):
        grid[(float(lr), wd, momentum)] = final_map(float(lr), momentum, wd)
        print(f"  [detection] grid {i + 1}/{len(combos)}: lr {lr:.4g} wd {wd:g} momentum {momentum:g} "
              f"-> val mAP {grid[(float(lr), wd, momentum)]:.4f}", file=sys.stderr, flush=True)
    return {"selections": selections, "grid": grid, "grid_seconds": time.perf_counter() - started,
            "final_steps": final_steps, "warmup_steps": warmup_steps}


def report_detection(r: dict) -> None:
    grid = r["grid"]
    values = np.array(list(grid.values()))
    best_params = max(grid, key=grid.get)
    best = grid[best_params]
    per_run = r["warmup_steps"] + r["final_steps"]
    grid_steps = len(grid) * per_run
    print("\n== detection: tiny SSD on the MNIST detection demo (val mAP, 500 images) ==")
    print(f"grid best:   lr {best_params[0]:.4g} wd {best_params[1]:g} momentum {best_params[2]:g} -> mAP {best:.4f}  "
          f"({len(grid)} runs x {per_run} = {grid_steps} steps; grid median {np.median(values):.4f}, "
          f"worst {values.min():.4f})")
    for judge, s in r["selections"].items():
        chosen = s["chosen"]
        gap = (best - s["map"]) * 100
        met = gap <= 1.0 and s["steps"] <= 0.2 * grid_steps
        print(f"selector by {judge:<4}: lr {chosen.learning_rate:.4g} wd {chosen.weight_decay:g} momentum "
              f"{chosen.momentum:g} -> mAP {s['map']:.4f}  gap {gap:.2f} points (target <= 1)  steps {s['steps']} = "
              f"{s['steps'] / grid_steps:.1%} of the grid's (target <= 20%)  search {s['seconds']:.0f} s  -> "
              f"{'MET' if met else 'MISSED'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="softmax,cnn", help="comma-separated: softmax, cnn")
    parser.add_argument("--final-steps", type=int, default=1000, help="final training budget per run")
    parser.add_argument("--grid-lrs", type=int, default=None,
                        help="log-spaced learning rates in the grid (default 8; detection 5)")
    parser.add_argument("--grid-min-lr", type=float, default=1e-3)
    parser.add_argument("--grid-max-lr", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=("classification", "detection"), default="classification")
    parser.add_argument("--det-final-steps", dest="det_final_steps", type=int, default=600,
                        help="detection: final training budget per run (after the warm-up)")
    parser.add_argument("--det-trial-steps", dest="det_trial_steps", type=int, default=200,
                        help="detection: steps of every selector trial (after the warm-up)")
    parser.add_argument("--det-grid-min-lr", dest="det_grid_min_lr", type=float, default=3e-3)
    parser.add_argument("--det-grid-max-lr", dest="det_grid_max_lr", type=float, default=0.3)
    parser.add_argument("--out", default="out/bench_selector_detection", help="detection: finished runs kept here")
    args = parser.parse_args(argv)
    if args.task == "detection":
        args.grid_lrs = args.grid_lrs or 5
        report_detection(bench_detection(args))
        return 0
    args.grid_lrs = args.grid_lrs or 8
    results = [bench(model, args) for model in args.models.split(",")]
    for r in results:
        report(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
