"""`flowam-fast bench`: every benchmark of benchmarks/ (the fused ops and the end-to-end AM
steps) in one Markdown table, with the machine it ran on. `benchmarks/run_all.py` is the same
command as a script.

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
    path = Path(__file__).resolve().parent.parent / "benchmarks"
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


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run, minutes instead of tens)")
    p.add_argument("--only", default=None, metavar="SUITES",
                   help=f"comma-separated suites to run, from: {', '.join(SUITES)} (default: all)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--out", default=None, help="also write the Markdown report to this file")
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def run(args) -> int:
    import torch

    suites = parse_suites(args.only)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    rows, failures = collect(suites, quick=args.quick, log=log)
    text = report(rows, failures)
    print(text, end="")
    if args.out:
        from .atomic import atomic_path

        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(text)
    return 1 if failures else 0


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="run_all.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
