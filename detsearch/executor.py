"""Where independent tasks run: in this process (the default), in forked processes, or on Ray.

An `Executor` maps a function over items and returns the results in input order. The
selector's candidate trials, the sweep's NMS settings and the cache writer's shards are such
items; each caller merges the results in input order, so a result never depends on the
executor. See docs/scale.md.

- `LocalExecutor`: one item after the other, in this process.
- `ProcessExecutor`: ``processes`` forked processes of this machine, which inherit this
  process's memory (POSIX ``fork``; elsewhere it runs in this process).
- `RayExecutor`: one Ray task per item (one CPU, and ``num_gpus_per_task`` GPUs, per task), on
  a local Ray instance or a cluster (``address``). Ray is an optional dependency
  (``pip install 'detsearch[ray]'``), imported only when a `RayExecutor` is used.

``fn`` and the items travel to Ray workers by pickle (cloudpickle), so ``fn`` should be a
module-level function of an importable module. ``shared`` is put into Ray's object store once
and handed to every task (``fn(shared, item)``), instead of being pickled once per task.

`worker_cache` is the one place where a task keeps per-process state across tasks (a sweep's
engine, a selector's trainer): built on the first task a process runs, reused by the next tasks
of the same job. (The cache writer's shard tasks keep nothing: each rebuilds the experiment's
model from its config and checkpoint.)

This module imports the standard library and `detsearch.checks` only.
"""

from __future__ import annotations

import abc
import argparse
import logging
import multiprocessing
from typing import Any, Callable, Hashable, Iterable, TypeVar

from detsearch.checks import optional_positive_int, positive_int
from detsearch.errors import MissingExtra

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "add_executor_arguments",
    "as_executor",
    "executor_from_args",
    "make_executor",
    "release_worker_cache",
    "worker_cache",
]

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
"""Names accepted by `make_executor` and the ``--executor`` flag."""

RAY_INSTALL = "pip install 'detsearch[ray]'"

_NOTHING = object()

T = TypeVar("T")

_WORKER_STATE: dict[str, tuple[Hashable, Any]] = {}
"""`worker_cache`'s values: slot -> (key, value)."""


def worker_cache(slot: str, key: Hashable, build: Callable[[], T]) -> T:
    """The value this process holds for ``slot``, built by ``build()`` unless held for ``key``.

    Tasks use it for state that is expensive to rebuild and the same for every task of one job
    (e.g. ``key`` a token naming the job): a worker process builds it on its first task and
    reuses it for the next ones. A slot holds one value: a new ``key`` drops the old value
    before building the new one, so a long-lived worker (a Ray worker) keeps at most one value
    per slot. A process may seed a slot with what it already built (``build=lambda: value``)
    before a `ProcessExecutor` forks: the workers then inherit it.

    Args:
      slot: who owns the value, by convention the owning module's name.
      key: what the value was built for; compared with ``==``.
      build: makes the value; called only when the slot holds none for ``key``.
    """
    held = _WORKER_STATE.get(slot)
    if held is not None and held[0] == key:
        return held[1]
    _WORKER_STATE.pop(slot, None)  # free the old value before building a new one
    value = build()
    _WORKER_STATE[slot] = (key, value)
    return value


def release_worker_cache(slot: str) -> None:
    """Drops what `worker_cache` holds for ``slot`` in this process (nothing if it holds none)."""
    _WORKER_STATE.pop(slot, None)


