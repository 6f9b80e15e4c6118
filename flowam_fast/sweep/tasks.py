"""Independent tasks on the sweep's executors: one function applied to a list of argument
tuples, in this process, in local worker processes, or as Ray tasks (on a cluster, or on a
local one on loopback, `executors.init_ray`). Results come back to the driver, which alone
writes files, as in a sweep. The faithfulness study (pipelines/study.py) runs its stages so.
"""
from __future__ import annotations

from .executors import init_ray

TASK_EXECUTORS = ("local", "ray")

_PAYLOAD = None


def _init_local(payload) -> None:
    import torch

    global _PAYLOAD
    torch.set_num_threads(1)  # one thread per process: the processes share the cores
    _PAYLOAD = payload


def _call_local(fn, args):
    return fn(_PAYLOAD, *args)


def _call_ray(fn, payload_box, args):
    import ray

    # The payload's ObjectRef comes inside a list so that Ray does not fetch it before the call.
    return fn(ray.get(payload_box[0]), *args)


def run_tasks(fn, payload, tasks, on_done, executor: str = "local", address=None, workers: int = 1,
              max_retries: int = 3, quiet: bool = True) -> None:
    """`fn(payload, *args)` for each `args` of `tasks`; `on_done(index, result)` in this process
    as each task finishes (in any order).

    Args:
        fn: A module-level function (it travels to worker processes by name).
        payload: What every task shares (models, data), sent once to each worker process or
            put once in Ray's object store.
        tasks: Argument tuples.
        on_done: Called with the task's index and its result.
        executor: "local" (this process with workers=1, else that many processes) or "ray".
        address: The Ray cluster's address; None starts a local one on loopback.
        workers: Local processes (executor "local"), one thread each.
        max_retries: Times a Ray task whose worker dies is retried.
        quiet: Ray's log level (warnings only).

    Raises:
        ValueError: An unknown executor, workers < 1, or an address without executor "ray".
        RuntimeError: A Ray task failed (after its retries).
    """
    if executor not in TASK_EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {TASK_EXECUTORS}")
    if executor == "local" and address is not None:
        raise ValueError("address is for the ray executor")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    tasks = [tuple(a) for a in tasks]
    if not tasks:
        return
    if executor == "ray":
        _run_ray(fn, payload, tasks, on_done, address, max_retries, quiet)
    elif workers == 1 or len(tasks) == 1:
        for i, args in enumerate(tasks):
            on_done(i, fn(payload, *args))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # `spawn`: a fork would inherit the parent's OpenMP pool.
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_init_local, initargs=(payload,),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_call_local, fn, args): i for i, args in enumerate(tasks)}
            for f in as_completed(futures):
                on_done(futures[f], f.result())


def _run_ray(fn, payload, tasks, on_done, address, max_retries: int, quiet: bool) -> None:
    started = init_ray(address, quiet)
    import ray

    try:
        remote = ray.remote(_call_ray).options(num_cpus=1, max_retries=max_retries, retry_exceptions=False)
        ref = ray.put(payload)
        pending = {remote.remote(fn, [ref], args): i for i, args in enumerate(tasks)}
        while pending:
            # A timeout keeps the driver responsive to signals (Ctrl-C) while it waits.
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for r in ready:
                i = pending.pop(r)
                try:
                    result = ray.get(r)
                except ray.exceptions.RayError as exc:
                    for other in pending:
                        ray.cancel(other, force=True)
                    cause = getattr(exc, "cause", None) or exc
                    raise RuntimeError(f"task {i} failed: {type(cause).__name__}: {cause}") from None
                on_done(i, result)
    finally:
        if started:
            ray.shutdown()
