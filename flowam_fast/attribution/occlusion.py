"""Occlusion of kNN patches (definition in `methods`): no gradient, all occluded copies of a
chunk of clouds in one forward pass."""
from __future__ import annotations

import torch

from .. import ops
from .methods import chunks, forward
from .removal import remove


def patches_of(points: torch.Tensor, patches: int, k: int) -> torch.Tensor:
    """The patches of each cloud as a mask (B, P, N): the k nearest neighbours (the centre
    included) of P centres chosen by farthest point sampling from point 0."""
    centres = ops.farthest_point_sample(points.contiguous(), patches)
    centre_xyz = points.gather(1, centres[..., None].long().expand(-1, -1, 3))
    _, idx = ops.knn(centre_xyz.contiguous(), k, ref=points.contiguous())
    mask = torch.zeros(points.shape[0], patches, points.shape[1], dtype=torch.bool, device=points.device)
    return mask.scatter_(2, idx.long(), True)


def occlusion(model, points, targets, patches: int, k: int, batch_size: int | None = None) -> torch.Tensor:
    """Mean drop of the target logit over the patches that hold each point, (B, N); 0 for a
    point in no patch. Rows of (cloud, patch) pairs, `batch_size` per forward pass."""
    b, n, _ = points.shape
    with torch.no_grad():
        full = forward(model, points).gather(1, targets[:, None])[:, 0]
        masks = patches_of(points, patches, k).view(b * patches, n)
        drops = torch.empty(b * patches, dtype=points.dtype, device=points.device)
        cloud = torch.arange(b * patches, device=points.device) // patches
        for start, stop in chunks(b * patches, batch_size):
            c = cloud[start:stop]
            occluded = remove(points[c], masks[start:stop])
            drops[start:stop] = full[c] - forward(model, occluded).gather(1, targets[c, None])[:, 0]
        masks = masks.view(b, patches, n).to(points.dtype)
        total = (drops.view(b, patches, 1) * masks).sum(dim=1)
        return total / masks.sum(dim=1).clamp_min(1.0)
