"""The GPU half of benchmarks/gpu_check.sh: the benchmark suites on the GPU (each fused op's CUDA
and Triton kernels against the dense torch reference, the AM steps fast against plain), one
FlowAM run, and whether the targets are met, as one Markdown report. The report is rewritten
after every suite, so a run cut short still leaves what it measured.

    python benchmarks/gpu_report.py --out gpu.md [--tests-log pytest.log] [--only knn,am_step] [--quick]
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_device, full_float32, markdown  # noqa: E402

SUITES = ("knn", "edge_max", "linear_max", "flow", "am_step")
STANDARD = ("name", "fast_ms", "ref_ms", "speedup", "fast_mib", "ref_mib")
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
]


def machine() -> str:
    props = torch.cuda.get_device_properties(0)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        from flowam_fast import _C

        kernels = "with CUDA kernels" if getattr(_C, "with_cuda", False) else "WITHOUT CUDA kernels"
    except ImportError as exc:
        kernels = f"not importable ({exc})"
    return (f"GPU: {props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB; "
            f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton_version}, Python "
            f"{platform.python_version()}; flowam_fast._C {kernels}")


def table(rows) -> str:
    extra = []
    for r in rows:
        extra += [k for k in r if k not in STANDARD and k not in extra]
    return markdown(rows, extra_cols=tuple(extra))


def targets(rows) -> str:
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


def write(path: Path, parts) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n\n".join(parts) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the Markdown report to write")
    p.add_argument("--tests-log", default=None, help="the GPU tests' pytest output, summarized in the report")
    p.add_argument("--only", default=",".join(SUITES), help=f"suites, from {', '.join(SUITES)}")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--no-flowam-run", action="store_true", help="skip the 40 x 8 x 600-step FlowAM run")
    args = p.parse_args(argv)
    try:
        device = check_device("cuda")
    except RuntimeError as exc:
        print(f"gpu_report: {exc}", file=sys.stderr)
        return 2
    full_float32(device)
    out = Path(args.out)
    head = ["# GPU check", machine(),
            "Times are medians after a warm-up, each run timed to the end of its GPU work; speed-up = reference / "
            "fast, both in one process on the same inputs after checking that their outputs agree. Peak memory is "
            "torch's peak allocated GPU memory above the starting level. The references and the plain path run on the "
            "same GPU in full float32, as the fused kernels do (TF32 off for matmuls and cuDNN convolutions)."]
    if args.tests_log and Path(args.tests_log).is_file():
        lines = [line for line in Path(args.tests_log).read_text().splitlines() if line.strip()]
        head.append(f"GPU tests (`pytest -m cuda tests`): {lines[-1].strip('= ') if lines else 'no output'}")
    rows, failures, sections = [], [], []

    def report(extra=()):
        body = [*head, "## Targets", targets(rows), *sections, *extra]
        if failures:
            body.append("## Failed\n\n" + "\n".join(f"- {f}" for f in failures))
        write(out, body)

    for name in [s.strip() for s in args.only.split(",") if s.strip()]:
        t0 = time.perf_counter()
        try:
            part = importlib.import_module(f"bench_{name}").rows(quick=args.quick, device=device)
        except Exception as exc:  # noqa: BLE001 - recorded; the other suites still run
            failures.append(f"bench_{name}: {type(exc).__name__}: {exc}".splitlines()[0])
            traceback.print_exc()
            report()
            continue
        rows.extend(part)
        sections.append(f"## {name} ({time.perf_counter() - t0:.0f} s)\n\n{table(part)}")
        print(f"bench_{name}: {len(part)} rows in {time.perf_counter() - t0:.0f} s", flush=True)
        report()

    if not args.no_flowam_run:
        import flowam_run

        classes, seeds, steps = (4, 2, 20) if args.quick else (40, 8, 600)
        try:
            r = flowam_run.run(classes, seeds, steps, 1024, device)
            sections.append(
                f"## FlowAM run\n\n{classes} classes x {seeds} seeds x {r['steps']} steps, full-width PointNet "
                f"(feature transform), {r['points']} points, one batch, through {r['path']}: "
                f"{r['seconds']:.1f} s wall, {r['jobs_per_s']:.2f} jobs/s, peak {r['peak_gpu_mib']:.0f} MiB, "
                f"success {100 * r['success']:.0f}% (random weights and flows: the rate says little).")
            print(f"FlowAM run: {r}", flush=True)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"FlowAM run: {type(exc).__name__}: {exc}".splitlines()[0])
            traceback.print_exc()
        report()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
