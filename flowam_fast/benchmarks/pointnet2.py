"""PointNet++ on the fused kernels: its ops against their pure-PyTorch references at the public
models' set-abstraction shapes (B = 16 clouds of N = 1024 points), then the AM step of the
full-width SSG and MSG against the plain path that runs the public algorithm (`am_step`'s
cases of the "pointnet2" family):

- farthest_point_sample: S steps over the N points in one kernel, against the public loop
  (S steps of vectorized PyTorch ops);
- ball_query: one scan per centroid in index order, against the public rule on the (B, S, N)
  distance matrix (mask, sort, take, pad);
- group_gather: the first shared layer as gather + difference + affine + ReLU, against
  advanced indexing into the (B, S, K, C) groups;
- group_linear_max: the last shared layer with the max over each group and a sparse
  backward, against the full (B, S, K, Cout) activation.

    flowam-fast bench --only pointnet2 [--quick] [--threads N] [--device cuda]
"""
from __future__ import annotations

import torch

from .. import ops
from . import am_step
from ..ops import reference
from .common import compare, fused_backends, label
from .linear_max import _check_backward, _check_forward

B, N = 16, 1024
# (label, points, centroids, radius, neighbours): SSG's sa1 and sa2, MSG's widest sa1 scale.
BALLS = [("SSG sa1", N, 512, 0.2, 32), ("SSG sa2", 512, 128, 0.4, 64), ("MSG sa1 widest", N, 512, 0.4, 128)]
# (label, centroids, neighbours, Cin, Cout): SSG's sa1 first layer (3 -> 64, as P of width 64)
# and its last layers of sa1 (64 -> 128) and sa2 (128 -> 256).
GATHER = [("SSG sa1 first layer", 512, 32, 64)]
GROUP_MAX = [("SSG sa1 last layer", 512, 32, 64, 128), ("SSG sa2 last layer", 128, 64, 128, 256)]


def _clouds(b: int, n: int, seed: int, device) -> torch.Tensor:
    """Uniform points in [-0.5, 0.5]^3 (b, n, 3): AM's initial clouds."""
    return (torch.rand(b, n, 3, generator=torch.Generator().manual_seed(seed)) - 0.5).to(device)


def _equal(fast, ref):
    assert torch.equal(fast.long(), ref.long()), "indices differ from the reference"


def _close_pair(fast, ref):
    for f, r in zip(fast, ref):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-4)


def _affine(c: int, seed: int, device):
    g = torch.Generator().manual_seed(seed)
    scale = torch.where(torch.rand(c, generator=g) < 0.25, -1.0, 1.0) * (0.5 + torch.rand(c, generator=g))
    return scale.to(device), (0.1 * torch.randn(c, generator=g)).to(device)


def _sampling_rows(backend: str, b: int, shrink: int, device):
    for name, n, s, radius, k in BALLS:
        n, s = n // shrink, s // shrink
        x = _clouds(b, n, 1, device)
        yield compare(label(f"farthest_point_sample {name} (B={b} N={n} S={s})", backend, device),
                      lambda: ops.farthest_point_sample(x, s, backend=backend),
                      lambda: reference.farthest_point_sample(x, s), _equal, device=device, no_grad=True)
        c = ops.farthest_point_sample(x, s)  # equal to the reference: checked by the row above
        cent = x.gather(1, c.unsqueeze(-1).expand(-1, -1, 3))
        yield compare(label(f"ball_query {name} (B={b} N={n} S={s} r={radius} K={k})", backend, device),
                      lambda: ops.ball_query(x, cent, radius, k, backend=backend),
                      lambda: reference.ball_query(x, cent, radius, k), _equal, device=device, no_grad=True)


def _groups(b: int, n: int, s: int, k: int, device) -> torch.Tensor:
    """Ball-query groups (b, s, k) of random clouds, as the layers see them."""
    x = _clouds(b, n, 2, device)
    cent = x[:, :s]
    return reference.ball_query(x, cent, 0.2, k)


def _gather_rows(backend: str, b: int, shrink: int, device):
    for name, s, k, c in GATHER:
        n, s = N // shrink, s // shrink
        idx = _groups(b, n, s, k, device)
        g = torch.Generator().manual_seed(3)
        P = torch.randn(b, n, c, generator=g).to(device).requires_grad_(True)
        Q = torch.randn(b, s, c, generator=g).to(device).requires_grad_(True)
        scale, shift = _affine(c, 4, device)
        grad = torch.randn(b, s, k, c, generator=g).to(device)
        shape = f"B={b} N={n} S={s} K={k} C={c}"
        yield compare(label(f"group_gather fwd, {name} ({shape})", backend, device),
                      lambda: ops.group_gather(P, Q, idx, scale, shift, backend=backend),
                      lambda: reference.group_gather(P, Q, idx, scale, shift),
                      _check_forward, device=device, no_grad=True)

        def both(fn):
            def run():
                out = fn(P, Q, idx, scale, shift)
                return torch.autograd.grad(out, (P, Q), grad)
            return run

        yield compare(label(f"group_gather fwd+bwd, {name} ({shape})", backend, device),
                      both(lambda *a: ops.group_gather(*a, backend=backend)), both(reference.group_gather),
                      _close_pair, device=device)


def _group_max_rows(backend: str, b: int, shrink: int, device):
    for name, s, k, cin, cout in GROUP_MAX:
        s = s // shrink
        g = torch.Generator().manual_seed(5)
        x = torch.relu(torch.randn(b, s, k, cin, generator=g)).to(device)
        w = (torch.randn(cout, cin, generator=g) / cin ** 0.5).to(device)
        scale, shift = _affine(cout, 6, device)
        shape = f"B={b} S={s} K={k} {cin}->{cout}"
        yield compare(label(f"group_linear_max fwd, {name} ({shape})", backend, device),
                      lambda: ops.group_linear_max(x, w, scale, shift, 0.0, backend=backend),
                      lambda: reference.group_linear_max(x, w, scale, shift, 0.0),
                      _check_forward, device=device, no_grad=True)
        xg = x.clone().requires_grad_(True)
        grad = torch.randn(b, s, cout, generator=g).to(device)

        def both(fn):
            def run():
                y = fn(xg, w, scale, shift, 0.0)
                (gx,) = torch.autograd.grad(y, xg, grad)
                # Per group, as linear_max's check reads (B, N, C): the groups are its clouds.
                return y.detach().flatten(0, 1), gx.flatten(0, 1)
            return run

        yield compare(label(f"group_linear_max fwd+bwd to x, {name} ({shape})", backend, device),
                      both(lambda *a: ops.group_linear_max(*a, backend=backend)), both(reference.group_linear_max),
                      _check_backward, device=device)


def rows(quick: bool = False, device="cpu"):
    """Yields each case's row as it is measured (`common.compare`)."""
    b, shrink = (2, 4) if quick else (B, 1)
    for backend in fused_backends(device):
        yield from _sampling_rows(backend, b, shrink, device)
        yield from _gather_rows(backend, b, shrink, device)
        yield from _group_max_rows(backend, b, shrink, device)
    yield from am_step.rows(quick, device, family=("pointnet2",))
