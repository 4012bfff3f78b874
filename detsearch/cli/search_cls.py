"""Classification search on MNIST: HyperSelector, final training, export, report.

    detsearch search-cls                        # the seed's softmax model on real MNIST
    detsearch search-cls --model cnn --train_url out/cnn

Writes to ``--train_url``: ``result.json`` (chosen parameters, test accuracy, every trial's
curve summary), ``lr_range.png``, ``candidates.png``, ``search/journal.jsonl`` (a rerun with the
same arguments reuses finished trials), ``search/tensorboard/`` (every trial's curve),
``train/`` (TensorBoard events and checkpoints of the final training) and ``train/model``
(the SavedModel).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from detsearch.cli.args import non_negatives
from detsearch.selector.rules import HORIZON_RULES

HELP = "classification search on MNIST (the seed's program): selector, final training, export, report"
DESCRIPTION = __doc__


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-url", default=None,
                        help="directory of the four MNIST IDX gz files (prepared offline when missing; "
                             "default: $DETSEARCH_DATA_DIR/mnist or data/mnist)")
    parser.add_argument("--train-url", default="out/search_cls", help="output directory")
    parser.add_argument("--model", default="softmax", choices=["softmax", "mlp", "cnn"], help="network (softmax: the seed's)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--total-steps", type=int, default=100, help="steps of every search trial")
    parser.add_argument("--evaluation-total-steps", type=int, default=10, help="batches averaged into a curve point")
    parser.add_argument("--max-number-of-steps", type=int, default=1000, help="steps of the final training")
    parser.add_argument("--weight-decays", default="1e-2,1e-3,1e-4", help="weight_decay candidates")
    parser.add_argument("--momentums", default="0.99,0.95,0.9", help="momentum candidates")
    parser.add_argument("--learning-rate", type=float, default=0.1, help="default learning rate (param_spec)")
    parser.add_argument("--momentum", type=float, default=0.9, help="default momentum (param_spec)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="default weight decay (param_spec)")
    parser.add_argument("--select-by-eval", action="store_true", help="judge on evaluation batches (test split)")
    parser.add_argument("--by-loss", action="store_true", help="judge by loss instead of accuracy")
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--max-thres", type=int, default=10)
    parser.add_argument("--lr-rule", default=None, help="LR choice rule (default: the documented one)")
    parser.add_argument("--horizon-rule", default=None, choices=HORIZON_RULES,
                        help="scale the trials' learning rate to --max-number-of-steps: fourth_root (default), "
                             "sqrt, fit or none")
    parser.add_argument("--seed", type=int, default=0)
    from detsearch.executor import add_executor_arguments

    add_executor_arguments(parser, gpus=True)  # ray: a stage's candidates run as parallel tasks (docs/scale.md)


def test_accuracy(saved_model_dir: str, mnist) -> float:
    import numpy as np
    import tensorflow as tf

    serving = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    logits = serving(images=tf.constant(mnist.test.images))["logits"].numpy()
    return float(np.mean(np.argmax(logits, 1) == np.argmax(mnist.test.labels, 1)))


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tqdm import tqdm

    from detsearch.datasets import mnist as mnist_data
    import detsearch.moxing as mox
    from detsearch import report
    from detsearch.atomic import write_json_atomic
    from detsearch.executor import executor_from_args

    logging.getLogger("detsearch").setLevel(logging.WARNING)  # the bar and the table report progress
    param_spec = mox.auto.ParamSpec(learning_rate=args.learning_rate, momentum=args.momentum,
                                    weight_decay=args.weight_decay)
    param_list_spec = mox.auto.ParamSpec(weight_decay=non_negatives(args.weight_decays, "--weight-decays"),
                                         momentum=non_negatives(args.momentums, "--momentums"))
    from detsearch.selector import SelectorConfig
    from detsearch.selector.hyperselector import DEFAULT_HORIZON_RULE

    # The selector's settings are checked here, before MNIST is prepared and the bar is drawn.
    trials = SelectorConfig(total_steps=args.total_steps, window=args.window, max_thres=args.max_thres,
                            final_steps=args.max_number_of_steps,
                            horizon_rule=args.horizon_rule or DEFAULT_HORIZON_RULE).planned_trials(param_list_spec)
    executor = executor_from_args(args)
    data_dir = mnist_data.ensure(args.data_url)
    from detsearch.models.mnist import make_program

    mnist = mnist_data.input_data.read_data_sets(str(data_dir), one_hot=True, seed=args.seed)
    input_fn, model_fn, optimizer_fn = make_program(mnist, args.model, args.batch_size)
    out = Path(args.train_url)
    started = time.perf_counter()
    bar = tqdm(total=trials * args.total_steps, desc="search", unit="step", leave=True)

    def on_trial(name, index, reused, curve):
        if reused:
            bar.update(args.total_steps)
        else:  # a diverged trial stops early: count its remaining steps as done
            bar.update(max(0, index * args.total_steps - bar.n))
        bar.set_postfix_str(name)

    try:
        chosen = mox.auto.search(
            input_fn=input_fn, model_fn=model_fn, optimizer_fn=optimizer_fn, batch_size=args.batch_size,
            auto_batch=False, total_steps=args.total_steps, evaluation_total_steps=args.evaluation_total_steps,
            select_by_eval=args.select_by_eval, by_acc=not args.by_loss, window=args.window,
            max_thres=args.max_thres, log_every_n_steps=0, param_spec=param_spec, param_list_spec=param_list_spec,
            output_dir=str(out / "search"), seed=args.seed, lr_rule=args.lr_rule, on_trial=on_trial,
            final_steps=args.max_number_of_steps, horizon_rule=args.horizon_rule,
            on_step=lambda step: bar.update(1), executor=executor, return_result=True)
    finally:
        bar.close()
    result, chosen = chosen, chosen.param_spec
    search_seconds = time.perf_counter() - started
    print(report.summary_table(result))

    import tensorflow as tf

    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.WARN)  # the bar reports progress
    logging.getLogger("detsearch").setLevel(logging.WARNING)
    bar = tqdm(total=args.max_number_of_steps, desc="final training", unit="step")
    from detsearch.training.graph import export_saved_model, train

    train(input_fn, model_fn, optimizer_fn, chosen, batch_size=args.batch_size, auto_batch=False,
          log_dir=str(out / "train"), max_number_of_steps=args.max_number_of_steps, log_every_n_steps=10,
          seed=args.seed, on_step=lambda step: bar.update(step - bar.n))
    bar.close()
    saved_model = export_saved_model(input_fn, model_fn, batch_size=args.batch_size, auto_batch=False,
                                     log_dir=str(out / "train"))
    accuracy = test_accuracy(saved_model, mnist)

    report.plot_lr_test(result, out / "lr_range.png", args.window)
    report.plot_stages(result, out / "candidates.png", args.window)
    report.write_tensorboard(result, out / "search" / "tensorboard")
    payload = {
        "model": args.model,
        "chosen": chosen.to_dict(),
        "test_accuracy": accuracy,
        "search_seconds": search_seconds,
        "search_steps": result.steps_spent,
        "final_steps": args.max_number_of_steps,
        "saved_model": saved_model,
        "trials": [
            {"name": f"{stage.name}={c:g}", "stage": stage.name, "value": c,
             "tail_" + result.metric: report.metric_value(result, s), "diverged": curve.diverged,
             "steps": curve.steps_run}
            for stage in result.stages for c, s, curve in zip(stage.candidates, stage.scores, stage.curves)],
        "search": result.to_dict(),
    }
    write_json_atomic(out / "result.json", payload)
    print(f"test accuracy after {args.max_number_of_steps} steps with the chosen parameters: {accuracy:.4f}")
    print(f"wrote {out / 'result.json'}, {out / 'lr_range.png'}, {out / 'candidates.png'}, {saved_model}")
    return 0


