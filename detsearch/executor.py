"""Where independent tasks run: in this process (the default) or on a Ray cluster.

An `Executor` maps a function over items and returns the results in input order. The
selector's candidate trials, the sweep's NMS settings and the cache writer's shards are such
items; each caller merges the results in input order, so a result never depends on the
executor. See docs/scale.md.

- `LocalExecutor`: one item after the other, in this process.
- `RayExecutor`: one Ray task per item (one CPU, and ``num_gpus_per_task`` GPUs, per task), on
  a local Ray instance or a cluster (``address``). Ray is an optional dependency
  (``pip install 'detsearch[ray]'``), imported only when a `RayExecutor` is used.

``fn`` and the items travel to Ray workers by pickle (cloudpickle), so ``fn`` should be a
module-level function of an importable module. ``shared`` is put into Ray's object store once
and handed to every task (``fn(shared, item)``), instead of being pickled once per task.

This module imports the standard library only.
"""

from __future__ import annotations

import abc
import argparse
import logging
from typing import Any, Callable, Iterable

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "add_executor_arguments",
    "as_executor",
    "executor_from_args",
    "make_executor",
]

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
"""Names accepted by `make_executor` and the ``--executor`` flag."""

RAY_INSTALL = "pip install 'detsearch[ray]'"

_NOTHING = object()


class Executor(abc.ABC):
    """Runs ``fn`` over items; results come back in input order."""

    name: str = ""

    @abc.abstractmethod
    def map(self, fn: Callable, items: Iterable, *, shared: Any = _NOTHING,
            on_result: Callable[[int, Any], None] | None = None) -> list:
        """``[fn(item) for item in items]``, or ``[fn(shared, item) ...]`` when ``shared`` is given.

        Args:
          fn: the task; module-level (importable) for executors that leave the process.
          items: task arguments.
          shared: one object every task receives as its first argument (sent once).
          on_result: ``on_result(index, result)`` in the calling process as each task finishes
            (in completion order, which may differ from input order).

        Returns:
          The results, in the order of ``items``.

        Raises:
          The first failing task's exception (remaining tasks are cancelled where possible).
        """

    def close(self) -> None:
        """Releases what the executor started (nothing for `LocalExecutor`)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class LocalExecutor(Executor):
    """Runs every task in this process, one after the other, in input order."""

    name = "local"

    def map(self, fn, items, *, shared=_NOTHING, on_result=None) -> list:
        results = []
        for index, item in enumerate(items):
            result = fn(item) if shared is _NOTHING else fn(shared, item)
            if on_result is not None:
                on_result(index, result)
            results.append(result)
        return results

    def __repr__(self) -> str:
        return "LocalExecutor()"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(f"the ray executor needs Ray: {RAY_INSTALL}") from None
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
      ImportError: Ray is not installed (the message says how to install it).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, num_cpus_per_task: float = 1,
                 num_gpus_per_task: float = 0, runtime_env: dict | None = None):
        for label, value in (("num_cpus_per_task", num_cpus_per_task), ("num_gpus_per_task", num_gpus_per_task)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{label} must be a number >= 0, got {value!r}")
        if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
            raise ValueError(f"num_cpus must be an integer >= 1, got {num_cpus!r}")
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

    def map(self, fn, items, *, shared=_NOTHING, on_result=None) -> list:
        items = list(items)
        if not items:
            return []
        ray = self._ray()
        has_shared = shared is not _NOTHING
        shared_ref = ray.put(shared) if has_shared else None
        refs = [self._remote.remote(fn, has_shared, shared_ref, item) for item in items]
        index_of = {ref: index for index, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    result = ray.get(ref)
                    results[index_of[ref]] = result
                    if on_result is not None:
                        on_result(index_of[ref], result)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return results

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
