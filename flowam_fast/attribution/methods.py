"""`attribute`: one score per point for a batch of clouds and target classes, by one of the
methods of `METHODS`, on any classifier the package accepts.

Clouds are points-last, (B, N, 3), as the package's stores and datasets hold them (the models
take (B, 3, N); the transposition happens here). A method runs on the whole batch at once:
the gradient methods take one backward pass for all clouds (integrated gradients: for all
interpolation steps of a chunk), occlusion runs all its occluded copies of a chunk in one
forward pass. Built-in models run in eval mode on their fused fast paths; any other module
through `models.classify` (adapt it with `models.as_classifier` where its output is not the
logits). The model's mode and its parameters' `requires_grad` are restored afterwards.

Higher scores mean more important points for every method. Definitions, with y the target's
logit:

- ``saliency``: ||dy/dp_n||, the norm of the gradient at each point.
- ``spherical-saliency`` (Zheng et al., "PointCloud Saliency Maps", ICCV 2019): a point is
  dropped by moving it to the cloud's centre c (the per-axis median, robust to outliers), so
  its score is the first-order change of the loss L (cross-entropy of the target) along that
  move, rescaled: s_n = -(dL/dr_n) r_n^(1 + alpha), r_n = ||p_n - c|| and dL/dr_n the
  gradient along the direction from c to p_n. alpha (default 1) is the paper's rescaling.
- ``integrated-gradients`` (Sundararajan et al., 2017): sum over x, y, z of
  (p - p') * the mean gradient of y along the straight path from the baseline p' (every
  point at the cloud's centroid) to p, by the midpoint rule with `steps` steps; the scores of
  a cloud sum to y(p) - y(p') up to the rule's error (`completeness_error`).
- ``grad-cam`` (Selvaraju et al., 2017) on a per-point layer A (B, C, N) chosen by name:
  relu(sum_c a_c A_cn), a_c = mean_n dy/dA_cn.
- ``critical-points`` (Qi et al., 2017): how many channels of a max-pooled layer take their
  maximum at each point (PointNet's critical points are the points with a count > 0). Does
  not depend on the target.
- ``occlusion``: the drop of y when a kNN patch around the point is removed (the replacement
  rule of `removal`), averaged over the patches that hold the point; patches are centred on
  `patches` points of farthest point sampling, `k` neighbours each. Needs no gradient.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..am.engine import frozen
from ..models.adapter import classify

#: The methods, by name.
METHODS = ("saliency", "spherical-saliency", "integrated-gradients", "grad-cam", "critical-points", "occlusion")


def as_clouds(points, name: str = "points") -> torch.Tensor:
    """`points` as a float tensor (B, N, 3), checked.

    Raises:
        TypeError: Not an array or tensor of numbers.
        ValueError: Not (B, N, 3) with B, N >= 1, or non-finite coordinates.
    """
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(points)
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array (B, N, 3), got {type(points).__name__}")
    if points.dim() != 3 or points.shape[2] != 3 or points.shape[0] < 1 or points.shape[1] < 1:
        hint = " (points-last: transpose a (B, 3, N) batch with .transpose(1, 2))" \
            if points.dim() == 3 and points.shape[1] == 3 else ""
        raise ValueError(f"{name} must be clouds (B, N, 3) with B, N >= 1, got shape {tuple(points.shape)}{hint}")
    if not points.is_floating_point():
        points = points.float()
    if not torch.isfinite(points).all():
        raise ValueError(f"{name} holds NaN or Inf coordinates")
    return points


def as_targets(targets, batch: int, num_classes: int, device) -> torch.Tensor:
    """Target classes as a long tensor (B,), checked against the batch and the model's classes.

    Raises:
        ValueError: Not one integer class per cloud, or a class outside [0, num_classes).
    """
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.dim() != 1 or t.shape[0] != batch or t.is_floating_point() or t.is_complex():
        raise ValueError(f"targets must be one integer class per cloud ({batch}), got {tuple(t.shape)} "
                         f"of {t.dtype}")
    if batch and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"targets must lie in [0, {num_classes}) (the model's classes), got "
                         f"[{int(t.min())}, {int(t.max())}]")
    return t.long().to(device)


def forward(model, points: torch.Tensor) -> torch.Tensor:
    """The logits (B, K) of clouds (B, N, 3), checked (`models.classify`)."""
    return classify(model, points.transpose(1, 2))


def chunks(total: int, size: int | None):
    """(start, stop) slices of `size` (all at once for None)."""
    size = total if not size else max(1, int(size))
    return [(i, min(i + size, total)) for i in range(0, total, size)]


def _options(method: str, given: dict, allowed: dict) -> dict:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown options {unknown} of method {method!r}; it takes {sorted(allowed) or 'none'}")
    return {**allowed, **given}


#: Each method's options and their defaults (`batch_size`: clouds, or rows of clouds x steps or
#: patches, per forward pass; None: all at once).
OPTIONS = {
    "saliency": {"batch_size": None},
    "spherical-saliency": {"batch_size": None, "alpha": 1.0},
    "integrated-gradients": {"batch_size": None, "steps": 32},
    "grad-cam": {"batch_size": None, "layer": None},
    "critical-points": {"batch_size": None, "layer": None},
    "occlusion": {"batch_size": None, "patches": 32, "k": None},
}


def attribute(model, points, targets, method: str = "saliency", return_extras: bool = False, **options):
    """One score per point of each cloud, for its target class (higher = more important).

    ```python
    scores = attribute(model, clouds, targets, method="integrated-gradients", steps=64)
    ```

    Args:
        model: The classifier, (B, 3, N) -> logits (B, K): a built-in model, or any module
            adapted with `models.as_classifier`.
        points: Clouds (B, N, 3), points-last as the datasets hold them.
        targets: The class explained in each cloud, (B,) integers (or one int for all).
        method: One of `METHODS` (see the module's docstring for each definition).
        return_extras: Also return a dict of per-cloud extras: integrated gradients'
            ``completeness_error`` (B,), |sum of scores - (y(p) - y(baseline))|, and
            ``delta`` (B,), y(p) - y(baseline).
        **options: The method's options: ``batch_size`` for all (clouds per pass; rows of
            clouds x steps for integrated gradients, of clouds x patches for occlusion);
            ``alpha`` (spherical-saliency); ``steps`` (integrated-gradients); ``layer``
            (grad-cam: a per-point layer, default the model's last flow layer;
            critical-points: a max-pooled per-point layer, the same default); ``patches``
            and ``k`` (occlusion: patch centres and points per patch, default
            ceil(2N / patches), so that patches overlap).

    Returns:
        Scores (B, N) as a float tensor on the model's device; with `return_extras`, a
        tuple (scores, extras).

    Raises:
        ValueError: An unknown method or option, clouds that are not (B, N, 3) or hold NaN,
            targets outside the model's classes, an unknown layer or one that is not per
            point, or an option out of range (e.g. k > N).
        TypeError: Points that are not a tensor or array.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    opts = _options(method, options, OPTIONS[method])
    device = model_device(model)
    points = as_clouds(points).to(device)
    with frozen(model):
        with torch.no_grad():
            num_classes = forward(model, points[:1]).shape[1]
        targets = as_targets(targets, points.shape[0], num_classes, device)
        scores, extras = _run(method, model, points, targets, opts)
    return (scores, extras) if return_extras else scores


def model_device(model) -> torch.device:
    """Where the model's parameters are (the CPU for a model without any)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _run(method, model, points, targets, opts):
    from . import cam, gradients, occlusion

    size = opts.pop("batch_size")
    if method == "integrated-gradients":
        return gradients.integrated_gradients(model, points, targets, steps=opts["steps"], batch_size=size)
    if method == "occlusion":
        k = opts["k"]
        n = points.shape[1]
        patches = _positive("patches", opts["patches"], n, "N")
        k = math.ceil(2 * n / patches) if k is None else k
        k = _positive("k", k, n, "N")
        return occlusion.occlusion(model, points, targets, patches, min(k, n), batch_size=size), {}
    run = {"saliency": gradients.saliency, "spherical-saliency": gradients.spherical_saliency,
           "grad-cam": cam.grad_cam, "critical-points": cam.critical_counts}[method]
    parts = [run(model, points[a:b], targets[a:b], **opts) for a, b in chunks(points.shape[0], size)]
    return torch.cat(parts), {}


def _positive(name: str, value, most: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an integer in [1, {what}={most}], got {value!r}")
    return int(value)
