"""PointNet++'s sampling and grouping: farthest point sampling and the ball query, as fused
kernels that return indices (no gradient)."""
from __future__ import annotations

import math
import numbers

import torch

from . import backend as _backend
from . import checks, library, reference


def _points3(op: str, name: str, t) -> torch.Tensor:
    checks.points(op, name, t)
    if t.shape[2] != 3:
        raise ValueError(f"{op}: {name} must have shape (B, N, 3), got {tuple(t.shape)}")
    return t


def _count(op: str, name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    return value


def _fake_fps(points, num_samples):
    return points.new_empty((points.shape[0], num_samples), dtype=torch.int64)


def _fake_ball_query(points, centroids, radius, nsample):
    return points.new_empty((*centroids.shape[:2], nsample), dtype=torch.int64)


library.register("farthest_point_sample", _fake_fps)
library.register("ball_query", _fake_ball_query)


def farthest_point_sample(points: torch.Tensor, num_samples: int, backend: str = "auto") -> torch.Tensor:
    """Farthest point sampling, as PointNet++ picks its centroids.

    Starts at point 0; each next point is the one with the largest squared distance to the
    points chosen so far (its running minimum), ties to the smaller index. Squared distances
    are (dx*dx + dy*dy) + dz*dz in the points' dtype, without FMA, on every backend
    (`reference.sq_dist3`), so all backends choose the same indices. A cloud with fewer
    distinct points than num_samples repeats point 0 once every distinct point is chosen.

    Args:
        points: Points (B, N, 3), finite.
        num_samples: Points to choose per sample, in [1, N].
        backend: "auto" (the fastest kernel backend for the inputs' device), "cpu",
            "cuda", "triton" or "torch" (the pure-PyTorch reference).

    Returns:
        The chosen indices (B, num_samples), int64, in the order chosen.

    Raises:
        TypeError: points not a floating tensor, or num_samples not an int.
        ValueError: Wrong shapes, NaN or Inf, num_samples out of range, or a backend that is
            unknown or does not run on the inputs' device.
        RuntimeError: A backend that is not available in this installation.
    """
    op = "farthest_point_sample"
    _points3(op, "points", points)
    n = points.shape[1]
    _count(op, "num_samples", num_samples)
    if num_samples < 1 or num_samples > n:
        raise ValueError(f"{op}: num_samples must be in [1, {n}] (number of points), got num_samples={num_samples}")
    b = _backend.resolve(backend, points.device, op)
    if b == "torch":
        return reference.farthest_point_sample(points.detach(), num_samples)
    return library.kernel(b, "farthest_point_sample")(checks.kernel_float(points.detach()), num_samples)


def ball_query(points: torch.Tensor, centroids: torch.Tensor, radius: float, nsample: int,
               backend: str = "auto") -> torch.Tensor:
    """The first nsample points within radius of each centroid, as PointNet++ groups them.

    Each centroid's group is the first nsample points, in index order, whose squared
    distance is at most radius**2 (points on the sphere are kept), padded with the first
    when fewer lie within: the public rule (mask, sort, take nsample, pad), found without
    the (B, S, N) distance matrix or the sort. Distances follow `farthest_point_sample`'s
    formula, and radius**2 is rounded once to the points' dtype. A centroid with no point
    within the radius (possible only for centroids that are not points of the cloud) gets
    its nearest point, ties to the smaller index, in every slot.

    Args:
        points: Points (B, N, 3), finite.
        centroids: Centroids (B, S, 3), finite, on the points' device.
        radius: The ball's radius, positive and finite.
        nsample: Points per group, at least 1 (groups of more than N points are padded).
        backend: "auto" (the fastest kernel backend for the inputs' device), "cpu",
            "cuda", "triton" or "torch" (the pure-PyTorch reference).

    Returns:
        The groups' point indices (B, S, nsample), int64.

    Raises:
        TypeError: Inputs of the wrong kind (floating tensors; radius a real number;
            nsample an int).
        ValueError: Wrong shapes, mismatched devices, NaN or Inf, a radius that is not
            positive and finite, nsample < 1, or a backend that is unknown or does not run
            on the inputs' device.
        RuntimeError: A backend that is not available in this installation.
    """
    op = "ball_query"
    _points3(op, "points", points)
    _points3(op, "centroids", centroids)
    checks.same_device(op, points=points, centroids=centroids)
    checks.dim_equal(op, "batch sizes of points and centroids", points.shape[0], centroids.shape[0])
    if not isinstance(radius, numbers.Real) or isinstance(radius, bool):
        raise TypeError(f"{op}: radius must be a real number, got {type(radius).__name__}")
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"{op}: radius must be positive and finite, got radius={radius}")
    _count(op, "nsample", nsample)
    if nsample < 1:
        raise ValueError(f"{op}: nsample must be at least 1, got nsample={nsample}")
    b = _backend.resolve(backend, points.device, op)
    if b == "torch":
        return reference.ball_query(points.detach(), centroids.detach(), float(radius), nsample)
    p = checks.kernel_float(points.detach())
    return library.kernel(b, "ball_query")(p, checks.kernel_float(centroids.detach()).to(p.dtype), float(radius),
                                            nsample)
