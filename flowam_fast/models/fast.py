"""Eval-mode fast paths of the built-in models on the fused ops (docs/design.md, "Fast paths").

The model is frozen in eval mode during AM, so each BatchNorm is a per-channel affine map,
folded here into the preceding linear map. Two exact rewrites then remove most of the work:

- PointNet's max-pooled blocks (both T-Nets' conv3 and the encoder's conv3) run as
  `linear_max`: GEMM tile + affine + activation + running max, never writing the (B, N, C)
  activation, with a backward that touches only each channel's argmax point.
- DGCNN's EdgeConv, W [x_j - x_i, x_i] = W1 x_j + (W2 - W1) x_i = P_j + Q_i, runs as a
  gather-max of P over the kNN graph (`edge_max`) plus Q: no (B, 2C, N, k) edge tensor. The
  folded BN scale is inside P, so a negative scale turns the max into a min by itself, and
  LeakyReLU is increasing, so max_j act(P_j + Q_i) = act(max_j P_j + Q_i).
- PointNet++'s set abstractions sample and group with the fused index ops
  (`farthest_point_sample`, `ball_query`); the first shared layer, W [x_j - x_i, f_j] =
  P_j - Q_i, runs as `group_gather` (gather, difference, affine, ReLU) without the grouped
  input; the middle one is a dense GEMM over the S * K grouped rows; the last one with the
  max over each group is `group_linear_max`; the group-all layer is one group of every point.

Everything runs points-last (B, N, C), PointNet++'s groups (B, S, K, C). Activation taps are
still called with the plain path's views ((B, C, N); (B, C, K, S)), so hooks (FlowAM's flow
term) see exactly what the plain path gives them; a tap with hooks on a max-pooled layer, or on
PointNet++'s fused first layer, makes that layer dense, since its statistics need every point,
unless its hooks take `ops.LinearActs` on a max-pooled layer (a flow term on moments:
`activations.accepts_linear`), which carry the layer's input and folded map and cost no GEMM
here.

`model.fast_path = False` (or `with plain_path(model):`) goes back to the plain PyTorch path;
training (BatchNorm in training mode) always uses the plain path.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .. import ops
from .activations import accepts_linear


def use_fast_path(model) -> bool:
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


def _dense(x, w, scale, shift, negative_slope):
    """act(scale * (x W^T) + shift) on points-last x (B, N, Cin); slope None = no activation."""
    y = torch.addmm(shift, x.reshape(-1, x.shape[-1]), (w * scale[:, None]).t()).view(*x.shape[:-1], -1)
    return y if negative_slope is None else F.leaky_relu(y, negative_slope)


def _tap(tap, x):
    """Pass points-last x through an activation tap that expects the plain path's layout: (B, N, C)
    as (B, C, N), PointNet++'s groups (B, S, K, C) as (B, C, K, S). Both are the one
    permutation (the point dimensions reversed behind the channels), which undoes itself."""
    order = (0, x.dim() - 1, *range(x.dim() - 2, 0, -1))
    return tap(x.permute(order)).permute(order)


def _hooked(module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _max_block(x, layer, bn, negative_slope, tap=None):
    """max over points of act(bn(layer(x))), fused: x (B, N, Cin) -> (B, Cout), or PointNet++'s
    groups (B, S, K, Cin) -> (B, S, Cout), the max over each group's K points. A hooked tap
    (the flow term needs every point) gets the dense pre-activation as well; the pooled value
    still comes from the fused op, whose sparse backward is cheaper than a dense max's even
    with the GEMM done twice."""
    w, scale, shift = fold_bn(layer, bn)
    if tap is not None and accepts_linear(tap):
        # Every (neighbour, centroid) pair is a point of a grouped layer.
        tap(ops.LinearActs(x.flatten(1, -2), w * scale[:, None], shift))
    elif tap is not None and _hooked(tap):
        _tap(tap, _dense(x, w, scale, shift, None))
    pool = ops.group_linear_max if x.dim() == 4 else ops.linear_max
    return pool(x, w, scale, shift, 1.0 if negative_slope is None else negative_slope)


def _stn(stn, x):
    h = F.relu(_tap(stn.act1, _dense(x, *fold_bn(stn.conv1, stn.bn1), None)))
    h = F.relu(_tap(stn.act2, _dense(h, *fold_bn(stn.conv2, stn.bn2), None)))
    g = _max_block(h, stn.conv3, stn.bn3, 0.0, tap=stn.act3)
    g = F.relu(stn.bn4(stn.fc1(g)))
    g = F.relu(stn.bn5(stn.fc2(g)))
    g = stn.fc3(g)
    eye = torch.eye(stn.k, dtype=g.dtype, device=g.device).reshape(1, -1)
    return (g + eye).view(-1, stn.k, stn.k)


def pointnet_forward(model, x):
    """PointNet logits (B, K) from x (B, 3, N), on the fused ops."""
    feat = model.feat
    p = x.transpose(1, 2)
    trans = _stn(feat.stn, p)
    p = torch.bmm(p, trans)
    h = F.relu(_tap(feat.act1, _dense(p, *fold_bn(feat.conv1, feat.bn1), None)))
    trans_feat = None
    if feat.feature_transform:
        trans_feat = _stn(feat.fstn, h)
        h = torch.bmm(h, trans_feat)
    h = F.relu(_tap(feat.act2, _dense(h, *fold_bn(feat.conv2, feat.bn2), None)))
    g = _max_block(h, feat.conv3, feat.bn3, None, tap=feat.act3)
    model.last_trans_feat = trans_feat
    g = F.relu(model.bn1(model.fc1(g)))
    g = F.relu(model.bn2(model.dropout(model.fc2(g))))
    return model.fc3(g)


def _edge_conv(x, block, k):
    """One EdgeConv of DGCNN on points-last features x (B, N, C): (B, N, Cout)."""
    conv, bn, act = block[0], block[1], block[2]
    w, scale, shift = fold_bn(conv, bn)
    c = x.shape[-1]
    w1, w2 = w[:, :c], w[:, c:]
    _, idx = ops.knn(x.detach(), k)
    p = torch.matmul(x, (w1 * scale[:, None]).t())
    q = torch.addmm(shift, x.reshape(-1, c), ((w2 - w1) * scale[:, None]).t()).view(*x.shape[:-1], -1)
    return F.leaky_relu(ops.edge_max(p, idx) + q, act.negative_slope)


def dgcnn_forward(model, x):
    """DGCNN logits (B, K) from x (B, 3, N), on the fused ops."""
    h = x.transpose(1, 2)
    feats = []
    for block, tap in model.edge_blocks():
        h = _tap(tap, _edge_conv(h, block, model.k))
        feats.append(h)
    h = torch.cat(feats, dim=-1)
    conv5, bn5, act5 = model.conv5[0], model.conv5[1], model.conv5[2]
    h = _tap(model.act5, _dense(h, *fold_bn(conv5, bn5), act5.negative_slope))
    g = torch.cat((h.max(dim=1).values, h.mean(dim=1)), dim=1)
    return model.head(g)


def gather(points, idx):
    """points (B, N, C) at idx (B, *I): (B, *I, C); PointNet++'s centroids and groups, on
    both paths."""
    b = points.shape[0]
    flat = idx.reshape(b, -1, 1).expand(-1, -1, points.shape[-1])
    return points.gather(1, flat).view(*idx.shape, points.shape[-1])


def _group_first_layer(P, Q, idx, scale, shift, tap):
    """relu(scale * (P_j - Q_i) + shift) over the groups (B, S, K, C), fused by `group_gather`
    unless a hooked tap needs the pre-activations, or the folded BatchNorm needs a gradient
    (which `group_gather` does not give: a model with trainable parameters in eval mode)."""
    if _hooked(tap) or (torch.is_grad_enabled() and (scale.requires_grad or shift.requires_grad)):
        return F.relu(_tap(tap, scale * (gather(P, idx) - Q.unsqueeze(2)) + shift))
    return ops.group_gather(P, Q, idx, scale, shift)


def _group_mlp(h, convs, bns, taps):
    """The shared layers convs[:-1] (dense, BN folded, ReLU) on the groups h (B, S, K, C), then
    the last one fused with its ReLU and the max over each group: (B, S, C_out)."""
    for conv, bn, tap in zip(convs[:-1], bns[:-1], taps[:-1]):
        h = F.relu(_tap(tap, _dense(h, *fold_bn(conv, bn), None)))
    return _max_block(h, convs[-1], bns[-1], 0.0, tap=taps[-1])


def _sa_scale(xyz, feats, centroids, scale_layers, features_first):
    """One scale of a PointNet++ set abstraction: the pooled features (B, S, C_out) of the
    groups of xyz (B, N, 3) with features feats (B, N, D) or None around centroids (B, S, 3).
    The first layer's W [x_j - x_i, f_j] is P_j - Q_i (P = W_x x_j + W_f f_j per point,
    Q = W_x x_i per centroid), so the (B, S, K, 3 + D) grouped input is never written."""
    radius, nsample, convs, bns, taps = scale_layers
    idx = ops.ball_query(xyz.detach(), centroids.detach(), radius, nsample)
    w, scale, shift = fold_bn(convs[0], bns[0])
    d = 0 if feats is None else feats.shape[-1]
    wx, wf = (w[:, d:], w[:, :d]) if features_first else (w[:, :3], w[:, 3:])
    P = torch.matmul(xyz, wx.t())
    if feats is not None:
        P = P + torch.matmul(feats, wf.t())
    h = _group_first_layer(P, torch.matmul(centroids, wx.t()), idx, scale, shift, taps[0])
    return _group_mlp(h, convs[1:], bns[1:], taps[1:])


def pointnet2_forward(model, x):
    """PointNet++ (SSG or MSG) logits (B, K) from x (B, 3, N), on the fused ops."""
    xyz, feats = x.transpose(1, 2), None
    for sa in (model.sa1, model.sa2):
        centroids = gather(xyz, ops.farthest_point_sample(xyz.detach(), sa.npoint))
        pooled = [_sa_scale(xyz, feats, centroids, layers, sa.features_first) for layers in sa.scales()]
        xyz, feats = centroids, pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)
    # The group-all layer: one group of every point, offsets from the origin, then the features.
    sa3 = model.sa3
    g = _group_mlp(torch.cat((xyz, feats), dim=-1).unsqueeze(1), sa3.mlp_convs, sa3.mlp_bns, sa3.acts)
    return model.head(g.flatten(1))
