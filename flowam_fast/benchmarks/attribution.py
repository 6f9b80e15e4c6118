"""Attributions of a batch of clouds: each method batched (one call on the whole batch: one
backward pass, integrated gradients' steps and occlusion's patches in the same batch) against
the obvious per-cloud loop (the same call on one cloud at a time), in one process on the same
inputs and the same fused fast path, after checking that both give the same scores. The
figure is clouds per second.

The models are the AM-step suite's (full width, random weights, realistic BatchNorm
statistics); quick mode takes small batches of small clouds and fewer steps and patches.

    flowam-fast bench --only attribution [--quick]
"""
from __future__ import annotations

import torch

from ..attribution.methods import attribute
from .am_step import MODELS, NUM_CLASSES, _clouds, build_model
from .common import compare, label

METHODS = ("saliency", "spherical-saliency", "integrated-gradients", "grad-cam", "critical-points", "occlusion")
CASES = [("pointnet", 32, 1024), ("dgcnn", 8, 1024)]
QUICK_CASES = [("pointnet", 8, 256), ("dgcnn", 4, 256)]
OPTIONS = {"integrated-gradients": {"steps": 32}, "occlusion": {"patches": 32}}
QUICK_OPTIONS = {"integrated-gradients": {"steps": 8}, "occlusion": {"patches": 8}}
#: Critical points count argmaxes: a near-tie between points may go either way when the batch
#: changes the float32 rounding, so a few counts may differ.
CRITICAL_MISMATCH = 0.01


def _check(method: str):
    def check(batched, loop):
        if method == "critical-points":
            share = float((batched != loop).float().mean())
            if share > CRITICAL_MISMATCH:
                raise AssertionError(f"critical-points: {share:.1%} of the counts differ between batched and loop")
            return
        scale = float(loop.abs().max()) or 1.0
        torch.testing.assert_close(batched, loop, rtol=1e-3, atol=1e-4 * scale)

    return check


def rows(quick: bool = False, device="cpu"):
    """Yields one row per (model, method) as it is measured (`common.compare`)."""
    for arch, B, N in QUICK_CASES if quick else CASES:
        model = build_model(arch).to(device)
        x = _clouds(B, N, 7).to(device)
        targets = torch.randint(0, NUM_CLASSES, (B,), generator=torch.Generator().manual_seed(8)).to(device)
        for method in METHODS:
            opts = (QUICK_OPTIONS if quick else OPTIONS).get(method, {})

            def batched(method=method, opts=opts):
                return attribute(model, x, targets, method=method, **opts)

            def loop(method=method, opts=opts):
                return torch.cat([attribute(model, x[i:i + 1], targets[i:i + 1], method=method, **opts)
                                  for i in range(B)])

            row = compare(label(f"attribution {method}, {MODELS[arch][1]} (B={B} N={N})", "auto", device),
                          batched, loop, _check(method), repeat=1 if quick else 3, device=device)
            row["clouds/s batched / loop"] = f"{B / (row['fast_ms'] * 1e-3):.1f} / {B / (row['ref_ms'] * 1e-3):.1f}"
            yield row
