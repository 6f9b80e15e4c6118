"""Pure-PyTorch reference versions of the fused ops: the oracle of the tests and the
baseline of the benchmarks. They build the full intermediate tensors on purpose."""
from __future__ import annotations

import torch

#: Added to the per-sample variance before the square root, so the std and its gradient stay
#: finite for a constant channel (a dead ReLU); it changes a std of 1e-2 by under 1e-6.
STD_EPS = 1e-8
#: The flow alignment's scale is s = sigma_class + SCALE_EPS (docs/design.md).
SCALE_EPS = 1e-3


def knn(query: torch.Tensor, k: int, ref: torch.Tensor | None = None):
    """Reference of `flowam_fast.ops.knn.knn`: all pairwise distances, then a stable sort.

    Returns:
        A tuple of the squared distances (B, M, k), ascending, and the indices (B, M, k);
        ties go to the smaller index.
    """
    ref = query if ref is None else ref
    d2 = (
        query.pow(2).sum(-1, keepdim=True)
        + ref.pow(2).sum(-1).unsqueeze(1)
        - 2.0 * torch.bmm(query, ref.transpose(1, 2))
    )
    # A stable ascending sort keeps equal distances in index order, which topk does not promise.
    _, order = torch.sort(d2.detach(), dim=-1, stable=True)
    idx = order[..., :k]
    # Exact differences for the selected pairs: non-negative, and the gradient docs/design.md asks for.
    nb = torch.gather(ref.unsqueeze(1).expand(-1, query.shape[1], -1, -1), 2,
                      idx.unsqueeze(-1).expand(-1, -1, -1, ref.shape[-1]))
    dist2 = (query.unsqueeze(2) - nb).pow(2).sum(-1)
    return dist2, idx


def knn_topk(query: torch.Tensor, k: int, ref: torch.Tensor | None = None):
    """The kNN baseline of the benchmarks: what a PyTorch user writes (matmul, then topk).

    Returns:
        A tuple of the squared distances (B, M, k) and the indices (B, M, k); topk does not
        promise an order among ties.
    """
    ref = query if ref is None else ref
    neg = 2.0 * torch.bmm(query, ref.transpose(1, 2)) - query.pow(2).sum(-1, keepdim=True) - ref.pow(2).sum(-1).unsqueeze(1)
    val, idx = neg.topk(k, dim=-1)
    return -val, idx


