"""Triton fused kNN: one program per block of query rows streams the reference points tile by
tile and keeps each row's k best (distance, index) pairs in registers; the (M, N) distance
matrix is never stored.

Selection orders candidates by (key, index), so ties go to the smaller index whatever tile
they arrive in. A tile's candidates enter by repeated min extraction (tl.min over the tile,
then over the indices at that minimum), each replacing the worst of the k kept; the number of
rounds is bounded by how many of the tile's keys beat the current worst, so after the first
tiles most cost nothing. (tl.sort would be simpler, but is far slower under the interpreter
the tests run on.)

Keys: up to _DIRECT_MAX_DIM coordinates, and always in float64, the exact squared distance by
direct differences; otherwise |r|^2 - 2 q.r through tl.dot in IEEE fp32 (no TF32: the
neighbour order must agree with the reference). The k chosen distances are then recomputed
by direct differences (the value the gradient belongs to) and written ascending by
(distance, index), as the CPU kernel does. Meant for small k (the kept set and its final
(k x k) ranking live in registers), as the models use: 3 to 40.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import library
from . import _runtime, _scatter

_DIRECT_MAX_DIM = 8  # as in the CPU kernel: up to here direct differences beat the GEMM form
# Beyond every real index (< N) and placeholder (N + slot): marks taken or padding candidates.
_NO_POINT = tl.constexpr(1 << 30)
_ROWS = _runtime.block(32, 128)  # query rows per backward program


@triton.jit
def _tile_keys(q_b, r_b, rows, cols, row_ok, col_ok, D, DOT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
               BD: tl.constexpr):
    dtype = q_b.dtype.element_ty
    if DOT:
        dots = tl.zeros((BM, BN), dtype=dtype)
        norms = tl.zeros((BN,), dtype=dtype)
        for d0 in range(0, D, BD):
            ds = d0 + tl.arange(0, BD)
            d_ok = ds < D
            q = tl.load(q_b + rows[:, None] * D + ds[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0)
            r = tl.load(r_b + cols[:, None] * D + ds[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0)
            dots = tl.dot(q, tl.trans(r), dots, input_precision="ieee")
            norms += tl.sum(r * r, axis=1)
        # The squared distance less the row's constant |q|^2, which cannot change its order.
        return norms[None, :] - 2.0 * dots
    acc = tl.zeros((BM, BN), dtype=dtype)
    for d in range(0, D):
        qd = tl.load(q_b + rows * D + d, mask=row_ok, other=0)
        rd = tl.load(r_b + cols * D + d, mask=col_ok, other=0)
        t = qd[:, None] - rd[None, :]
        acc += t * t
    return acc


@_runtime.autotune(
    gpu_configs=[triton.Config({"BM": 32, "BN": 64}, num_warps=4), triton.Config({"BM": 64, "BN": 64}, num_warps=8),
                 triton.Config({"BM": 16, "BN": 128}, num_warps=4)],
    # Large blocks under the interpreter: it pays per operation, not per element.
    interpreter_config=triton.Config({"BM": 64, "BN": 64}),
    key=["N", "D", "KP", "DOT"],
)
@triton.jit
def _forward_kernel(q_ptr, r_ptr, dist_ptr, idx_ptr, M, N, D, k, KP: tl.constexpr, DOT: tl.constexpr,
                    BD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    row_ok = rows < M
    q_b = q_ptr + b * M * D
    r_b = r_ptr + b * N * D
    dtype = q_ptr.dtype.element_ty
    slot = tl.arange(0, KP)[None, :] + tl.zeros((BM, KP), dtype=tl.int32)
    # Slots < k start as distinct (+inf, N + slot) placeholders that every real candidate beats;
    # slots >= k (padding to a power of two) hold (-inf, -1): never the worst, never replaced.
    best_d = tl.where(slot < k, float("inf"), float("-inf")).to(dtype)
    best_i = tl.where(slot < k, N + slot, -1)
    # The worst kept pair of each row (the rejection threshold), updated after each change.
    # The selection is written out here, not in jit helpers: the interpreter re-patches
    # triton.language on every call of a jit function, which costs more than the loop body.
    wd = tl.full((BM,), float("inf"), dtype=dtype)
    wi = tl.zeros((BM,), dtype=tl.int32) + N + k - 1
    for j0 in range(0, N, BN):
        cols = j0 + tl.arange(0, BN)
        col_ok = cols < N
        key = _tile_keys(q_b, r_b, rows, cols, row_ok, col_ok, D, DOT, BM, BN, BD)
        # A NaN key (only from a direct call with NaN input) sorts as +inf, like the CPU kernel.
        key = tl.where((key != key) | ~col_ok[None, :], float("inf"), key)
        cid = tl.where(col_ok[None, :], cols[None, :], _NO_POINT) + tl.zeros((BM, BN), dtype=tl.int32)
        # (key, index) < (worst distance, worst index), lexicographically
        beats = (key < wd[:, None]) | ((key == wd[:, None]) & (cid < wi[:, None]))
        rounds = tl.minimum(tl.max(tl.sum((beats & col_ok[None, :]).to(tl.int32), axis=1)), k)
        for _ in range(0, rounds):
            m = tl.min(key, axis=1)
            j = tl.min(tl.where(key == m[:, None], cid, _NO_POINT), axis=1)
            take = ((m < wd) | ((m == wd) & (j < wi))) & (j < N)
            hit = (best_d == wd[:, None]) & (best_i == wi[:, None]) & take[:, None]
            best_d = tl.where(hit, m[:, None], best_d)
            best_i = tl.where(hit, j[:, None], best_i)
            wd = tl.max(best_d, axis=1)
            wi = tl.max(tl.where(best_d == wd[:, None], best_i, -1), axis=1)
            gone = cid == j[:, None]
            key = tl.where(gone, float("inf"), key)
            cid = tl.where(gone, _NO_POINT, cid)
    kept = row_ok[:, None] & (slot < k)
    exact = tl.zeros((BM, KP), dtype=dtype)
    for d in range(0, D):
        qd = tl.load(q_b + rows * D + d, mask=row_ok, other=0)
        rd = tl.load(r_b + best_i * D + d, mask=kept, other=0)
        t = qd[:, None] - rd
        exact += t * t
    # Each kept pair's output position is its rank by (distance, index), the number of pairs
    # before it (all pairs are distinct): one (BM, KP, KP) comparison instead of k rounds of
    # extraction. The padding slots (+inf, _NO_POINT) come after every kept pair.
    e = tl.where((slot < k) & (exact == exact), exact, float("inf"))
    ei = tl.where(slot < k, best_i, _NO_POINT)
    before = (e[:, None, :] < e[:, :, None]) | ((e[:, None, :] == e[:, :, None]) & (ei[:, None, :] < ei[:, :, None]))
    at = (b * M + rows[:, None]) * k + tl.sum(before.to(tl.int32), axis=2)
    tl.store(dist_ptr + at, exact, mask=kept)
    tl.store(idx_ptr + at, best_i.to(tl.int64), mask=kept)


@triton.jit
def _grad_query_kernel(g_ptr, q_ptr, r_ptr, idx_ptr, gq_ptr, M, N, D, k, BM: tl.constexpr, BD: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    row_ok = rows < M
    q_b = q_ptr + b * M * D
    r_b = r_ptr + b * N * D
    e_b = (b * M + rows) * k
    for d0 in range(0, D, BD):
        ds = d0 + tl.arange(0, BD)
        ok = row_ok[:, None] & (ds < D)[None, :]
        q = tl.load(q_b + rows[:, None] * D + ds[None, :], mask=ok, other=0)
        acc = tl.zeros((BM, BD), dtype=q_ptr.dtype.element_ty)
        for p in range(0, k):
            j = tl.load(idx_ptr + e_b + p, mask=row_ok, other=0)
            g2 = 2 * tl.load(g_ptr + e_b + p, mask=row_ok, other=0)
            r = tl.load(r_b + j[:, None] * D + ds[None, :], mask=ok, other=0)
            acc += g2[:, None] * (q - r)
        tl.store(gq_ptr + (b * M + rows[:, None]) * D + ds[None, :], acc, mask=ok)


@library.triton_kernel
def knn_forward(query: torch.Tensor, ref: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    op = "knn_forward (triton)"
    device = _runtime.dense(op, floats=("query", "ref"), query=query, ref=ref)
    _runtime.require(query.dim() == 3 and ref.dim() == 3, op, "query and ref must have 3 dimensions (B, N, D)")
    (B, M, D), N = query.shape, ref.shape[1]
    _runtime.require(query.dtype == ref.dtype, op, f"query and ref dtypes differ ({query.dtype} vs {ref.dtype})")
    _runtime.require(ref.shape[0] == B and ref.shape[2] == D and D >= 1, op,
                     f"query {tuple(query.shape)} and ref {tuple(ref.shape)} do not match")
    _runtime.require(1 <= k <= N, op, f"k must be in [1, {N}] (number of reference points), got k={k}")
    _runtime.require(N + k < _NO_POINT.value, op, f"too many reference points ({N})")
    dist2 = torch.empty(B, M, k, dtype=query.dtype, device=device)
    idx = torch.empty(B, M, k, dtype=torch.int64, device=device)
    dot = D > _DIRECT_MAX_DIM and query.dtype == torch.float32
    with _runtime.on(device):
        _forward_kernel[lambda meta: (triton.cdiv(M, meta["BM"]), B)](
            query, ref, dist2, idx, M, N, D, k, KP=_runtime.pow2(k), DOT=dot, BD=min(_runtime.pow2(D, 16), 64))
    return dist2, idx


@library.triton_kernel
def knn_backward(grad_dist2: torch.Tensor, query: torch.Tensor, ref: torch.Tensor,
                 idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    op = "knn_backward (triton)"
    device = _runtime.dense(op, floats=("grad_dist2", "query", "ref"), grad_dist2=grad_dist2, query=query, ref=ref,
                            idx=idx)
    (B, M, D), N = query.shape, ref.shape[1]
    _runtime.require(idx.dtype == torch.int64 and idx.dim() == 3 and idx.shape[:2] == (B, M), op,
                     f"idx must be int64 of shape ({B}, {M}, k), got {idx.dtype} {tuple(idx.shape)}")
    _runtime.require(grad_dist2.shape == idx.shape and grad_dist2.dtype == query.dtype, op,
                     "grad_dist2 must have idx's shape and query's dtype")
    k = idx.shape[2]
    grad_query = torch.empty_like(query)
    with _runtime.on(device):
        _grad_query_kernel[(triton.cdiv(M, _ROWS), B)](grad_dist2, query, ref, idx, grad_query, M, N, D, k,
                                                       BM=_ROWS, BD=min(_runtime.pow2(D), 64))
    # d dist2 / d r = -2 (q - r), added into each reference point in (query, slot) order.
    targets = (idx + N * torch.arange(B, device=device).view(B, 1, 1)).view(-1)
    grad_ref = _scatter.segment_sum(targets, B * N, grad_dist2.reshape(-1) * -2, query.view(B * M, D), row_div=k,
                                    sub=ref.view(B * N, D))
    return grad_query, grad_ref.view(B, N, D)
