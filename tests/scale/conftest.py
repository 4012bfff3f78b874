"""A local Ray cluster (2 CPUs, no dashboard) per test module, shut down after it."""

import pytest


@pytest.fixture(scope="module")
def ray_executor():
    # a guard only: CI installs the ray extra and runs these
    ray = pytest.importorskip("ray", reason="needs Ray: pip install 'detsearch[ray]'")
    from detsearch.executor import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield RayExecutor()
    finally:
        ray.shutdown()