def edge_max(feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Reference of `flowam_fast.ops.edge_max.edge_max`, through the full (B, M, k, C) gather."""
    B, M, k = idx.shape
    C = feat.shape[-1]
    gathered = torch.gather(feat.unsqueeze(1).expand(B, M, feat.shape[1], C), 2,
                            idx.long().unsqueeze(-1).expand(B, M, k, C))
    return gathered.max(dim=2).values


def linear_max(x, weight, scale, shift, negative_slope: float = 0.0) -> torch.Tensor:
    """Reference of `flowam_fast.ops.linear_max.linear_max`, through the full (B, N, Cout) activation."""
    z = torch.matmul(x, weight.t()) * scale + shift
    return torch.nn.functional.leaky_relu(z, negative_slope).max(dim=1).values


def group_gather(P: torch.Tensor, Q: torch.Tensor, idx: torch.Tensor, scale: torch.Tensor,
                 shift: torch.Tensor) -> torch.Tensor:
    """Reference of `flowam_fast.ops.grouping.group_gather`: the grouped rows of P by advanced
    indexing, (B, S, K, C), then the difference, the affine map and the ReLU."""
    batch = torch.arange(P.shape[0], device=P.device).view(-1, 1, 1)
    grouped = P[batch, idx.long()]
    return torch.relu((grouped - Q.unsqueeze(2)) * scale + shift)


def group_linear_max(x, weight, scale, shift, negative_slope: float = 0.0) -> torch.Tensor:
    """Reference of `flowam_fast.ops.grouping.group_linear_max`: the full (B, S, K, Cout)
    activation, then the max over each group's K points."""
    z = torch.matmul(x, weight.t()) * scale + shift
    return torch.nn.functional.leaky_relu(z, negative_slope).max(dim=2).values


def flow_stats(acts: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Reference of `flowam_fast.ops.flow.flow_stats`, one class at a time.

    Returns:
        A tuple of the per-class count (points), mean and M2 (sum of squared deviations)
        over all points of all samples of the class, in float64.
    """
    a = acts.double()
    B, C, N = a.shape
    count = torch.zeros(num_classes, dtype=torch.int64, device=a.device)
    mean = torch.zeros(num_classes, C, dtype=torch.float64, device=a.device)
    m2 = torch.zeros(num_classes, C, dtype=torch.float64, device=a.device)
    for c in labels.unique().tolist():
        sel = a[labels == c].transpose(0, 1).reshape(C, -1)
        count[c] = sel.shape[1]
        mean[c] = sel.mean(1)
        m2[c] = (sel - mean[c, :, None]).pow(2).sum(1)
    return count, mean, m2


def sample_moments(acts: torch.Tensor):
    """Per-sample, per-channel mean and std over the points of acts (B, C, N).

    Returns:
        A tuple of the means (B, C) and the stds (B, C); the variance gets `STD_EPS` before
        the square root.
    """
    mean = acts.mean(-1)
    var = (acts - mean.unsqueeze(-1)).pow(2).mean(-1)
    return mean, torch.sqrt(var + STD_EPS)


def flow_align(acts: torch.Tensor, labels: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Reference of `flowam_fast.ops.flow.flow_align` on written-out activations.

    Returns:
        The loss of each sample (B,): the mean over channels of ((m - mu)/s)^2 +
        ((std - sigma)/s)^2, s = sigma + SCALE_EPS, with mu, sigma the flow of the sample's
        class.
    """
    m, sd = sample_moments(acts)
    mu_c = mu[labels].to(acts.dtype)
    sig_c = sigma[labels].to(acts.dtype)
    s = sig_c + SCALE_EPS
    return (((m - mu_c) / s) ** 2 + ((sd - sig_c) / s) ** 2).mean(-1)


def sq_dist3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances of 3-d points (..., 3), broadcast: (dx*dx + dy*dy) + dz*dz, d = a - b,
    each product and sum rounded in the points' dtype. The kernels use this formula with the
    same roundings (no FMA: csrc/fps/fps_math.h), so FPS and the ball query decide near ties
    and points on the radius as the kernels do, bit for bit."""
    d = a - b
    dx, dy, dz = d.unbind(-1)
    return (dx * dx + dy * dy) + dz * dz


def farthest_point_sample(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Reference of `flowam_fast.ops.sampling.farthest_point_sample`: the public PointNet++
    loop, S steps of vectorized ops over the N points, starting at point 0.

    Returns:
        The sampled indices (B, S), int64; each step takes the largest running min squared
        distance, ties to the smaller index (argmax returns the first maximum).
    """
    B, N, _ = points.shape
    batch = torch.arange(B, device=points.device)
    idx = torch.zeros(B, num_samples, dtype=torch.int64, device=points.device)
    running = torch.full((B, N), float("inf"), dtype=points.dtype, device=points.device)
    farthest = torch.zeros(B, dtype=torch.int64, device=points.device)
    for i in range(num_samples):
        idx[:, i] = farthest
        d = sq_dist3(points, points[batch, farthest].unsqueeze(1))
        running = torch.where(d < running, d, running)
        farthest = running.argmax(-1)
    return idx


def ball_query(points: torch.Tensor, centroids: torch.Tensor, radius: float, nsample: int) -> torch.Tensor:
    """Reference of `flowam_fast.ops.sampling.ball_query`: the public rule on the full (B, S, N)
    distance matrix: mask out d2 > radius^2, sort the indices, take the first nsample, pad with
    the first. A centroid with no point within the radius (the public code's index N) gets its
    nearest point (ties to the smaller index) in every slot.

    Returns:
        The group indices (B, S, nsample), int64.
    """
    B, N, _ = points.shape
    S = centroids.shape[1]
    d2 = sq_dist3(centroids.unsqueeze(2), points.unsqueeze(1))
    r2 = torch.tensor(radius * radius, dtype=d2.dtype)
    group = torch.arange(N, device=points.device).repeat(B, S, 1)
    group[d2 > r2] = N
    group = group.sort(dim=-1).values[:, :, :nsample]
    if nsample > N:  # the public code would return N columns; the missing ones are padding
        group = torch.cat([group, group.new_full((B, S, nsample - N), N)], dim=-1)
    first = group[:, :, :1].expand(-1, -1, nsample)
    empty = first == N
    first = torch.where(empty, d2.argmin(-1, keepdim=True).expand(-1, -1, nsample), first)
    return torch.where(group == N, first, group)
