"""PointNet++ set abstraction on the fused kernels: the first shared layer as a grouped gather
(`group_gather`) and the last shared layer with the max over each group (`group_linear_max`).

The first layer's input for neighbour j of centroid i is [x_j - x_i, f_j], so
W [x_j - x_i, f_j] = (W_x x_j + W_f f_j) - W_x x_i = P_j - Q_i: P is one GEMM over the input
points, Q one over the centroids, and what remains per (centroid, neighbour) is a gather, a
difference, the folded BatchNorm and the ReLU, fused here. The last layer with the max over the
K neighbours is `linear_max` over B * S groups of K points.
"""
from __future__ import annotations

import torch

from . import backend as _backend
from . import checks, library, reference
from .linear_max import checked_linear_max


def _fake_forward(P, Q, idx, scale, shift):
    return P.new_empty((*idx.shape, P.shape[2]))


def _fake_backward(grad_out, out, idx, scale, num_points):
    B, S, _, C = grad_out.shape
    return grad_out.new_empty((B, num_points, C)), grad_out.new_empty((B, S, C))


def _setup_context(ctx, inputs, output):
    P, _, idx, scale, _ = inputs
    # The output alone tells the backward where the ReLU passed (out > 0).
    ctx.save_for_backward(output, idx, scale)
    ctx.num_points = P.shape[1]


def _backward(kernels, ctx, grad_out):
    out, idx, scale = ctx.saved_tensors
    grad_P, grad_Q = kernels.group_gather_backward(grad_out.contiguous(), out, idx, scale, ctx.num_points)
    return grad_P, grad_Q, None, None, None


library.register("group_gather_forward", _fake_forward, _setup_context, _backward)
library.register("group_gather_backward", _fake_backward)


def group_gather(P: torch.Tensor, Q: torch.Tensor, idx: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                 backend: str = "auto") -> torch.Tensor:
    """The first shared layer of a set abstraction over its groups, from per-point and
    per-centroid products: out[b, s, k, c] = relu(scale[c] * (P[b, idx[b, s, k], c] - Q[b, s, c]) + shift[c]).

    The gradient reaches P (summed over every entry that gathered a row; repeated indices, as
    the ball query's padding makes, add up) and Q (minus the sum over the group's K entries),
    in a fixed order: runs are bit-identical. Where the ReLU's input is exactly 0 its derivative
    is 0, as in torch's relu. scale and shift get no gradient: they are a frozen model's folded
    BatchNorm, so they must not require one. Computed in float64 if any input is float64, else
    float32.

    Args:
        P: Per-point products (B, N, C): W_x x_j + W_f f_j.
        Q: Per-centroid products (B, S, C): W_x x_i.
        idx: The K neighbours of each centroid (B, S, K), int64 or int32, values in [0, N), K >= 1.
        scale: Per-channel scale (C,), the folded BatchNorm's.
        shift: Per-channel shift (C,).
        backend: "auto" (the fastest kernel backend for the inputs' device), "cpu",
            "cuda", "triton" or "torch" (the pure-PyTorch reference).

    Returns:
        The grouped activations (B, S, K, C).

    Raises:
        TypeError: An input that is not a tensor of the right kind (floating point; idx int32 or int64).
        ValueError: Wrong shapes, mismatched devices, NaN or Inf, indices out of range, scale or shift that
            require grad, or a backend that is unknown or does not run on the inputs' device.
        RuntimeError: A backend that is not available in this installation.
    """
    op = "group_gather"
    checks.points(op, "P", P)
    checks.points(op, "Q", Q)
    checks.index(op, "idx", idx, ndim=3, upper=P.shape[1])
    checks.points(op, "scale", scale, ndim=1)
    checks.points(op, "shift", shift, ndim=1)
    checks.same_device(op, P=P, Q=Q, idx=idx, scale=scale, shift=shift)
    checks.dim_equal(op, "batch sizes of P and Q", P.shape[0], Q.shape[0])
    checks.dim_equal(op, "batch sizes of P and idx", P.shape[0], idx.shape[0])
    checks.dim_equal(op, "centroids (S) of Q and idx", Q.shape[1], idx.shape[1])
    checks.dim_equal(op, "channels of P and Q", P.shape[2], Q.shape[2])
    checks.dim_equal(op, "scale length and channels of P", scale.shape[0], P.shape[2])
    checks.dim_equal(op, "shift length and channels of P", shift.shape[0], P.shape[2])
    if idx.shape[2] < 1:
        raise ValueError(f"{op}: idx needs at least one neighbour per centroid (K >= 1), got shape {tuple(idx.shape)}")
    if torch.is_grad_enabled() and (scale.requires_grad or shift.requires_grad):
        raise ValueError(f"{op}: scale and shift require grad, but group_gather has no gradient for them (they are "
                         "a frozen model's folded BatchNorm): freeze the model's parameters, or pass "
                         "scale.detach() and shift.detach()")
    b = _backend.resolve(backend, P.device, op)
    if b == "torch":
        return reference.group_gather(P, Q, idx, scale, shift)
    dtype = torch.float64 if torch.float64 in (P.dtype, Q.dtype, scale.dtype, shift.dtype) else torch.float32
    # The casts and copies are differentiable, so gradients reach the caller's tensors.
    P, Q, scale, shift = (t.to(dtype).contiguous() for t in (P, Q, scale, shift))
    return library.kernel(b, "group_gather_forward")(P, Q, idx.contiguous(), scale, shift)


def group_linear_max(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None = None,
                     shift: torch.Tensor | None = None, negative_slope: float = 0.0,
                     backend: str = "auto") -> torch.Tensor:
    """The last shared layer of a set abstraction and the max over each group, fused:
    out[b, s, c] = max_k act(scale[c] * (weight @ x[b, s, k])[c] + shift[c]).

    `linear_max` over the B * S groups of K points (x viewed as (B * S, K, Cin), without a copy
    when x is contiguous), with its rules: the gradient reaches only each channel's argmax
    point of each group (the smallest k among equal values), and x, weight, scale and shift
    all get one.

    Args:
        x: Grouped per-point inputs (B, S, K, Cin).
        weight: The linear map (Cout, Cin).
        scale: Per-channel scale (Cout,); None: ones.
        shift: Per-channel shift (Cout,); None: zeros.
        negative_slope: Slope of the LeakyReLU below 0 (0: ReLU, the set abstraction's).
        backend: "auto" (the fastest kernel backend for the inputs' device), "cpu",
            "cuda", "triton" or "torch" (the pure-PyTorch reference).

    Returns:
        The maxima over each group (B, S, Cout).

    Raises:
        TypeError: An input that is not a tensor of the right kind (floating point; negative_slope a float).
        ValueError: Wrong shapes, mismatched devices, NaN or Inf, a non-finite negative_slope, or a backend that is
            unknown or does not run on the inputs' device.
        RuntimeError: A backend that is not available in this installation.
    """
    op = "group_linear_max"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{op}: x must have 4 dimensions (B, S, K, Cin), got shape {tuple(x.shape)}")
    B, S, K, cin = x.shape
    out = checked_linear_max(op, x.reshape(B * S, K, cin), weight, scale, shift, negative_slope, backend)
    return out.view(B, S, out.shape[-1])
