"""HyperSelector vs its grid and vs the defaults it starts from, over several seeds.

    python tools/bench_selector.py                      # MNIST: softmax (the seed's), MLP, small CNN
    python tools/bench_selector.py --models softmax --seeds 0,1,2
    python tools/bench_selector.py --task detection     # the demo RetinaNet as search-det --search-training runs it
    python tools/bench_selector.py --task experiment    # a Model Garden experiment (RetinaNet demo)

Every number is a mean ± std over ``--seeds`` (each seed: its own data order and initial
weights; the search and every final run of that seed share them).

MNIST: per seed, the search with the seed program's settings (100-step trials, weight_decay
[1e-2, 1e-3, 1e-4], momentum [0.99, 0.95, 0.9], defaults lr 0.1 / wd 1e-4 / momentum 0.9) under
each selector rule (``variants``: the trials they share come from one journal), the choice
trained for the final budget (1000 steps, as the seed's mox.auto.run) and scored on the 10,000
test images; against the defaults and a grid of ``--grid-lrs`` log-spaced learning rates x the
two lists (72 runs per seed), trained the same way.

Detection: a demo detector (``--det-model``, default retinanet: `detsearch.models.pipeline`'s
``retinanet_resnetfpn_coco`` with the shipped override, on the demo's TFRecords, 2000 train /
500 val) searched as ``detsearch search-det --search-training`` searches it: the selector on the
experiment's own train step (`ExperimentTrainer`), 200-step trials after a 20-step warm-up at
1e-3, weight_decay [1e-4, 1e-3], momentum [0.9, 0.95], the range test's pick refined over
x10^-0.5, x1, x10^0.5; judged by AP on the first 100 val images or by loss; defaults the
config's. Every final run is 600 steps after the same warm-up with the task's train step, scored
by Model Garden's own evaluation (AP on the 500 val images at the config's thresholds). Grid: 5
learning rates (0.003 to 0.3) x the lists.

Experiment: the selector on a given experiment's own train step (`ExperimentTrainer`, by loss,
60-step trials, the learning rate only), final runs of ``trainer.train_steps`` with the task's
train step, scored by Model Garden's own evaluation; grid: 5 learning rates (0.005 to 0.08) at
the config's weight decay and momentum.

Finished final runs and trial journals are kept under ``--out`` (a rerun reuses them). A trial
is keyed, as in every search's journal, by its trainer's fingerprint (data, initial weights, the
model's source); a final run by that fingerprint too plus the source of the modules that train
and score it (`run_fingerprint`), so a run made before a change to the training or scoring code
is run again, never reused. Prints one block per model and the rows of docs/hyperselector.md's
validation table.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import itertools
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

WEIGHT_DECAYS = (1e-2, 1e-3, 1e-4)
MOMENTUMS = (0.99, 0.95, 0.9)
DEFAULTS = {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-4}  # the seed's param_spec
BATCH_SIZE = 50
TEST_BATCHES = 10000 // BATCH_SIZE
SEARCH_STEPS = 100  # the seed's total_steps


def variants(final_steps: int) -> dict[str, dict]:
    """Selector rules compared on the same searches: name -> SelectorConfig overrides. Trials
    they share come from one journal, so each is run once."""
    from detsearch.selector.hyperselector import HORIZON_LADDER

    def horizon(rule, ladder=True):  # lr_refine_factors (1,): the range test's pick alone, no ladder
        return {"horizon_rule": rule, "final_steps": final_steps, **({} if ladder else {"lr_refine_factors": (1.0,)})}

    return {
        "moxing: pick, 5% ties": {"noise_ties": False, "horizon_rule": "none"},
        "pick, noise ties": {"horizon_rule": "none"},
        "ladder": {"horizon_rule": "none", "lr_refine_factors": HORIZON_LADDER},
        "pick x sqrt": horizon("sqrt", ladder=False),
        "ladder x sqrt": horizon("sqrt"),
        "ladder x fit": horizon("fit"),
        "pick x fourth_root": horizon("fourth_root", ladder=False),
        "ladder x fourth_root (shipped)": horizon("fourth_root"),
    }


def run_fingerprint(trainer, modules: tuple[str, ...], *functions) -> str:
    """What a final run's score depends on besides its hyperparameters: ``trainer.fingerprint()``
    (the trial journal's key: data, initial weights, the model's source) and the source of the
    code that trains and scores it: the trainer's own module, ``modules`` (importable names) and
    ``functions`` (this benchmark's scoring code). 16 hex digits."""
    import importlib

    digest = hashlib.sha256(trainer.fingerprint().encode())
    names = sorted({type(trainer).__module__, "detsearch.training.base", "detsearch.selector.curves", *modules})
    for name in names:
        digest.update(name.encode())
        digest.update(Path(inspect.getsourcefile(importlib.import_module(name))).read_bytes())
    for function in functions:
        digest.update(inspect.getsource(function).encode())
    return digest.hexdigest()[:16]


class FinalRuns:
    """Final-run results kept in a JSON file (a rerun reuses them). Keys name the run's seed and
    hyperparameters and end with its `run_fingerprint`."""

    def __init__(self, path: Path):
        import json

        self.path = path
        self.done = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, compute) -> float:
        from detsearch.atomic import write_json_atomic

        if key not in self.done:
            self.done[key] = compute()
            write_json_atomic(self.path, self.done)
        return self.done[key]


