"""The gradient methods: saliency, its spherical form, and integrated gradients (definitions in
`methods`). Each takes one backward pass per batch: the target logits of independent clouds
are summed, so the gradient of the sum holds every cloud's own gradient."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .methods import chunks, forward
from .removal import centroid_baseline


def _target_logits(model, points, targets):
    return forward(model, points).gather(1, targets[:, None])[:, 0]


def input_gradient(model, points: torch.Tensor, targets: torch.Tensor, loss: bool = False) -> torch.Tensor:
    """d(target logit)/d(points) (B, N, 3), or of the cross-entropy of the target (`loss`)."""
    x = points.detach().requires_grad_(True)
    with torch.enable_grad():
        if loss:
            value = F.cross_entropy(forward(model, x), targets, reduction="sum")
        else:
            value = _target_logits(model, x, targets).sum()
        (grad,) = torch.autograd.grad(value, x)
    return grad


def saliency(model, points, targets) -> torch.Tensor:
    """||dy/dp_n|| per point (B, N)."""
    return input_gradient(model, points, targets).norm(dim=2)


def spherical_saliency(model, points, targets, alpha: float = 1.0) -> torch.Tensor:
    """-(dL/dr_n) r_n^(1 + alpha) per point (B, N), about the per-axis median of each cloud."""
    alpha = float(alpha)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    grad = input_gradient(model, points, targets, loss=True)
    offset = points - points.median(dim=1, keepdim=True).values
    r = offset.norm(dim=2)
    # dL/dr_n r_n = grad . offset, which stays defined at r_n = 0 (a point at the centre).
    return -(grad * offset).sum(dim=2) * r.pow(alpha)


def integrated_gradients(model, points, targets, steps: int = 32, batch_size: int | None = None):
    """(scores (B, N), extras) of integrated gradients from the centroid baseline, midpoint rule.

    Every (cloud, step) pair is one row of the batch, `batch_size` rows per pass; extras holds
    ``delta`` = y(p) - y(baseline) and ``completeness_error`` = |sum of scores - delta|.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    b = points.shape[0]
    base = centroid_baseline(points)
    alphas = (torch.arange(steps, dtype=points.dtype, device=points.device) + 0.5) / steps
    rows = b * steps
    cloud = torch.arange(rows, device=points.device) // steps
    mean_grad = torch.zeros_like(points)
    for start, stop in chunks(rows, batch_size):
        c, a = cloud[start:stop], alphas[torch.arange(start, stop, device=points.device) % steps]
        path = base[c] + a[:, None, None] * (points[c] - base[c])
        g = input_gradient(model, path, targets[c])
        mean_grad.index_add_(0, c, g / steps)
    scores = ((points - base) * mean_grad).sum(dim=2)
    with torch.no_grad():
        delta = _target_logits(model, points, targets) - _target_logits(model, base, targets)
    return scores, {"delta": delta, "completeness_error": (scores.sum(dim=1) - delta).abs()}
