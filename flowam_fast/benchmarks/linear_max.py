"""linear_max (fused linear + affine + activation + max-pool, sparse backward: C++ on the CPU,
CUDA and Triton on a GPU) against the reference that builds the (B, N, Cout) activation, at
PointNet's shapes.

    flowam-fast bench --only linear_max [--quick] [--threads N] [--device cuda]
"""
from __future__ import annotations

import torch

from ..ops import reference
from ..ops.linear_max import linear_max
from .common import compare, fused_backends, label

# (label, B, N, Cin, Cout): PointNet's last encoder layer (global feature) and conv3.
SHAPES = [("PointNet global 128->1024", 64, 1024, 128, 1024), ("PointNet conv3 64->128", 64, 1024, 64, 128)]


def _inputs(B, N, cin, cout, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, cin, generator=g)
    w = torch.randn(cout, cin, generator=g) / cin**0.5
    scale = torch.rand(cout, generator=g) + 0.5
    shift = torch.randn(cout, generator=g) * 0.1
    return tuple(t.to(device) for t in (x, w, scale, shift))


def _check_forward(fast, ref):
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


def _check_backward(fast, ref):
    (out_f, gx_f), (out_r, gx_r) = fast, ref
    _check_forward(out_f, out_r)
    # In float32 a channel whose two best points agree to rounding may send its gradient to a
    # different point than the reference does; the per-sample gradient mass cannot differ.
    torch.testing.assert_close(gx_f.sum(1), gx_r.sum(1), rtol=1e-3, atol=1e-3)
    moved = (gx_f - gx_r).abs().amax(-1) > 1e-3 * gx_r.abs().max()
    assert moved.float().mean() < 1e-3, f"{int(moved.sum())} points got a different gradient"


def rows(quick: bool = False, device="cpu"):
    """Yields each case's row as it is measured (`common.compare`)."""
    for backend in fused_backends(device):
        for name, B, N, cin, cout in SHAPES:
            if quick:
                B = 4
            x, w, scale, shift = _inputs(B, N, cin, cout, device=device)
            flops = 2 * B * N * cin * cout
            shape = f"B={B} N={N} {cin}->{cout}"

            def fwd_fast():
                return linear_max(x, w, scale, shift, 0.0, backend=backend)

            def fwd_ref():
                return reference.linear_max(x, w, scale, shift, 0.0)

            row = compare(label(f"linear_max fwd, {name} ({shape})", backend, device), fwd_fast, fwd_ref,
                          _check_forward, device=device, no_grad=True)
            row["GFLOP/s"] = f"{flops / (row['fast_ms'] * 1e-3) / 1e9:.0f}"
            yield row

            xg = x.clone().requires_grad_(True)
            g = torch.randn(B, cout, generator=torch.Generator().manual_seed(1)).to(device)

            def both(fn):
                def run():
                    y = fn(xg, w, scale, shift, 0.0)
                    (gx,) = torch.autograd.grad(y, xg, g)
                    return y.detach(), gx
                return run

            fast = both(lambda *a: linear_max(*a, backend=backend))
            yield compare(label(f"linear_max fwd+bwd to x, {name} ({shape})", backend, device), fast,
                          both(reference.linear_max), _check_backward, device=device)
