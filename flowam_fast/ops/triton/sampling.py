"""Triton farthest point sampling and ball query, under the CPU kernels' rules
(csrc/fps/fps_math.h, csrc/ball_query/ball_query_math.h).

Squared distances are (dx*dx + dy*dy) + dz*dz with every product and sum rounded: the kernels
launch with enable_fp_fusion=False, so the compiler does not fuse them into FMAs, which round
differently and would let a near tie go another way than on the other backends.

FPS runs one program per sample: each step streams the points tile by tile, updates their
running min distance (kept in a scratch row) and keeps, per lane of the tile, the first
maximum it sees; one reduction per step then takes the largest, ties to the smaller index.
The ball query runs one program per block of centroids: a tile's hits get their slots from a
running count plus a prefix sum over the tile, so each centroid keeps its first nsample hits
in index order, and the scan stops once every centroid of the block has them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import library
from . import _runtime

# Beyond every point index: marks "no point" in index minima.
_NO_POINT = tl.constexpr(1 << 30)
_FPS_TILE = _runtime.block(1024, 4096)  # points per FPS tile, at most
_PAD_SLOTS = 64  # group slots written per padding store, at most


@triton.jit
def _sq_dist3(ax, ay, az, bx, by, bz):
    dx = ax - bx
    dy = ay - by
    dz = az - bz
    return (dx * dx + dy * dy) + dz * dz


@triton.jit
def _fps_kernel(p_ptr, run_ptr, idx_ptr, N, S, BN: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    p_b = p_ptr + b * N * 3
    run_b = run_ptr + b * N
    dtype = p_ptr.dtype.element_ty
    lanes = tl.arange(0, BN)
    tl.store(idx_ptr + b * S, 0)
    cur = 0
    for s in range(1, S):
        cx = tl.load(p_b + cur * 3)
        cy = tl.load(p_b + cur * 3 + 1)
        cz = tl.load(p_b + cur * 3 + 2)
        best_d = tl.full((BN,), float("-inf"), dtype=dtype)
        best_i = tl.zeros((BN,), dtype=tl.int32)
        for j0 in range(0, N, BN):
            cols = j0 + lanes
            ok = cols < N
            d = _sq_dist3(tl.load(p_b + cols * 3, mask=ok, other=0), tl.load(p_b + cols * 3 + 1, mask=ok, other=0),
                          tl.load(p_b + cols * 3 + 2, mask=ok, other=0), cx, cy, cz)
            prev = tl.load(run_b + cols, mask=ok, other=0)
            m = tl.where(d < prev, d, prev)
            tl.store(run_b + cols, m, mask=ok)
            # Padding and NaN (only from a direct call with NaN input) are never taken.
            key = tl.where(ok & (m == m), m, float("-inf"))
            # Strictly greater: within a lane the earlier tile, the smaller index, keeps a tie.
            take = key > best_d
            best_d = tl.where(take, key, best_d)
            best_i = tl.where(take, cols, best_i)
        top = tl.max(best_d, axis=0)
        cur = tl.min(tl.where(best_d == top, best_i, _NO_POINT), axis=0)
        tl.store(idx_ptr + b * S + s, cur.to(tl.int64))
        tl.debug_barrier()  # this step's running minima are stored before the next step reads them


@_runtime.autotune(
    gpu_configs=[triton.Config({"BM": 32, "BN": 64}, num_warps=4), triton.Config({"BM": 16, "BN": 128}, num_warps=4),
                 triton.Config({"BM": 64, "BN": 64}, num_warps=8)],
    # Large blocks under the interpreter: it pays per operation, not per element.
    interpreter_config=triton.Config({"BM": 64, "BN": 64}),
    key=["N", "K"],
)
@triton.jit
def _ball_query_kernel(p_ptr, c_ptr, r2_ptr, idx_ptr, N, S, K, PB: tl.constexpr, BM: tl.constexpr,
                       BN: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    row_ok = rows < S
    p_b = p_ptr + b * N * 3
    c_b = c_ptr + b * S * 3
    out = idx_ptr + (b * S + rows) * K
    dtype = p_ptr.dtype.element_ty
    cx = tl.load(c_b + rows * 3, mask=row_ok, other=0)
    cy = tl.load(c_b + rows * 3 + 1, mask=row_ok, other=0)
    cz = tl.load(c_b + rows * 3 + 2, mask=row_ok, other=0)
    r2 = tl.load(r2_ptr)
    count = tl.zeros((BM,), dtype=tl.int32)
    first = tl.zeros((BM,), dtype=tl.int32)
    j0 = 0
    busy = True
    while busy:
        cols = j0 + tl.arange(0, BN)
        col_ok = cols < N
        d = _sq_dist3(cx[:, None], cy[:, None], cz[:, None], tl.load(p_b + cols * 3, mask=col_ok, other=0)[None, :],
                      tl.load(p_b + cols * 3 + 1, mask=col_ok, other=0)[None, :],
                      tl.load(p_b + cols * 3 + 2, mask=col_ok, other=0)[None, :])
        hit = (d <= r2) & col_ok[None, :] & row_ok[:, None]
        # A hit's slot: the hits before it, in this tile and in the earlier ones.
        slot = count[:, None] + tl.cumsum(hit.to(tl.int32), axis=1) - 1
        tl.store(out[:, None] + slot, cols[None, :].to(tl.int64), mask=hit & (slot < K))
        tile_first = tl.min(tl.where(hit, cols[None, :], _NO_POINT), axis=1)
        first = tl.where((count == 0) & (tile_first < _NO_POINT), tile_first, first)
        count += tl.sum(hit.to(tl.int32), axis=1)
        j0 += BN
        busy = (j0 < N) & (tl.min(tl.where(row_ok, count, K), axis=0) < K)
    if tl.max(tl.where(row_ok & (count == 0), 1, 0), axis=0) > 0:
        # An empty ball: the nearest point (ties to the smaller index) fills every slot.
        near_d = tl.full((BM,), float("inf"), dtype=dtype)
        near_i = tl.zeros((BM,), dtype=tl.int32)
        for k0 in range(0, N, BN):
            cols = k0 + tl.arange(0, BN)
            col_ok = cols < N
            d = _sq_dist3(cx[:, None], cy[:, None], cz[:, None],
                          tl.load(p_b + cols * 3, mask=col_ok, other=0)[None, :],
                          tl.load(p_b + cols * 3 + 1, mask=col_ok, other=0)[None, :],
                          tl.load(p_b + cols * 3 + 2, mask=col_ok, other=0)[None, :])
            d = tl.where(col_ok[None, :] & (d == d), d, float("inf"))
            tile_d = tl.min(d, axis=1)
            tile_i = tl.min(tl.where((d == tile_d[:, None]) & col_ok[None, :], cols[None, :], _NO_POINT), axis=1)
            take = tile_d < near_d  # strictly: the earlier tile, the smaller index, keeps a tie
            near_d = tl.where(take, tile_d, near_d)
            near_i = tl.where(take, tile_i, near_i)
        first = tl.where(count == 0, near_i, first)
    # Slots past the hits repeat the first.
    for p0 in range(0, K, PB):
        slots = p0 + tl.arange(0, PB)
        pad = row_ok[:, None] & (slots[None, :] >= count[:, None]) & (slots[None, :] < K)
        tl.store(out[:, None] + slots[None, :], first[:, None].to(tl.int64) + tl.zeros((BM, PB), dtype=tl.int64),
                 mask=pad)


def _check_points(op: str, name: str, t: torch.Tensor) -> None:
    _runtime.require(t.dim() == 3 and t.shape[2] == 3, op, f"{name} must have shape (B, N, 3), got {tuple(t.shape)}")
    _runtime.require(t.shape[1] < _NO_POINT.value, op, f"too many points in {name} ({t.shape[1]})")


@library.triton_kernel
def farthest_point_sample(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    op = "farthest_point_sample (triton)"
    device = _runtime.dense(op, floats=("points",), points=points)
    _check_points(op, "points", points)
    B, N, _ = points.shape
    _runtime.require(1 <= num_samples <= N, op,
                     f"num_samples must be in [1, {N}] (number of points), got num_samples={num_samples}")
    idx = torch.empty(B, num_samples, dtype=torch.int64, device=device)
    if B == 0:
        return idx
    running = torch.full((B, N), float("inf"), dtype=points.dtype, device=device)
    with _runtime.on(device):
        _fps_kernel[(B,)](points, running, idx, N, num_samples, BN=min(_runtime.pow2(N), _FPS_TILE),
                          enable_fp_fusion=False)
    return idx


@library.triton_kernel
def ball_query(points: torch.Tensor, centroids: torch.Tensor, radius: float, nsample: int) -> torch.Tensor:
    op = "ball_query (triton)"
    device = _runtime.dense(op, floats=("points", "centroids"), points=points, centroids=centroids)
    _check_points(op, "points", points)
    _check_points(op, "centroids", centroids)
    (B, N, _), S = points.shape, centroids.shape[1]
    _runtime.require(points.dtype == centroids.dtype, op,
                     f"points and centroids dtypes differ ({points.dtype} vs {centroids.dtype})")
    _runtime.require(centroids.shape[0] == B, op, f"batch sizes of points and centroids differ ({B} vs "
                     f"{centroids.shape[0]})")
    _runtime.require(N >= 1, op, "points must hold at least one point per sample")
    _runtime.require(radius > 0 and radius < float("inf"), op, f"radius must be positive and finite, got {radius}")
    _runtime.require(1 <= nsample < 2**31 - 1, op, f"nsample must be at least 1, got nsample={nsample}")
    idx = torch.empty(B, S, nsample, dtype=torch.int64, device=device)
    if B == 0 or S == 0:
        return idx
    # radius * radius in double, rounded once to the points' dtype, as the C++ kernels do. A
    # Python float argument would reach the kernel as float32 whatever the points' dtype.
    r2 = torch.tensor([radius * radius], dtype=points.dtype, device=device)
    with _runtime.on(device):
        _ball_query_kernel[lambda meta: (triton.cdiv(S, meta["BM"]), B)](
            points, centroids, r2, idx, N, S, nsample, PB=min(_runtime.pow2(nsample), _PAD_SLOTS),
            enable_fp_fusion=False)
    return idx
