"""The ray executor on a local two-CPU Ray cluster (loopback only): the same stores as the local
executor, bit for bit, and a worker killed with SIGKILL mid-shard is retried."""
import json
import os

import pytest

from flowam_fast.sweep import run_sweep
from flowam_fast.sweep.executors import KILL_HOOK
from tests.sweep.conftest import assert_same_stores, deadline, write_spec

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    with deadline(90):
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_matches_local_bitwise(cluster, tmp_path, inputs_dir, reference):
    # Another shard size than the reference's too: shards change nothing.
    spec = write_spec(tmp_path / "spec.toml", inputs_dir, shard_size=5)
    with deadline(120):
        summary = run_sweep(spec, tmp_path / "out", executor="ray", quiet=True)
    assert summary["ran"] == 8 and summary["reused"] == 0
    assert_same_stores(reference, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["executor"] == "ray"
    # Each worker fetched each model's payload once (at most 2) and built one engine per unit.
    counts = ray.get([_worker_caches.remote() for _ in range(8)])
    assert all(p <= 2 and e <= 4 for p, e in counts) and any(p for p, _ in counts)


@ray.remote(num_cpus=1)
def _worker_caches():
    from flowam_fast.sweep import executors

    return len(executors._WORKER_PAYLOADS), len(executors._WORKER_ENGINES)


def test_killed_worker_is_retried(cluster, tmp_path, inputs_dir, reference, monkeypatch):
    spec, out = write_spec(tmp_path / "spec.toml", inputs_dir), tmp_path / "out"
    # Without retries the lost shard fails the sweep, naming it; the others are kept. The last
    # shard dies, so that however loaded the machine, others have finished before the sweep stops.
    monkeypatch.setenv(KILL_HOOK, f"11:{tmp_path / 'first'}")
    with deadline(120), pytest.raises(RuntimeError, match=r"shard 11 of \S+ failed"):
        run_sweep(spec, out, executor="ray", max_retries=0, quiet=True)
    assert (tmp_path / "first").exists()
    # With retries: the worker running shard 11 (again: it was lost) kills itself once; the
    # retry completes it.
    marker = tmp_path / "second"
    monkeypatch.setenv(KILL_HOOK, f"11:{marker}")
    with deadline(120):
        summary = run_sweep(spec, out, executor="ray", max_retries=2, quiet=True)
    assert marker.exists(), "the worker was not killed"
    with pytest.raises(ProcessLookupError):
        os.kill(int(marker.read_text()), 0)  # that worker is gone; another ran the shard
    assert summary["reused"] >= 1 and summary["reused"] + summary["ran"] == 12
    assert_same_stores(reference, out)
