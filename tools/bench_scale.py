"""Benchmark: the in-process executor against Ray on this machine (docs/scale.md).

In one run, the same work with each executor:

1. sweep: a one-stage threshold sweep on a seeded synthetic COCO-scale cache
   (`detsearch.detection.synthetic`; default 1000 images x 1000 candidates, 5 score x 6 IoU
   thresholds, so 6 NMS settings): in this process (one task per NMS setting on all images),
   in ``--num-cpus`` forked workers (``sweep(executor=ProcessExecutor(N))``) and on Ray (6 NMS
   settings x 2N image ranges = 12N tasks; the cache, made in memory, travels once);
2. trials: HyperSelector candidate stages (4 learning rates, then 4 weight decays, then 4
   momentums: 12 trials, 10 run; the weight decay stage's trial at the default weight decay and
   the momentum stage's at the default momentum are earlier trials, reused) with a NumPy
   two-layer perceptron trainer whose
   batches are made on the fly from a seed: in this process and on Ray.

Ray runs on a private local instance with ``--num-cpus`` CPUs (default 2, this machine's cores);
its start-up, the first tasks (worker processes starting) and the round trip of an empty task
are measured apart. Printed: wall times, ratios (in-process / Ray), Ray's overhead against a
perfect split over the CPUs, and whether the results are identical (the sweep's whole table;
the search's whole result, curves included, except its wall time). The exit status is 1, and
the differing work is named, when they are not.

One BLAS thread everywhere: Ray gives a one-CPU task ``OMP_NUM_THREADS=1``, and float32 matrix
products come out with other bits under another BLAS thread count, so this process is held to
one thread too (``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``, unless set); each trial holds one
CPU slot either way. The BLAS thread pools are printed.

Usage:
  python tools/bench_scale.py               # about 2 minutes on 2 cores
  python tools/bench_scale.py --quick       # small smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before NumPy loads its BLAS (see the module docstring)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detsearch.params import ParamSpec  # noqa: E402
from detsearch.selector.curves import Curve, TrialSpec  # noqa: E402
from detsearch.training.base import CurveRecorder  # noqa: E402

SWEEP_GRID = ParamSpec(score_threshold=[0.01, 0.05, 0.1, 0.3, 0.5], iou_threshold=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
PARAM_SPEC = ParamSpec(learning_rate=0.05, momentum=0.9, weight_decay=1e-4)
CANDIDATES = ParamSpec(learning_rate=[0.01, 0.03, 0.1, 0.3], weight_decay=[1e-2, 1e-3, 1e-4, 1e-5],
                       momentum=[0.99, 0.95, 0.9, 0.8])


class MlpTrainer:
    """A `Trainer`: two-layer perceptron (ReLU, softmax) with momentum SGD on seeded synthetic
    batches (class centres plus noise), each batch drawn from ``(seed, step)``, so nothing big
    is stored or shipped; float32."""

    def __init__(self, steps: int, batch_size: int = 256, features: int = 784, hidden: int = 512, classes: int = 10,
                 seed: int = 0, evaluation_total_steps: int = 5):
        rng = np.random.default_rng(seed)
        self.steps, self.batch_size, self.seed = steps, batch_size, seed
        self.centers = rng.normal(0.0, 0.3, (classes, features)).astype(np.float32)
        self.initial = [(rng.normal(0.0, 1.0, (features, hidden)) / np.sqrt(features)).astype(np.float32),
                        (rng.normal(0.0, 1.0, (hidden, classes)) / np.sqrt(hidden)).astype(np.float32)]
        self.evaluation_total_steps = evaluation_total_steps

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.centers.tobytes())
        for weights in self.initial:
            digest.update(weights.tobytes())
        digest.update(repr((self.steps, self.batch_size, self.seed)).encode())
        return digest.hexdigest()

    def num_parameters(self) -> int:
        return sum(w.size for w in self.initial)

    def batch(self, index: int):
        rng = np.random.default_rng([self.seed, index])
        labels = rng.integers(0, len(self.centers), self.batch_size)
        inputs = self.centers[labels] + rng.normal(0.0, 1.0, (self.batch_size, self.centers.shape[1])).astype(np.float32)
        return inputs, labels

    def run(self, trial: TrialSpec, on_step=None) -> Curve:
        w1, w2 = (w.copy() for w in self.initial)
        v1, v2 = np.zeros_like(w1), np.zeros_like(w2)
        recorder = CurveRecorder(trial, "loss", self.evaluation_total_steps)
        momentum = np.float32(0.0 if trial.momentum is None else trial.momentum)
        decay = np.float32(trial.weight_decay)
        eye = np.eye(w2.shape[1], dtype=np.float32)
        for index, lr in enumerate(trial.schedule.values()):
            x, y = self.batch(index)
            with np.errstate(all="ignore"):
                h = np.maximum(x @ w1, 0.0)
                logits = h @ w2
                logits = logits - logits.max(axis=1, keepdims=True)
                probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                loss = float(-np.mean(np.log(probs[np.arange(len(y)), y])))
                accuracy = float(np.mean(np.argmax(logits, axis=1) == y))
                d_logits = (probs - eye[y]) / np.float32(len(y))
                g2 = h.T @ d_logits + decay * w2
                g1 = x.T @ ((d_logits @ w2.T) * (h > 0)) + decay * w1
                v1 = momentum * v1 + g1
                v2 = momentum * v2 + g2
                w1 = w1 - np.float32(lr) * v1
                w2 = w2 - np.float32(lr) * v2
            if on_step:
                on_step(index + 1)
            if not recorder.after_step(index, {"loss": loss, "accuracy": accuracy}):
                break
        return recorder.curve()


def empty_task(item):
    return item


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def search_result(trainer, steps, executor):
    from detsearch.selector import HyperSelector, SelectorConfig

    config = SelectorConfig(total_steps=steps, window=10, max_thres=5, search_learning_rate=False)
    result = HyperSelector(trainer, config, executor=executor).select(PARAM_SPEC, CANDIDATES)
    summary = result.to_dict()
    summary.pop("seconds")
    return result, json.dumps(summary, sort_keys=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="sweep: images (default 1000)")
    parser.add_argument("--steps", type=int, default=100, help="trials: steps per trial (default 100)")
    parser.add_argument("--num-cpus", type=int, default=2, help="Ray CPUs and forked sweep workers (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 images, 30 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.steps = 200, 30
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import ray

    from detsearch.detection import cocoeval
    from detsearch.detection.sweep import sweep
    from detsearch.detection import synthetic
    from detsearch.executor import LocalExecutor, ProcessExecutor, RayExecutor

    try:
        from threadpoolctl import threadpool_info

        pools = [f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info()]
    except ImportError:
        pools = ["unknown"]
    print(f"machine: {os.cpu_count()} CPUs; NumPy BLAS threads in this process: {', '.join(pools) or 'none'}; "
          f"ray {ray.__version__}", flush=True)

    rng = np.random.default_rng(args.seed)
    (gt, cache), seconds = timed(lambda: (lambda g: (g, synthetic.make_one_stage_cache(rng, g)))(
        synthetic.make_ground_truth(rng, args.images)))
    ground_truth = cocoeval.load_ground_truth(gt)
    nms_settings = len(SWEEP_GRID.candidates("iou_threshold"))
    print(f"sweep data: {args.images} images, {cache.num_rows()} candidates, {cache.num_entries()} class scores; "
          f"grid {len(SWEEP_GRID.candidates('score_threshold'))} x {nms_settings} ({seconds:.1f}s to generate)",
          flush=True)
    trainer = MlpTrainer(args.steps, seed=args.seed)

    figures = {}
    local = LocalExecutor()
    sweep_local, figures["sweep_local"] = timed(lambda: sweep(cache, ground_truth, SWEEP_GRID, executor=local))
    print(f"sweep, in-process:            {figures['sweep_local']:7.2f}s", flush=True)
    sweep_fork, figures["sweep_fork"] = timed(lambda: sweep(cache, ground_truth, SWEEP_GRID, executor=ProcessExecutor(args.num_cpus)))
    print(f"sweep, {args.num_cpus} forked workers:       {figures['sweep_fork']:7.2f}s", flush=True)
    (search_local, search_local_json), figures["trials_local"] = timed(lambda: search_result(trainer, args.steps, local))
    trials = search_local.trials_run
    print(f"trials, in-process:           {figures['trials_local']:7.2f}s ({trials} trials run, "
          f"{search_local.trials_reused} reused, {figures['trials_local'] / trials:.2f}s/trial)", flush=True)

    _, figures["ray_start"] = timed(lambda: ray.init(num_cpus=args.num_cpus, include_dashboard=False,
                                                     log_to_driver=False))
    executor = RayExecutor()
    _, figures["ray_first_tasks"] = timed(lambda: executor.map(empty_task, range(args.num_cpus)))
    rounds = 200
    _, seconds = timed(lambda: executor.map(empty_task, range(rounds)))
    figures["ray_task_round_trip_ms"] = 1000 * seconds / rounds
    print(f"ray: start {figures['ray_start']:.2f}s, first {args.num_cpus} tasks {figures['ray_first_tasks']:.2f}s, "
          f"empty task {figures['ray_task_round_trip_ms']:.2f} ms each ({rounds} in a row)", flush=True)
    sweep_ray, figures["sweep_ray"] = timed(lambda: sweep(cache, ground_truth, SWEEP_GRID, executor=executor))
    print(f"sweep, ray ({args.num_cpus} CPUs):           {figures['sweep_ray']:7.2f}s", flush=True)
    (search_ray, search_ray_json), figures["trials_ray"] = timed(lambda: search_result(trainer, args.steps, executor))
    print(f"trials, ray ({args.num_cpus} CPUs):          {figures['trials_ray']:7.2f}s", flush=True)
    ray.shutdown()

    sweep_same = sweep_ray.to_json() == sweep_local.to_json() == sweep_fork.to_json()
    trials_same = search_ray_json == search_local_json
    print()
    print(f"{'work':<10} {'in-process':>11} {'ray':>8} {'in-process/ray':>15} {'ray - in-process/' + str(args.num_cpus):>20} "
          f"{'identical':>10}")
    for name, same in (("sweep", sweep_same), ("trials", trials_same)):
        local_s, ray_s = figures[f"{name}_local"], figures[f"{name}_ray"]
        overhead = ray_s - local_s / args.num_cpus
        print(f"{name:<10} {local_s:10.2f}s {ray_s:7.2f}s {local_s / ray_s:14.2f}x {overhead:19.2f}s "
              f"{'yes' if same else 'NO':>10}")
    print(f"sweep with {args.num_cpus} forked workers: {figures['sweep_fork']:.2f}s "
          f"({figures['sweep_local'] / figures['sweep_fork']:.2f}x in-process; ray/forked "
          f"{figures['sweep_ray'] / figures['sweep_fork']:.2f})")
    total_ray = figures["ray_start"] + figures["ray_first_tasks"] + figures["sweep_ray"] + figures["trials_ray"]
    total_local = figures["sweep_local"] + figures["trials_local"]
    print(f"both, ray start-up included: in-process {total_local:.2f}s, ray {total_ray:.2f}s "
          f"({total_local / total_ray:.2f}x)")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()} | {"sweep_identical": sweep_same,
                                                                      "trials_identical": trials_same}))
    failures = [text for text, same in (("sweep: the tables of in-process, forked and Ray runs differ", sweep_same),
                                         ("trials: the in-process and the Ray search results differ", trials_same))
                if not same]
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
