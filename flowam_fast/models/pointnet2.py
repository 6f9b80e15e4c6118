"""PointNet++ classifiers (single-scale `PointNet2SSG`, multi-scale `PointNet2MSG`) whose
state_dict keys match the widely used public PyTorch implementation
(yanx27/Pointnet_Pointnet2_pytorch, `models/pointnet2_cls_ssg.py` and `pointnet2_cls_msg.py`,
layers in `models/pointnet2_utils.py`), so its checkpoints load as they are: its training
script saves the state_dict under 'model_state_dict' (see
:func:`flowam_fast.models.checkpoint.load_checkpoint`).

The models are the public ones without normals (`normal_channel=False`: 3 input channels);
FlowAM optimizes coordinates only, so a checkpoint trained with normals is refused. A
set-abstraction (SA) layer samples S centroids by farthest point sampling, groups the first
K points within radius r of each centroid (ball query), runs a shared MLP (1x1 Conv2d +
BatchNorm2d + ReLU) on each neighbour's offset and features, and max-pools over the K
neighbours; the last SA layer groups all points. Differences from the public code:

- Farthest point sampling starts at point 0, as the original CUDA op does; the public PyTorch
  code starts each cloud at a random index, so its outputs vary from call to call. Ties go to
  the smaller index. A model here is a deterministic function of its input, which AM needs.
- `forward` returns logits (B, num_classes): the public model returns (log_softmax,
  l3_points), and its log-softmax is the log-softmax of these logits.
- Activation taps (`activations.Tap`) at every shared-MLP layer, after its BatchNorm and before
  its ReLU, mirroring the conv lists: ``sa1.acts.0..2`` (SSG) or ``sa1.acts.<scale>.<layer>``
  (MSG's multi-scale layers), ``sa3.acts.0..2``. Each sees the grouped layout (B, C, K, S):
  every (neighbour, centroid) position is a point of that layer; the group-all layer's is
  (B, C, N, 1).
- ``width`` scales every hidden width for small CPU models; width=1 gives exactly the public
  shapes.
- ``npoints``, ``radii`` and ``nsamples`` set the first two SA layers' centroids, ball radii
  and neighbours (the defaults are the public values), for models small enough to train and
  explain on a CPU. A cloud needs at least as many points as the first SA layer samples
  (below that the public code repeats centroids).

The sampling and grouping here are the public algorithm (a B x S x N distance matrix, a sort
per centroid, the grouped tensor written out): the plain path, and the definition the fused
path reproduces (docs/design.md, "PointNet++ on the fused kernels"). Each scale of a set
abstraction is a `GroupScale`, which runs eval mode on the fused ops (``model.fast_path =
False`` for the plain path); training runs the plain layers but samples and groups with the
fused index ops.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from .activations import Tap
from .fast import FastPathModel, Fused, LinearBNMax, SharedLinear, flip, fold_bn, gather
from .linear import RowLinear
from .pointnet import scaled


@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """Indices (B, npoint) of the farthest point sampling of xyz (B, N, 3).

    Starts at point 0; each next point is the one farthest from those already chosen (the
    smaller index on ties). No gradient: the result is indices.
    """
    b, n, _ = xyz.shape
    idx = torch.zeros(b, npoint, dtype=torch.long, device=xyz.device)
    nearest = torch.full((b, n), float("inf"), dtype=xyz.dtype, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    far = torch.zeros(b, dtype=torch.long, device=xyz.device)
    for i in range(npoint):
        idx[:, i] = far
        d2 = ((xyz - xyz[rows, far].unsqueeze(1)) ** 2).sum(-1)
        nearest = torch.minimum(nearest, d2)
        far = nearest.argmax(dim=1)  # the first maximal index
    return idx


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances (B, S, N) between a (B, S, 3) and b (B, N, 3), expanded as
    |a|^2 + |b|^2 - 2 a.b as the public code computes them (so that a point on a ball's
    boundary falls on the same side)."""
    d = -2 * torch.matmul(a, b.transpose(1, 2))
    d += (a ** 2).sum(-1).unsqueeze(2)
    d += (b ** 2).sum(-1).unsqueeze(1)
    return d


