"""Input validation shared by the op front ends: clear Python errors before any kernel runs.

The checks of values (NaN or Inf, index ranges, signs) read the data, which under
`torch.compile` would end the graph at every op; while it traces they are left out (`reading`),
and those of shapes, dtypes and devices stay. The kernels still refuse an index out of range.
"""
from __future__ import annotations

import math

import torch


def reading() -> bool:
    """Whether the value checks run: always, except while torch.compile traces."""
    return not torch.compiler.is_compiling()


def points(op: str, name: str, t, ndim: int = 3, check_finite: bool = True) -> torch.Tensor:
    """A floating tensor of rank `ndim` with finite values."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be floating point, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{op}: {name} is empty (shape {tuple(t.shape)})")
    if check_finite and reading():
        # aminmax carries NaN through and shows any Inf as the min or max, at a tenth of the
        # cost of isfinite().all() (which allocates a mask as large as the input).
        lo, hi = _dense_view(t.detach()).aminmax()
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            raise ValueError(f"{op}: {name} contains NaN or Inf")
    return t


def _dense_view(t: torch.Tensor) -> torch.Tensor:
    """`t`'s elements in memory order where a permutation of its dims is contiguous (e.g. the
    (B, C, N) transposed view of a points-last activation): reducing a strided view is many
    times slower than reducing the same memory in order."""
    if t.is_contiguous():
        return t
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    view = t.permute(order)
    return view if view.is_contiguous() else t


def index(op: str, name: str, t, ndim: int, upper: int) -> torch.Tensor:
    """An integer tensor of rank `ndim` with values in [0, upper)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{op}: {name} must be int32 or int64, got {t.dtype}")
    if t.numel() and reading() and (int(t.min()) < 0 or int(t.max()) >= upper):
        raise ValueError(f"{op}: {name} has values outside [0, {upper}): min {int(t.min())}, max {int(t.max())}")
    return t


def same_device(op: str, **tensors) -> torch.device:
    devices = {name: t.device for name, t in tensors.items() if isinstance(t, torch.Tensor)}
    if len(set(devices.values())) > 1:
        raise ValueError(f"{op}: tensors are on different devices: {devices}")
    return next(iter(devices.values()))


def dim_equal(op: str, what: str, a: int, b: int) -> None:
    if a != b:
        raise ValueError(f"{op}: {what} do not match ({a} vs {b})")


def kernel_float(t: torch.Tensor) -> torch.Tensor:
    """The kernels' layout: contiguous float32, or float64 (kept, for gradcheck)."""
    if t.dtype in (torch.float32, torch.float64):
        return t.contiguous()
    return t.float().contiguous()


def kernel_acts(acts: torch.Tensor):
    """(tensor for the kernel, points_last) for per-point activations acts (B,C,N). A (B,C,N)
    view of points-last (B,N,C) memory, as the fast paths hand over, goes as that (B,N,C)
    memory: the flow kernels read it as it is, which saves a transposing copy (and another one
    for the gradient, which comes back in the same layout)."""
    points_last = not acts.is_contiguous() and acts.transpose(1, 2).is_contiguous()
    return kernel_float(acts.transpose(1, 2) if points_last else acts), points_last


def class_flows(op: str, acts: torch.Tensor, labels, target: torch.Tensor, sigma: torch.Tensor,
                names: str) -> torch.Tensor:
    """The checks the flow alignment ops share: acts (B,C,N), labels (B) in [0, K), `target`
    (K,C,...) and sigma (K,C) the flows of the K classes. Only the rows of the classes in
    labels must be finite (a dataset may lack some classes: NaN rows), and sigma non-negative
    there. `names` names target and sigma in messages. Returns labels as int64."""
    dim_equal(op, f"channels of acts and {names}", acts.shape[1], target.shape[1])
    index(op, "labels", labels, 1, target.shape[0])
    dim_equal(op, "samples in acts and labels", acts.shape[0], labels.shape[0])
    labels = labels.long()
    if not reading():
        return labels
    target_used, sigma_used = target.detach()[labels], sigma.detach()[labels]
    if not bool(torch.isfinite(target_used).all() and torch.isfinite(sigma_used).all()):
        raise ValueError(f"{op}: {names} contains NaN or Inf for a class in labels")
    if bool((sigma_used < 0).any()):
        raise ValueError(f"{op}: sigma must be non-negative (a standard deviation)")
    return labels
