"""The executor contract, run over every executor: input order, shared argument, callbacks,
errors; and the one-line error when Ray is missing."""

import sys

import pytest

from detsearch.executor import (
    LocalExecutor,
    ProcessExecutor,
    RayExecutor,
    as_executor,
    executor_from_args,
    make_executor,
    release_worker_cache,
    worker_cache,
)


def square(x):
    return x * x


def scaled(shared, x):
    return shared["factor"] * x


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


@pytest.fixture(params=["local", "process", "ray"])
def executor(request):
    if request.param == "local":
        return LocalExecutor()
    if request.param == "process":
        return ProcessExecutor(2)
    return request.getfixturevalue("ray_executor")


def test_results_in_input_order(executor):
    seen = []
    results = executor.map(square, range(7), on_result=lambda index, result: seen.append((index, result)))
    assert results == [x * x for x in range(7)]
    assert sorted(seen) == [(i, i * i) for i in range(7)]
    assert executor.map(square, []) == []


def test_shared_argument_is_passed_first(executor):
    assert executor.map(scaled, [1, 2, 3], shared={"factor": 10}) == [10, 20, 30]
    assert executor.map(scaled, [4], shared={"factor": 0}) == [0]


def test_a_failing_task_raises_its_error(executor):
    with pytest.raises(ValueError, match="bad item 3"):
        executor.map(fail_on_three, [1, 2, 3, 4])


def test_names_and_arguments():
    assert isinstance(as_executor(None), LocalExecutor)
    assert isinstance(as_executor("local"), LocalExecutor)
    executor = LocalExecutor()
    assert as_executor(executor) is executor
    with pytest.raises(ValueError, match="unknown executor 'spark'"):
        make_executor("spark")
    with pytest.raises(ValueError, match="address"):
        make_executor("local", address="auto")
    with pytest.raises(TypeError, match="executor must be"):
        as_executor(3)


def test_command_line_flags():
    import argparse

    from detsearch.executor import add_executor_arguments

    parser = argparse.ArgumentParser()
    add_executor_arguments(parser, gpus=True)
    assert isinstance(executor_from_args(parser.parse_args([])), LocalExecutor)
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        executor_from_args(parser.parse_args(["--ray-address", "auto"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--executor", "spark"])


def cached_pid_and_builds(token, x):
    import os

    builds = []
    pid = worker_cache("tests.scale.test_executor", token, lambda: (builds.append(1), os.getpid())[1])
    return pid, len(builds)


def test_worker_cache_builds_once_per_process_and_key():
    built = []
    assert worker_cache("tests.slot", "a", lambda: built.append("a") or "A") == "A"
    assert worker_cache("tests.slot", "a", lambda: built.append("again") or "A2") == "A"
    assert worker_cache("tests.slot", "b", lambda: built.append("b") or "B") == "B"
    assert worker_cache("tests.other", "a", lambda: built.append("other") or "O") == "O"
    assert worker_cache("tests.slot", "b", lambda: "B2") == "B"
    release_worker_cache("tests.slot")
    release_worker_cache("tests.slot")  # releasing an empty slot is fine
    assert worker_cache("tests.slot", "b", lambda: "B3") == "B3"
    assert built == ["a", "b", "other"]
    release_worker_cache("tests.slot")
    release_worker_cache("tests.other")


def test_forked_workers_inherit_a_seeded_worker_cache():
    import os

    worker_cache("tests.scale.test_executor", "job", lambda: os.getpid())
    try:
        results = ProcessExecutor(2).map(cached_pid_and_builds, range(6), shared="job")
    finally:
        release_worker_cache("tests.scale.test_executor")
    # Every worker found this process's value (its pid) and built nothing.
    assert results == [(os.getpid(), 0)] * 6


def test_process_executor_checks_its_argument():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="processes must be an integer >= 1"):
            ProcessExecutor(bad)
    assert ProcessExecutor(1).map(square, [2, 3]) == [4, 9]
    assert repr(ProcessExecutor(3)) == "ProcessExecutor(processes=3)"


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'detsearch\[ray\]'"):
        RayExecutor()
    with pytest.raises(ImportError, match=r"detsearch\[ray\]"):
        make_executor("ray")
