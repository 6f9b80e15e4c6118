"""PointNet classifier whose state_dict keys match fxia22/pointnet.pytorch's `PointNetCls`.

So a checkpoint trained with that code loads here as it is (see
:func:`flowam_fast.models.checkpoint.load_checkpoint`). Differences, all without parameters:

- `forward` returns logits (B, num_classes), not (log_softmax, trans, trans_feat);
  `logits_and_penalty` also returns the feature transform's orthogonality penalty, for
  training.
- Activation taps (`activations.Tap`) at the per-point layers FlowAM aligns, the outputs of
  conv1..conv3 after their BatchNorm and before any ReLU: ``feat.act1`` (bn1(conv1), before
  the feature transform), ``feat.act2`` (bn2(conv2)) and ``feat.act3`` (bn3(conv3), the
  pre-pool features), all (B, C, N); and the same three in each T-Net (``feat.stn.act1..3``,
  ``feat.fstn.act1..3``).
- ``width`` scales every hidden width (64, 128, 1024, 512, 256) for small CPU models;
  width=1 gives exactly the reference shapes.

The per-point layers run as `fast.SharedLinear` and the max-pooled blocks (the T-Nets' conv3
and the encoder's conv3) as `fast.LinearBNMax`: each runs eval mode on the fused ops and
training on the plain layers (docs/design.md, "Fast paths").
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import Tap
from .fast import FastPathModel, LinearBNMax, SharedLinear
from .linear import RowLinear


def scaled(channels: int, width: float) -> int:
    """A hidden width scaled by `width`, at least 1."""
    return max(1, int(round(channels * width)))


class STNkd(nn.Module):
    """T-Net predicting a k x k transform (k=3 for the input, C for the features)."""

    def __init__(self, k: int = 3, width: float = 1.0):
        super().__init__()
        w = [scaled(c, width) for c in (64, 128, 1024, 512, 256)]
        self.conv1 = nn.Conv1d(k, w[0], 1)
        self.conv2 = nn.Conv1d(w[0], w[1], 1)
        self.conv3 = nn.Conv1d(w[1], w[2], 1)
        self.fc1 = RowLinear(w[2], w[3])
        self.fc2 = RowLinear(w[3], w[4])
        self.fc3 = RowLinear(w[4], k * k)
        self.relu = nn.ReLU()
        self.bn1 = nn.BatchNorm1d(w[0])
        self.bn2 = nn.BatchNorm1d(w[1])
        self.bn3 = nn.BatchNorm1d(w[2])
        self.bn4 = nn.BatchNorm1d(w[3])
        self.bn5 = nn.BatchNorm1d(w[4])
        self.k = k
        # Taps on the per-point activations, before the ReLUs (as the encoder's).
        self.act1 = Tap()
        self.act2 = Tap()
        self.act3 = Tap()
        self.layer1 = SharedLinear(self.conv1, self.bn1, self.act1)
        self.layer2 = SharedLinear(self.conv2, self.bn2, self.act2)
        self.pool3 = LinearBNMax(self.conv3, self.bn3, self.act3, negative_slope=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn4(self.fc1(x)))
        x = F.relu(self.bn5(self.fc2(x)))
        x = self.fc3(x)
        eye = torch.eye(self.k, dtype=x.dtype, device=x.device).reshape(1, -1)
        return (x + eye).view(-1, self.k, self.k)


def _transform(x: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample transform to (B, C, N) points: x_n <- trans^T x_n (reference convention)."""
    return torch.bmm(x.transpose(2, 1), trans).transpose(2, 1)


class PointNetfeat(nn.Module):
    """The encoder: input T-Net, conv1, optional feature T-Net, conv2, conv3, max over points."""

    def __init__(self, feature_transform: bool = True, width: float = 1.0):
        super().__init__()
        w = [scaled(c, width) for c in (64, 128, 1024)]
        self.stn = STNkd(3, width)
        self.conv1 = nn.Conv1d(3, w[0], 1)
        self.conv2 = nn.Conv1d(w[0], w[1], 1)
        self.conv3 = nn.Conv1d(w[1], w[2], 1)
        self.bn1 = nn.BatchNorm1d(w[0])
        self.bn2 = nn.BatchNorm1d(w[1])
        self.bn3 = nn.BatchNorm1d(w[2])
        self.feature_transform = feature_transform
        if feature_transform:
            self.fstn = STNkd(w[0], width)
        self.act1 = Tap()
        self.act2 = Tap()
        self.act3 = Tap()
        self.layer1 = SharedLinear(self.conv1, self.bn1, self.act1)
        self.layer2 = SharedLinear(self.conv2, self.bn2, self.act2)
        self.pool3 = LinearBNMax(self.conv3, self.bn3, self.act3, negative_slope=None)

    def forward(self, x: torch.Tensor):
        """(B, 3, N) -> (global feature (B, C), input transform, feature transform or None)."""
        trans = self.stn(x)
        x = self.layer1(_transform(x, trans))
        trans_feat = None
        if self.feature_transform:
            trans_feat = self.fstn(x)
            x = _transform(x, trans_feat)
        return self.pool3(self.layer2(x)), trans, trans_feat