def mnist_program(model: str, seed: int):
    """A fresh MNIST stream shuffled by ``seed`` (every trainer reads its batches from the start)."""
    from detsearch.datasets import mnist as mnist_data
    from detsearch.models.mnist import make_program

    mnist = mnist_data.input_data.read_data_sets(str(mnist_data.ensure(None)), one_hot=True, seed=seed)
    return make_program(mnist, model, BATCH_SIZE)


def final_trainer(model: str, seed: int, final_steps: int):
    """Trains ``final_steps`` on seed ``seed``'s batches from its initial weights; scores the test split."""
    import detsearch.moxing as mox
    from detsearch.training.graph import GraphTrainer

    input_fn, model_fn, optimizer_fn = mnist_program(model, seed)
    return GraphTrainer(input_fn, model_fn, optimizer_fn, mox.auto.ParamSpec(**DEFAULTS), batch_size=BATCH_SIZE,
                        auto_batch=False, num_batches=final_steps, metric_names=["accuracy"], loss_name="loss",
                        select_by_eval=True, evaluation_total_steps=TEST_BATCHES, log_every_n_steps=0, seed=seed)


def final_accuracy(trainer, final_steps, learning_rate, momentum, weight_decay) -> float:
    from detsearch.selector.curves import LrSchedule, TrialSpec

    curve = trainer.run(TrialSpec(LrSchedule(start=learning_rate, steps=final_steps), momentum, weight_decay,
                                  evaluate_every_n_steps=final_steps))
    if curve.diverged or not len(curve):
        return 0.0
    accuracy = float(curve.metric("accuracy")[-1])
    return accuracy if math.isfinite(accuracy) else 0.0


def search(model: str, seed: int, overrides: dict, out: Path):
    """The seed's search (100-step trials, its lists and defaults) with a rule variant."""
    import dataclasses

    import detsearch.moxing as mox
    from detsearch.selector import HyperSelector, Journal, SelectorConfig
    from detsearch.training.graph import GraphTrainer

    input_fn, model_fn, optimizer_fn = mnist_program(model, seed)
    trainer = GraphTrainer(input_fn, model_fn, optimizer_fn, mox.auto.ParamSpec(**DEFAULTS), batch_size=BATCH_SIZE,
                           auto_batch=False, num_batches=SEARCH_STEPS, metric_names=["accuracy"], loss_name="loss",
                           select_by_eval=False, evaluation_total_steps=10, log_every_n_steps=0, seed=seed)
    config = dataclasses.replace(SelectorConfig(total_steps=SEARCH_STEPS, by_acc=True), **overrides)
    selector = HyperSelector(trainer, config, Journal(out / "journal" / f"{model}-{seed}"))
    return selector.select(mox.auto.ParamSpec(**DEFAULTS),
                           mox.auto.ParamSpec(weight_decay=list(WEIGHT_DECAYS), momentum=list(MOMENTUMS)))