@torch.no_grad()
def ball_query(xyz: torch.Tensor, centroids: torch.Tensor, radius: float, nsample: int) -> torch.Tensor:
    """Indices (B, S, nsample) of the points of xyz (B, N, 3) near each centroid (B, S, 3).

    For each centroid: the first `nsample` points in index order with d^2 <= radius^2, padded
    with the first of them (the public rule: mask, sort, take, pad).
    """
    b, n, _ = xyz.shape
    d2 = square_distance(centroids, xyz)
    order = torch.arange(n, device=xyz.device).expand_as(d2)
    idx = torch.where(d2 > radius ** 2, n, order).sort(dim=-1).values[..., :nsample]
    return torch.where(idx == n, idx[..., :1], idx)


def _centroids(xyz: torch.Tensor, npoint: int, fused: bool) -> torch.Tensor:
    """The npoint centroids (B, S, 3) farthest point sampling picks from xyz (B, N, 3); fused:
    the indices from the fused op (the same rule, no distance loop in Python)."""
    idx = ops.farthest_point_sample(xyz.detach(), npoint) if fused else farthest_point_sample(xyz, npoint)
    return gather(xyz, idx)


def _groups(xyz: torch.Tensor, centroids: torch.Tensor, radius: float, nsample: int, fused: bool) -> torch.Tensor:
    """`ball_query`'s indices (B, S, nsample); fused: from the fused op (no distance matrix or sort)."""
    if fused:
        return ops.ball_query(xyz.detach(), centroids.detach(), radius, nsample)
    return ball_query(xyz, centroids, radius, nsample)


def _mlp(in_channels: int, widths) -> tuple:
    """(convs, bns, taps) ModuleLists of a shared MLP: 1x1 Conv2d + BatchNorm2d per width."""
    convs, bns, taps = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
    for out in widths:
        convs.append(nn.Conv2d(in_channels, out, 1))
        bns.append(nn.BatchNorm2d(out))
        taps.append(Tap())
        in_channels = out
    return convs, bns, taps


