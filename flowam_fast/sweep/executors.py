"""Where a sweep's shards run: `local`, one after another in this process, or `ray`, one Ray
task per shard on a cluster. Either way a shard's explanations come back to the driver, which
alone writes files (a shard file as soon as its shard is done, the merged stores), so workers
need no shared filesystem and a killed worker leaves nothing half-written.

An executor builds each unit's engine once per process with `factory(payload, method,
options, device)` (default `inputs.make_engine`, FlowAM's) and runs a shard as
`engine.run_jobs(jobs, batch_size=...)`; other batched work (attributions of a test split)
runs on the same executors with its own factory.

Ray is imported only here, and only when the ray executor runs.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from .inputs import make_engine

#: Test hook: "INDEX:MARKER" makes the process running shard INDEX SIGKILL itself once the shard
#: is computed, unless MARKER exists (it is created first, so the retry runs normally). It is
#: read by the driver and travels with each task, so it reaches Ray workers too.
KILL_HOOK = "FLOWAM_SWEEP_TEST_KILL"


def run_shard(engine, jobs, batch_size, index: int, hook: str | None):
    """(explanations, stats) of one shard, where the shard runs. The engine is batch-composition
    invariant, bit for bit, so the explanations do not depend on the shard's other jobs. stats:
    wall and CPU seconds (CPU time leaves out the time other processes held the cores), host, pid."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = engine.run_jobs(jobs, batch_size=batch_size)
    stats = {"seconds": round(time.perf_counter() - wall, 3), "cpu_seconds": round(time.process_time() - cpu, 3),
             "host": socket.gethostname(), "pid": os.getpid()}
    if hook:
        at, marker = hook.split(":", 1)
        if int(at) == index and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    return result, stats


def _task_info(unit, factory) -> dict:
    # What a worker needs of a unit: not its job list, which can be long.
    return {"digest": unit.digest, "method": unit.method, "options": unit.options, "batch_size": unit.batch_size,
            "factory": factory}


class LocalExecutor:
    """Runs the shards one after another in this process, on `device`."""

    def __init__(self, inputs: dict, device: str, factory=make_engine, **_):
        self.inputs, self.device, self.engines, self.factory = inputs, device, {}, factory

    def run(self, tasks, on_done) -> None:
        hook = os.environ.get(KILL_HOOK)
        for unit, shard in tasks:
            if unit.key not in self.engines:
                self.engines[unit.key] = self.factory(self.inputs[unit.model].payload(), unit.method, unit.options,
                                                      self.device)
            on_done(unit, shard, *run_shard(self.engines[unit.key], shard.jobs, unit.batch_size, shard.index, hook))


# Per worker process: payloads fetched from the object store and engines built from them, so
# each travels and is unpickled once per worker, not once per shard.
_WORKER_PAYLOADS: dict = {}
_WORKER_ENGINES: dict = {}


def _ray_shard(info: dict, payload_box: list, jobs, index: int, hook, device: str):
    import ray

    # The payload's ObjectRef comes inside a list so that Ray does not fetch it for every task.
    ref = payload_box[0]
    if ref.hex() not in _WORKER_PAYLOADS:
        _WORKER_PAYLOADS[ref.hex()] = ray.get(ref)
    key = (info["digest"], device)
    if key not in _WORKER_ENGINES:
        _WORKER_ENGINES[key] = info["factory"](_WORKER_PAYLOADS[ref.hex()], info["method"], info["options"], device)
    return run_shard(_WORKER_ENGINES[key], jobs, info["batch_size"], index, hook)


#: With "0", Ray binds a one-machine cluster to loopback (127.0.0.1) rather than the network address.
LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(address=None, quiet: bool = False) -> bool:
    """Connect to the Ray cluster at `address`, or start a one-machine cluster on loopback.

    Ray 2.60 on Linux binds a one-machine cluster to the machine's network address unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set (`LOOPBACK_VAR`); without an address it is set
    here where the environment does not set it, so a local cluster never listens beyond
    loopback.

    Returns:
        True where this call initialized Ray (the caller shuts it down), False where Ray was
        initialized already (it is used as it is).

    Raises:
        RuntimeError: Ray is not installed.
    """
    if address is None:
        os.environ.setdefault(LOOPBACK_VAR, "0")
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None and os.environ[LOOPBACK_VAR] == "0":
            # Ray reads the variable once, when it is imported; where that was before it was set
            # here, the setting it derived is corrected (Ray 2.60's name for it).
            constants.ENABLE_RAY_CLUSTER = False
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install ray (see requirements.txt)") from None
    if ray.is_initialized():
        return False
    import logging

    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING if quiet else logging.INFO)
    return True


class RayExecutor:
    """One Ray task per shard, on the cluster at `address` or on a local one started for the run
    (`init_ray`; an already initialized Ray is used as it is). A task asks for one GPU when the device is
    cuda and `cpus_per_task` CPUs otherwise; a task whose worker dies is retried up to
    `max_retries` times. An exception inside a task is not retried: it is the input's fault,
    and the sweep stops with it."""

    def __init__(self, inputs: dict, device: str, address=None, max_retries: int = 3, cpus_per_task: int = 1,
                 quiet: bool = False, factory=make_engine, **_):
        self.inputs, self.device, self.address, self.factory = inputs, device, address, factory
        self.max_retries, self.cpus_per_task, self.quiet = max_retries, cpus_per_task, quiet

    def run(self, tasks, on_done) -> None:
        started = init_ray(self.address, self.quiet)
        import ray

        try:
            self._run(ray, tasks, on_done)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, tasks, on_done) -> None:
        cuda = self.device.startswith("cuda")
        if cuda and not ray.cluster_resources().get("GPU"):
            raise RuntimeError("device cuda, but the Ray cluster has no GPUs")
        remote = ray.remote(_ray_shard).options(num_gpus=1 if cuda else 0, num_cpus=1 if cuda else self.cpus_per_task,
                                                max_retries=self.max_retries, retry_exceptions=False)
        # Ray gives each task its own GPU through CUDA_VISIBLE_DEVICES, so "cuda" means that one.
        device = "cuda" if cuda else self.device
        payloads = {name: ray.put(self.inputs[name].payload()) for name in {u.model for u, _ in tasks}}
        hook = os.environ.get(KILL_HOOK)
        pending = {remote.remote(_task_info(u, self.factory), [payloads[u.model]], s.jobs, s.index, hook, device): (u, s)
                   for u, s in tasks}
        while pending:
            # A timeout keeps the driver responsive to signals (Ctrl-C) while it waits.
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                unit, shard = pending.pop(ref)
                try:
                    result, stats = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    for other in pending:
                        ray.cancel(other, force=True)
                    cause = getattr(exc, "cause", None) or exc
                    raise RuntimeError(f"shard {shard.index} of {unit.key} failed (after up to {self.max_retries} "
                                       f"retries of a lost worker): {type(cause).__name__}: {cause}") from None
                on_done(unit, shard, result, stats)


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}
