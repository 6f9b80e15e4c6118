"""Activation-flow ops: per-class statistics of per-point activations over a dataset
(flow_stats, reducible batch by batch) and the flow alignment loss of FlowAM (flow_align),
on written-out activations or on a linear layer's activations given by its input and map
(`LinearActs`)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import backend as _backend
from . import checks, library, reference


class FlowStats(NamedTuple):
    """Per-class statistics over all points of all samples of each class.

    A class with no points has count 0 and mean = m2 = 0.

    Attributes:
        count: Points per class (K,), int64.
        mean: Per-class, per-channel mean (K, C), float64.
        m2: Per-class, per-channel sum of squared deviations from the mean (K, C), float64.
    """

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor

    def merge(self, other) -> "FlowStats":
        """The statistics of both parts together (Chan et al.'s parallel update).

        A dataset can so be reduced batch by batch:
        `stats = stats.merge(flow_stats(acts, labels, K))`. See `merge_flow_stats`.
        """
        return merge_flow_stats(self, other)

    @property
    def std(self) -> torch.Tensor:
        """The population std (K, C), float64; NaN for a class with no points (see `flow_std`)."""
        return flow_std(self.count, self.m2)


def merge_flow_stats(a, b) -> FlowStats:
    """Merge two partial statistics over disjoint sets of points (Chan et al.'s update).

    Exact in exact arithmetic, and stable: it never subtracts sums of squares.

    Args:
        a: (count, mean, m2) of one part, e.g. a batch of a dataset (a `FlowStats`).
        b: The same of another part.

    Returns:
        The statistics of both parts together.

    Raises:
        ValueError: The parts' shapes differ.
    """
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
    """The population std sqrt(m2 / count) per class and channel, float64.

    NaN for a class with no points: it has no flow, and `flow_align` refuses NaN statistics
    for the classes it uses.

    Args:
        count: Points per class (K,).
        m2: Sums of squared deviations (K, C).
    """
    return torch.sqrt(m2 / count.to(torch.float64).unsqueeze(1))


class LinearActs(NamedTuple):
    """A linear layer's per-point activations, given by its input and map, not written out.

    The activations are y_n = A x_n + shift (the layer's BatchNorm folded into A). The fast
    paths hand these to a flow term that asked for them at the max-pooled layers, whose
    (B, C, N) pre-activations they otherwise never write.

    A channel's mean and variance over the points are linear and quadratic in x's moments:
    m = A x̄ + shift and var_c = a_cᵀ Σ a_c, Σ the (Cin, Cin) covariance of x over the points.
    So `flow_align` gets its loss and gradient from Σ in B·N·Cin² operations instead of
    the dense layer's B·N·C·Cin GEMM and two passes over B·N·C values, C / Cin times fewer.

    Attributes:
        x: The layer's input (B, N, Cin), points-last.
        weight: The map A (C, Cin).
        shift: The shift (C,).
    """

    x: torch.Tensor
    weight: torch.Tensor
    shift: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        """(B, C, N), the shape of the written-out activations."""
        return torch.Size((self.x.shape[0], self.weight.shape[0], self.x.shape[1]))

    def dense(self) -> torch.Tensor:
        """The activations written out, as the (B, C, N) view of points-last memory."""
        x = self.x
        return torch.addmm(self.shift, x.reshape(-1, x.shape[-1]), self.weight.t()).view(
            x.shape[0], x.shape[1], -1).transpose(1, 2)


def _check_linear_acts(op: str, acts: LinearActs) -> None:
    checks.points(op, "LinearActs.x", acts.x)
    checks.points(op, "LinearActs.weight", acts.weight, ndim=2)
    checks.points(op, "LinearActs.shift", acts.shift, ndim=1)
    checks.same_device(op, x=acts.x, weight=acts.weight, shift=acts.shift)
    checks.dim_equal(op, "input channels of LinearActs.x and .weight", acts.x.shape[2], acts.weight.shape[1])
    checks.dim_equal(op, "output channels of LinearActs.weight and .shift", acts.weight.shape[0],
                     acts.shift.shape[0])


class _LinearMoments(torch.autograd.Function):
    """(mean, var) over the points (B, C), float64, of y = x a^T + shift from x (B, N, Cin).

    Forward: the centred covariance S = D^T D / N (D = x - x̄), mean = x̄ a^T + shift and
    var_c = a_c^T S a_c. Backward, from the upstream g_m, g_v (B, C): dL/dS = a^T diag(g_v) a
    =: G and dL/dx̄ = a^T g_m, so dx_n = (2/N) D_n G + (1/N) a^T g_m (the x̄ inside S drops
    out: sum_n D_n = 0). A few small GEMMs each way; autograd through the same ops took 4x as
    long. S and the quadratic form are in x's dtype: on the demo PointNet's layers the
    variance is then within 1e-5 (relative) of a float64 computation, against 1e-7 for the
    written-out float32 activations, and float64 GEMMs of these shapes cost 2-4x more.
    Every product is per sample (bmm against the map broadcast, as models.linear.RowLinear
    does): one GEMM over the whole batch is blocked by its row count, and a sample's result
    would then depend on the batch it is in, which the AM engine promises it does not."""

    @staticmethod
    def forward(ctx, x, a, shift):
        b, n = x.shape[0], x.shape[1]
        x_mean = x.mean(1, keepdim=True)
        d = x - x_mean
        cov = torch.bmm(d.transpose(1, 2), d).div_(n)
        a_t = a.t().contiguous()
        var = (torch.bmm(cov, a_t.expand(b, -1, -1)) * a_t).sum(1).double()
        mean = torch.baddbmm(shift.expand(b, 1, -1), x_mean, a_t.expand(b, -1, -1))[:, 0].double()
        ctx.save_for_backward(d, x_mean, cov, a_t)
        ctx.dtypes = (a.dtype, shift.dtype)
        return mean, var

    @staticmethod
    def backward(ctx, g_mean, g_var):
        d, x_mean, cov, a_t = ctx.saved_tensors
        b, n = d.shape[0], d.shape[1]
        g_var = g_var.to(d.dtype)
        a_b = a_t.t().expand(b, -1, -1)
        big_g = torch.bmm(a_t * g_var[:, None, :], a_b)  # (B, Cin, Cin), symmetric
        g_xbar = torch.bmm(g_mean.to(d.dtype)[:, None, :], a_b)  # (B, 1, Cin)
        # bmm, then the per-sample constant in place: baddbmm would first copy the broadcast
        # constant into a (B, N, Cin) buffer.
        dx = torch.bmm(d, big_g.mul_(2.0 / n)).add_(g_xbar.div_(n))
        da = dshift = None
        if ctx.needs_input_grad[1]:
            # d mean_c / d a_c = x̄; d var_c / d a_c = 2 S a_c.
            da = (g_mean.t() @ x_mean.squeeze(1).double()).to(d.dtype) + \
                2.0 * torch.einsum("bc,bij,jc->ci", g_var, cov, a_t)
            da = da.to(ctx.dtypes[0])
        if ctx.needs_input_grad[2]:
            dshift = g_mean.sum(0).to(ctx.dtypes[1])
        return dx, da, dshift


def _linear_moments(acts: LinearActs):
    """Per-sample mean and std over the points of each channel of `acts` (B, C), float64, from
    x's mean and covariance (`_LinearMoments`)."""
    mean, var = _LinearMoments.apply(acts.x, acts.weight, acts.shift)
    # Rounding can take a constant channel's variance a few ulps below zero.
    return mean, torch.sqrt(var.clamp_min(0.0) + reference.STD_EPS)


def _linear_flow_align(acts: LinearActs, labels, mu, sigma) -> torch.Tensor:
    mean, std = _linear_moments(acts)
    mu_c, sig_c = mu.detach().double()[labels], sigma.detach().double()[labels]
    s = sig_c + reference.SCALE_EPS
    return (((mean - mu_c) / s) ** 2 + ((std - sig_c) / s) ** 2).mean(-1).to(acts.x.dtype)


def flow_stats(acts: torch.Tensor, labels: torch.Tensor, num_classes: int, backend: str = "auto") -> FlowStats:
    """Per-class count, mean and M2 over all points of all samples of each class, in float64.

    Not differentiable. Bit-identical from run to run (a fixed reduction order, whatever the
    thread count). Reduce a dataset batch by batch with `FlowStats.merge`.

    Args:
        acts: Per-point activations (B, C, N).
        labels: Class of each sample (B,), int32 or int64, in [0, num_classes).
        num_classes: K.
        backend: "auto" (the fastest kernel backend for the inputs' device), "cpu",
            "cuda", "triton" or "torch" (the pure-PyTorch reference).

    Returns:
        The statistics of each class.

    Raises:
        TypeError: A num_classes that is not an int, or inputs that are not tensors of the
            right kind.
        ValueError: Wrong shapes, labels out of range, NaN or Inf, mismatched devices, or a
            backend that is unknown or does not run on the inputs' device.
        RuntimeError: A backend that is not available in this installation.
    """
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
        kernel_acts, points_last = checks.kernel_acts(acts)
        count, mean, m2 = library.kernel(b, "flow_stats")(kernel_acts, labels.long().contiguous(), num_classes,
                                                          points_last)
    return FlowStats(count, mean, m2)


def _channels(acts, points_last):
    return acts.shape[2] if points_last else acts.shape[1]


def _fake_stats(acts, labels, num_classes, points_last=False):
    shape = (num_classes, _channels(acts, points_last))
    return (acts.new_empty((num_classes,), dtype=torch.int64), acts.new_empty(shape, dtype=torch.float64),
            acts.new_empty(shape, dtype=torch.float64))


def _fake_align_forward(acts, labels, mu, sigma, points_last=False):
    shape = (acts.shape[0], _channels(acts, points_last))
    return (acts.new_empty(acts.shape[:1]), acts.new_empty(shape, dtype=torch.float64),
            acts.new_empty(shape, dtype=torch.float64))


def _fake_align_backward(grad_loss, acts, labels, mu, sigma, mean, std, points_last=False):
    return torch.empty_like(acts)


def _setup_align(ctx, inputs, output):
    acts, labels, mu, sigma, points_last = inputs
    ctx.save_for_backward(acts, labels, mu, sigma, output[1], output[2])
    ctx.points_last = points_last


def _align_backward(kernels, ctx, grad_loss, _grad_mean, _grad_std):
    """acts: (B,C,N), or (B,N,C) with points_last; the gradient comes back in acts' layout."""
    acts, labels, mu, sigma, mean, std = ctx.saved_tensors
    grad = kernels.flow_align_backward(grad_loss.contiguous(), acts, labels, mu, sigma, mean, std, ctx.points_last)
    return grad, None, None, None, None


library.register("flow_stats", _fake_stats)
library.register("flow_align_forward", _fake_align_forward, _setup_align, _align_backward)
library.register("flow_align_backward", _fake_align_backward)


def flow_align(acts: torch.Tensor | LinearActs, labels: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
               backend: str = "auto") -> torch.Tensor:
    """The flow alignment loss of each sample.

    The mean over channels of ((m - mu)/s)^2 + ((sd - sigma)/s)^2, with m, sd the mean and std
    of the sample's activations over its points, mu, sigma the flow of the sample's class and
    s = sigma + 1e-3.

    Differentiable with respect to acts only: mu and sigma are constants (the flow of the
    training data), and no gradient is computed for them even if they require one.
    acts may be a `LinearActs` (differentiable with respect to its x, weight and shift): every
    kernel backend then computes the moments from x's covariance, in PyTorch ops on x's
    device (the work is small and GEMM-shaped); backend="torch" writes the activations out
    and runs the reference, the closed form's oracle.

    Args:
        acts: Per-point activations (B, C, N), or a `LinearActs`.
        labels: Class of each sample (B,).
        mu: Per-class, per-channel flow mean (K, C).
        sigma: Per-class, per-channel flow std (K, C), non-negative.
        backend: "auto" (the fastest kernel backend for the inputs' device), "cpu",
            "cuda", "triton" or "torch" (the pure-PyTorch reference).

    Returns:
        The loss of each sample (B,).

    Raises:
        TypeError: Inputs that are not tensors of the right kind.
        ValueError: Wrong or mismatched shapes, mismatched devices, NaN or Inf (in mu or sigma
            for a class in labels), a negative sigma, or a backend that is unknown or does
            not run on the inputs' device.
        RuntimeError: A backend that is not available in this installation.
    """
    op = "flow_align"
    linear = isinstance(acts, LinearActs)
    if linear:
        _check_linear_acts(op, acts)
    else:
        checks.points(op, "acts", acts)
    device = (acts.x if linear else acts).device
    checks.points(op, "mu", mu, ndim=2, check_finite=False)
    checks.points(op, "sigma", sigma, ndim=2, check_finite=False)
    checks.same_device(op, acts=acts.x if linear else acts, labels=labels, mu=mu, sigma=sigma)
    if mu.shape != sigma.shape:
        raise ValueError(f"{op}: mu and sigma must have one shape, got {tuple(mu.shape)} and {tuple(sigma.shape)}")
    labels = checks.class_flows(op, acts, labels, mu, sigma, "mu/sigma")
    b = _backend.resolve(backend, device, op)
    if linear and b != "torch":
        return _linear_flow_align(acts, labels, mu, sigma)
    if b == "torch":
        return reference.flow_align(acts.dense() if linear else acts, labels, mu.detach(), sigma.detach())
    kernel_acts, points_last = checks.kernel_acts(acts)
    return library.kernel(b, "flow_align_forward")(kernel_acts, labels.contiguous(),
                                                   mu.detach().to(torch.float64).contiguous(),
                                                   sigma.detach().to(torch.float64).contiguous(), points_last)[0]
