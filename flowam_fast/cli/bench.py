"""`flowam-fast bench [--quick] [--only SUITES] [--threads T] [--device D] [--out FILE]`: the
benchmark report (pipelines/bench.py) printed and, with --out, written as it goes."""
from __future__ import annotations

import os
import shlex
import sys

from ..benchmarks.suites import SUITES
from .options import add_device_argument, device_of


def add_arguments(p) -> None:
    p.description = ("Benchmark the fused kernels and the AM step against the reference path (same process, same "
                     "inputs, outputs checked equal first) and print the Markdown report, headed by the machine and "
                     "the command that reproduces it. Progress goes to stderr, one line per case.")
    p.add_argument("--quick", action="store_true",
                   help="small sizes: every suite and output check, in a few minutes at most (a smoke run)")
    p.add_argument("--only", default=None, metavar="SUITES",
                   help=f"comma-separated suites to run, from: {', '.join(SUITES)} (default: all)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="also write the report to FILE, rewritten after each case (a stopped run keeps what it "
                        "measured); benchmarks/results/benchmarks.md is the stored one")
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    add_device_argument(p)


def command_of(args) -> str:
    """The `flowam-fast bench` command line that reproduces a run with these arguments."""
    argv = ["flowam-fast", "bench"]
    argv += ["--quick"] if args.quick else []
    argv += ["--only", args.only] if args.only else []
    argv += ["--threads", str(args.threads)] if args.threads is not None else []
    argv += ["--device", args.device] if args.device != "cpu" else []
    argv += ["--out", args.out] if args.out else []
    return shlex.join(argv)


def run(args) -> int:
    import torch

    from ..benchmarks.common import full_float32
    from ..benchmarks.suites import parse_suites
    from ..pipelines.bench import run_bench
    from ..provenance import invoked_command

    suites = parse_suites(args.only)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = device_of(args)
    full_float32(device)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    text, failures = run_bench(suites, quick=args.quick, device=str(device), out=args.out,
                               command=invoked_command(fallback=command_of(args)), log=log,
                               tracebacks=bool(os.environ.get("FLOWAM_DEBUG")))
    print(text, end="")
    return 1 if failures else 0
