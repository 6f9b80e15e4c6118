"""Timing and memory helpers shared by the benchmark suites.

Ratios, not absolute times, are the figures: every comparison runs the fast path and the
reference in this one process, on the same inputs, after checking that their outputs agree.

Every suite runs on the CPU (the C++ kernels, peak resident memory) or on a GPU (each of the
"cuda" and "triton" kernels against the same reference on the GPU, peak allocated GPU memory),
from one set of code.
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


class PeakCUDA:
    """Peak GPU memory allocated by torch above the starting level while the block runs (the
    caching allocator's count, so what the block itself needed)."""

    def __init__(self, device):
        self.device = torch.device(device)

    def __enter__(self):
        torch.cuda.synchronize(self.device)
        self.start = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize(self.device)
        self.mib = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
        return False


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def sync(device) -> None:
    """Wait for the device's queued work, so a wall-clock time covers it."""
    if is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


def peak_memory(device):
    return PeakCUDA(device) if is_cuda(device) else PeakRSS()


def fused_backends(device) -> list:
    """The kernel backends to time on `device`: "cpu" on the CPU; "cuda" and "triton" on a
    GPU, those this installation has."""
    from ..ops import backend

    if not is_cuda(device):
        return ["cpu"]
    return [b for b in ("cuda", "triton") if b in backend.available_backends(device)]


def label(name: str, backend: str, device) -> str:
    """A row's name: the CPU tables keep their names; GPU rows say which kernels ran."""
    return name if not is_cuda(device) else f"{name} [{backend}]"


def measure(fn, repeat: int = 5, warmup: int = 1, min_time: float = 0.0, device="cpu"):
    """Median wall time of fn() in seconds over `repeat` runs (after `warmup`), and the peak
    extra memory (MiB) of one run: resident memory on the CPU, allocated GPU memory on a GPU
    (where each run is timed up to the end of its queued kernels)."""
    for _ in range(warmup):
        fn()
    sync(device)
    with peak_memory(device) as mem:
        fn()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < repeat or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.mib


def compare(name: str, fast, ref, check, repeat: int = 5, device="cpu", **extra):
    """Time `fast` and `ref` (callables returning outputs), after `check(fast_out, ref_out)`
    has confirmed that the outputs agree. Returns a row for the Markdown table."""
    with torch.no_grad() if extra.pop("no_grad", False) else _null():
        check(fast(), ref())
        t_fast, m_fast = measure(fast, repeat, device=device)
        t_ref, m_ref = measure(ref, repeat, device=device)
    row = {"name": name, "fast_ms": 1e3 * t_fast, "ref_ms": 1e3 * t_ref, "speedup": t_ref / t_fast,
           "fast_mib": m_fast, "ref_mib": m_ref}
    row.update(extra)
    return row


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


#: The columns every row has; a suite may add more (e.g. "GFLOP/s").
STANDARD = ("name", "fast_ms", "ref_ms", "speedup", "fast_mib", "ref_mib")


def table(rows) -> str:
    """The Markdown table of `rows`, with every extra column any of them has, in order of appearance."""
    extra = []
    for r in rows:
        extra += [k for k in r if k not in STANDARD and k not in extra]
    return markdown(rows, extra_cols=tuple(extra))


def markdown(rows, extra_cols=()) -> str:
    head = ["case", "fast (ms)", "reference (ms)", "speed-up", "peak MiB fast / ref", *extra_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], f"{r['fast_ms']:.2f}", f"{r['ref_ms']:.2f}", f"{r['speedup']:.1f}x",
                 f"{r['fast_mib']:.0f} / {r['ref_mib']:.0f}", *[str(r.get(c, "")) for c in extra_cols]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def full_float32(device) -> None:
    """On a GPU, the references compute in full float32 as the fused kernels do: torch's default
    lets cuDNN run convolutions in TF32 (10-bit mantissas), which would time a less precise
    computation than the one it is compared with."""
    if is_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def check_device(device) -> str:
    """`device` as a string, or a clear error where it is a GPU that torch cannot see."""
    device = str(device)
    if is_cuda(device) and not torch.cuda.is_available():
        raise RuntimeError(f"no CUDA device: torch {torch.__version__} sees no GPU (device {device!r} asked for)")
    return device
