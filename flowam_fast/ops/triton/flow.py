"""Triton activation-flow kernels: per-sample moments over the points, their per-class merge
(flow_stats), and the alignment loss and its gradient (flow_align).

Everything is accumulated in float64, as on the CPU: the statistics sum up to millions of
points whose mean can dwarf their spread, and the gradient divides by per-channel scales.
(The H200 runs float64 at half its fp32 rate; these kernels are bound by reading the
activations once or twice anyway.) Moments take two passes over each (sample, channel)
row, the mean and then the squared deviations, exact to rounding where sum and sum of
squares would cancel. Both layouts, (B, C, N) and points-last (B, N, C), are read in place
through strides. The class merge is Chan's parallel update over the samples in batch
order, as in the C++ kernel; the loss's final mean over channels is one torch reduction of
the (B, C) terms.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import library, reference
from . import _runtime

_CHANNELS = _runtime.block(32, 64)
_POINTS = _runtime.block(64, 128)


@triton.jit
def _align_errors(mean, sd, mu, sigma, SCALE_EPS: tl.constexpr):
    """(m - mu) / s, (sd - sigma) / s and 1 / s, s = sigma + SCALE_EPS (the flow_math.h formulas)."""
    inv_s = 1.0 / (sigma + SCALE_EPS)
    return (mean - mu) * inv_s, (sd - sigma) * inv_s, inv_s


@triton.jit
def _moments_kernel(acts_ptr, labels_ptr, mu_ptr, sigma_ptr, mean_ptr, second_ptr, term_ptr, C, N, stride_c,
                    stride_n, ALIGN: tl.constexpr, STD_EPS: tl.constexpr, SCALE_EPS: tl.constexpr,
                    BC: tl.constexpr, BN: tl.constexpr):
    """Per (sample, channel): the mean and, for flow_stats, M2 or, for flow_align, the std
    and the alignment term."""
    b = tl.program_id(1).to(tl.int64)
    cs = tl.program_id(0) * BC + tl.arange(0, BC)
    c_ok = cs < C
    ns = tl.arange(0, BN)
    tile = acts_ptr + b * C * N + cs[:, None] * stride_c + ns[None, :] * stride_n
    total = tl.zeros((BC,), dtype=tl.float64)
    for n0 in range(0, N, BN):
        ok = c_ok[:, None] & (n0 + ns < N)[None, :]
        total += tl.sum(tl.load(tile + n0 * stride_n, mask=ok, other=0).to(tl.float64), axis=1)
    mean = total / N
    m2 = tl.zeros((BC,), dtype=tl.float64)
    for n0 in range(0, N, BN):
        ok = c_ok[:, None] & (n0 + ns < N)[None, :]
        dev = tl.where(ok, tl.load(tile + n0 * stride_n, mask=ok, other=0).to(tl.float64) - mean[:, None], 0.0)
        m2 += tl.sum(dev * dev, axis=1)
    at = b * C + cs
    tl.store(mean_ptr + at, mean, mask=c_ok)
    if ALIGN:
        sd = tl.sqrt(m2 / N + STD_EPS)
        flow = tl.load(labels_ptr + b) * C + cs
        em, es, _ = _align_errors(mean, sd, tl.load(mu_ptr + flow, mask=c_ok, other=0),
                                  tl.load(sigma_ptr + flow, mask=c_ok, other=1), SCALE_EPS)
        tl.store(second_ptr + at, sd, mask=c_ok)
        tl.store(term_ptr + at, em * em + es * es, mask=c_ok)
    else:
        tl.store(second_ptr + at, m2, mask=c_ok)


@triton.jit
def _class_merge_kernel(s_mean_ptr, s_m2_ptr, labels_ptr, count_ptr, mean_ptr, m2_ptr, B, C, N, BC: tl.constexpr):
    """Class program_id(0) folds its samples' moments in batch order (Chan et al.)."""
    k = tl.program_id(0)
    cs = tl.program_id(1) * BC + tl.arange(0, BC)
    c_ok = cs < C
    mean = tl.zeros((BC,), dtype=tl.float64)
    m2 = tl.zeros((BC,), dtype=tl.float64)
    seen = tl.zeros((BC,), dtype=tl.float64)  # points so far, the same in every lane
    for b in range(0, B):
        hit = tl.load(labels_ptr + b) == k
        n_b = tl.where(hit, N, 0).to(tl.float64)
        n = seen + n_b
        w_b = n_b / tl.maximum(n, 1.0)
        delta = tl.load(s_mean_ptr + b * C + cs, mask=c_ok, other=0) - mean
        mean += delta * w_b
        m2 += tl.where(hit, tl.load(s_m2_ptr + b * C + cs, mask=c_ok, other=0) + delta * delta * seen * w_b, 0.0)
        seen = n
    tl.store(mean_ptr + k * C + cs, mean, mask=c_ok)
    tl.store(m2_ptr + k * C + cs, m2, mask=c_ok)
    tl.store(count_ptr + k, tl.max(seen, axis=0).to(tl.int64), mask=tl.program_id(1) == 0)