def choice(seed: int, result, final) -> dict:
    """One seed's search result and the score of its choice after the final run. ``steps``: every
    distinct trial of the search (also those another variant ran first, from the journal)."""
    p = result.param_spec
    return {"seed": seed, "params": (p.learning_rate, p.weight_decay, p.momentum),
            "accuracy": final(seed, p.learning_rate, p.momentum, p.weight_decay), "steps": result.steps_spent,
            "result": result}


def bench(model: str, args) -> dict:
    out = Path(args.out)
    runs = FinalRuns(out / "final_runs.json")
    seeds = [int(s) for s in args.seeds.split(",")]
    learning_rates = np.logspace(math.log10(args.grid_min_lr), math.log10(args.grid_max_lr), args.grid_lrs)
    grid_points = [(float(lr), wd, m) for lr, wd, m in itertools.product(learning_rates, WEIGHT_DECAYS, MOMENTUMS)]
    trainers = {}

    fingerprints = {}

    def final(seed, lr, momentum, wd):
        if seed not in trainers:
            trainers[seed] = final_trainer(model, seed, args.final_steps)
            fingerprints[seed] = run_fingerprint(trainers[seed], ("detsearch.models.mnist",), final_trainer,
                                                 final_accuracy)

        def compute():
            return final_accuracy(trainers[seed], args.final_steps, lr, momentum, wd)

        return runs.get(f"{model} seed {seed} steps {args.final_steps} lr {lr!r} m {momentum!r} wd {wd!r} "
                        f"code {fingerprints[seed]}", compute)

    grid = {p: [final(seed, p[0], p[2], p[1]) for seed in seeds] for p in grid_points}
    print(f"  [{model}] grid done", file=sys.stderr, flush=True)
    defaults = [final(seed, DEFAULTS["learning_rate"], DEFAULTS["momentum"], DEFAULTS["weight_decay"]) for seed in seeds]
    chosen = {}
    for name, overrides in variants(args.final_steps).items():
        rows = []
        for seed in seeds:
            rows.append(choice(seed, search(model, seed, overrides, out), final))
        chosen[name] = rows
        print(f"  [{model}] {name}: " + ", ".join(f"{r['accuracy']:.4f}" for r in rows), file=sys.stderr, flush=True)
    return {"model": model, "seeds": seeds, "grid": grid, "defaults": defaults, "chosen": chosen,
            "final_steps": args.final_steps}


def spread(values) -> str:
    values = np.asarray(values, dtype=np.float64) * 100
    return f"{values.mean():6.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:4.2f}"


def report(r: dict) -> None:
    grid = r["grid"]
    means = {p: float(np.mean(v)) for p, v in grid.items()}
    best = max(means, key=means.get)
    best_mean = means[best]
    defaults_mean = float(np.mean(r["defaults"]))
    grid_steps = len(grid) * r["final_steps"]
    print(f"\n== {r['model']}: test score (%), mean ± std over seeds {r['seeds']}, {r['final_steps']} final steps ==")
    print(f"grid best    {spread(grid[best])}   lr {best[0]:.4g} wd {best[1]:g} momentum {best[2]:g}  "
          f"({len(grid)} points x {r['final_steps']} = {grid_steps} steps per seed; "
          f"median point {np.median(list(means.values())) * 100:.2f})")
    d = r.get("defaults_params", DEFAULTS)
    print(f"defaults     {spread(r['defaults'])}   lr {d['learning_rate']:g} wd {d['weight_decay']:g} "
          f"momentum {d['momentum']:g}   gap {(defaults_mean - best_mean) * 100:+.2f}")
    for name, rows in r["chosen"].items():
        accuracies = [row["accuracy"] for row in rows]
        mean = float(np.mean(accuracies))
        steps = np.mean([row["steps"] for row in rows]) + r["final_steps"]
        worst_vs_defaults = min(a - d for a, d in zip(accuracies, r["defaults"])) * 100
        print(f"{name:<32} {spread(accuracies)}   vs grid {(mean - best_mean) * 100:+.2f}   vs defaults "
              f"{(mean - defaults_mean) * 100:+.2f} (worst seed {worst_vs_defaults:+.2f})   steps {steps:.0f} = "
              f"{steps / grid_steps:.1%}")
        for row in rows:
            lr, wd, m = row["params"]
            print(f"    seed {row['seed']}: lr {lr:.4g} wd {wd:g} momentum {m:g} -> {row['accuracy'] * 100:.2f}"
                  f"{describe(row['result'])}")