class GroupScale(Fused):
    """One scale of a set abstraction: the groups of the points around the centroids and the
    shared MLP on them (1x1 conv + BatchNorm + ReLU per layer, the tap before each ReLU),
    max-pooled over each group: the pooled features (B, S, C_out), points-last.

    The fused path groups with `ops.ball_query` and runs the first layer, W [x_j - x_i, f_j]
    = P_j - Q_i (P = W_x x_j + W_f f_j per point, Q = W_x x_i per centroid), as
    `ops.group_gather` (gather, difference, affine, ReLU), so the (B, S, K, 3 + D) grouped
    input is never written; the middle layers as `fast.SharedLinear` on the S * K grouped
    rows, the last as `fast.LinearBNMax` (`ops.group_linear_max`). The plain path is the
    public algorithm (in training with the fused index ops: no gradient flows through
    indices).

    Args:
        radius: Ball radius; None for the group of every point around the origin (the last
            SA layer).
        nsample: Neighbours grouped per centroid (ignored with radius None).
        convs: The shared MLP's 1x1 Conv2d layers (held by reference, as are bns and taps).
        bns: Their BatchNorm2d layers.
        taps: Their activation taps.
        features_first: The grouped input is [features, offsets] (MSG), not
            [offsets, features] (SSG).
    """

    def __init__(self, radius, nsample, convs, bns, taps, features_first: bool):
        super().__init__()
        self.radius, self.nsample, self.features_first = radius, nsample, features_first
        self.mlp = nn.ModuleList([SharedLinear(c, b, t) for c, b, t in zip(convs[:-1], bns[:-1], taps[:-1])]
                                 + [LinearBNMax(convs[-1], bns[-1], taps[-1])])

    def _grouped(self, xyz, feats, centroids):
        """The grouped input (B, S, K, 3 + D), points-last, written out."""
        if self.radius is None:  # the coordinates themselves (the offsets from the origin), then the features
            return xyz.unsqueeze(1) if feats is None else torch.cat((xyz, feats), dim=-1).unsqueeze(1)
        idx = _groups(xyz, centroids, self.radius, self.nsample, fused=self.training)
        grouped = gather(xyz, idx) - centroids.unsqueeze(2)
        if feats is None:
            return grouped
        return torch.cat((gather(feats, idx), grouped) if self.features_first else (grouped, gather(feats, idx)), dim=-1)

    def _first_fused(self, xyz, feats, centroids):
        """The first layer's output on the groups, (B, C, K, S), from P and Q. `group_gather`
        fuses it unless its tap is requested or the folded BatchNorm needs a gradient (which
        `group_gather` does not give: a model with trainable parameters in eval mode)."""
        conv, bn, tap = self.mlp[0].layers
        idx = _groups(xyz, centroids, self.radius, self.nsample, fused=True)
        w, scale, shift = fold_bn(conv, bn)
        d = 0 if feats is None else feats.shape[-1]
        wx, wf = (w[:, d:], w[:, :d]) if self.features_first else (w[:, :3], w[:, 3:])
        P = torch.matmul(xyz, wx.t())
        if feats is not None:
            P = P + torch.matmul(feats, wf.t())
        Q = torch.matmul(centroids, wx.t())
        if tap.wanted() or (torch.is_grad_enabled() and (scale.requires_grad or shift.requires_grad)):
            return F.relu(tap(flip(scale * (gather(P, idx) - Q.unsqueeze(2)) + shift)))
        return flip(ops.group_gather(P, Q, idx, scale, shift))

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None, centroids: torch.Tensor | None):
        """xyz (B, N, 3), feats (B, N, D) or None, centroids (B, S, 3) (None for the group of
        every point) -> the pooled features (B, S, C_out)."""
        if self.radius is not None and self.use_fused():
            h, layers = self._first_fused(xyz, feats, centroids), self.mlp[1:]
        else:  # (B, S, K, C) -> (B, C, K, S), the public layout the taps see
            h, layers = flip(self._grouped(xyz, feats, centroids)), self.mlp
        for layer in layers:
            h = layer(h)
        return h.transpose(1, 2)


class SetAbstraction(Fused):
    """One single-scale SA layer (the public `PointNetSetAbstraction`: `mlp_convs.L`,
    `mlp_bns.L`), or with `group_all` the last one, which groups every point around the
    origin.

    Args:
        npoint: Centroids sampled (ignored with group_all).
        radius: Ball radius (ignored with group_all).
        nsample: Neighbours grouped per centroid (ignored with group_all).
        in_channels: Input features per point plus 3 for the coordinates.
        widths: Output channels of the shared MLP's layers.
        group_all: Group all points into one group.
    """

    #: The grouped input is [offsets, features].
    features_first = False

    def __init__(self, npoint, radius, nsample, in_channels: int, widths, group_all: bool = False):
        super().__init__()
        self.npoint, self.radius, self.nsample, self.group_all = npoint, radius, nsample, group_all
        self.mlp_convs, self.mlp_bns, self.acts = _mlp(in_channels, widths)
        self.scale = GroupScale(None if group_all else radius, nsample, self.mlp_convs, self.mlp_bns, self.acts,
                                self.features_first)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None):
        """xyz (B, N, 3), feats (B, N, D) or None -> (centroids (B, S, 3), features (B, S, C))."""
        if self.group_all:
            return xyz.new_zeros(xyz.shape[0], 1, 3), self.scale(xyz, feats, None)
        centroids = _centroids(xyz, self.npoint, fused=self.training or self.use_fused())
        return centroids, self.scale(xyz, feats, centroids)


