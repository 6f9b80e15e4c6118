"""Quantile flow alignment (FlowAM's `alignment="quantiles"`): per channel, the squared 1-D
Wasserstein-2 distance between a cloud's activations over its points and its class's
distribution, normalized by s = sigma + 1e-3 as the moment loss is (docs/design.md, "Faithfulness").

For one channel with values a_1..a_N sorted ascending, W2^2 = (1/N) sum_i (a_(i) - q(t_i))^2,
t_i = (i + 0.5) / N, q the class's quantile function. The class's quantile function is stored
at Q levels (j + 0.5) / Q and read at the N levels by linear interpolation (clamped to the
first and last stored level at the tails), so a flow of Q levels serves clouds of any size.
For two Gaussians W2^2 = (mu1 - mu2)^2 + (sd1 - sd2)^2, the moment loss: one flow weight means
the same on both alignments, and the quantile loss adds only what the two moments miss.

Backends: "cpu" (`_C.quantile_align_forward_cpu`: one sort per row, an AVX-512 bitonic network
or a radix sort, and the gradient written by the forward, so the backward is one multiply;
points-last activations are read in place) and "torch" (`torch.sort`, whose gradient goes back to each sorted value's point; the reference, and the path on a GPU, where
torch's sort is fast). "auto" takes "cpu" for CPU tensors when the extension is built.
"""
from __future__ import annotations

import torch

from . import backend as _backend
from . import checks, library
from .reference import SCALE_EPS


def quantile_levels(n: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The levels (i + 0.5) / n, i = 0..n-1, at which flows store quantiles and clouds are read."""
    if n < 1:
        raise ValueError(f"quantile_levels: need at least one level, got {n}")
    return (torch.arange(n, dtype=dtype, device=device) + 0.5) / n


def _cpu_only(backend):
    return None if backend == "cpu" else "the quantile ops have CPU kernels only (torch.sort serves GPUs)"


def resample_quantiles(q: torch.Tensor, n: int) -> torch.Tensor:
    """Quantile functions stored at Q levels (..., Q) read at n levels (..., n), by linear
    interpolation between stored levels, constant beyond the first and last one."""
    big_q = q.shape[-1]
    if big_q == n:
        return q
    # Position of each wanted level on the stored grid, in units of stored levels.
    pos = (quantile_levels(n, torch.float64, q.device) * big_q - 0.5).clamp(0, big_q - 1)
    lo = pos.floor().long().clamp(max=big_q - 1)
    hi = (lo + 1).clamp(max=big_q - 1)
    w = (pos - lo.to(torch.float64)).to(q.dtype)
    return q[..., lo] * (1 - w) + q[..., hi] * w


def sample_quantiles(acts: torch.Tensor, levels: int, backend: str = "auto") -> torch.Tensor:
    """Each sample's quantile function over its points, per channel: acts (B,C,N) -> (B,C,levels).
    Not differentiable (the flows are statistics of the data). backend "cpu" sorts each row
    with the quantile kernel's row sort, reading points-last memory in place (the demo
    PointNet's flows of two classes: 0.8 s against 3.1 s with torch.sort); "torch" (and "auto" on a GPU) with torch.sort. Sorting is exact, so
    both give the same values."""
    op = "sample_quantiles"
    checks.points(op, "acts", acts)
    b = _backend.resolve(backend, acts.device, op, _cpu_only)
    with torch.no_grad():
        if b == "torch":
            ordered = acts.sort(dim=-1).values
        else:
            a, points_last = checks.kernel_acts(acts)
            ordered = library.kernel("cpu", "quantile_sort")(a, points_last)
    return resample_quantiles(ordered, levels)


def _fake_forward(acts, labels, quantiles, inv_scale, points_last):
    return acts.new_empty(acts.shape[:1]), torch.empty_like(acts)


def _fake_sort(acts, points_last):
    return acts.new_empty(acts.transpose(1, 2).shape if points_last else acts.shape)


def _setup_context(ctx, inputs, output):
    # The forward wrote the gradient of each sample's loss (in acts' layout): the backward scales it.
    ctx.save_for_backward(output[1])


def _backward(kernels, ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    return grad * grad_loss.to(grad.dtype).view(-1, 1, 1), None, None, None, None


library.register("quantile_align_forward", _fake_forward, _setup_context, _backward)
library.register("quantile_sort", _fake_sort)


def quantile_align(acts: torch.Tensor, labels: torch.Tensor, quantiles: torch.Tensor, sigma: torch.Tensor,
                   backend: str = "auto") -> torch.Tensor:
    """The quantile flow alignment loss of each sample (FlowAM's `alignment="quantiles"`).

    The mean over channels of W2^2 / s^2, W2 the 1-D Wasserstein-2 distance between the
    channel's values over the sample's points and its class's distribution, s = sigma + 1e-3.
    Differentiable with respect to acts only (the flows are constants).

    Args:
        acts: Per-point activations (B, C, N).
        labels: Class of each sample (B,).
        quantiles: Each class's quantile function per channel (K, C, Q), at the levels
            (j + 0.5) / Q; read at the N levels of the points by linear interpolation.
        sigma: Each class's per-channel std (K, C).
        backend: "auto", "cpu" (the extension's kernel) or "torch" (the reference, and the
            path on a GPU).

    Returns:
        The loss of each sample (B,).

    Raises:
        TypeError: Inputs that are not tensors of the right kind.
        ValueError: Wrong or mismatched shapes, mismatched devices, NaN or Inf (in the flows
            of a class in labels), or a backend that is unknown or does not run here.
        RuntimeError: A backend that is not available in this installation.
    """
    op = "quantile_align"
    checks.points(op, "acts", acts)
    checks.points(op, "quantiles", quantiles, ndim=3, check_finite=False)
    checks.points(op, "sigma", sigma, ndim=2, check_finite=False)
    checks.same_device(op, acts=acts, labels=labels, quantiles=quantiles, sigma=sigma)
    if quantiles.shape[:2] != sigma.shape:
        raise ValueError(f"{op}: quantiles (K,C,Q) and sigma (K,C) disagree: {tuple(quantiles.shape)} vs "
                         f"{tuple(sigma.shape)}")
    labels = checks.class_flows(op, acts, labels, quantiles, sigma, "quantiles/sigma")
    b = _backend.resolve(backend, acts.device, op, _cpu_only)
    if b == "torch":
        target = resample_quantiles(quantiles.detach()[labels].to(acts.dtype), acts.shape[-1])
        s = (sigma.detach()[labels].to(acts.dtype) + SCALE_EPS).unsqueeze(-1)
        return ((acts.sort(dim=-1).values - target) / s).square().mean(dim=-1).mean(dim=-1)
    # The kernel reads each sample's class rows and interpolates the levels itself: no
    # (B, C, N) copy of the targets; and points-last activations as they are.
    a, points_last = checks.kernel_acts(acts)
    inv_s = (1.0 / (sigma.detach().to(a.dtype) + SCALE_EPS)).contiguous()
    return library.kernel("cpu", "quantile_align_forward")(a, labels.contiguous(),
                                                       quantiles.detach().to(a.dtype).contiguous(), inv_s,
                                                       points_last)[0]