def markdown(r: dict) -> None:
    """The rows of docs/hyperselector.md's validation table."""
    means = {p: float(np.mean(v)) for p, v in r["grid"].items()}
    best = max(means, key=means.get)
    grid_steps = len(r["grid"]) * r["final_steps"]
    print(f"\n| {r['model']} | rule | ours | defaults | grid best | gap to grid | vs defaults | steps |")
    for name, rows in r["chosen"].items():
        values = [row["accuracy"] for row in rows]
        steps = np.mean([row["steps"] for row in rows]) + r["final_steps"]
        print(f"| | {name} | {spread(values).strip()} | {spread(r['defaults']).strip()} | {spread(r['grid'][best]).strip()} "
              f"| {(np.mean(values) - means[best]) * 100:+.2f} | {(np.mean(values) - np.mean(r['defaults'])) * 100:+.2f} "
              f"| {steps:,.0f} ({steps / grid_steps:.1%}) |")


def describe(result) -> str:
    """The horizon correction and any ties within noise, in words."""
    parts = []
    h = result.horizon
    if h is not None and h.rule != "none":
        fitted = "" if h.rule != "fit" else (" (fit failed: fallback)" if h.fitted is None else " (fitted)")
        parts.append(f"x{h.factor:.3g} for {h.trial_steps}->{h.final_steps} steps, alpha {h.exponent:.2f}{fitted}")
    for stage in result.stages:
        if stage.noise and len(stage.tied) > 1:
            parts.append(f"{stage.name} tie within noise: " + ", ".join(
                f"{stage.candidates[i]:g} ({stage.scores[i]:+.4f})" for i in stage.tied))
    return ("   [" + "; ".join(parts) + "]") if parts else ""


DET_WEIGHT_DECAYS = (1e-4, 1e-3)  # detsearch search-det --search-training's lists
DET_MOMENTUMS = (0.9, 0.95)
DET_DEFAULT_MOMENTUM = 0.9  # search-det's default where the config names none
DET_WARMUP = (20, 1e-3)  # steps, learning rate: every trial and final run starts this way (search-det's)
DET_TRIAL = {"window": 5, "max_thres": 3, "evaluate_every_n_steps": 10}  # search-det's defaults
DET_EVAL_IMAGES = 100  # search-det's --eval-images


def detection_variants(final_steps: int) -> dict[str, dict]:
    """Selector rules for the detector: name -> SelectorConfig overrides (trials shared through one journal)."""
    def horizon(rule, by_acc=True):
        return {"by_acc": by_acc, "horizon_rule": rule, "final_steps": final_steps}

    return {
        "by AP, ladder, 5% ties (before)": {"by_acc": True, "noise_ties": False, "horizon_rule": "none"},
        "by AP, ladder, noise ties (shipped)": {"by_acc": True, "horizon_rule": "none"},
        "by AP, ladder x sqrt": horizon("sqrt"),
        "by AP, ladder x fit": horizon("fit"),
        "by AP, ladder x fourth_root": horizon("fourth_root"),
        "by loss, ladder, no horizon (--by-loss)": {"by_acc": False, "horizon_rule": "none"},
        "by loss, ladder x fourth_root": horizon("fourth_root", by_acc=False),
    }


