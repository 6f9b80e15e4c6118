"""Triton linear_max: out[b,c] = max_n act(scale[c] * (W x[b,n])[c] + shift[c]).

Forward: one program per (sample, block of channels) computes (points x channels) tiles of
W x with tl.dot in IEEE precision (TF32 would move the maxima by 1e-3), applies the affine map
and the LeakyReLU in registers and folds each tile into a running max with its argmax; the
(B, N, Cout) activation is never written. Points arrive in increasing order and only a
strictly larger value replaces the incumbent, so ties keep the smallest point index.

Backward (sparse, as on the CPU): the pre-activation at each channel's argmax point is
recomputed, giving d = g * act'(z); the parameter gradients reduce d over the batch in batch
order, and grad_x gets d * scale[c] * W[c] at each argmax point through the deterministic
scatter, in channel order.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import library
from . import _runtime, _scatter

_CHANNELS = _runtime.block(32, 128)  # channels per backward program
_INPUTS = 64  # input channels per backward program


@_runtime.autotune(
    gpu_configs=[triton.Config({"BN": 64, "BC": 64, "BK": 32}, num_warps=4),
                 triton.Config({"BN": 128, "BC": 64, "BK": 32}, num_warps=8),
                 triton.Config({"BN": 64, "BC": 128, "BK": 32}, num_warps=8)],
    interpreter_config=triton.Config({"BN": 32, "BC": 32, "BK": 16}),
    key=["N", "CIN", "COUT"],
)
@triton.jit
def _forward_kernel(x_ptr, w_ptr, scale_ptr, shift_ptr, out_ptr, arg_ptr, N, CIN, COUT, SLOPE: tl.constexpr,
                    BN: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    # SLOPE is a constexpr (one compiled variant per value; models use one or two): a runtime
    # float argument is rounded to fp32 on the GPU yet stays exact under the interpreter, so
    # float64 results would differ between the two unseen.
    b = tl.program_id(1).to(tl.int64)
    cs = tl.program_id(0) * BC + tl.arange(0, BC)
    c_ok = cs < COUT
    x_b = x_ptr + b * N * CIN
    scale = tl.load(scale_ptr + cs, mask=c_ok, other=0)
    shift = tl.load(shift_ptr + cs, mask=c_ok, other=0)
    best = tl.full((BC,), float("-inf"), dtype=x_ptr.dtype.element_ty)
    arg = tl.zeros((BC,), dtype=tl.int32)
    for n0 in range(0, N, BN):
        ns = n0 + tl.arange(0, BN)
        n_ok = ns < N
        acc = tl.zeros((BN, BC), dtype=x_ptr.dtype.element_ty)
        for k0 in range(0, CIN, BK):
            ks = k0 + tl.arange(0, BK)
            k_ok = ks < CIN
            x = tl.load(x_b + ns[:, None] * CIN + ks[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0)
            w = tl.load(w_ptr + cs[None, :] * CIN + ks[:, None], mask=k_ok[:, None] & c_ok[None, :], other=0)
            acc = tl.dot(x, w, acc, input_precision="ieee")
        z = acc * scale[None, :] + shift[None, :]
        a = tl.where(n_ok[:, None], tl.where(z > 0, z, z * SLOPE), float("-inf"))
        m = tl.max(a, axis=0)
        first = tl.min(tl.where(a == m[None, :], ns[:, None], N), axis=0)
        take = m > best
        best = tl.where(take, m, best)
        arg = tl.where(take, first, arg)
    tl.store(out_ptr + b * COUT + cs, best, mask=c_ok)
    tl.store(arg_ptr + b * COUT + cs, arg.to(tl.int64), mask=c_ok)


@triton.jit
def _preact_grad_kernel(g_ptr, x_ptr, w_ptr, scale_ptr, shift_ptr, arg_ptr, dz_ptr, wx_ptr, N, CIN, COUT,
                        SLOPE: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    """d = g * act'(z) and W x at each (sample, channel)'s argmax point."""
    b = tl.program_id(1).to(tl.int64)
    cs = tl.program_id(0) * BC + tl.arange(0, BC)
    c_ok = cs < COUT
    n = tl.load(arg_ptr + b * COUT + cs, mask=c_ok, other=0)
    wx = tl.zeros((BC,), dtype=x_ptr.dtype.element_ty)
    for k0 in range(0, CIN, BK):
        ks = k0 + tl.arange(0, BK)
        ok = c_ok[:, None] & (ks < CIN)[None, :]
        x = tl.load(x_ptr + (b * N + n[:, None]) * CIN + ks[None, :], mask=ok, other=0)
        w = tl.load(w_ptr + cs[:, None] * CIN + ks[None, :], mask=ok, other=0)
        wx += tl.sum(x * w, axis=1)
    z = wx * tl.load(scale_ptr + cs, mask=c_ok, other=0) + tl.load(shift_ptr + cs, mask=c_ok, other=0)
    # At z == 0 the derivative is the slope, torch's leaky_relu convention.
    g = tl.load(g_ptr + b * COUT + cs, mask=c_ok, other=0)
    d = tl.where(z > 0, g, g * SLOPE)
    tl.store(dz_ptr + b * COUT + cs, d, mask=c_ok)
    tl.store(wx_ptr + b * COUT + cs, wx, mask=c_ok)


@triton.jit
def _param_grad_kernel(dz_ptr, wx_ptr, x_ptr, scale_ptr, arg_ptr, gw_ptr, gs_ptr, gh_ptr, B, N, CIN, COUT,
                       BC: tl.constexpr, BK: tl.constexpr):
    """grad_weight, grad_scale, grad_shift: sums over the batch, in batch order."""
    cs = tl.program_id(0) * BC + tl.arange(0, BC)
    ks = tl.program_id(1) * BK + tl.arange(0, BK)
    c_ok = cs < COUT
    ok = c_ok[:, None] & (ks < CIN)[None, :]
    scale = tl.load(scale_ptr + cs, mask=c_ok, other=0)
    dtype = x_ptr.dtype.element_ty
    gw = tl.zeros((BC, BK), dtype=dtype)
    gs = tl.zeros((BC,), dtype=dtype)
    gh = tl.zeros((BC,), dtype=dtype)
    for b in range(0, B):
        at = b * COUT + cs
        d = tl.load(dz_ptr + at, mask=c_ok, other=0)
        n = tl.load(arg_ptr + at, mask=c_ok, other=0)
        x = tl.load(x_ptr + (b * N + n[:, None]) * CIN + ks[None, :], mask=ok, other=0)
        gw += (d * scale)[:, None] * x
        gs += d * tl.load(wx_ptr + at, mask=c_ok, other=0)
        gh += d
    tl.store(gw_ptr + cs[:, None] * CIN + ks[None, :], gw, mask=ok)
    if tl.program_id(1) == 0:
        tl.store(gs_ptr + cs, gs, mask=c_ok)
        tl.store(gh_ptr + cs, gh, mask=c_ok)


def _check(op, x, weight, scale, shift):
    device = _runtime.dense(op, floats=("x", "weight", "scale", "shift"), x=x, weight=weight, scale=scale, shift=shift)
    _runtime.require(x.dim() == 3 and weight.dim() == 2 and scale.dim() == 1 and shift.dim() == 1, op,
                     "x (B, N, Cin), weight (Cout, Cin), scale and shift (Cout) expected")
    _runtime.require(weight.dtype == scale.dtype == shift.dtype == x.dtype, op,
                     f"weight, scale and shift must have the dtype of x ({x.dtype})")
    _runtime.require(weight.shape[1] == x.shape[2] and scale.shape[0] == shift.shape[0] == weight.shape[0], op,
                     f"shapes do not match: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                     f"scale {tuple(scale.shape)}, shift {tuple(shift.shape)}")
    _runtime.require(x.shape[1] >= 1, op, f"x has no points (shape {tuple(x.shape)})")
    return device


@library.triton_kernel
def linear_max_forward(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                       negative_slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    device = _check("linear_max_forward (triton)", x, weight, scale, shift)
    (B, N, cin), cout = x.shape, weight.shape[0]
    out = torch.empty(B, cout, dtype=x.dtype, device=device)
    argmax = torch.empty(B, cout, dtype=torch.int64, device=device)
    with _runtime.on(device):
        _forward_kernel[lambda meta: (triton.cdiv(cout, meta["BC"]), B)](
            x, weight, scale, shift, out, argmax, N, cin, cout, SLOPE=float(negative_slope))
    return out, argmax


@library.triton_kernel
def linear_max_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                        shift: torch.Tensor, argmax: torch.Tensor,
                        negative_slope: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    op = "linear_max_backward (triton)"
    device = _check(op, x, weight, scale, shift)
    (B, N, cin), cout = x.shape, weight.shape[0]
    _runtime.dense(op, floats=("grad_out",), grad_out=grad_out, argmax=argmax, x=x)
    _runtime.require(grad_out.shape == argmax.shape == (B, cout) and grad_out.dtype == x.dtype
                     and argmax.dtype == torch.int64, op,
                     f"grad_out ({x.dtype}) and argmax (int64) must have shape ({B}, {cout})")
    dz = torch.empty(B, cout, dtype=x.dtype, device=device)
    wx = torch.empty_like(dz)
    grad_w = torch.empty_like(weight)
    grad_scale, grad_shift = torch.empty_like(scale), torch.empty_like(shift)
    bk = min(_runtime.pow2(cin), _INPUTS)
    with _runtime.on(device):
        _preact_grad_kernel[(triton.cdiv(cout, _CHANNELS), B)](grad_out, x, weight, scale, shift, argmax, dz, wx,
                                                               N, cin, cout, SLOPE=float(negative_slope),
                                                               BC=_CHANNELS, BK=bk)
        _param_grad_kernel[(triton.cdiv(cout, _CHANNELS), triton.cdiv(cin, bk))](
            dz, wx, x, scale, argmax, grad_w, grad_scale, grad_shift, B, N, cin, cout, BC=_CHANNELS, BK=bk)
    # Entry (b, c) sends dz * scale[c] * W[c] to row argmax[b, c] of sample b.
    targets = (argmax + N * torch.arange(B, device=device).view(B, 1)).view(-1)
    grad_x = _scatter.segment_sum(targets, B * N, (dz * scale).view(-1), weight)
    return grad_x.view(B, N, cin), grad_w, grad_scale, grad_shift
