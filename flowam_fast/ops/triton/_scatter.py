"""Deterministic scatter-add for the backward passes that send gradients to indexed rows
(knn to its reference points, edge_max to each maximum's neighbour, linear_max to each
channel's argmax point).

Float atomics would add the contributions in a different order on every run. Instead the
entries are stably sorted by target (torch.sort on the device), and one program per block of
targets adds its entries in entry order: the same order the C++ loops use, on every run.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _runtime

_TARGETS = _runtime.block(64, 1024)  # targets per program


@triton.jit
def _segment_sum_kernel(out_ptr, order_ptr, offsets_ptr, coef_ptr, src_ptr, sub_ptr, T, W, ROW_DIV, ROW_MOD,
                        HAS_SUB: tl.constexpr, BT: tl.constexpr, BW: tl.constexpr):
    ts = tl.program_id(0) * BT + tl.arange(0, BT)
    ws = tl.program_id(1) * BW + tl.arange(0, BW)
    t_ok = ts < T
    tw_ok = t_ok[:, None] & (ws < W)[None, :]
    start = tl.load(offsets_ptr + ts, mask=t_ok, other=0)
    length = tl.load(offsets_ptr + ts + 1, mask=t_ok, other=0) - start
    acc = tl.zeros((BT, BW), dtype=out_ptr.dtype.element_ty)
    if HAS_SUB:
        sub = tl.load(sub_ptr + ts[:, None].to(tl.int64) * W + ws[None, :], mask=tw_ok, other=0)
    # The loop runs to the longest segment of the block; shorter ones add exact zeros.
    for s in range(0, tl.max(length).to(tl.int32)):
        live = s < length
        e = tl.load(order_ptr + start + s, mask=live, other=0)
        c = tl.load(coef_ptr + e, mask=live, other=0)
        row = (e // ROW_DIV) % ROW_MOD
        v = tl.load(src_ptr + row[:, None] * W + ws[None, :], mask=live[:, None] & tw_ok, other=0)
        if HAS_SUB:
            v = v - sub
        acc += c[:, None] * v
    tl.store(out_ptr + ts[:, None].to(tl.int64) * W + ws[None, :], acc, mask=tw_ok)


def segment_sum(targets: torch.Tensor, num_targets: int, coef: torch.Tensor, src: torch.Tensor,
                row_div: int = 1, sub: torch.Tensor | None = None) -> torch.Tensor:
    """out[t] = sum over entries e with targets[e] == t, in increasing e, of
    coef[e] * (src[(e // row_div) % len(src)] - sub[t]) (without `- sub[t]` when sub is None).

    targets, coef: (E,) (int64 and float), src: (R, W), sub: (num_targets, W); all on one
    device, contiguous. Returns (num_targets, W) in coef's dtype; targets without entries get 0.
    """
    order, offsets = _segments(targets, num_targets)
    width = src.shape[1]
    out = torch.empty(num_targets, width, dtype=coef.dtype, device=coef.device)
    bw = min(_runtime.pow2(width), 64)
    grid = (triton.cdiv(num_targets, _TARGETS), triton.cdiv(width, bw))
    with _runtime.on(coef.device):
        _segment_sum_kernel[grid](out, order, offsets, coef, src, src if sub is None else sub, num_targets, width,
                                  row_div, src.shape[0], HAS_SUB=sub is not None, BT=_TARGETS, BW=bw)
    return out


def _segments(targets: torch.Tensor, num_targets: int):
    """The entries grouped by target (a stable sort keeps each group in entry order) and the
    start of each target's group (num_targets + 1 offsets)."""
    sorted_targets, order = torch.sort(targets, stable=True)
    bounds = torch.arange(num_targets + 1, device=targets.device, dtype=targets.dtype)
    return order, torch.searchsorted(sorted_targets, bounds)