@triton.jit
def _align_grad_kernel(g_ptr, acts_ptr, labels_ptr, mu_ptr, sigma_ptr, mean_ptr, std_ptr, grad_ptr, C, N, stride_c,
                       stride_n, SCALE_EPS: tl.constexpr, BC: tl.constexpr, BN: tl.constexpr):
    """d loss / d a = alpha + beta (a - m) per (sample, channel): d m / d a = 1 / N and
    d sd / d a = (a - m) / (N sd). g_ptr holds each sample's upstream gradient over C N."""
    b = tl.program_id(2).to(tl.int64)
    cs = tl.program_id(1) * BC + tl.arange(0, BC)
    ns = tl.program_id(0) * BN + tl.arange(0, BN)
    c_ok = cs < C
    at = b * C + cs
    flow = tl.load(labels_ptr + b) * C + cs
    mean = tl.load(mean_ptr + at, mask=c_ok, other=0)
    sd = tl.load(std_ptr + at, mask=c_ok, other=1)
    em, es, inv_s = _align_errors(mean, sd, tl.load(mu_ptr + flow, mask=c_ok, other=0),
                                  tl.load(sigma_ptr + flow, mask=c_ok, other=1), SCALE_EPS)
    gc = tl.load(g_ptr + b)
    alpha = gc * (2.0 * em * inv_s)
    beta = gc * (2.0 * es * inv_s) / sd
    ok = c_ok[:, None] & (ns < N)[None, :]
    at_a = b * C * N + cs[:, None] * stride_c + ns[None, :] * stride_n
    a = tl.load(acts_ptr + at_a, mask=ok, other=0).to(tl.float64)
    grad = alpha[:, None] + beta[:, None] * (a - mean[:, None])
    tl.store(grad_ptr + at_a, grad.to(grad_ptr.dtype.element_ty), mask=ok)


def _layout(op, acts, labels, points_last):
    """(device, B, C, N, stride_c, stride_n) of acts: (B, C, N), or (B, N, C) when points_last."""
    device = _runtime.dense(op, floats=("acts",), acts=acts, labels=labels)
    _runtime.require(acts.dim() == 3, op, f"acts must have 3 dimensions, got shape {tuple(acts.shape)}")
    _runtime.require(labels.dim() == 1 and labels.dtype == torch.int64 and labels.shape[0] == acts.shape[0], op,
                     "labels must be int64 with one entry per sample")
    B, C, N = (acts.shape[0], acts.shape[2], acts.shape[1]) if points_last else acts.shape
    _runtime.require(N >= 1, op, f"acts has no points (shape {tuple(acts.shape)})")
    return device, B, C, N, (1, C) if points_last else (N, 1)


