"""Activation-flow ops: per-class statistics of per-point activations over a dataset
(flow_stats, reducible batch by batch) and the flow alignment loss of FlowAM (flow_align)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import backend as _backend
from . import checks, reference


class FlowStats(NamedTuple):
    """Per-class statistics over all points of all samples of each class: count (K) int64
    (points), mean (K,C) and m2 (K,C) float64, m2 being the sum of squared deviations from
    the mean. A class with no points has count 0 and mean = m2 = 0."""

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor

    def merge(self, other) -> "FlowStats":
        """The statistics of both parts together (Chan et al.'s parallel update), so a dataset
        can be reduced batch by batch: stats = stats.merge(flow_stats(acts, labels, K))."""
        return merge_flow_stats(self, other)

    @property
    def std(self) -> torch.Tensor:
        return flow_std(self.count, self.m2)


def merge_flow_stats(a, b) -> FlowStats:
    """Chan et al.'s merge of two partial results (count, mean, m2) over disjoint sets of
    points, e.g. two batches of a dataset. Exact in exact arithmetic, and stable: it never
    subtracts sums of squares."""
    (count_a, mean_a, m2_a), (count_b, mean_b, m2_b) = a, b
    if count_a.shape != count_b.shape or mean_a.shape != mean_b.shape or m2_a.shape != m2_b.shape:
        raise ValueError(f"merge_flow_stats: shapes differ: {tuple(mean_a.shape)} vs {tuple(mean_b.shape)}")
    n_a = count_a.to(torch.float64).unsqueeze(1)
    n_b = count_b.to(torch.float64).unsqueeze(1)
    # Where both parts are empty the weight is 0/0; 0 keeps mean = m2 = 0 there.
    w_b = n_b / (n_a + n_b).clamp_min(1)
    delta = mean_b - mean_a
    return FlowStats(count_a + count_b, mean_a + delta * w_b, m2_a + m2_b + delta.square() * n_a * w_b)


def flow_std(count: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    """Population std sqrt(m2 / count) per class and channel, float64. NaN for a class with no
    points: it has no flow, and flow_align refuses NaN statistics for the classes it uses."""
    return torch.sqrt(m2 / count.to(torch.float64).unsqueeze(1))


def _kernel_acts(acts: torch.Tensor):
    """(tensor for the kernel, points_last). A (B,C,N) view of points-last (B,N,C) memory, as
    the fast paths hand over, goes as that (B,N,C) memory: the kernels read it as it is, which
    saves a transposing copy (and, for flow_align, another one for the gradient)."""
    points_last = not acts.is_contiguous() and acts.transpose(1, 2).is_contiguous()
    return checks.kernel_float(acts.transpose(1, 2) if points_last else acts), points_last


def flow_stats(acts: torch.Tensor, labels: torch.Tensor, num_classes: int, backend: str = "auto") -> FlowStats:
    """Per-class count, mean and M2 over all points of all samples of each class, in float64.
    acts (B,C,N) per-point activations, labels (B) in [0, num_classes). Not differentiable.
    Bit-identical from run to run (a fixed reduction order, whatever the thread count)."""
    op = "flow_stats"
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"{op}: num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"{op}: num_classes must be positive, got {num_classes}")
    checks.points(op, "acts", acts)
    checks.index(op, "labels", labels, 1, num_classes)
    checks.same_device(op, acts=acts, labels=labels)
    checks.dim_equal(op, "samples in acts and labels", acts.shape[0], labels.shape[0])
    b = _backend.resolve(backend, acts.device, op)
    with torch.no_grad():
        if b == "torch":
            return FlowStats(*reference.flow_stats(acts, labels.long(), num_classes))
        kernel_acts, points_last = _kernel_acts(acts)
        count, mean, m2 = _backend.kernel(b, "flow_stats")(kernel_acts, labels.long().contiguous(), num_classes,
                                                           points_last)
    return FlowStats(count, mean, m2)


class _FlowAlign(torch.autograd.Function):
    """The kernels of one backend ("cpu", "cuda" or "triton"), chosen by the front end.
    acts: (B,C,N), or (B,N,C) with points_last; the gradient comes back in acts' layout."""

    @staticmethod
    def forward(ctx, backend, acts, labels, mu, sigma, points_last):
        loss, mean, std = _backend.kernel(backend, "flow_align_forward")(acts, labels, mu, sigma, points_last)
        ctx.save_for_backward(acts, labels, mu, sigma, mean, std)
        ctx.points_last = points_last
        ctx.backend = backend
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        acts, labels, mu, sigma, mean, std = ctx.saved_tensors
        grad = _backend.kernel(ctx.backend, "flow_align_backward")(grad_loss.contiguous(), acts, labels, mu, sigma,
                                                                   mean, std, ctx.points_last)
        return None, grad, None, None, None, None


def flow_align(acts: torch.Tensor, labels: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
               backend: str = "auto") -> torch.Tensor:
    """Per-sample flow alignment loss (B): the mean over channels of
    ((m - mu)/s)^2 + ((sd - sigma)/s)^2 with m, sd the mean and std of acts (B,C,N) over the
    points, mu, sigma (K,C) the flow of each sample's class (labels (B)), s = sigma + 1e-3.

    Differentiable with respect to acts only: mu and sigma are constants (the flow of the
    training data), and no gradient is computed for them even if they require one.
    """
    op = "flow_align"
    checks.points(op, "acts", acts)
    checks.points(op, "mu", mu, ndim=2, check_finite=False)
    checks.points(op, "sigma", sigma, ndim=2, check_finite=False)
    checks.same_device(op, acts=acts, labels=labels, mu=mu, sigma=sigma)
    if mu.shape != sigma.shape:
        raise ValueError(f"{op}: mu and sigma must have one shape, got {tuple(mu.shape)} and {tuple(sigma.shape)}")
    labels = checks.class_flows(op, acts, labels, mu, sigma, "mu/sigma")
    b = _backend.resolve(backend, acts.device, op)
    if b == "torch":
        return reference.flow_align(acts, labels, mu.detach(), sigma.detach())
    kernel_acts, points_last = _kernel_acts(acts)
    return _FlowAlign.apply(b, kernel_acts, labels.contiguous(), mu.detach().to(torch.float64).contiguous(),
                               sigma.detach().to(torch.float64).contiguous(), points_last)
