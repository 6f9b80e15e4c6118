"""The GPU check's report (benchmarks/gpu_check.sh runs it through benchmarks/gpu_report.py):
the benchmark suites on the GPU (each fused op's CUDA and Triton kernels against the dense
torch reference, the AM steps fast against plain), one FlowAM run, and whether the targets are
met, as one Markdown report under the provenance block. The report is rewritten after every
case, so a run cut short still leaves what it measured.
"""
from __future__ import annotations

import traceback
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..provenance import machine_facts, markdown
from . import flowam_run
from .common import check_device, full_float32, table
from .suites import run_suites

#: The command that makes the report, for its provenance block.
COMMAND = "benchmarks/gpu_check.sh OUT_DIR"
# (what, row name up to its backend tag, least speed-up, most memory share of the reference).
TARGETS = [
    ("knn D=3, N=4096: >= 10x the dense reference", "knn fwd D=3 (B=16 N=4096 k=20)", 10.0, None),
    ("knn D=64, N=4096: >= 3x the dense reference", "knn fwd D=64 (B=16 N=4096 k=20)", 3.0, None),
    ("DGCNN AM step (logit), B=32 N=1024: >= 5x plain, <= 1/5 its peak memory",
     "AM step logit, DGCNN (k=20, emb 1024) (B=32 N=1024)", 5.0, 0.2),
    ("DGCNN AM step (FlowAM), B=32 N=1024: >= 5x plain, <= 1/5 its peak memory",
     "AM step flowam, DGCNN (k=20, emb 1024) (B=32 N=1024)", 5.0, 0.2),
    ("DGCNN AM step (logit), B=8 N=4096: >= 5x plain, <= 1/5 its peak memory",
     "AM step logit, DGCNN (k=20, emb 1024) (B=8 N=4096)", 5.0, 0.2),
    ("DGCNN AM step (FlowAM), B=8 N=4096: >= 5x plain, <= 1/5 its peak memory",
     "AM step flowam, DGCNN (k=20, emb 1024) (B=8 N=4096)", 5.0, 0.2),
    ("PointNet AM step (logit), B=128 N=1024: >= 3x plain", "AM step logit, PointNet (feature transform) (B=128 N=1024)",
     3.0, None),
    ("PointNet AM step (FlowAM), B=128 N=1024: >= 3x plain",
     "AM step flowam, PointNet (feature transform) (B=128 N=1024)", 3.0, None),
    *[(f"PointNet++ {kind} AM step ({what}), B=32 N=1024: >= 5x plain, <= 1/4 its peak memory",
       f"AM step {objective}, PointNet++ {kind} (B=32 N=1024)", 5.0, 0.25)
      for kind in ("SSG", "MSG") for objective, what in (("logit", "logit"), ("flowam", "FlowAM"))],
]
METHOD = ("Times are medians after a warm-up, each run timed to the end of its GPU work; speed-up = reference / "
          "fast, both in one process on the same inputs after checking that their outputs agree. Peak memory is "
          "torch's peak allocated GPU memory above the starting level. The references and the plain path run on the "
          "same GPU in full float32, as the fused kernels do (TF32 off for matmuls and cuDNN convolutions).")


def gpu_line() -> str:
    """The GPU's size, the Triton version and whether flowam_fast._C has its CUDA kernels."""
    props = torch.cuda.get_device_properties(0)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        from .. import _C

        kernels = "with CUDA kernels" if getattr(_C, "with_cuda", False) else "WITHOUT CUDA kernels"
    except ImportError as exc:
        kernels = f"not importable ({exc})"
    return (f"GPU: {props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB; "
            f"triton {triton_version}; flowam_fast._C {kernels}")


