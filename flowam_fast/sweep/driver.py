"""run_sweep: check the spec and its inputs, plan the shards, run them on an executor, and keep
the shard files, the merged stores and sweep.json up to date as shards finish."""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from .executors import EXECUTORS
from .inputs import load_inputs, make_units
from .record import NAME, changes, read_record, write_record
from .shards import finished_shards, merge, plan
from .spec import SpecError, SweepSpec, load_spec

#: Seconds between rewrites of a unit's merged store and of sweep.json while shards finish; the
#: shard files are written at once, so a store that lags loses nothing.
MERGE_INTERVAL = 5.0


def _device(device) -> str:
    device = str(device or "cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use cpu or cuda")
    return device


def _clear(out: Path, old: dict | None, units) -> None:
    """--fresh: remove what an earlier sweep wrote here (nothing else in the directory)."""
    shutil.rmtree(out / "shards", ignore_errors=True)
    stores = {f"{u.key}.h5" for u in units} | {u.get("store", "") for u in (old or {}).get("units", {}).values()}
    for rel in filter(None, stores):
        (out / rel).unlink(missing_ok=True)
    (out / NAME).unlink(missing_ok=True)


def remove_temporaries(out: Path) -> None:
    """Remove the temporaries of `atomic_path` (".<name>.<random>.tmp") below `out`, which a
    driver killed while writing leaves; for a directory this run alone writes, so any such file
    is a dead one."""
    for tmp in list(out.glob("**/.*.tmp")):
        tmp.unlink(missing_ok=True)


def _plan(out: Path, units, shard_size: int):
    """The finished shards of every unit, then new shards over the jobs they do not hold.
    Returns (parts: unit key -> {shard name: explanations}, shards in sweep order, states:
    shard key -> "reused" | "pending", todo: [(unit, shard)] to run)."""
    parts, shards, states, todo = {}, [], {}, []
    for u in units:
        finished = finished_shards(out, u)
        parts[u.key] = {s.name: e for s, e in finished}
        new = plan(u, {j for s, _ in finished for j in s.jobs}, shard_size)
        for s in sorted([s for s, _ in finished] + new, key=lambda s: s.jobs[0]):
            s = replace(s, index=len(shards))
            shards.append(s)
            states[s.key] = "reused" if s.name in parts[u.key] else "pending"
            if states[s.key] == "pending":
                todo.append((u, s))
    return parts, shards, states, todo


class _Progress:
    """The bar over jobs: shards done of all, and the running success rate."""

    def __init__(self, total: int, done_jobs: int, successes: int, done_shards: int, shards: int, quiet: bool):
        self.ok, self.jobs, self.done, self.shards = successes, done_jobs, done_shards, shards
        self.bar = tqdm(total=total, initial=done_jobs, desc="sweep", unit="job", disable=quiet)
        self._postfix()

    def _postfix(self) -> None:
        rate = self.ok / self.jobs if self.jobs else 0.0
        self.bar.set_postfix(shards=f"{self.done}/{self.shards}", success=f"{rate:.1%}")

    def add(self, result) -> None:
        self.ok += int(result.success.sum())
        self.jobs += len(result)
        self.done += 1
        self.bar.update(len(result))
        self._postfix()


