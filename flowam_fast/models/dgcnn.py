"""DGCNN classifier whose state_dict keys match the widely used public PyTorch implementation
(WangYueFt/dgcnn, `pytorch/model.py`, class `DGCNN`), so its checkpoints load as they are.

As in the reference, each EdgeConv block is `convL = Sequential(Conv2d, BatchNorm2d,
LeakyReLU(0.2))` and the same BatchNorm module is also registered as `bnL`, so the state_dict
holds both `bnL.*` and `convL.1.*` keys. Differences, all without parameters:

- `forward` returns logits (B, num_classes).
- Activation taps (`activations.Tap`) at the per-point layers FlowAM aligns: ``edge1``..``edge4``
  (EdgeConv outputs after the max over neighbours) and ``act5`` (conv5 output), all (B, C, N).
- ``width`` scales the EdgeConv widths (64, 64, 128, 256) and the head (512, 256) for small
  CPU models; width=1 gives exactly the reference shapes.
- Each EdgeConv runs as an `EdgeConv` module and conv5 as a `fast.SharedLinear`, which run
  eval mode on the fused ops; set ``model.fast_path = False`` for the plain path.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from .activations import Tap
from .fast import FastPathModel, Fused, SharedLinear, cat_channels, fold_bn, max_and_mean
from .linear import RowLinear
from .pointnet import scaled


def knn_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, N, k) of the k nearest neighbours of each point (self included) of x (B, C, N),
    as the reference computes them (matmul, then topk)."""
    inner = -2 * torch.matmul(x.transpose(2, 1), x)
    xx = torch.sum(x ** 2, dim=1, keepdim=True)
    pairwise = -xx - inner - xx.transpose(2, 1)
    return pairwise.topk(k=k, dim=-1)[1]


def fused_knn_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """The same neighbours as `knn_indices` from the fused kNN op (ties to the smaller index,
    where topk's order is unspecified); no gradient flows through indices."""
    with torch.no_grad():
        return ops.knn(x.transpose(1, 2).contiguous(), k)[1]


def graph_feature(x: torch.Tensor, k: int, fused: bool = False) -> torch.Tensor:
    """Edge features cat(x_j - x_i, x_i) over the kNN graph: (B, C, N) -> (B, 2C, N, k).
    fused: find the neighbours with the fused kNN op rather than the reference's matmul+topk."""
    b, c, n = x.shape
    idx = fused_knn_indices(x, k) if fused else knn_indices(x, k)
    pts = x.transpose(2, 1)
    # Index a flat (B*N, C) view, as the reference does: a gather from an expanded (B, N, N, C)
    # view would cost B*N^2*C memory in its backward.
    flat = (idx + torch.arange(b, device=x.device).view(-1, 1, 1) * n).reshape(-1)
    nb = pts.reshape(b * n, c)[flat].view(b, n, k, c)
    center = pts.unsqueeze(2).expand(b, n, k, c)
    return torch.cat((nb - center, center), dim=3).permute(0, 3, 1, 2).contiguous()