def bench_detection(args) -> dict:
    """A demo detector as ``detsearch search-det --search-training`` searches it: the selector on
    the experiment's own train step (`ExperimentTrainer`, by AP on the first validation images or
    by loss) against a grid; every final run trains ``--det-final-steps`` after the warm-up with
    the task's train step and is scored by Model Garden's own evaluation on the whole validation
    set at the config's thresholds. One seed at a time (its trainers hold its batches)."""
    import contextlib
    import dataclasses
    import gc
    import tempfile

    from detsearch.models.detection_model import LR_REFINE_FACTORS
    from detsearch.models.experiment import Experiment, check_supported, evaluate_with_model_garden
    from detsearch.models.experiment_training import ACC_NAME, LOSS_NAME, ExperimentTrainer, config_training
    from detsearch.models.pipeline import demo_config
    from detsearch.params import ParamSpec
    from detsearch.selector import HyperSelector, Journal, SelectorConfig
    from detsearch.selector.curves import LrSchedule, TrialSpec

    out = Path(args.out)
    runs = FinalRuns(out / "final_runs.json")
    seeds = [int(s) for s in args.seeds.split(",")]
    name, config = demo_config(args.det_model)
    experiment = Experiment(name=name, config=config, kind=check_supported(config), checkpoint="")
    defaults = {"momentum": DET_DEFAULT_MOMENTUM, **config_training(config)}
    warmup_steps, warmup_lr = DET_WARMUP
    final_steps = args.det_final_steps
    lists = ParamSpec(weight_decay=list(DET_WEIGHT_DECAYS), momentum=list(DET_MOMENTUMS))
    learning_rates = np.logspace(math.log10(args.det_grid_min_lr), math.log10(args.det_grid_max_lr), args.grid_lrs)
    grid_points = [(float(lr), wd, m) for lr, wd, m in itertools.product(learning_rates, DET_WEIGHT_DECAYS,
                                                                          DET_MOMENTUMS)]
    label = f"{args.det_model} ({name})"
    chosen = {variant: [] for variant in detection_variants(final_steps)}
    default_values, grid = [], {point: [] for point in grid_points}
    for seed in seeds:
        held = {}

        def final_map(seed: int, lr: float, momentum: float, weight_decay: float) -> float:
            """val AP (Model Garden's evaluation) after the warm-up and ``final_steps``."""
            if "final" not in held:
                held["final"] = ExperimentTrainer(experiment, num_batches=warmup_steps + final_steps, seed=seed)

            def compute():
                t = held["final"]
                schedule = LrSchedule(start=lr, steps=final_steps, warmup_steps=warmup_steps, warmup_lr=warmup_lr)
                curve = t.run(TrialSpec(schedule, momentum, weight_decay, evaluate_every_n_steps=final_steps))
                if curve.diverged:
                    return 0.0
                with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # pycocotools prints
                    trained = dataclasses.replace(experiment, checkpoint=t.save(weight_decay, str(Path(tmp) / "ckpt")))
                    return max(0.0, evaluate_with_model_garden(trained)["AP"])

            if "code" not in held:
                held["code"] = run_fingerprint(held["final"], ("detsearch.models.experiment", "detsearch.models.pipeline"),
                                               compute)
            value = runs.get(f"{name} {args.det_model} seed {seed} steps {warmup_steps}+{final_steps} lr {lr!r} "
                             f"m {momentum!r} wd {weight_decay!r} code {held['code']}", compute)
            print(f"  [detection] seed {seed} lr {lr:.4g} m {momentum:g} wd {weight_decay:g} -> AP {value:.4f}",
                  file=sys.stderr, flush=True)
            return value

        trainer = ExperimentTrainer(experiment, num_batches=args.det_trial_steps + warmup_steps, seed=seed,
                                    evaluation_total_steps=DET_TRIAL["evaluate_every_n_steps"],
                                    eval_images=DET_EVAL_IMAGES)
        for variant, overrides in detection_variants(final_steps).items():
            config_ = dataclasses.replace(
                SelectorConfig(total_steps=args.det_trial_steps, acc_name=ACC_NAME, loss_name=LOSS_NAME,
                               warmup_steps=warmup_steps, warmup_lr=warmup_lr, lr_refine_factors=LR_REFINE_FACTORS,
                               **DET_TRIAL), **overrides)
            result = HyperSelector(trainer, config_, Journal(out / "journal" / f"{args.det_model}-{seed}")).select(
                ParamSpec(**defaults), lists)
            chosen[variant].append(choice(seed, result, final_map))
            print(f"  [detection] seed {seed} {variant}: {chosen[variant][-1]['accuracy']:.4f}", file=sys.stderr,
                  flush=True)
        default_values.append(final_map(seed, defaults["learning_rate"], defaults["momentum"], defaults["weight_decay"]))
        for lr, wd, m in grid_points:
            grid[(lr, wd, m)].append(final_map(seed, lr, m, wd))
        del trainer
        held.clear()
        gc.collect()
    return {"model": f"detection: {label}, val AP by Model Garden's evaluator", "seeds": seeds, "grid": grid,
            "defaults": default_values, "chosen": chosen, "final_steps": warmup_steps + final_steps,
            "defaults_params": defaults}


