"""One FlowAM run end to end: classes x seeds jobs of `steps` Adam steps each, on the full-width
PointNet (feature transform) of bench_am_step (random weights, realistic BatchNorm statistics,
random flows), at `points` points per cloud, all jobs in one batch. It goes through the sweep
driver (flowam_fast.sweep.run_sweep, one shard) where the package has one, else through the
engine's FlowAM.run. Reports the wall time, jobs per second and the success rate.

    python benchmarks/flowam_run.py [--device cuda] [--classes 40] [--seeds 8] [--steps 600] [--points 1024]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_am_step import NUM_CLASSES, build_model, random_flows  # noqa: E402
from common import check_device, is_cuda, sync  # noqa: E402

from flowam_fast import FlowAM  # noqa: E402


def _sweep(model, flows, classes, seeds, steps, points, device, workdir: Path):
    from flowam_fast.models import save_checkpoint
    from flowam_fast.sweep import parse_spec, run_sweep

    save_checkpoint(model, workdir / "model.pt")
    flows.save(workdir / "flows.h5")
    spec = parse_spec({"classes": ",".join(str(c) for c in range(classes)), "seeds": list(range(seeds)),
                       "methods": ["flowam"], "shard_size": classes * seeds,
                       "engine": {"steps": steps, "num_points": points},
                       "models": [{"name": "pointnet", "checkpoint": "model.pt", "flows": "flows.h5"}]},
                      base_dir=workdir)
    summary = run_sweep(spec, workdir / "sweep", device=device, quiet=True, fresh=True)
    return summary["success"], "flowam_fast.sweep.run_sweep (1 shard)"


def _engine(model, flows, classes, seeds, steps, points, device):
    engine = FlowAM(model.to(device), flows, steps=steps, num_points=points, device=device, quiet=True)
    result = engine.run(range(classes), range(seeds))
    success = (result.logits.argmax(1) == result.classes).mean()
    return float(success), "FlowAM.run"


def run(classes: int = 40, seeds: int = 8, steps: int = 600, points: int = 1024, device="cpu") -> dict:
    """The run's figures: jobs, wall seconds (inputs built and saved beforehand are not
    counted), jobs/s, success rate, peak GPU memory (MiB) on a GPU, and the path it took."""
    if classes > NUM_CLASSES:
        raise ValueError(f"the model has {NUM_CLASSES} classes, not {classes}")
    model = build_model("pointnet")
    flows = random_flows(model)
    use_sweep = importlib.util.find_spec("flowam_fast.sweep") is not None
    with tempfile.TemporaryDirectory() as tmp:
        if is_cuda(device):
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.perf_counter()
        if use_sweep:
            success, path = _sweep(model, flows, classes, seeds, steps, points, device, Path(tmp))
        else:
            success, path = _engine(model, flows, classes, seeds, steps, points, device)
        sync(device)
        seconds = time.perf_counter() - t0
    jobs = classes * seeds
    out = {"jobs": jobs, "steps": steps, "points": points, "seconds": seconds, "jobs_per_s": jobs / seconds,
           "success": success, "path": path}
    if is_cuda(device):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--classes", type=int, default=40)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--points", type=int, default=1024)
    args = p.parse_args(argv)
    r = run(args.classes, args.seeds, args.steps, args.points, check_device(args.device))
    print(", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
