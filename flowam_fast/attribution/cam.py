"""The layer methods: Grad-CAM on a per-point layer and the critical-point counts of a max-pooled
layer (definitions in `methods`). A layer is read through its module's forward hook
(`models.get_activations`), by the names of `models.layer_root(model)`."""
from __future__ import annotations

import contextlib

import torch

from ..models.activations import default_layers, get_activations
from ..models.adapter import layer_root
from ..models.fast import plain_path


def _layer(model, layer) -> str:
    if layer is None:
        try:
            return default_layers(model)[-1]
        except ValueError:
            raise ValueError(f"{type(layer_root(model)).__name__} has no default layer: pass layer= with the name of "
                             "a per-point layer (a module whose output is (B, C, N))") from None
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str), got {type(layer).__name__}")
    return layer


def _per_point(acts: torch.Tensor, layer: str, n: int) -> torch.Tensor:
    if acts.shape[2] != n:
        raise ValueError(f"layer {layer!r} has {acts.shape[2]} positions per cloud, not one per input point ({n}): "
                         "choose a per-point layer, whose output is (B, C, N) (a grouped layer, as PointNet++'s, has "
                         "none: there the gradient methods and occlusion apply)")
    return acts


def grad_cam(model, points, targets, layer=None) -> torch.Tensor:
    """relu(sum_c a_c A_cn) on layer A (B, C, N), a_c the mean over points of dy/dA_cn: (B, N).

    A fused fast path computes a max-pooled layer's output without the tap's copy of it (the
    copy only feeds the recorder), so no gradient reaches the tap there: the model then runs
    on its plain path, where every tap lies on the way to the logits.
    """
    layer = _layer(model, layer)
    root = layer_root(model)
    for plain in (False, True):
        if plain and not hasattr(root, "fast_path"):
            break
        with plain_path(root) if plain else contextlib.nullcontext(), torch.enable_grad():
            x = points.detach().transpose(1, 2).requires_grad_(True)
            logits, acts = get_activations(model, x, [layer])
            a = _per_point(acts[layer], layer, points.shape[1])
            y = logits.gather(1, targets[:, None]).sum()
            (g,) = torch.autograd.grad(y, a, allow_unused=True)
        if g is not None:
            weights = g.mean(dim=2, keepdim=True)
            return torch.relu((weights * a.detach()).sum(dim=1))
    raise ValueError(f"the logits of {type(root).__name__} do not depend on layer {layer!r}: choose a layer on the "
                     "way from the points to the logits")


def critical_counts(model, points, targets=None, layer=None) -> torch.Tensor:
    """How many channels of a max-pooled per-point layer take their maximum at each point.

    Ties go to the smaller point index, as in `ops.linear_max`. The built-in models' taps sit
    before the activation; an increasing activation keeps the argmax. PointNet's critical
    points are those with a count > 0.

    Args:
        model: The classifier.
        points: Clouds (B, N, 3), on the model's device.
        targets: Not used: the counts do not depend on the class (here so that every method
            takes the same arguments).
        layer: The layer's module name, whose output is (B, C, N) and pooled by a max over
            the points; default the model's last flow layer (PointNet's ``feat.act3``,
            DGCNN's ``act5``).

    Returns:
        Counts (B, N), summing to C over each cloud.

    Raises:
        ValueError: An unknown layer, one the forward pass does not call, or one that is not
            per point.
    """
    layer = _layer(model, layer)
    with torch.no_grad():
        _, acts = get_activations(model, points.transpose(1, 2), [layer])
    a = _per_point(acts[layer], layer, points.shape[1])
    idx = a.argmax(dim=2)  # the first maximum
    counts = torch.zeros(points.shape[:2], dtype=points.dtype, device=points.device)
    return counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=points.dtype))