def run_sweep(spec, out_dir, executor: str = "local", address=None, device=None, fresh: bool = False,
              quiet: bool = False, max_retries: int = 3, cpus_per_task: int = 1) -> dict:
    """Run a sweep into out_dir; see docs/design.md, "Sweeps".

    Writes `out_dir/<model>/<method>.h5` (the explanations store of each (model, method), one
    job per (class, seed), in (class, seed) order), `out_dir/shards/` and `out_dir/sweep.json`.
    A rerun skips the finished shards; a spec changed since an earlier run here is refused
    unless `fresh` is True.

    Args:
        spec: A TOML spec path or a `SweepSpec`.
        out_dir: The output directory.
        executor: "local" (this process) or "ray".
        address: The Ray cluster's address (executor "ray" only); None starts a local one.
        device: "cpu" (None) or a CUDA device.
        fresh: Remove what an earlier sweep wrote in out_dir and start over.
        quiet: No progress bar.
        max_retries: Times a Ray task whose worker dies is retried.
        cpus_per_task: CPUs of each Ray task on CPU.

    Returns:
        A summary: jobs, shards, shards reused and run, success rate, the CPU seconds of the
        shards run, store paths, seconds.

    Raises:
        ValueError: An unknown executor or device, or an address without executor "ray".
        SpecError: An invalid spec, or one changed since an earlier run in out_dir (without
            `fresh`).
        RuntimeError: A CUDA device without a GPU, a failed shard, or jobs missing at the end.
    """
    t0 = time.perf_counter()
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {sorted(EXECUTORS)}")
    if executor == "local" and address is not None:
        raise ValueError("address is for the ray executor")
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    device = _device(device)
    if executor == "local" and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("device cuda, but torch sees no GPU here")
    out = Path(out_dir)
    inputs = load_inputs(spec)
    units = make_units(spec, inputs)
    old = read_record(out)
    if old is not None and not fresh:
        problems = changes(old, units)
        if problems:
            raise SpecError(f"the sweep in {out} was run with other settings; what changed:\n  - "
                            + "\n  - ".join(problems)
                            + "\nrerun with --fresh (fresh=True) to start over, or choose another output directory")
    if fresh:
        _clear(out, old, units)
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)

    parts, shards, states, todo = _plan(out, units, spec.shard_size)
    stats = {}
    write_record(out, spec, units, shards, states, stats, device, executor)
    progress = _Progress(total=sum(len(u.jobs) for u in units),
                         done_jobs=sum(len(e) for p in parts.values() for e in p.values()),
                         successes=sum(int(e.success.sum()) for p in parts.values() for e in p.values()),
                         done_shards=len(shards) - len(todo), shards=len(shards), quiet=quiet)
    last_write = {"record": time.monotonic(), **{u.key: 0.0 for u in units}}

    def save_store(u) -> None:
        if parts[u.key]:
            merge(parts[u.key].values()).save(out / f"{u.key}.h5")
        last_write[u.key] = time.monotonic()

    def on_done(u, shard, result, shard_stats) -> None:
        result.save(shard.path(out))  # atomic: from here on the shard counts as finished
        parts[u.key][shard.name] = result
        states[shard.key] = "done"
        stats[shard.key] = shard_stats
        now = time.monotonic()
        if sum(len(e) for e in parts[u.key].values()) == len(u.jobs) or now - last_write[u.key] >= MERGE_INTERVAL:
            save_store(u)
        if now - last_write["record"] >= MERGE_INTERVAL:
            write_record(out, spec, units, shards, states, stats, device, executor)
            last_write["record"] = now
        progress.add(result)

    try:
        if todo:
            runner = EXECUTORS[executor](inputs, device, address=address, max_retries=max_retries,
                                         cpus_per_task=cpus_per_task, quiet=quiet)
            runner.run(todo, on_done)
    finally:
        progress.bar.close()
        # Whatever finished is kept, merged and recorded, also when a shard failed.
        for u in units:
            save_store(u)
        write_record(out, spec, units, shards, states, stats, device, executor)
    missing = [u.key for u in units if sum(len(e) for e in parts[u.key].values()) != len(u.jobs)]
    if missing:
        raise RuntimeError(f"the sweep ended with jobs missing from {missing}")
    return {"jobs": progress.bar.total, "shards": len(shards), "reused": len(shards) - len(todo), "ran": len(todo),
            "success": progress.ok / progress.bar.total if progress.bar.total else 0.0,
            "cpu_seconds": sum(st["cpu_seconds"] for st in stats.values()),
            "stores": {u.key: str(out / f"{u.key}.h5") for u in units}, "seconds": time.perf_counter() - t0}