EXP_DEFAULT_MOMENTUM = 0.9
EXP_TRIAL = {"total_steps": 60, "warmup_steps": 10, "warmup_lr": 1e-3, "window": 10, "max_thres": 5}


def bench_experiment(args) -> dict:
    """One Model Garden experiment: the selector on the experiment's own train step
    (`ExperimentTrainer`, judged by loss) against a grid of learning rates; every final run trains
    ``trainer.train_steps`` with the task's train step and is scored by Model Garden's own
    evaluation (``validation_step`` + ``COCOEvaluator``, AP at the config's thresholds)."""
    import contextlib
    import dataclasses
    import tempfile

    from detsearch.models.experiment import Experiment, evaluate_with_model_garden, load_experiment
    from detsearch.models.experiment_training import LOSS_NAME, ExperimentTrainer, config_training
    from detsearch.params import ParamSpec
    from detsearch.selector import HyperSelector, Journal, SelectorConfig
    from detsearch.selector.curves import LrSchedule, TrialSpec

    out = Path(args.out)
    runs = FinalRuns(out / "final_runs.json")
    seeds = [int(s) for s in args.seeds.split(",")]
    experiment = load_experiment(args.experiment, [args.config_file], trained=False)
    own = config_training(experiment.config)
    defaults = {"momentum": EXP_DEFAULT_MOMENTUM, **own}
    train_steps = int(experiment.config.trainer.train_steps)
    warmup = experiment.config.trainer.optimizer_config.warmup.get()
    warmup_steps, warmup_lr = int(warmup.warmup_steps), float(warmup.warmup_learning_rate)
    final_steps = train_steps - warmup_steps
    trainers = {}

    def final_ap(seed: int, lr: float, momentum: float, weight_decay: float) -> float:
        if seed not in trainers:
            trainers[seed] = ExperimentTrainer(experiment, num_batches=train_steps, seed=seed)

        def compute():
            t = trainers[seed]
            schedule = LrSchedule(start=lr, steps=final_steps, warmup_steps=warmup_steps, warmup_lr=warmup_lr)
            curve = t.run(TrialSpec(schedule, momentum, weight_decay, evaluate_every_n_steps=final_steps))
            if curve.diverged:
                return 0.0
            with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # pycocotools prints
                trained = Experiment(name=experiment.name, config=experiment.config, kind=experiment.kind,
                                     checkpoint=t.save(weight_decay, str(Path(tmp) / "ckpt")))
                return max(0.0, evaluate_with_model_garden(trained)["AP"])

        if ("code", seed) not in trainers:
            trainers[("code", seed)] = run_fingerprint(trainers[seed], ("detsearch.models.experiment",), compute)
        value = runs.get(f"{experiment.name} {args.config_file} seed {seed} steps {train_steps} lr {lr!r} "
                         f"m {momentum!r} wd {weight_decay!r} code {trainers[('code', seed)]}", compute)
        print(f"  [experiment] seed {seed} lr {lr:.4g} m {momentum:g} wd {weight_decay:g} -> AP {value:.4f}",
              file=sys.stderr, flush=True)
        return value

    lists = ParamSpec(weight_decay=[float(v) for v in args.exp_weight_decays.split(",")],
                      momentum=[float(v) for v in args.exp_momentums.split(",")])
    chosen = {}
    from detsearch.selector.hyperselector import HORIZON_LADDER

    for name, overrides in {"pick, 5% ties (before)": {"noise_ties": False, "horizon_rule": "none"},
                            "ladder, no horizon (shipped)": {"horizon_rule": "none", "lr_refine_factors": HORIZON_LADDER},
                            "ladder x fourth_root": {"horizon_rule": "fourth_root", "final_steps": final_steps},
                            "ladder x sqrt": {"horizon_rule": "sqrt", "final_steps": final_steps}}.items():
        rows = []
        for seed in seeds:
            config = dataclasses.replace(SelectorConfig(by_acc=False, loss_name=LOSS_NAME, **EXP_TRIAL), **overrides)
            if ("search", seed) not in trainers:
                trainers[("search", seed)] = ExperimentTrainer(
                    experiment, num_batches=config.total_steps + config.warmup_steps, seed=seed)
            trainer = trainers[("search", seed)]
            result = HyperSelector(trainer, config, Journal(out / "journal" / f"experiment-{seed}")).select(
                ParamSpec(**defaults), lists)
            rows.append(choice(seed, result, final_ap))
        chosen[name] = rows
    default_values = [final_ap(seed, defaults["learning_rate"], defaults["momentum"], defaults["weight_decay"])
                      for seed in seeds]
    learning_rates = np.logspace(math.log10(args.exp_grid_min_lr), math.log10(args.exp_grid_max_lr), args.grid_lrs)
    grid = {}
    for lr, wd, m in itertools.product(learning_rates, lists.candidates("weight_decay"), lists.candidates("momentum")):
        grid[(float(lr), wd, m)] = [final_ap(seed, float(lr), m, wd) for seed in seeds]
    return {"model": f"Model Garden {experiment.name} ({args.config_file}), COCO AP by Model Garden's evaluator",
            "seeds": seeds, "grid": grid, "defaults": default_values, "chosen": chosen, "final_steps": train_steps,
            "defaults_params": defaults}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="softmax,mlp,cnn", help="comma-separated: softmax, mlp, cnn")
    parser.add_argument("--final-steps", type=int, default=1000, help="final training budget per run")
    parser.add_argument("--grid-lrs", type=int, default=None,
                        help="log-spaced learning rates in the grid (default 8; detection 5)")
    parser.add_argument("--grid-min-lr", type=float, default=1e-3)
    parser.add_argument("--grid-max-lr", type=float, default=3.0)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (data order and initial weights)")
    parser.add_argument("--task", choices=("classification", "detection", "experiment"), default="classification")
    parser.add_argument("--experiment", default="retinanet_resnetfpn_coco", help="experiment: registered name")
    parser.add_argument("--config-file", dest="config_file", default="models/experiments/retinanet_resnet18_demo.yaml",
                        help="experiment: its override YAML (data/demo/tfrecords must exist: docs/garden.md)")
    parser.add_argument("--exp-weight-decays", dest="exp_weight_decays", default="1e-4")
    parser.add_argument("--exp-momentums", dest="exp_momentums", default="0.9")
    parser.add_argument("--exp-grid-min-lr", dest="exp_grid_min_lr", type=float, default=0.005)
    parser.add_argument("--exp-grid-max-lr", dest="exp_grid_max_lr", type=float, default=0.08)
    parser.add_argument("--det-model", dest="det_model", default="retinanet", choices=("retinanet", "faster_rcnn"),
                        help="detection: the demo detector (detsearch.models.pipeline.DEMO_MODELS; default retinanet)")
    parser.add_argument("--det-final-steps", dest="det_final_steps", type=int, default=600,
                        help="detection: final training budget per run (after the warm-up)")
    parser.add_argument("--det-trial-steps", dest="det_trial_steps", type=int, default=200,
                        help="detection: steps of every selector trial (after the warm-up)")
    parser.add_argument("--det-grid-min-lr", dest="det_grid_min_lr", type=float, default=3e-3)
    parser.add_argument("--det-grid-max-lr", dest="det_grid_max_lr", type=float, default=0.3)
    parser.add_argument("--out", default=None, help="finished runs and journals kept here (a rerun reuses them); "
                        "default out/bench_selector[_detection|_experiment]")
    args = parser.parse_args(argv)
    out, lrs, run = {"classification": ("out/bench_selector", 8, lambda: [bench(m, args) for m in args.models.split(",")]),
                     "detection": ("out/bench_selector_detection", 5, lambda: [bench_detection(args)]),
                     "experiment": ("out/bench_selector_experiment", 5, lambda: [bench_experiment(args)])}[args.task]
    args.out = args.out or out
    args.grid_lrs = args.grid_lrs or lrs
    results = run()
    for r in results:
        report(r)
    for r in results:
        markdown(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
