"""Triton gather-max over kNN neighbours: one program per (block of rows, block of channels)
walks the k neighbours in idx order keeping the running max and the winning point index; a
strict ">" keeps the first neighbour among equal values, as the CPU kernel does. The backward
pass adds each gradient into its argmax point through the deterministic scatter."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import library
from . import _runtime, _scatter

_ROWS = _runtime.block(16, 64)
_CHANNELS = _runtime.block(64, 128)


@triton.jit
def _forward_kernel(feat_ptr, idx_ptr, out_ptr, arg_ptr, N, M, C, k, BM: tl.constexpr, BC: tl.constexpr):
    b = tl.program_id(2).to(tl.int64)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cs = tl.program_id(1) * BC + tl.arange(0, BC)
    row_ok = rows < M
    ok = row_ok[:, None] & (cs < C)[None, :]
    f_b = feat_ptr + b * N * C
    nb = idx_ptr + (b * M + rows) * k
    # The first neighbour seeds the max, so a NaN there stays, as in the CPU loop.
    j = tl.load(nb, mask=row_ok, other=0).to(tl.int64)
    best = tl.load(f_b + j[:, None] * C + cs[None, :], mask=ok, other=0)
    arg = j[:, None] + tl.zeros((BM, BC), dtype=tl.int64)
    for p in range(1, k):
        j = tl.load(nb + p, mask=row_ok, other=0).to(tl.int64)
        v = tl.load(f_b + j[:, None] * C + cs[None, :], mask=ok, other=0)
        take = v > best
        best = tl.where(take, v, best)
        arg = tl.where(take, j[:, None], arg)
    at = (b * M + rows[:, None]) * C + cs[None, :]
    tl.store(out_ptr + at, best, mask=ok)
    tl.store(arg_ptr + at, arg, mask=ok)


@library.triton_kernel
def edge_max_forward(feat: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    op = "edge_max_forward (triton)"
    device = _runtime.dense(op, floats=("feat",), feat=feat, idx=idx)
    _runtime.require(feat.dim() == 3 and idx.dim() == 3, op, "feat (B, N, C) and idx (B, M, k) must have 3 dimensions")
    _runtime.require(idx.dtype in (torch.int32, torch.int64), op, f"idx must be int64 or int32, got {idx.dtype}")
    (B, N, C), (_, M, k) = feat.shape, idx.shape
    _runtime.require(idx.shape[0] == B and k >= 1, op,
                     f"idx shape {tuple(idx.shape)} does not fit feat {tuple(feat.shape)}")
    out = torch.empty(B, M, C, dtype=feat.dtype, device=device)
    argmax = torch.empty(B, M, C, dtype=torch.int64, device=device)
    bc = min(_runtime.pow2(C), _CHANNELS)
    with _runtime.on(device):
        _forward_kernel[(triton.cdiv(M, _ROWS), triton.cdiv(C, bc), B)](feat, idx, out, argmax, N, M, C, k,
                                                                        BM=_ROWS, BC=bc)
    return out, argmax


@library.triton_kernel
def edge_max_backward(grad_out: torch.Tensor, argmax: torch.Tensor, num_points: int) -> torch.Tensor:
    op = "edge_max_backward (triton)"
    device = _runtime.dense(op, floats=("grad_out",), grad_out=grad_out, argmax=argmax)
    _runtime.require(grad_out.dim() == 3 and argmax.shape == grad_out.shape and argmax.dtype == torch.int64, op,
                     "argmax must be int64 with grad_out's shape (B, M, C)")
    _runtime.require(num_points >= 1, op, f"num_points must be >= 1, got {num_points}")
    B, _, C = grad_out.shape
    # Entry (b, i, c) goes to feat[b, argmax[b, i, c], c]; a target is one element of feat.
    base = (torch.arange(B, device=device) * num_points).view(B, 1, 1)
    targets = ((argmax + base) * C + torch.arange(C, device=device)).view(-1)
    ones = torch.ones(1, 1, dtype=grad_out.dtype, device=device)
    grad = _scatter.segment_sum(targets, B * num_points * C, grad_out.view(-1), ones)
    return grad.view(B, num_points, C)