class PointNet(FastPathModel):
    """PointNet classifier: points (B, 3, N) -> logits (B, num_classes).

    Its state_dict keys match fxia22/pointnet.pytorch's `PointNetCls`, so that code's
    checkpoints load as they are. Activation taps (`Tap`) sit at the per-point layers
    FlowAM aligns, after each BatchNorm and before any ReLU: `feat.act1..3` in the encoder
    and `feat.stn.act1..3`, `feat.fstn.act1..3` in the T-Nets, all (B, C, N). In eval mode the
    forward pass runs on the fused ops (see `fast_path`).

    Args:
        num_classes: Number of classes.
        feature_transform: Include the feature T-Net (64 x 64 transform).
        width: Scales every hidden width (64, 128, 1024, 512, 256), for small models;
            1 gives exactly the reference shapes.

    Attributes:
        flow_layers: The per-point layers FlowAM aligns by default: the input T-Net's
            conv1..conv3, then the encoder's conv1..conv3.
        tap_version: Version of the activation taps, stored with flows so that flows of
            older taps are refused.
        fast_path: Eval mode runs on the fused ops; False for the plain PyTorch path.

    Raises:
        ValueError: num_classes < 1 or width <= 0.
    """

    arch = "pointnet"
    #: The per-point layers FlowAM aligns by default: the input T-Net's conv1..conv3, then the
    #: encoder's conv1..conv3 (docs/design.md's). The encoder's layers see the cloud only after the
    #: input T-Net's 3x3 transform, which is far from a rotation (singular values 0.03 to 4.7 on
    #: the demo's real data), so they alone let a distorted cloud whose transform undoes the
    #: distortion match the flows; the T-Net's own layers see the raw points and close that gap
    #: (demo Chamfer 0.065 -> 0.047 on yawed data; docs/design.md, "Aligned layers"). The taps sit
    #: before the ReLUs: after a ReLU a dead channel has sigma ~ 0, and s = sigma + 1e-3 then
    #: lets any activation there dominate the objective (post-ReLU taps kept 3 of 12 demo
    #: classes from ever becoming the argmax).
    flow_layers = ("feat.stn.act1", "feat.stn.act2", "feat.stn.act3", "feat.act1", "feat.act2", "feat.act3")
    #: Bumped when a tap moves: 2 = act1/act2 before the ReLUs (1 had them after). Stored with
    #: flows, so flows of the old taps (same names, same channel counts) are refused, not misused.
    tap_version = 2

    def __init__(self, num_classes: int = 40, feature_transform: bool = True, width: float = 1.0):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.config = {"num_classes": int(num_classes), "feature_transform": bool(feature_transform), "width": float(width)}
        w = [scaled(c, width) for c in (1024, 512, 256)]
        self.feature_transform = feature_transform
        self.feat = PointNetfeat(feature_transform, width)
        self.fc1 = RowLinear(w[0], w[1])
        self.fc2 = RowLinear(w[1], w[2])
        self.fc3 = RowLinear(w[2], num_classes)
        self.dropout = nn.Dropout(p=0.3)
        self.bn1 = nn.BatchNorm1d(w[1])
        self.bn2 = nn.BatchNorm1d(w[2])
        self.relu = nn.ReLU()
        #: Eval mode runs on the fused layers (SharedLinear, LinearBNMax); False for the plain path.
        self.fast_path = True

    @property
    def num_classes(self) -> int:
        """The number of classes (outputs of the last layer)."""
        return self.fc3.out_features

    def randomization_groups(self) -> list:
        """Parameter blocks from the output down, for the cascading randomization sanity check.

        Returns:
            A list of (name, module names) pairs, each block a layer with its BatchNorm
            (or a whole T-Net).
        """
        groups = [("fc3", ["fc3"]), ("fc2", ["fc2", "bn2"]), ("fc1", ["fc1", "bn1"]),
                  ("conv3", ["feat.conv3", "feat.bn3"]), ("conv2", ["feat.conv2", "feat.bn2"])]
        if self.feature_transform:
            groups.append(("feature T-Net", ["feat.fstn"]))
        return groups + [("conv1", ["feat.conv1", "feat.bn1"]), ("input T-Net", ["feat.stn"])]

    def logits_and_penalty(self, x: torch.Tensor):
        """The logits and the feature transform's orthogonality penalty, for training.

        Args:
            x: Points (B, 3, N).

        Returns:
            A tuple of the logits (B, num_classes) and `feature_transform_regularizer` of
            the feature T-Net's transform (0.0 without a feature T-Net).
        """
        logits, trans_feat = self._logits_and_transform(x)
        return logits, feature_transform_regularizer(trans_feat)

    def _logits_and_transform(self, x: torch.Tensor):
        x, _trans, trans_feat = self.feat(x)
        x = F.relu(self.bn1(self.fc1(x)))
        # The reference applies dropout before bn2; kept so trained checkpoints behave the same.
        x = F.relu(self.bn2(self.dropout(self.fc2(x))))
        return self.fc3(x), trans_feat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits_and_transform(x)[0]


def feature_transform_regularizer(trans: torch.Tensor | None) -> torch.Tensor | float:
    """PointNet's orthogonality penalty, mean over the batch of ||I - A A^T||_F^2 (0 for None)."""
    if trans is None:
        return 0.0
    eye = torch.eye(trans.shape[1], dtype=trans.dtype, device=trans.device)
    return (torch.bmm(trans, trans.transpose(1, 2)) - eye).pow(2).sum(dim=(1, 2)).mean()
