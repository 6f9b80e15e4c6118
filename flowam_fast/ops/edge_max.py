"""edge_max: gather-max over kNN neighbours (EdgeConv's max without the edge tensor)."""
from __future__ import annotations

import torch

from . import backend as _backend
from . import checks, library, reference


def _fake_forward(feat, idx):
    shape = (feat.shape[0], idx.shape[1], feat.shape[2])
    return feat.new_empty(shape), feat.new_empty(shape, dtype=torch.int64)


def _fake_backward(grad_out, argmax, num_points):
    return grad_out.new_empty((grad_out.shape[0], num_points, grad_out.shape[2]))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.num_points = inputs[0].shape[1]


def _backward(kernels, ctx, grad_out, _grad_argmax):
    (argmax,) = ctx.saved_tensors
    return kernels.edge_max_backward(grad_out.contiguous(), argmax, ctx.num_points), None


library.register("edge_max_forward", _fake_forward, _setup_context, _backward)
library.register("edge_max_backward", _fake_backward)


def edge_max(feat: torch.Tensor, idx: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Gather-max over neighbours: out[b, i, c] = max_j feat[b, idx[b, i, j], c].

    EdgeConv's max without the edge tensor. The gradient goes to each maximum's one neighbour
    (the first in idx order among equal values).

    Args:
        feat: Features (B, N, C).
        idx: Neighbour indices (B, M, k), int64 or int32, values in [0, N), k >= 1.
        backend: "auto" (the fastest kernel backend for the inputs' device), "cpu",
            "cuda", "triton" or "torch" (the pure-PyTorch reference).

    Returns:
        The maxima (B, M, C).

    Raises:
        TypeError: An input that is not a tensor of the right kind (floating point; idx int32 or int64).
        ValueError: Wrong shapes, mismatched devices, NaN or Inf, indices out of range, or a backend that is
            unknown or does not run on the inputs' device.
        RuntimeError: A backend that is not available in this installation.
    """
    op = "edge_max"
    checks.points(op, "feat", feat)
    checks.index(op, "idx", idx, ndim=3, upper=feat.shape[1])
    checks.same_device(op, feat=feat, idx=idx)
    checks.dim_equal(op, "batch sizes of feat and idx", feat.shape[0], idx.shape[0])
    if idx.shape[2] < 1:
        raise ValueError(f"{op}: idx needs at least one neighbour per point, got shape {tuple(idx.shape)}")
    b = _backend.resolve(backend, feat.device, op)
    if b == "torch":
        return reference.edge_max(feat, idx)
    return library.kernel(b, "edge_max_forward")(checks.kernel_float(feat), idx.contiguous())[0]
