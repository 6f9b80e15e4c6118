"""knn: fused k-nearest-neighbour search with a differentiable dist2."""
from __future__ import annotations

import torch

from . import backend as _backend
from . import checks, library, reference


def _fake_forward(query, ref, k):
    shape = (query.shape[0], query.shape[1], k)
    return query.new_empty(shape), query.new_empty(shape, dtype=torch.int64)


def _fake_backward(grad_dist2, query, ref, idx):
    return torch.empty_like(query), torch.empty_like(ref)


def _setup_context(ctx, inputs, output):
    query, ref, _ = inputs
    ctx.save_for_backward(query, ref, output[1])


def _backward(kernels, ctx, grad_dist2, _grad_idx):
    query, ref, idx = ctx.saved_tensors
    gq, gr = kernels.knn_backward(grad_dist2.contiguous(), query, ref, idx)
    # For a self-kNN query and ref are one tensor, and autograd adds the two gradients.
    return gq, gr, None


library.register("knn_forward", _fake_forward, _setup_context, _backward)
library.register("knn_backward", _fake_backward)


def _cuda_k_limit(k: int):
    """The CUDA kernel keeps each row's top-k in registers sized at compile time, up to
    _C.knn_max_k_cuda; a larger k goes to another backend."""

    def unsupported(backend):
        limit = getattr(_backend._C, "knn_max_k_cuda", None) if backend == "cuda" else None
        return None if limit is None or k <= limit else f"k={k} is above its largest k ({limit})"

    return unsupported


def knn(x: torch.Tensor, k: int, ref: torch.Tensor | None = None, backend: str = "auto"):
    """The k nearest neighbours of every point of x among the points of ref.

    Ties go to the smaller index.

    Args:
        x: Query points (B, N, D).
        k: Neighbours per point, in [1, M].
        ref: Reference points (B, M, D); None searches x itself, each point among its own
            neighbours.
        backend: "auto" (the fastest kernel backend for the inputs' device), "cpu",
            "cuda", "triton" or "torch" (the pure-PyTorch reference).

    Returns:
        A tuple of the squared distances (B, N, k), ascending and differentiable with
        respect to x and ref, and the neighbours' indices (B, N, k), int64.

    Raises:
        TypeError: An input that is not a tensor of the right kind (floating point; k an int).
        ValueError: Wrong shapes, mismatched devices, NaN or Inf, a k out of range, or a backend that is
            unknown or does not run on the inputs' device.
        RuntimeError: A backend that is not available in this installation.
    """
    op = "knn"
    checks.points(op, "x", x)
    if ref is not None:
        checks.points(op, "ref", ref)
        checks.same_device(op, x=x, ref=ref)
        checks.dim_equal(op, "batch sizes of x and ref", x.shape[0], ref.shape[0])
        checks.dim_equal(op, "point dimensions of x and ref", x.shape[2], ref.shape[2])
    n_ref = (x if ref is None else ref).shape[1]
    if not isinstance(k, int) or isinstance(k, bool):
        raise TypeError(f"{op}: k must be an int, got {type(k).__name__}")
    if k < 1 or k > n_ref:
        raise ValueError(f"{op}: k must be in [1, {n_ref}] (number of reference points), got k={k}")
    b = _backend.resolve(backend, x.device, op, _cuda_k_limit(k))
    if b == "torch":
        return reference.knn(x, k, ref)
    q = checks.kernel_float(x)
    r = q if ref is None else checks.kernel_float(ref).to(q.dtype)
    return library.kernel(b, "knn_forward")(q, r, k)
