"""The replacement rule shared by occlusion and the faithfulness curves: how a point is removed
from a cloud while the cloud keeps its N points.

A removed point becomes a copy of the nearest kept point of its cloud (ties to the smaller
index). As a set, the cloud is then exactly its kept points, so a model that pools with a max
(PointNet) sees the kept points and nothing else, and the shape's surface is not pulled
anywhere new; only the local density of the kept points near a removed region grows. A cloud
with no kept point becomes the baseline: every point at the cloud's centroid, a cloud with no
shape left at the place the data are centred on (the same baseline as integrated gradients').
"""
from __future__ import annotations

import torch

from .. import ops


def centroid_baseline(points: torch.Tensor) -> torch.Tensor:
    """Every point of each cloud (B, N, 3) moved to that cloud's centroid."""
    return points.mean(dim=1, keepdim=True).expand_as(points).contiguous()


def remove(points: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """The clouds with the `removed` points replaced by copies of their nearest kept points.

    Args:
        points: Clouds (B, N, 3).
        removed: A mask (B, N), True where a point is removed.

    Returns:
        Clouds (B, N, 3); a cloud whose points are all removed is `centroid_baseline`'s.
    """
    # The fused kNN (ties to the smaller index) among the points, with the removed ones moved
    # far out of reach: each kept point finds itself, each removed one its nearest kept point.
    far = (points.detach().abs().amax() + 1.0) * 1e3
    ref = points.detach() + removed[..., None].to(points.dtype) * far
    _, nearest = ops.knn(points.detach().contiguous(), 1, ref=ref.contiguous())
    out = points.gather(1, nearest.long().expand(-1, -1, 3))
    empty = removed.all(dim=1)
    if empty.any():
        out[empty] = centroid_baseline(points[empty])
    return out
