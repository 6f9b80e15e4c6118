"""Triton group_gather: out[b,s,k,c] = relu(scale[c] * (P[b, idx[b,s,k], c] - Q[b,s,c]) + shift[c]).

Forward: one program per (block of (b, s, k) entries, block of channels) gathers the entries'
rows of P, subtracts their groups' rows of Q and applies the affine map and the ReLU.

Backward: the gradient that passes the ReLU (grad_out where out > 0) is summed per target
without atomics, in entry order, as the C++ kernels do: grad_P per gathered row of P, its
entries grouped by a stable sort (flowam_fast.ops.triton._scatter), grad_Q per group over its K
consecutive entries; then times scale (and negated for Q).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import library
from . import _runtime, _scatter

_ENTRIES = _runtime.block(32, 256)  # (b, s, k) entries per forward program
_TARGETS = _runtime.block(32, 256)  # rows of grad_P or grad_Q per backward program
_CHANNELS = _runtime.block(64, 128)


@triton.jit
def _forward_kernel(p_ptr, q_ptr, idx_ptr, scale_ptr, shift_ptr, out_ptr, E, N, S, K, C, BE: tl.constexpr,
                    BC: tl.constexpr):
    es = (tl.program_id(0) * BE + tl.arange(0, BE)).to(tl.int64)
    cs = tl.program_id(1) * BC + tl.arange(0, BC)
    e_ok = es < E
    c_ok = cs < C
    ok = e_ok[:, None] & c_ok[None, :]
    r = es // K  # the entry's group, b * S + s
    row = (r // S) * N + tl.load(idx_ptr + es, mask=e_ok, other=0).to(tl.int64)
    p = tl.load(p_ptr + row[:, None] * C + cs[None, :], mask=ok, other=0)
    q = tl.load(q_ptr + r[:, None] * C + cs[None, :], mask=ok, other=0)
    scale = tl.load(scale_ptr + cs, mask=c_ok, other=0)
    shift = tl.load(shift_ptr + cs, mask=c_ok, other=0)
    z = scale[None, :] * (p - q) + shift[None, :]
    tl.store(out_ptr + es[:, None] * C + cs[None, :], tl.where(z > 0, z, 0), mask=ok)


@triton.jit
def _grad_kernel(g_ptr, out_ptr, order_ptr, offsets_ptr, scale_ptr, grad_ptr, T, C, GROUP,
                 SORTED: tl.constexpr, NEGATE: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    # Target t sums the entries order[offsets[t] .. offsets[t + 1]) when SORTED, else the GROUP
    # consecutive entries t * GROUP .. (t + 1) * GROUP.
    ts = (tl.program_id(0) * BT + tl.arange(0, BT)).to(tl.int64)
    cs = tl.program_id(1) * BC + tl.arange(0, BC)
    t_ok = ts < T
    c_ok = cs < C
    if SORTED:
        start = tl.load(offsets_ptr + ts, mask=t_ok, other=0)
        length = tl.load(offsets_ptr + ts + 1, mask=t_ok, other=0) - start
    else:
        start = ts * GROUP
        length = tl.where(t_ok, GROUP, 0)
    acc = tl.zeros((BT, BC), dtype=g_ptr.dtype.element_ty)
    # The loop runs to the longest segment of the block; shorter ones add exact zeros.
    for s in range(0, tl.max(length).to(tl.int32)):
        live = s < length
        if SORTED:
            e = tl.load(order_ptr + start + s, mask=live, other=0)
        else:
            e = start + s
        i = e[:, None] * C + cs[None, :]
        m = live[:, None] & c_ok[None, :]
        g = tl.load(g_ptr + i, mask=m, other=0)
        o = tl.load(out_ptr + i, mask=m, other=0)
        acc += tl.where(o > 0, g, 0)
    scale = tl.load(scale_ptr + cs, mask=c_ok, other=0)
    grad = scale[None, :] * acc
    if NEGATE:
        grad = -grad
    tl.store(grad_ptr + ts[:, None] * C + cs[None, :], grad, mask=t_ok[:, None] & c_ok[None, :])


def _check_idx(op: str, idx: torch.Tensor, B: int, S: int, K: int | None = None) -> None:
    _runtime.require(idx.dtype in (torch.int32, torch.int64), op, f"idx must be int64 or int32, got {idx.dtype}")
    ok = idx.dim() == 3 and tuple(idx.shape[:2]) == (B, S) and idx.shape[2] >= 1 and K in (None, idx.shape[2])
    _runtime.require(ok, op, f"idx must have shape (B, S, K) = ({B}, {S}, {'K' if K is None else K}) with K >= 1, "
                     f"got {tuple(idx.shape)}")


def _check_channels(op: str, dtype: torch.dtype, C: int, **vectors) -> None:
    for name, t in vectors.items():
        _runtime.require(t.dim() == 1 and t.shape[0] == C and t.dtype == dtype, op,
                         f"{name} must be a ({C},) tensor of dtype {dtype}, got {tuple(t.shape)} {t.dtype}")


@library.triton_kernel
def group_gather_forward(P: torch.Tensor, Q: torch.Tensor, idx: torch.Tensor, scale: torch.Tensor,
                         shift: torch.Tensor) -> torch.Tensor:
    op = "group_gather_forward (triton)"
    device = _runtime.dense(op, floats=("P", "Q"), P=P, Q=Q, idx=idx, scale=scale, shift=shift)
    _runtime.require(P.dim() == 3 and Q.dim() == 3, op, "P (B, N, C) and Q (B, S, C) must have 3 dimensions")
    (B, N, C), S = P.shape, Q.shape[1]
    _runtime.require(Q.dtype == P.dtype and Q.shape == (B, S, C), op,
                     f"Q {tuple(Q.shape)} {Q.dtype} does not fit P {tuple(P.shape)} {P.dtype}")
    _check_idx(op, idx, B, S)
    _check_channels(op, P.dtype, C, scale=scale, shift=shift)
    K = idx.shape[2]
    out = torch.empty(B, S, K, C, dtype=P.dtype, device=device)
    E = B * S * K
    if out.numel() == 0:
        return out
    bc = min(_runtime.pow2(C), _CHANNELS)
    with _runtime.on(device):
        _forward_kernel[(triton.cdiv(E, _ENTRIES), triton.cdiv(C, bc))](P, Q, idx, scale, shift, out, E, N, S, K, C,
                                                                        BE=_ENTRIES, BC=bc)
    return out


@library.triton_kernel
def group_gather_backward(grad_out: torch.Tensor, out: torch.Tensor, idx: torch.Tensor, scale: torch.Tensor,
                          num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    op = "group_gather_backward (triton)"
    device = _runtime.dense(op, floats=("grad_out",), grad_out=grad_out, out=out, idx=idx, scale=scale)
    _runtime.require(grad_out.dim() == 4 and out.shape == grad_out.shape and out.dtype == grad_out.dtype, op,
                     "out must have grad_out's shape (B, S, K, C) and dtype")
    _runtime.require(num_points >= 1, op, f"num_points must be >= 1, got {num_points}")
    B, S, K, C = grad_out.shape
    _check_idx(op, idx, B, S, K)
    _check_channels(op, grad_out.dtype, C, scale=scale)
    # Every row is written, rows that no entry gathered with 0 (times scale, as in the C++ kernels).
    grad_P = torch.empty(B, num_points, C, dtype=grad_out.dtype, device=device)
    grad_Q = torch.empty(B, S, C, dtype=grad_out.dtype, device=device)
    if grad_out.numel() == 0:
        return grad_P.zero_(), grad_Q
    # Entry (b, s, k) gathered row b * num_points + idx[b, s, k] of P.
    base = (torch.arange(B, device=device) * num_points).view(B, 1, 1)
    order, offsets = _scatter._segments((idx.long() + base).view(-1), B * num_points)
    bc = min(_runtime.pow2(C), _CHANNELS)
    with _runtime.on(device):
        _grad_kernel[(triton.cdiv(B * num_points, _TARGETS), triton.cdiv(C, bc))](
            grad_out, out, order, offsets, scale, grad_P, B * num_points, C, 0, SORTED=True, NEGATE=False,
            BT=_TARGETS, BC=bc)
        _grad_kernel[(triton.cdiv(B * S, _TARGETS), triton.cdiv(C, bc))](
            grad_out, out, order, offsets, scale, grad_Q, B * S, C, K, SORTED=False, NEGATE=True, BT=_TARGETS, BC=bc)
    return grad_P, grad_Q
