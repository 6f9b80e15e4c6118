"""knn (fused tiled distances + per-row top-k: C++ on the CPU, CUDA and Triton on a GPU)
against what a PyTorch user writes (matmul + topk, `reference.knn_topk`), at DGCNN's shapes
(D = 3 for the coordinates, 64 and 128 for the features) and for the continuity term's
gradient.

    flowam-fast bench --only knn [--quick] [--device cuda]
"""
from __future__ import annotations

import torch

from ..ops import knn, reference
from .common import compare, fused_backends, label

K = 20
DIMS = (3, 64, 128)


def _points(B, N, D, seed=0, device="cpu"):
    return torch.randn(B, N, D, generator=torch.Generator().manual_seed(seed)).to(device)


def _check_forward(fast, ref):
    (d_f, i_f), (d_r, i_r) = fast, ref
    # The reference's |a|^2 + |b|^2 - 2ab loses a few digits to cancellation; fast returns the
    # exact differences. Near-ties may swap places, so indices only need to agree almost always.
    torch.testing.assert_close(d_f, d_r, rtol=1e-4, atol=1e-3 * (1 + d_r.abs().max().item()) ** 0.5)
    agree = (i_f == i_r).float().mean().item()
    assert agree > 0.99, f"only {agree:.4f} of the indices agree"


def _check_backward(fast, ref):
    (d_f, g_f), (d_r, g_r) = fast, ref
    torch.testing.assert_close(d_f, d_r, rtol=1e-4, atol=1e-4)
    # Where the reference's rounding swaps a near-tie at the k-th place, the gradient goes
    # to a different neighbour; that may touch a few points, never many.
    moved = (g_f - g_r).abs().amax(-1) > 1e-3 * (1 + g_r.abs().amax(-1))
    assert moved.float().mean() < 1e-2, f"{int(moved.sum())} points got a different gradient"


def rows(quick: bool = False, device="cpu"):
    """Yields each case's row as it is measured (`common.compare`)."""
    B = 4 if quick else 16
    sizes = (1024,) if quick else (1024, 2048, 4096)
    for backend in fused_backends(device):
        for N in sizes:
            for D in DIMS:
                x = _points(B, N, D, device=device)
                row = compare(label(f"knn fwd D={D} (B={B} N={N} k={K})", backend, device),
                              lambda: knn(x, K, backend=backend), lambda: reference.knn_topk(x, K), _check_forward,
                              repeat=3 if N > 1024 else 5, device=device, no_grad=True)
                # Distance work counted as in a GEMM: 2 flops per coordinate per pair.
                row["GFLOP/s"] = f"{2 * B * N * N * D / (row['fast_ms'] * 1e-3) / 1e9:.0f}"
                yield row

        # The continuity term: dist2 and its gradient w.r.t. the points, against the
        # differentiable reference (matmul + sort + exact differences of the chosen pairs).
        x = _points(B, 1024, 3, device=device).requires_grad_(True)
        w = torch.rand(B, 1024, K, generator=torch.Generator().manual_seed(1)).to(device)

        def both(fn):
            def run():
                d = fn()[0]
                (g,) = torch.autograd.grad(d, x, w)
                return d.detach(), g
            return run

        yield compare(label(f"knn fwd+bwd D=3 (B={B} N=1024 k={K})", backend, device),
                      both(lambda: knn(x, K, backend=backend)), both(lambda: reference.knn(x, K)),
                      _check_backward, device=device)