class Executor(abc.ABC):
    """Runs ``fn`` over items; results come back in input order."""

    name: str = ""

    @abc.abstractmethod
    def map(self, fn: Callable, items: Iterable, *, shared: Any = _NOTHING,
            on_result: Callable[[int, Any], None] | None = None, keep: bool = True) -> list | None:
        """``[fn(item) for item in items]``, or ``[fn(shared, item) ...]`` when ``shared`` is given.

        Args:
          fn: the task; module-level (importable) for executors that leave the process.
          items: task arguments.
          shared: one object every task receives as its first argument (sent once).
          on_result: ``on_result(index, result)`` in the calling process as each task finishes
            (in completion order, which may differ from input order).
          keep: False: each result is given to ``on_result`` only, and dropped after it (large
            results then need not all fit in memory at once); ``map`` returns None.

        Returns:
          The results, in the order of ``items``.

        Raises:
          The first failing task's exception (remaining tasks are cancelled where possible).
        """

    def slots(self) -> int:
        """How many tasks run at once (1 for `LocalExecutor`)."""
        return 1

    def close(self) -> None:
        """Releases what the executor started (nothing for `LocalExecutor`)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class LocalExecutor(Executor):
    """Runs every task in this process, one after the other, in input order."""

    name = "local"

    def map(self, fn, items, *, shared=_NOTHING, on_result=None, keep=True) -> list | None:
        results = []
        for index, item in enumerate(items):
            result = fn(item) if shared is _NOTHING else fn(shared, item)
            if on_result is not None:
                on_result(index, result)
            if keep:
                results.append(result)
            del result
        return results if keep else None

    def __repr__(self) -> str:
        return "LocalExecutor()"


_FORKED_TASK: tuple[Callable, bool, Any] | None = None
"""In a `ProcessExecutor` worker only: (fn, has_shared, shared) of its pool."""


def _install_forked_task(fn: Callable, has_shared: bool, shared: Any) -> None:
    global _FORKED_TASK
    _FORKED_TASK = (fn, has_shared, shared)


def _run_forked_task(indexed: tuple[int, Any]) -> tuple[int, Any]:
    index, item = indexed
    fn, has_shared, shared = _FORKED_TASK
    return index, _call(fn, has_shared, shared, item)


class ProcessExecutor(Executor):
    """Runs tasks in ``processes`` forked processes of this machine.

    Each `map` forks a pool of ``min(processes, len(items))`` workers, which inherit this
    process's memory: ``fn``, ``shared`` and what this process holds in `worker_cache` reach them
    without being pickled (items and results are pickled). With one process or one item, or
    where the ``fork`` start method is missing (Windows), the tasks run in this process, one
    after the other.

    A forked process must not use TensorFlow when this process already has (its thread pools do
    not survive a fork): give such tasks NumPy work only (the sweep's are), and run the
    TensorFlow part here first. Use `RayExecutor` for tasks that train.

    Args:
      processes: worker processes, >= 1.
    """

    name = "process"

    def __init__(self, processes: int):
        self.processes = positive_int(processes, "processes")

    def slots(self) -> int:
        return self.processes

    def map(self, fn, items, *, shared=_NOTHING, on_result=None, keep=True) -> list | None:
        items = list(items)
        forkable = "fork" in multiprocessing.get_all_start_methods()
        if self.processes == 1 or len(items) <= 1 or not forkable:
            if not forkable and self.processes > 1:
                logger.info("process executor: no fork start method here; running %d tasks in this process", len(items))
            return LocalExecutor().map(fn, items, shared=shared, on_result=on_result, keep=keep)
        has_shared = shared is not _NOTHING
        results: list[Any] = [None] * len(items)
        context = multiprocessing.get_context("fork")
        # Under fork, the initializer's arguments are inherited, not pickled.
        with context.Pool(min(self.processes, len(items)), initializer=_install_forked_task,
                          initargs=(fn, has_shared, shared if has_shared else None)) as pool:
            for index, result in pool.imap_unordered(_run_forked_task, enumerate(items)):
                if keep:
                    results[index] = result
                if on_result is not None:
                    on_result(index, result)
                del result
        return results if keep else None

    def __repr__(self) -> str:
        return f"ProcessExecutor(processes={self.processes})"


def _import_ray():
    try:
        import ray
    except ModuleNotFoundError as error:
        if error.name != "ray":
            raise
        raise MissingExtra("the ray executor", "ray") from error
    return ray


def _call(fn, has_shared, shared, item):
    return fn(shared, item) if has_shared else fn(item)


class RayExecutor(Executor):
    """One Ray task per item.

    Args:
      address: the cluster to join: ``"auto"`` (a cluster started on this machine with
        ``ray start``), ``"ray://HOST:10001"`` (Ray Client) or ``"HOST:6379"``; None starts a
        private Ray instance on this machine (or uses the one already initialised in this
        process). Ignored when Ray is already initialised.
      num_cpus: CPUs of a private instance (None: all of this machine's); not used with
        ``address``.
      num_cpus_per_task: CPU slots one task holds (default 1).
      num_gpus_per_task: GPUs one task holds (default 0); Ray sets ``CUDA_VISIBLE_DEVICES`` of
        the task accordingly.
      runtime_env: Ray runtime environment for the job (e.g. ``{"working_dir": "."}`` so that a
        remote cluster can import this repository's ``models/`` and ``datasets/``).

    Raises:
      detsearch.errors.MissingExtra: Ray is not installed (an ImportError; the message says how to
        install it).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, num_cpus_per_task: float = 1,
                 num_gpus_per_task: float = 0, runtime_env: dict | None = None):
        for label, value in (("num_cpus_per_task", num_cpus_per_task), ("num_gpus_per_task", num_gpus_per_task)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{label} must be a number >= 0, got {value!r}")
        num_cpus = optional_positive_int(num_cpus, "num_cpus")
        _import_ray()
        self.address = address
        self.num_cpus = num_cpus
        self.num_cpus_per_task = num_cpus_per_task
        self.num_gpus_per_task = num_gpus_per_task
        self.runtime_env = runtime_env
        self._started = False
        self._remote = None

    def _ray(self):
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"runtime_env": self.runtime_env}
            if self.address is None:
                kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
            ray.init(address=self.address, **kwargs)
            self._started = True
            logger.info("ray: initialised (%s)", self.address or "a private local instance")
        if self._remote is None:
            self._remote = ray.remote(num_cpus=self.num_cpus_per_task, num_gpus=self.num_gpus_per_task,
                                      max_retries=0)(_call)
        return ray

    def slots(self) -> int:
        """The cluster's CPUs over ``num_cpus_per_task`` (at least 1; starts Ray if needed)."""
        cpus = self._ray().cluster_resources().get("CPU", 1)
        return max(1, int(cpus // self.num_cpus_per_task)) if self.num_cpus_per_task else max(1, int(cpus))

    def map(self, fn, items, *, shared=_NOTHING, on_result=None, keep=True) -> list | None:
        items = list(items)
        if not items:
            return [] if keep else None
        ray = self._ray()
        has_shared = shared is not _NOTHING
        shared_ref = ray.put(shared) if has_shared else None
        pending = [self._remote.remote(fn, has_shared, shared_ref, item) for item in items]
        index_of = {ref: index for index, ref in enumerate(pending)}
        results: list[Any] = [None] * len(pending)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    index = index_of.pop(ref)  # the last reference: Ray may free the result after use
                    result = ray.get(ref)
                    del ref
                    if keep:
                        results[index] = result
                    if on_result is not None:
                        on_result(index, result)
                    del result
                del ready
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return results if keep else None

    def close(self) -> None:
        """Shuts Ray down when this executor started it."""
        if self._started:
            _import_ray().shutdown()
            self._started = False
        self._remote = None

    def __repr__(self) -> str:
        return (f"RayExecutor(address={self.address!r}, num_cpus_per_task={self.num_cpus_per_task}, "
                f"num_gpus_per_task={self.num_gpus_per_task})")


def make_executor(name: str = "local", *, address: str | None = None, num_cpus: int | None = None,
                  num_gpus_per_task: float = 0, runtime_env: dict | None = None) -> Executor:
    """An executor by name: ``"local"`` or ``"ray"`` (the other arguments are Ray's)."""
    if name == "local":
        if address is not None:
            raise ValueError(f"address {address!r} is given but the executor is 'local'; use the 'ray' executor")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus=num_cpus, num_gpus_per_task=num_gpus_per_task, runtime_env=runtime_env)
    raise ValueError(f"unknown executor {name!r}; known executors: {', '.join(EXECUTORS)}")


def as_executor(executor: Executor | str | None) -> Executor:
    """None -> `LocalExecutor`; a name -> `make_executor(name)`; an `Executor` as is."""
    if executor is None:
        return LocalExecutor()
    if isinstance(executor, str):
        return make_executor(executor)
    if isinstance(executor, Executor):
        return executor
    raise TypeError(f"executor must be 'local', 'ray', an Executor or None, got {executor!r}")


def add_executor_arguments(parser: argparse.ArgumentParser, *, gpus: bool = False) -> None:
    """Adds ``--executor``, ``--ray-address`` (and with ``gpus``, ``--ray-gpus-per-task``)."""
    parser.add_argument("--executor", default="local", choices=EXECUTORS,
                        help="where independent work runs: local = this process (default); ray = Ray tasks "
                             f"(needs {RAY_INSTALL}); results do not depend on it")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="with --executor ray: the cluster, e.g. auto or ray://HOST:10001 "
                             "(default: a private Ray instance on this machine)")
    if gpus:
        parser.add_argument("--ray-gpus-per-task", type=float, default=0, metavar="N",
                            help="with --executor ray: GPUs each task holds (default 0)")


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor chosen by `add_executor_arguments`' flags."""
    if args.executor == "local":
        if args.ray_address is not None:
            raise ValueError("--ray-address needs --executor ray")
        return LocalExecutor()
    return make_executor("ray", address=args.ray_address, num_gpus_per_task=getattr(args, "ray_gpus_per_task", 0))
