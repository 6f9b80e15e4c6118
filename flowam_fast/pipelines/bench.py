"""Every benchmark of benchmarks/ (the fused ops and the end-to-end AM steps) in one Markdown
table, with the machine it ran on: what `flowam-fast bench` and `benchmarks/run_all.py` run.

The benchmark scripts live in the source checkout, beside the package (they are not
installed with it), so this command needs a checkout: an editable install (`pip install -e .`)
or running from the repository root.
"""
from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from pathlib import Path

#: Suites in the order of the table; each is benchmarks/bench_<name>.py exposing rows(quick).
SUITES = ("knn", "edge_max", "linear_max", "flow", "am_step")
_STANDARD = ("name", "fast_ms", "ref_ms", "speedup", "fast_mib", "ref_mib")


def benchmarks_dir() -> Path:
    path = Path(__file__).resolve().parents[2] / "benchmarks"
    if not (path / "common.py").is_file():
        raise FileNotFoundError(f"no benchmarks/ directory at {path}: the benchmarks ship with the source "
                                "checkout, not the installed package; install it with `pip install -e .` "
                                "from a clone of the repository")
    return path


def _import(name: str):
    path = str(benchmarks_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(name)


def parse_suites(spec: str | None) -> list:
    """Suite names from a comma-separated list (None or "all": every suite)."""
    if spec is None or spec.strip() == "all":
        return list(SUITES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise ValueError(f"unknown benchmark suite(s) {unknown or [spec]}; choose from {', '.join(SUITES)} or all")
    return names


def collect(suites, quick: bool = False, log=None):
    """(rows, failures) of the named suites, in order. A suite that raises (an output check
    that fails, memory running out) is recorded in failures as "bench_<name>: error" and the
    others still run. `log(message)` hears of each suite as it finishes, with its table, so a
    long run shows its results before the end."""
    rows, failures = [], []
    for name in suites:
        t0 = time.perf_counter()
        try:
            part = _import(f"bench_{name}").rows(quick=quick)
        except Exception as exc:  # noqa: BLE001 - reported, and the run fails at the end
            failures.append(f"bench_{name}: {type(exc).__name__}: {exc}".splitlines()[0])
            if log:
                log(f"FAILED {failures[-1]}")
            continue
        if log:
            log(f"bench_{name}: {len(part)} rows in {time.perf_counter() - t0:.0f} s\n{table(part)}")
        rows.extend(part)
    return rows, failures


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"Machine: {cpu_model()}, {cores} cores available, {torch.get_num_threads()} torch threads; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def table(rows) -> str:
    """The Markdown table of `rows` with every extra column any row has (e.g. GFLOP/s)."""
    markdown = _import("common").markdown
    extra = []
    for r in rows:
        extra += [k for k in r if k not in _STANDARD and k not in extra]
    return markdown(rows, extra_cols=tuple(extra))


def report(rows, failures=()) -> str:
    text = (f"{machine_line()}\n\nTimes are medians; speed-up = reference / fast, both in one process on the "
            f"same inputs after checking that the outputs agree.\n\n{table(rows)}\n")
    if failures:
        text += "\nFailed:\n" + "".join(f"- {f}\n" for f in failures)
    return text
