"""A one-machine Ray cluster started by the package (no address) listens on loopback only, and
runs the study's tasks (`sweep.tasks.run_tasks`) as the local executor does."""
import os

import pytest

from flowam_fast.sweep.executors import init_ray
from flowam_fast.sweep.tasks import run_tasks
from tests.sweep.conftest import deadline

ray = pytest.importorskip("ray")


def _scaled(payload, x):
    return payload * x


def test_local_cluster_is_on_loopback_and_runs_tasks(monkeypatch):
    if ray.is_initialized():
        ray.shutdown()
    # Unset, as on a machine without .ci/run: init_ray sets it for the local cluster.
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    try:
        with deadline(120):
            assert init_ray(None, quiet=True) is True
            assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
            assert ray.util.get_node_ip_address() == "127.0.0.1"
            assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
            assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
            assert init_ray(None, quiet=True) is False  # already initialized: used as it is
            got = {}
            run_tasks(_scaled, 3, [(1,), (2,), (5,)], got.__setitem__, executor="ray")
            assert got == {0: 3, 1: 6, 2: 15}
    finally:
        ray.shutdown()
    local = {}
    run_tasks(_scaled, 3, [(1,), (2,)], local.__setitem__, executor="local", workers=1)
    assert local == {0: 3, 1: 6}
    with pytest.raises(ValueError, match="unknown executor"):
        run_tasks(_scaled, 3, [(1,)], local.__setitem__, executor="slurm")
    with pytest.raises(ValueError, match="address is for the ray executor"):
        run_tasks(_scaled, 3, [(1,)], local.__setitem__, address="10.0.0.1:6379")
