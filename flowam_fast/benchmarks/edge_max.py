"""edge_max (gather-max over kNN neighbours: C++ on the CPU, CUDA and Triton on a GPU) against
the reference that gathers the full (B, N, k, C) neighbour tensor, at DGCNN's EdgeConv shapes.

    flowam-fast bench --only edge_max [--quick] [--device cuda]
"""
from __future__ import annotations

import torch

from ..ops import reference
from ..ops.edge_max import edge_max
from .common import compare, fused_backends, label

K = 20
CHANNELS = (64, 256)


def _inputs(B, N, C, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, C, generator=g).to(device), torch.randint(0, N, (B, N, K), generator=g).to(device)


def _check_forward(fast, ref):
    assert torch.equal(fast, ref), "the maxima must agree exactly"


def _check_backward(fast, ref):
    (out_f, g_f), (out_r, g_r) = fast, ref
    _check_forward(out_f, out_r)
    # Both scatter the same values to the same places; only the order of the sums differs.
    torch.testing.assert_close(g_f, g_r, rtol=1e-5, atol=1e-5)


def rows(quick: bool = False, device="cpu"):
    """Yields each case's row as it is measured (`common.compare`)."""
    # Quick: N = 512 keeps the reference's (B, N, N, C) gradient below the full size's 2 GiB.
    B, N = (4, 512) if quick else (16, 1024)
    for backend in fused_backends(device):
        for C in CHANNELS:
            feat, idx = _inputs(B, N, C, device=device)
            shape = f"B={B} N={N} k={K} C={C}"
            row = compare(label(f"edge_max fwd ({shape})", backend, device),
                          lambda: edge_max(feat, idx, backend=backend), lambda: reference.edge_max(feat, idx),
                          _check_forward, device=device, no_grad=True)
            # Bytes the fast path must move: k neighbour rows read, the output and argmax written.
            row["GB/s"] = f"{B * N * C * (K * 4 + 4 + 8) / (row['fast_ms'] * 1e-3) / 1e9:.0f}"
            yield row

            # The reference's backward (gather on an expanded tensor) builds a (B, N, N, C)
            # gradient, gigabytes at these shapes, so the gradient runs on two clouds.
            Bg = 2
            fg = feat[:Bg].clone().requires_grad_(True)
            ig = idx[:Bg]
            g = torch.randn(Bg, N, C, generator=torch.Generator().manual_seed(1)).to(device)

            def both(fn):
                def run():
                    y = fn(fg, ig)
                    (gf,) = torch.autograd.grad(y, fg, g)
                    return y.detach(), gf
                return run

            yield compare(label(f"edge_max fwd+bwd (B={Bg} N={N} k={K} C={C})", backend, device),
                          both(lambda f, i: edge_max(f, i, backend=backend)), both(reference.edge_max),
                          _check_backward, device=device)