class SetAbstractionMSG(Fused):
    """One multi-scale SA layer (the public `PointNetSetAbstractionMsg`: `conv_blocks.i.L`,
    `bn_blocks.i.L` for scale i): one set of centroids, a ball query and shared MLP per scale,
    the scales' pooled features concatenated.

    Args:
        npoint: Centroids sampled.
        radii: Ball radius of each scale.
        nsamples: Neighbours grouped per centroid at each scale.
        in_channels: Input features per point (0 for the coordinates alone); each scale's
            MLP reads these plus the 3 offsets.
        widths: Each scale's shared-MLP output channels.
    """

    #: The grouped input is [features, offsets], unlike the single-scale layer's.
    features_first = True

    def __init__(self, npoint: int, radii, nsamples, in_channels: int, widths):
        super().__init__()
        self.npoint, self.radii, self.nsamples = npoint, tuple(radii), tuple(nsamples)
        self.conv_blocks, self.bn_blocks, self.acts = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.scales = nn.ModuleList()
        for radius, nsample, scale_widths in zip(self.radii, self.nsamples, widths):
            convs, bns, taps = _mlp(in_channels + 3, scale_widths)
            self.conv_blocks.append(convs)
            self.bn_blocks.append(bns)
            self.acts.append(taps)
            self.scales.append(GroupScale(radius, nsample, convs, bns, taps, self.features_first))

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None):
        """xyz (B, N, 3), feats (B, N, D) or None -> (centroids (B, S, 3), features (B, S, C))."""
        centroids = _centroids(xyz, self.npoint, fused=self.training or self.use_fused())
        return centroids, torch.cat([scale(xyz, feats, centroids) for scale in self.scales], dim=-1)


def _sizes(name: str, npoints, radii, nsamples, scales: int | None):
    """(npoints, radii, nsamples) of sa1 and sa2, checked and as tuples: npoints two counts, the
    second at most the first (sa2 samples sa1's centroids); radii and nsamples one value per
    layer, or with `scales` (MSG) a sequence of `scales` values per layer."""
    def per_layer(what, value, kind, per):
        expected = f"{what} must be a pair (sa1, sa2) of " + (f"sequences of {per} " if per else "") + kind
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"{name}: {expected}, got {value!r}")
        out = []
        for item in value:
            vals = tuple(item) if per and isinstance(item, (list, tuple)) else (item,)
            if per and (not isinstance(item, (list, tuple)) or len(vals) != per):
                raise ValueError(f"{name}: {expected} (one per scale), got {value!r}")
            good = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                       and (kind != "positive integers" or v == int(v)) for v in vals)
            if not good:
                raise ValueError(f"{name}: {expected}, got {value!r}")
            vals = tuple(int(v) if kind == "positive integers" else float(v) for v in vals)
            out.append(vals if per else vals[0])
        return tuple(out)

    npoints = per_layer("npoints", npoints, "positive integers", None)
    if npoints[1] > npoints[0]:
        raise ValueError(f"{name}: npoints[1] (sa2's centroids) must be at most npoints[0] (sa1's centroids, which "
                         f"sa2 samples from), got {npoints!r}")
    return (npoints, per_layer("radii", radii, "positive numbers", scales),
            per_layer("nsamples", nsamples, "positive integers", scales))


