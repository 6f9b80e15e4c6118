"""linear_max: a per-point linear layer, its folded BatchNorm affine map, a LeakyReLU and the
max over points, fused (PointNet's global feature), with a sparse backward pass."""
from __future__ import annotations

import math

import torch

from . import backend as _backend
from . import checks, library, reference


def _fake_forward(x, weight, scale, shift, negative_slope):
    shape = (x.shape[0], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


def _fake_backward(grad_out, x, weight, scale, shift, argmax, negative_slope):
    return tuple(torch.empty_like(t) for t in (x, weight, scale, shift))


def _setup_context(ctx, inputs, output):
    x, weight, scale, shift, negative_slope = inputs
    ctx.save_for_backward(x, weight, scale, shift, output[1])
    ctx.negative_slope = negative_slope


def _backward(kernels, ctx, grad_out, _grad_argmax):
    x, weight, scale, shift, argmax = ctx.saved_tensors
    grads = kernels.linear_max_backward(grad_out.contiguous(), x, weight, scale, shift, argmax, ctx.negative_slope)
    return (*grads, None)


library.register("linear_max_forward", _fake_forward, _setup_context, _backward)
library.register("linear_max_backward", _fake_backward)


def _vector(op: str, name: str, t, size: int, like: torch.Tensor, fill: float) -> torch.Tensor:
    if t is None:
        return torch.full((size,), fill, dtype=like.dtype, device=like.device)
    checks.points(op, name, t, ndim=1)
    checks.dim_equal(op, f"{name} length and weight.shape[0]", t.shape[0], size)
    return t


def linear_max(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None = None,
               shift: torch.Tensor | None = None, negative_slope: float = 0.0,
               backend: str = "auto") -> torch.Tensor:
    """A per-point linear layer, its affine map, a LeakyReLU and the max over points, fused.

    out[b, c] = max_n act(scale[c] * (weight @ x[b, n])[c] + shift[c]), act the LeakyReLU
    with `negative_slope` (PointNet's global feature, with its BatchNorm folded into scale
    and shift). The (B, N, Cout) activation is never built. The gradient (to x, weight, scale and shift)
    reaches only each channel's argmax point; on ties the smallest point index wins, and at a
    pre-activation of exactly 0 the activation's derivative is `negative_slope`, as in
    torch's leaky_relu. Computed in float64 if any input is float64, else float32.

    Args:
        x: Per-point inputs (B, N, Cin).
        weight: The linear map (Cout, Cin).
        scale: Per-channel scale (Cout,); None: ones.
        shift: Per-channel shift (Cout,); None: zeros.
        negative_slope: Slope of the LeakyReLU below 0 (0: ReLU, 1: identity).
        backend: "auto" (the fastest kernel backend for the inputs' device), "cpu",
            "cuda", "triton" or "torch" (the pure-PyTorch reference).

    Returns:
        The maxima over points (B, Cout).

    Raises:
        TypeError: An input that is not a tensor of the right kind (floating point; negative_slope a float).
        ValueError: Wrong shapes, mismatched devices, NaN or Inf, a non-finite negative_slope, or a backend that is
            unknown or does not run on the inputs' device.
        RuntimeError: A backend that is not available in this installation.
    """
    return checked_linear_max("linear_max", x, weight, scale, shift, negative_slope, backend)


def checked_linear_max(op: str, x, weight, scale, shift, negative_slope, backend: str) -> torch.Tensor:
    """`linear_max` with its checks' messages under the name `op` (for the front ends built on it)."""
    checks.points(op, "x", x)
    checks.points(op, "weight", weight, ndim=2)
    checks.dim_equal(op, "input channels of x and weight", x.shape[2], weight.shape[1])
    cout = weight.shape[0]
    scale = _vector(op, "scale", scale, cout, weight, 1.0)
    shift = _vector(op, "shift", shift, cout, weight, 0.0)
    checks.same_device(op, x=x, weight=weight, scale=scale, shift=shift)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise TypeError(f"{op}: negative_slope must be a float, got {type(negative_slope).__name__}")
    negative_slope = float(negative_slope)
    if not math.isfinite(negative_slope):
        raise ValueError(f"{op}: negative_slope must be finite, got {negative_slope}")
    b = _backend.resolve(backend, x.device, op)
    if b == "torch":
        return reference.linear_max(x, weight, scale, shift, negative_slope)
    dtype = torch.float64 if torch.float64 in (x.dtype, weight.dtype, scale.dtype, shift.dtype) else torch.float32
    # The casts and copies are differentiable, so gradients reach the caller's tensors.
    x, weight, scale, shift = (t.to(dtype).contiguous() for t in (x, weight, scale, shift))
    return library.kernel(b, "linear_max_forward")(x, weight, scale, shift, negative_slope)[0]
