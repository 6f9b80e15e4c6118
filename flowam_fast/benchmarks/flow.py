"""flow_stats (per-class activation statistics, one pass) and flow_align (FlowAM's alignment
loss, one read forward and one backward), C++ on the CPU, CUDA and Triton on a GPU, against the
pure-PyTorch reference; quantile_align (alignment="quantiles": a sort per row, the
gradient written by the forward) on the CPU against its torch.sort reference.

    flowam-fast bench --only flow [--quick] [--threads N] [--device cuda]
"""
from __future__ import annotations

import torch

from ..ops import reference
from ..ops.flow import flow_align, flow_stats
from ..ops.quantile_align import quantile_align
from .common import compare, fused_backends, label

NUM_CLASSES = 40  # ModelNet40
# (label, B, C, N): PointNet's per-point layers in ℒ and its 1024-channel pre-pool layer.
STATS_SHAPES = [("64 channels", 64, 64, 1024), ("1024 channels", 32, 1024, 1024)]
ALIGN_SHAPES = [("64 channels", 64, 64, 1024), ("128 channels", 64, 128, 1024), ("1024 channels", 16, 1024, 1024)]
# The demo PointNet's widest aligned layer (24 jobs, 512 points) and a reference-width one.
QUANTILE_SHAPES = [("demo 256 channels", 24, 256, 512), ("128 channels", 64, 128, 1024)]
QUANTILE_LEVELS = 64


def _acts(B, C, N, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(B, C, N, generator=g) + 0.3).to(device)


def _labels(B, seed=0, device="cpu"):
    return torch.randint(0, NUM_CLASSES, (B,), generator=torch.Generator().manual_seed(seed)).to(device)


def _check_stats(fast, ref):
    assert torch.equal(fast[0], ref[0])
    torch.testing.assert_close(fast[1], ref[1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fast[2], ref[2], rtol=1e-9, atol=1e-6)


def _check_align(fast, ref):
    for f, r in zip(fast, ref):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-5 * float(r.abs().max()))


def rows(quick: bool = False, device="cpu"):
    """Yields each case's row as it is measured (`common.compare`)."""
    for backend in fused_backends(device):
        for name, B, C, N in STATS_SHAPES:
            B = 4 if quick else B
            acts, labels = _acts(B, C, N, device=device), _labels(B, device=device)
            yield compare(label(f"flow_stats, {name} (B={B} C={C} N={N}, K={NUM_CLASSES})", backend, device),
                          lambda: flow_stats(acts, labels, NUM_CLASSES, backend=backend),
                          lambda: reference.flow_stats(acts, labels, NUM_CLASSES), _check_stats, device=device,
                          no_grad=True)
        g = torch.Generator().manual_seed(1)
        mu = torch.rand(NUM_CLASSES, max(s[2] for s in ALIGN_SHAPES), generator=g)
        sigma = torch.rand(NUM_CLASSES, mu.shape[1], generator=g) + 0.1
        for name, B, C, N in ALIGN_SHAPES:
            B = 4 if quick else B
            acts, labels = _acts(B, C, N, seed=2, device=device), _labels(B, seed=2, device=device)
            m, s = mu[:, :C].contiguous().to(device), sigma[:, :C].contiguous().to(device)
            shape = f"B={B} C={C} N={N}"
            yield compare(label(f"flow_align fwd, {name} ({shape})", backend, device),
                          lambda: (flow_align(acts, labels, m, s, backend=backend),),
                          lambda: (reference.flow_align(acts, labels, m, s),), _check_align, device=device,
                          no_grad=True)
            a = acts.clone().requires_grad_(True)
            w = torch.randn(B, generator=g).to(device)

            def both(fn):
                def run():
                    loss = fn(a, labels, m, s)
                    (ga,) = torch.autograd.grad(loss, a, w)
                    return loss.detach(), ga
                return run

            yield compare(label(f"flow_align fwd+bwd, {name} ({shape})", backend, device),
                          both(lambda *x: flow_align(*x, backend=backend)), both(reference.flow_align),
                          _check_align, device=device)
        if backend == "cpu":
            yield from _quantile_rows(quick)


def _quantile_rows(quick: bool):
    g = torch.Generator().manual_seed(3)
    for name, B, C, N in QUANTILE_SHAPES:
        B = 4 if quick else B
        # No ties: tied values may take their levels in either order (the same loss, another
        # gradient). Each row is a shuffled grid of normal quantiles, scaled and shifted.
        ranks = torch.rand(B, C, N, generator=g).argsort(-1).double()
        grid = torch.distributions.Normal(0.0, 1.0).icdf((ranks + 0.5) / N)
        a = (grid * (0.5 + torch.rand(B, C, 1, generator=g)) + 0.2).float().requires_grad_(True)
        labels = _labels(B, seed=4)
        q = torch.randn(NUM_CLASSES, C, QUANTILE_LEVELS, generator=g).sort(-1).values
        s = torch.rand(NUM_CLASSES, C, generator=g) + 0.1
        w = torch.randn(B, generator=g)

        def run(backend):
            def go():
                loss = quantile_align(a, labels, q, s, backend=backend)
                (ga,) = torch.autograd.grad(loss, a, w)
                return loss.detach(), ga
            return go

        yield compare(label(f"quantile_align fwd+bwd, {name} (B={B} C={C} N={N}, Q={QUANTILE_LEVELS})", "cpu", "cpu"),
                      run("cpu"), run("torch"), _check_align)
