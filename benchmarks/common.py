"""Timing and memory helpers shared by the benchmark scripts.

Ratios, not absolute times, are the figures: every comparison runs the fast path and the
reference in this one process, on the same inputs, after checking that their outputs agree.
"""
from __future__ import annotations

import os
import statistics
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakRSS:
    """Peak resident memory above the starting level while the block runs, sampled every
    0.5 ms. Tensors above glibc's mmap threshold are returned to the OS when freed, so this
    tracks the large intermediates that separate the fused and the reference paths."""

    def __enter__(self):
        self.start = _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.mib = (self.peak - self.start) / 2**20
        return False


def measure(fn, repeat: int = 5, warmup: int = 1, min_time: float = 0.0):
    """Median wall time of fn() in seconds over `repeat` runs (after `warmup`), and the peak
    extra resident memory (MiB) of one run."""
    for _ in range(warmup):
        fn()
    with PeakRSS() as mem:
        fn()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < repeat or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.mib


def compare(name: str, fast, ref, check, repeat: int = 5, **extra):
    """Time `fast` and `ref` (callables returning outputs), after `check(fast_out, ref_out)`
    has confirmed that the outputs agree. Returns a row for the Markdown table."""
    with torch.no_grad() if extra.pop("no_grad", False) else _null():
        check(fast(), ref())
        t_fast, m_fast = measure(fast, repeat)
        t_ref, m_ref = measure(ref, repeat)
    row = {"name": name, "fast_ms": 1e3 * t_fast, "ref_ms": 1e3 * t_ref, "speedup": t_ref / t_fast,
           "fast_mib": m_fast, "ref_mib": m_ref}
    row.update(extra)
    return row


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def markdown(rows, extra_cols=()) -> str:
    head = ["case", "fast (ms)", "reference (ms)", "speed-up", "peak MiB fast / ref", *extra_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], f"{r['fast_ms']:.2f}", f"{r['ref_ms']:.2f}", f"{r['speedup']:.1f}x",
                 f"{r['fast_mib']:.0f} / {r['ref_mib']:.0f}", *[str(r.get(c, "")) for c in extra_cols]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def script_main(rows, doc: str, extra_cols=()) -> None:
    """Command line of a benchmark script: --quick for a smoke run, --threads N."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(markdown(rows(args.quick), extra_cols=extra_cols))
