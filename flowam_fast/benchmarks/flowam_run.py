"""One FlowAM run end to end: classes x seeds jobs of `steps` Adam steps each, on the full-width
PointNet (feature transform) of the am_step suite (random weights, realistic BatchNorm
statistics, random flows), at `points` points per cloud, all jobs in one batch, through the
sweep driver (flowam_fast.sweep.run_sweep, one shard) as a real sweep runs. Reports the wall
time, jobs per second and the success rate; the GPU check's report (gpu_report) runs it.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..models import save_checkpoint
from ..sweep import parse_spec, run_sweep
from .am_step import NUM_CLASSES, build_model, random_flows
from .common import is_cuda, sync


def _sweep(model, flows, classes, seeds, steps, points, device, workdir: Path):
    save_checkpoint(model, workdir / "model.pt")
    flows.save(workdir / "flows.h5")
    spec = parse_spec({"classes": ",".join(str(c) for c in range(classes)), "seeds": list(range(seeds)),
                       "methods": ["flowam"], "shard_size": classes * seeds,
                       "engine": {"steps": steps, "num_points": points},
                       "models": [{"name": "pointnet", "checkpoint": "model.pt", "flows": "flows.h5"}]},
                      base_dir=workdir)
    summary = run_sweep(spec, workdir / "sweep", device=device, quiet=True, fresh=True)
    return summary["success"], "flowam_fast.sweep.run_sweep (1 shard)"


def run(classes: int = 40, seeds: int = 8, steps: int = 600, points: int = 1024, device="cpu") -> dict:
    """The run's figures: jobs, wall seconds (inputs built and saved beforehand are not
    counted), jobs/s, success rate, peak GPU memory (MiB) on a GPU, and the path it took."""
    if classes > NUM_CLASSES:
        raise ValueError(f"the model has {NUM_CLASSES} classes, not {classes}")
    model = build_model("pointnet")
    flows = random_flows(model)
    with tempfile.TemporaryDirectory() as tmp:
        if is_cuda(device):
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.perf_counter()
        success, path = _sweep(model, flows, classes, seeds, steps, points, device, Path(tmp))
        sync(device)
        seconds = time.perf_counter() - t0
    jobs = classes * seeds
    out = {"jobs": jobs, "steps": steps, "points": points, "seconds": seconds, "jobs_per_s": jobs / seconds,
           "success": success, "path": path}
    if is_cuda(device):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out

