"""The fused layers of the built-in models: modules that run eval mode on the fused ops and
everything else on the plain PyTorch layers (docs/design.md, "Fast paths").

The model is frozen in eval mode during AM, so each BatchNorm is a per-channel affine map,
folded here into the preceding linear map. Each fused layer chooses in its own `forward`:

- `SharedLinear`: a per-point linear layer with its BatchNorm and activation (a GEMM on
  points-last memory, the BatchNorm folded in).
- `LinearBNMax`: the same followed by the max over the points (PointNet's and its T-Nets'
  conv3; the last shared layer of a PointNet++ group) as `linear_max` / `group_linear_max`:
  GEMM tile + affine + activation + running max, never writing the (B, N, C) activation,
  with a backward that touches only each channel's argmax point.
- `dgcnn.EdgeConv`: W [x_j - x_i, x_i] = W1 x_j + (W2 - W1) x_i = P_j + Q_i, a gather-max
  of P over the kNN graph (`edge_max`) plus Q: no (B, 2C, N, k) edge tensor. The folded BN
  scale is inside P, so a negative scale turns the max into a min by itself, and LeakyReLU
  is increasing, so max_j act(P_j + Q_i) = act(max_j P_j + Q_i).
- `pointnet2.GroupScale` (one scale of a set abstraction): the groups from the fused index
  ops (`farthest_point_sample` upstream, `ball_query`); the first shared layer,
  W [x_j - x_i, f_j] = P_j - Q_i, as `group_gather` (gather, difference, affine, ReLU)
  without the grouped input; the middle ones as `SharedLinear`, the last as `LinearBNMax`.

The fused layers hold their layers by reference: the model keeps them under the reference
implementations' names, so state_dict keys do not change. Every fused layer takes and returns
the plain path's layout, channels first ((B, C, N); PointNet++'s groups (B, C, K, S)); on the
fast path that is a view of points-last memory ((B, N, C); (B, S, K, C)), which the next fused
layer reads without a copy, and which the activation taps see exactly as on the plain path.

A tap (`activations.Tap`) on a max-pooled layer, or on PointNet++'s fused first layer, is
called only when a recorder requests it: a request for dense activations makes that layer
dense (its statistics need every point); a request that takes `ops.LinearActs` on a
max-pooled layer (a flow term on moments) gets the layer's input and folded map, at no GEMM.

`model.fast_path = False` (or `with plain_path(model):`) sets every fused layer of the model to
the plain path; training (BatchNorm in training mode) always uses the plain path.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from .activations import Tap


class Fused(nn.Module):
    """A layer that runs on the fused ops in eval mode while `fused` is set (the model's
    `fast_path` sets it), and on the plain PyTorch layers otherwise."""

    def __init__(self):
        super().__init__()
        self.fused = True

    def use_fused(self) -> bool:
        """True when this forward pass runs on the fused ops: `fused` set, in eval mode."""
        return self.fused and not self.training


class FastPathModel(nn.Module):
    """A model built from `Fused` layers: its `fast_path` switches them all."""

    @property
    def fast_path(self) -> bool:
        """Eval mode runs on the fused ops; False for the plain PyTorch path."""
        return self.__dict__.get("_fast_path", True)

    @fast_path.setter
    def fast_path(self, value: bool) -> None:
        self.__dict__["_fast_path"] = bool(value)
        for m in self.modules():
            if isinstance(m, Fused):
                m.fused = bool(value)


def use_fast_path(model) -> bool:
    """True when `model` runs on its fused layers now: `fast_path` set, in eval mode."""
    return getattr(model, "fast_path", False) and not model.training


@contextlib.contextmanager
def plain_path(model):
    """Context manager: run `model` on the plain PyTorch path inside the block.

    Sets `model.fast_path = False` and restores it on exit; the plain path calls every
    module, so any layer can be recorded there.
    """
    old = model.fast_path
    model.fast_path = False
    try:
        yield model
    finally:
        model.fast_path = old


def fold_bn(layer, bn):
    """(weight (Cout, Cin), scale (Cout), shift (Cout)) with bn(layer(x)) = scale * (W x) + shift
    in eval mode. `layer` is a Conv1d/Conv2d with kernel size 1 or a Linear."""
    w = layer.weight.reshape(layer.weight.shape[0], -1)
    inv = torch.rsqrt(bn.running_var + bn.eps)
    scale = inv if bn.weight is None else bn.weight * inv
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if getattr(layer, "bias", None) is not None:
        shift = shift + scale * layer.bias
    return w, scale, shift


def _act(y, negative_slope):
    """The activation: None none, 0 ReLU, else LeakyReLU."""
    if negative_slope is None:
        return y
    return F.relu(y) if negative_slope == 0 else F.leaky_relu(y, negative_slope)


def _dense(x, w, scale, shift):
    """scale * (x W^T) + shift on points-last x (B, *P, Cin)."""
    return torch.addmm(shift, x.reshape(-1, x.shape[-1]), (w * scale[:, None]).t()).view(*x.shape[:-1], -1)


def flip(x):
    """Channels-first (B, C, N) <-> points-last (B, N, C); PointNet++'s groups (B, C, K, S) <->
    (B, S, K, C). Both are the one permutation (the point dimensions reversed behind the
    channels), which undoes itself; a view."""
    return x.permute(0, x.dim() - 1, *range(x.dim() - 2, 0, -1))


def cat_channels(parts):
    """torch.cat(parts, dim=1) in the parts' own memory layout: channels-first views of
    points-last memory (the fast path's) are joined points-last, so the next fused layer reads
    them without a copy."""
    if all(p.dim() == 3 and p.stride(1) == 1 and p.shape[2] > 1 for p in parts):
        return torch.cat([p.transpose(1, 2) for p in parts], dim=2).transpose(1, 2)
    return torch.cat(parts, dim=1)


def max_and_mean(x):
    """The max and the mean over the points of x (B, C, N), each (B, C), reduced in x's
    memory layout: a channels-first view of points-last memory (the fast path's) over its
    points-last dimension, so that the max's backward writes its gradient points-last too (a
    gradient in the other layout would make the activation's backward stride across memory)."""
    if x.stride(1) == 1 and x.shape[2] > 1:
        p = x.transpose(1, 2)
        return p.max(dim=1).values, p.mean(dim=1)
    return x.max(dim=2).values, x.mean(dim=2)


def _wants(tap) -> str | None:
    return tap.wanted() if isinstance(tap, Tap) else None


class SharedLinear(Fused):
    """A shared per-point layer: act(tap(bn(conv(x)))), or with `tap_after_act`
    tap(act(bn(conv(x)))), on (B, C_in, *P) -> (B, C_out, *P).

    Args:
        conv: The 1x1 Conv1d/Conv2d (held by reference).
        bn: Its BatchNorm (held by reference).
        tap: The activation tap.
        negative_slope: None for no activation, 0 for ReLU, else LeakyReLU's slope.
        tap_after_act: The tap reads the activation's output, not its input.
    """

    def __init__(self, conv, bn, tap, negative_slope=0.0, tap_after_act: bool = False):
        super().__init__()
        self.layers = (conv, bn, tap)
        self.negative_slope, self.tap_after_act = negative_slope, tap_after_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, tap = self.layers
        if self.use_fused():
            y = flip(_dense(flip(x), *fold_bn(conv, bn)))
        else:
            y = bn(conv(x))
        if self.tap_after_act:
            return tap(_act(y, self.negative_slope))
        return _act(tap(y), self.negative_slope)


class LinearBNMax(Fused):
    """The max over the points of act(bn(conv(x))), the tap reading bn(conv(x)):
    (B, C_in, N) -> (B, C_out), or PointNet++'s groups (B, C_in, K, S) -> (B, C_out, S), the
    max over each group's K points.

    On the fused path the tap is called only when a recorder requests it; the pooled value
    comes from the fused op even then, whose sparse backward is cheaper than a dense max's
    even with the GEMM done twice.

    Args:
        conv: The 1x1 Conv1d/Conv2d (held by reference).
        bn: Its BatchNorm (held by reference).
        tap: The activation tap.
        negative_slope: None for no activation, 0 for ReLU.
    """

    def __init__(self, conv, bn, tap, negative_slope=0.0):
        super().__init__()
        self.layers = (conv, bn, tap)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, tap = self.layers
        if not self.use_fused():
            return _act(tap(bn(conv(x))), self.negative_slope).max(dim=2).values
        p = flip(x)
        w, scale, shift = fold_bn(conv, bn)
        wanted = _wants(tap)
        if wanted == "linear":
            # Every (neighbour, centroid) pair is a point of a grouped layer.
            tap.offer(ops.LinearActs(p.flatten(1, -2), w * scale[:, None], shift))
        elif wanted == "dense":
            tap(flip(_dense(p, w, scale, shift)))
        pool = ops.group_linear_max if p.dim() == 4 else ops.linear_max
        y = pool(p, w, scale, shift, 1.0 if self.negative_slope is None else self.negative_slope)
        return y if y.dim() == 2 else y.transpose(1, 2)


def gather(points, idx):
    """points (B, N, C) at idx (B, *I): (B, *I, C); PointNet++'s centroids and groups, on
    both paths."""
    b = points.shape[0]
    flat = idx.reshape(b, -1, 1).expand(-1, -1, points.shape[-1])
    return points.gather(1, flat).view(*idx.shape, points.shape[-1])