class _PointNet2(FastPathModel):
    """The parts SSG and MSG share: the SA layers (sa1 and sa2 built by the subclass, which says
    how many channels sa2 outputs), the group-all sa3, the head `fc1, bn1, drop1, fc2, bn2,
    drop2, fc3`, the forward pass and the checks."""

    arch = ""
    #: Version of the activation taps, stored with flows so that flows of other taps are refused.
    tap_version = 1

    def __init__(self, num_classes: int, width: float, sizes, sa1: nn.Module, sa2: nn.Module, sa2_channels: int,
                 dropout2: float):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        npoints, radii, nsamples = sizes
        # Lists, so that a checkpoint's config reads back equal to the model's.
        self.config = {"num_classes": int(num_classes), "width": float(width), "npoints": list(npoints),
                       "radii": [list(r) if isinstance(r, tuple) else r for r in radii],
                       "nsamples": [list(k) if isinstance(k, tuple) else k for k in nsamples]}
        g, h1, h2 = (scaled(c, width) for c in (1024, 512, 256))
        self.sa1, self.sa2 = sa1, sa2
        self.sa3 = SetAbstraction(None, None, None, sa2_channels + 3, [scaled(256, width), scaled(512, width), g],
                                  group_all=True)
        self.fc1 = RowLinear(g, h1)
        self.bn1 = nn.BatchNorm1d(h1)
        self.drop1 = nn.Dropout(0.4)
        self.fc2 = RowLinear(h1, h2)
        self.bn2 = nn.BatchNorm1d(h2)
        self.drop2 = nn.Dropout(dropout2)
        self.fc3 = RowLinear(h2, num_classes)
        #: Eval mode runs on the fused layers (GroupScale); False for the plain path.
        self.fast_path = True

    @property
    def num_classes(self) -> int:
        """The number of classes (outputs of the last layer)."""
        return self.fc3.out_features

    def randomization_groups(self) -> list:
        """Parameter blocks from the output down, for the cascading randomization sanity check.

        Returns:
            A list of (name, module names) pairs: each head layer with its BatchNorm, then each
            SA layer whole (its shared MLPs, every scale's), as PointNet's T-Nets are one block:
            a stage per shared-MLP layer would be 9 (SSG) or 21 (MSG) checks where 3 say which
            level of the hierarchy the explanations depend on.
        """
        head = [("fc3", ["fc3"]), ("fc2", ["fc2", "bn2"]), ("fc1", ["fc1", "bn1"])]
        return head + [(sa, [sa]) for sa in ("sa3", "sa2", "sa1")]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != 3:
            extra = (" (a cloud with normals: this model reads coordinates only)"
                     if x.dim() == 3 and x.shape[1] == 6 else "")
            raise ValueError(f"{type(self).__name__} takes points (B, 3, N), got {tuple(x.shape)}{extra}")
        if x.shape[2] < self.sa1.npoint:
            raise ValueError(f"{type(self).__name__} samples {self.sa1.npoint} centroids in its first layer and needs "
                             f"at least that many points per cloud, got {x.shape[2]}")

    def head(self, g: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from the global feature g (B, C)."""
        g = self.drop1(F.relu(self.bn1(self.fc1(g))))
        g = self.drop2(F.relu(self.bn2(self.fc2(g))))
        return self.fc3(g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        # Training samples and groups with the fused index ops too (no gradient flows through
        # indices; the Python FPS loop was most of a small model's step). The plain eval path
        # keeps the public algorithm, the fast path's oracle.
        xyz, feats = self.sa1(x.transpose(1, 2), None)
        xyz, feats = self.sa2(xyz, feats)
        _, feats = self.sa3(xyz, feats)
        return self.head(feats.reshape(x.shape[0], -1))


class PointNet2SSG(_PointNet2):
    """PointNet++ single-scale classifier: points (B, 3, N), N >= npoints[0] -> logits (B, num_classes).

    Its state_dict keys match the public `pointnet2_cls_ssg.get_model(num_class,
    normal_channel=False)`: `sa1..sa3.mlp_convs.L`, `sa1..sa3.mlp_bns.L`, `fc1..fc3`, `bn1`,
    `bn2`. SA layers: 512 centroids, r 0.2, 32 neighbours, MLP (64, 64, 128); 128 centroids,
    r 0.4, 64 neighbours, (128, 128, 256); all points, (256, 512, 1024). Taps `saI.acts.L`.

    Args:
        num_classes: Number of classes.
        width: Scales every hidden width, for small models; 1 gives exactly the public shapes.
        npoints: Centroids sampled by sa1 and sa2 (sa2's at most sa1's).
        radii: Ball radius of sa1 and sa2.
        nsamples: Neighbours grouped per centroid by sa1 and sa2.

    Attributes:
        flow_layers: The per-point layers FlowAM aligns by default: sa1's last shared-MLP
            pre-activation.
        tap_version: Version of the activation taps, stored with flows.
        fast_path: Eval mode runs on the fused ops; False for the plain PyTorch path.

    Raises:
        ValueError: num_classes < 1, width <= 0 or invalid sizes; in forward, input not
            (B, 3, N) or fewer points than npoints[0].
    """

    arch = "pointnet2_ssg"
    #: sa1's last shared layer, before its ReLU and the max over each group. On the demo model
    #: it does as well as the larger sets tried (docs/design.md, "Which layers are aligned", has the
    #: table) at the cheapest step: the fast path hands the flow term its input and folded map
    #: (`ops.LinearActs`), not the activations.
    flow_layers = ("sa1.acts.2",)

    def __init__(self, num_classes: int = 40, width: float = 1.0, npoints=(512, 128), radii=(0.2, 0.4),
                 nsamples=(32, 64)):
        sizes = _sizes(type(self).__name__, npoints, radii, nsamples, scales=None)
        (n1, n2), (r1, r2), (k1, k2) = sizes
        w1 = [scaled(c, width) for c in (64, 64, 128)]
        w2 = [scaled(c, width) for c in (128, 128, 256)]
        super().__init__(num_classes, width, sizes, SetAbstraction(n1, r1, k1, 3, w1),
                         SetAbstraction(n2, r2, k2, w1[-1] + 3, w2), w2[-1], dropout2=0.4)


class PointNet2MSG(_PointNet2):
    """PointNet++ multi-scale classifier: points (B, 3, N), N >= npoints[0] -> logits (B, num_classes).

    Its state_dict keys match the public `pointnet2_cls_msg.get_model(num_class,
    normal_channel=False)`: `sa1.conv_blocks.i.L`, `sa1.bn_blocks.i.L` (scale i), the same in
    sa2, `sa3.mlp_convs.L`, `sa3.mlp_bns.L`, `fc1..fc3`, `bn1`, `bn2`. SA layers: 512
    centroids, radii (0.1, 0.2, 0.4), neighbours (16, 32, 128), MLPs (32, 32, 64),
    (64, 64, 128), (64, 96, 128); 128 centroids, radii (0.2, 0.4, 0.8), neighbours
    (32, 64, 128), MLPs (64, 64, 128), (128, 128, 256), (128, 128, 256); all points,
    (256, 512, 1024). Taps `sa1.acts.i.L`, `sa2.acts.i.L`, `sa3.acts.L`.

    Args:
        num_classes: Number of classes.
        width: Scales every hidden width, for small models; 1 gives exactly the public shapes.
        npoints: Centroids sampled by sa1 and sa2 (sa2's at most sa1's).
        radii: Each scale's ball radius in sa1 and in sa2 (two sequences of three).
        nsamples: Each scale's neighbours per centroid in sa1 and in sa2 (two sequences of three).

    Attributes:
        flow_layers: The per-point layers FlowAM aligns by default: sa1's last shared-MLP
            pre-activation at its widest scale.
        tap_version: Version of the activation taps, stored with flows.
        fast_path: Eval mode runs on the fused ops; False for the plain PyTorch path.

    Raises:
        ValueError: num_classes < 1, width <= 0 or invalid sizes; in forward, input not
            (B, 3, N) or fewer points than npoints[0].
    """

    arch = "pointnet2_msg"
    #: sa1's last shared layer at its widest scale, before its ReLU and the max over each group:
    #: on the demo model it came closest to the real samples with every job classified as its
    #: target, at the cheapest step of the sets tried (docs/design.md, "Which layers are
    #: aligned", has the table).
    flow_layers = ("sa1.acts.2.2",)

    def __init__(self, num_classes: int = 40, width: float = 1.0, npoints=(512, 128),
                 radii=((0.1, 0.2, 0.4), (0.2, 0.4, 0.8)), nsamples=((16, 32, 128), (32, 64, 128))):
        sizes = _sizes(type(self).__name__, npoints, radii, nsamples, scales=3)
        (n1, n2), (r1, r2), (k1, k2) = sizes
        w1 = [[scaled(c, width) for c in scale] for scale in ((32, 32, 64), (64, 64, 128), (64, 96, 128))]
        w2 = [[scaled(c, width) for c in scale] for scale in ((64, 64, 128), (128, 128, 256), (128, 128, 256))]
        super().__init__(num_classes, width, sizes, SetAbstractionMSG(n1, r1, k1, 0, w1),
                         SetAbstractionMSG(n2, r2, k2, sum(w[-1] for w in w1), w2),
                         sum(w[-1] for w in w2), dropout2=0.5)