def targets(rows) -> str:
    """The Markdown table of TARGETS against the measured rows (one line per backend measured)."""
    lines = ["| target | kernels | speed-up | peak memory fast / plain | met |", "|---|---|---|---|---|"]
    for what, name, speedup, memory in TARGETS:
        found = [r for r in rows if r["name"].startswith(name + " [")]
        if not found:
            lines.append(f"| {what} | - | not measured | - | no |")
        for r in found:
            share = r["fast_mib"] / r["ref_mib"] if r["ref_mib"] > 0 else float("inf")
            met = r["speedup"] >= speedup and (memory is None or share <= memory)
            kernels = r["name"][len(name) + 2:-1]
            lines.append(f"| {what} | {kernels} | {r['speedup']:.1f}x | {r['fast_mib']:.0f} / {r['ref_mib']:.0f} MiB "
                         f"({share:.2f}) | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


def write_gpu_report(out, suites, quick: bool = False, flowam: bool = True, tests_log=None,
                     command: str = COMMAND, log=print) -> int:
    """Run the suites (and one FlowAM run) on CUDA device 0 into the Markdown report `out`.

    Args:
        out: the report's path, rewritten atomically after every case.
        suites: suite names (`suites.parse_suites`).
        quick: small sizes (a smoke run); the FlowAM run is then 4 classes x 2 seeds x 20 steps
            instead of 40 x 8 x 600.
        flowam: whether to make the FlowAM run.
        tests_log: the GPU tests' pytest output, whose last line the report quotes; None or a
            missing file for none.
        command: the command that reproduces the report (its provenance block).
        log: called with one-line progress messages.

    Returns:
        0 when every suite and the FlowAM run passed, else 1.

    Raises:
        RuntimeError: torch sees no CUDA device.
    """
    device = check_device("cuda")
    full_float32(device)
    out = Path(out)
    head = ["# GPU check", markdown(command, machine_facts()), gpu_line(), METHOD]
    if tests_log and Path(tests_log).is_file():
        lines = [line for line in Path(tests_log).read_text().splitlines() if line.strip()]
        head.append(f"GPU tests (`pytest -m cuda tests`): {lines[-1].strip('= ') if lines else 'no output'}")
    rows, sections, failures, running = [], [], [], []

    def write():
        body = [*head, "## Targets", targets(rows), *sections]
        if running:
            body.append(f"## {running[0]} (running)\n\n{table(running[1:])}")
        if failures:
            body.append("## Failed\n\n" + "\n".join(f"- {f}" for f in failures))
        with atomic_path(out) as tmp:
            tmp.write_text("\n\n".join(body) + "\n")

    def on_row(suite, row):
        if not running:
            running.append(suite)
        running.append(row)
        rows.append(row)
        log(f"{suite}: {row['name']}: {row['speedup']:.1f}x")
        write()

    def on_suite(suite, part, seconds, failure):
        running.clear()
        if part:
            sections.append(f"## {suite} ({seconds:.0f} s)\n\n{table(part)}")
        if failure:
            failures.append(failure)
        log(f"{suite}: {len(part)} rows in {seconds:.0f} s" + (f"; FAILED {failure}" if failure else ""))
        write()

    write()
    run_suites(suites, quick=quick, device=device, on_row=on_row, on_suite=on_suite, tracebacks=True)
    if flowam:
        classes, seeds, steps = (4, 2, 20) if quick else (40, 8, 600)
        try:
            r = flowam_run.run(classes, seeds, steps, 1024, device)
            sections.append(
                f"## FlowAM run\n\n{classes} classes x {seeds} seeds x {r['steps']} steps, full-width PointNet "
                f"(feature transform), {r['points']} points, one batch, through {r['path']}: "
                f"{r['seconds']:.1f} s wall, {r['jobs_per_s']:.2f} jobs/s, peak {r['peak_gpu_mib']:.0f} MiB, "
                f"success {100 * r['success']:.0f}% (random weights and flows: the rate says little).")
            log(f"FlowAM run: {r}")
        except Exception as exc:  # noqa: BLE001 - recorded in the report; the run fails at the end
            failures.append(f"FlowAM run: {type(exc).__name__}: {exc}".splitlines()[0])
            traceback.print_exc()
        write()
    return 1 if failures else 0
