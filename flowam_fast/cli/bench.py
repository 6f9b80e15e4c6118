"""`flowam-fast bench [--quick] [--only SUITES] [--threads T] [--out FILE]`: the benchmark
table (pipelines/bench.py) printed and, with --out, written."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..pipelines.bench import SUITES, collect, parse_suites, report


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run, minutes instead of tens)")
    p.add_argument("--only", default=None, metavar="SUITES",
                   help=f"comma-separated suites to run, from: {', '.join(SUITES)} (default: all)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--out", default=None, help="also write the Markdown report to this file")
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def run(args) -> int:
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
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(text)
    return 1 if failures else 0