class EdgeConv(Fused):
    """One EdgeConv of DGCNN: the max over the k nearest neighbours j of each point i of
    block([x_j - x_i, x_i]), (B, C, N) -> (B, C_out, N).

    The fused path is W [x_j - x_i, x_i] = W1 x_j + (W2 - W1) x_i = P_j + Q_i: a gather-max of
    P over the kNN graph (`ops.edge_max`) plus Q, with no (B, 2C, N, k) edge tensor. The
    folded BatchNorm scale is inside P, so a negative scale turns the max into a min by
    itself, and LeakyReLU is increasing, so max_j act(P_j + Q_i) = act(max_j P_j + Q_i). The
    plain path is the reference's edge features through `block`; in training it finds the
    neighbours with the fused kNN (topk over (B, N, N) was a quarter of a training step),
    in eval mode with the reference's search, the fused path's oracle.

    Args:
        block: DGCNN's Sequential(Conv2d, BatchNorm2d, LeakyReLU), held by reference (the
            model keeps it as ``convL``).
        k: Neighbours of each point.
    """

    def __init__(self, block: nn.Sequential, k: int):
        super().__init__()
        self.layers = (block,)
        self.k = int(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (block,) = self.layers
        if not self.use_fused():
            return block(graph_feature(x, self.k, fused=self.training)).max(dim=-1).values
        conv, bn, act = block[0], block[1], block[2]
        w, scale, shift = fold_bn(conv, bn)
        p = x.transpose(1, 2)
        c = p.shape[-1]
        w1, w2 = w[:, :c], w[:, c:]
        _, idx = ops.knn(p.detach(), self.k)
        pj = torch.matmul(p, (w1 * scale[:, None]).t())
        qi = torch.addmm(shift, p.reshape(-1, c), ((w2 - w1) * scale[:, None]).t()).view(*p.shape[:-1], -1)
        return F.leaky_relu(ops.edge_max(pj, idx) + qi, act.negative_slope).transpose(1, 2)


class DGCNN(FastPathModel):
    """DGCNN classifier: points (B, 3, N) -> logits (B, num_classes).

    Its state_dict keys match the public PyTorch implementation (WangYueFt/dgcnn), so its
    checkpoints load as they are. Activation taps (`Tap`) sit at the per-point layers
    FlowAM aligns: `edge1..edge4` (EdgeConv outputs after the max over neighbours) and `act5`
    (conv5's output), all (B, C, N). In eval mode the forward pass runs on the fused ops (see
    `fast_path`).

    Args:
        num_classes: Number of classes.
        k: Neighbours of each EdgeConv graph.
        emb_dims: Channels of conv5, the per-point embedding that is pooled.
        dropout: Dropout probability of the head.
        width: Scales the EdgeConv widths (64, 64, 128, 256) and the head (512, 256), for
            small models; 1 gives exactly the reference shapes.

    Attributes:
        flow_layers: The per-point layers FlowAM aligns by default (names of activation taps).
        fast_path: Eval mode runs on the fused ops; False for the plain PyTorch path.

    Raises:
        ValueError: num_classes, k or emb_dims < 1, or width <= 0.
    """

    arch = "dgcnn"
    #: The per-point layers FlowAM aligns by default (names of activation taps).
    flow_layers = ("edge1", "edge2", "edge3", "edge4", "act5")

    def __init__(self, num_classes: int = 40, k: int = 20, emb_dims: int = 1024, dropout: float = 0.5,
                 width: float = 1.0):
        super().__init__()
        if num_classes < 1 or k < 1 or emb_dims < 1 or width <= 0:
            raise ValueError(f"invalid DGCNN config: num_classes={num_classes}, k={k}, emb_dims={emb_dims}, "
                             f"width={width}")
        self.config = {"num_classes": int(num_classes), "k": int(k), "emb_dims": int(emb_dims),
                       "dropout": float(dropout), "width": float(width)}
        self.k = int(k)
        self.emb_dims = int(emb_dims)
        c1, c2, c3, c4 = (scaled(c, width) for c in (64, 64, 128, 256))
        h1, h2 = scaled(512, width), scaled(256, width)
        self.bn1 = nn.BatchNorm2d(c1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.bn3 = nn.BatchNorm2d(c3)
        self.bn4 = nn.BatchNorm2d(c4)
        self.bn5 = nn.BatchNorm1d(emb_dims)
        self.conv1 = nn.Sequential(nn.Conv2d(6, c1, 1, bias=False), self.bn1, nn.LeakyReLU(0.2))
        self.conv2 = nn.Sequential(nn.Conv2d(2 * c1, c2, 1, bias=False), self.bn2, nn.LeakyReLU(0.2))
        self.conv3 = nn.Sequential(nn.Conv2d(2 * c2, c3, 1, bias=False), self.bn3, nn.LeakyReLU(0.2))
        self.conv4 = nn.Sequential(nn.Conv2d(2 * c3, c4, 1, bias=False), self.bn4, nn.LeakyReLU(0.2))
        self.conv5 = nn.Sequential(nn.Conv1d(c1 + c2 + c3 + c4, emb_dims, 1, bias=False), self.bn5,
                                   nn.LeakyReLU(0.2))
        self.linear1 = RowLinear(emb_dims * 2, h1, bias=False)
        self.bn6 = nn.BatchNorm1d(h1)
        self.dp1 = nn.Dropout(p=dropout)
        self.linear2 = RowLinear(h1, h2)
        self.bn7 = nn.BatchNorm1d(h2)
        self.dp2 = nn.Dropout(p=dropout)
        self.linear3 = RowLinear(h2, num_classes)
        self.edge1 = Tap()
        self.edge2 = Tap()
        self.edge3 = Tap()
        self.edge4 = Tap()
        self.act5 = Tap()
        self.edgeconvs = nn.ModuleList(EdgeConv(block, self.k) for block in (self.conv1, self.conv2, self.conv3,
                                                                              self.conv4))
        self.layer5 = SharedLinear(self.conv5[0], self.bn5, self.act5, negative_slope=0.2, tap_after_act=True)
        self.fast_path = True

    @property
    def num_classes(self) -> int:
        """The number of classes (outputs of the last layer)."""
        return self.linear3.out_features

    def randomization_groups(self) -> list:
        """Parameter blocks from the output down, for the cascading randomization sanity check.

        Returns:
            A list of (name, module names) pairs, each block a layer with its BatchNorm.
        """
        return [("linear3", ["linear3"]), ("linear2", ["linear2", "bn7"]), ("linear1", ["linear1", "bn6"]),
                ("conv5", ["conv5"]), ("conv4", ["conv4"]), ("conv3", ["conv3"]), ("conv2", ["conv2"]),
                ("conv1", ["conv1"])]

    def head(self, g: torch.Tensor) -> torch.Tensor:
        """The classifier head: logits (B, num_classes) from the pooled feature.

        Args:
            g: The pooled feature cat(max, mean) over the points, (B, 2 * emb_dims).
        """
        g = F.leaky_relu(self.bn6(self.linear1(g)), negative_slope=0.2)
        g = self.dp1(g)
        g = F.leaky_relu(self.bn7(self.linear2(g)), negative_slope=0.2)
        g = self.dp2(g)
        return self.linear3(g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for edgeconv, tap in zip(self.edgeconvs, (self.edge1, self.edge2, self.edge3, self.edge4)):
            x = tap(edgeconv(x))
            feats.append(x)
        return self.head(torch.cat(max_and_mean(self.layer5(cat_channels(feats))), dim=1))