def _flow(op, device, C, mu, sigma):
    _runtime.require(mu.dim() == 2 and mu.shape == sigma.shape and mu.shape[1] == C, op,
                     f"mu and sigma must have one shape (K, {C}), got {tuple(mu.shape)} and {tuple(sigma.shape)}")
    return (t.to(device=device, dtype=torch.float64).contiguous() for t in (mu, sigma))


@library.triton_kernel
def flow_stats(acts: torch.Tensor, labels: torch.Tensor, num_classes: int,
               points_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    op = "flow_stats (triton)"
    device, B, C, N, strides = _layout(op, acts, labels, points_last)
    _runtime.require(num_classes >= 1, op, f"num_classes must be positive, got {num_classes}")
    s_mean = torch.empty(B, C, dtype=torch.float64, device=device)
    s_m2 = torch.empty_like(s_mean)
    count = torch.empty(num_classes, dtype=torch.int64, device=device)
    mean = torch.empty(num_classes, C, dtype=torch.float64, device=device)
    m2 = torch.empty_like(mean)
    blocks = triton.cdiv(C, _CHANNELS)
    with _runtime.on(device):
        # mu, sigma and the terms are not read without ALIGN: any pointers do.
        _moments_kernel[(blocks, B)](acts, labels, s_mean, s_mean, s_mean, s_m2, s_m2, C, N, *strides, ALIGN=False,
                                     STD_EPS=reference.STD_EPS, SCALE_EPS=reference.SCALE_EPS, BC=_CHANNELS,
                                     BN=_POINTS)
        _class_merge_kernel[(num_classes, blocks)](s_mean, s_m2, labels, count, mean, m2, B, C, N, BC=_CHANNELS)
    return count, mean, m2


@library.triton_kernel
def flow_align_forward(acts: torch.Tensor, labels: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
                       points_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    op = "flow_align_forward (triton)"
    device, B, C, N, strides = _layout(op, acts, labels, points_last)
    mu, sigma = _flow(op, device, C, mu, sigma)
    mean = torch.empty(B, C, dtype=torch.float64, device=device)
    std = torch.empty_like(mean)
    terms = torch.empty_like(mean)
    with _runtime.on(device):
        _moments_kernel[(triton.cdiv(C, _CHANNELS), B)](acts, labels, mu, sigma, mean, std, terms, C, N, *strides,
                                                        ALIGN=True, STD_EPS=reference.STD_EPS,
                                                        SCALE_EPS=reference.SCALE_EPS, BC=_CHANNELS, BN=_POINTS)
    return (terms.sum(dim=1) / C).to(acts.dtype), mean, std


@library.triton_kernel
def flow_align_backward(grad_loss: torch.Tensor, acts: torch.Tensor, labels: torch.Tensor, mu: torch.Tensor,
                        sigma: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                        points_last: bool = False) -> torch.Tensor:
    op = "flow_align_backward (triton)"
    device, B, C, N, strides = _layout(op, acts, labels, points_last)
    mu, sigma = _flow(op, device, C, mu, sigma)
    _runtime.dense(op, mean=mean, std=std, acts=acts)
    _runtime.require(mean.shape == std.shape == (B, C) and mean.dtype == std.dtype == torch.float64, op,
                     f"mean and std must be float64 of shape ({B}, {C}), as the forward returns them")
    _runtime.require(grad_loss.shape == (B,), op, f"grad_loss must have shape ({B},), got {tuple(grad_loss.shape)}")
    # Divided here, in float64 as the CPU kernel does: C N may overflow int32 in the kernel.
    g = (grad_loss.to(device=device, dtype=torch.float64) / (C * N)).contiguous()
    grad = torch.empty_like(acts)
    grid = (triton.cdiv(N, _POINTS), triton.cdiv(C, _CHANNELS), B)
    with _runtime.on(device):
        _align_grad_kernel[grid](g, acts, labels, mu, sigma, mean, std, grad, C, N, *strides,
                                 SCALE_EPS=reference.SCALE_EPS, BC=_CHANNELS, BN=_POINTS)
    return grad
