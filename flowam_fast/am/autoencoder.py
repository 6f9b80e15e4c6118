"""A point-cloud autoencoder: the generative model of the "AM in an autoencoder's latent
space" baseline (optimizing a code z so that classifier(decode(z)) scores a class gives
realistic shapes whatever the classifier has learned, the contrast to FlowAM).

Architecture (Achlioptas et al.'s AE, small):

- encoder: PointNet-style shared MLP over the points, Conv1d 3 -> 64 -> 128 -> latent_dim
  (kernel 1; the 64 and 128 scaled by `width`), BatchNorm + ReLU on the two hidden layers,
  the last layer linear, then max over the points: (B, N, 3) -> (B, latent_dim) for any N
  (computed points-last with the Conv1d weights, so hooks on conv1-3 do not fire);
- decoder: MLP latent_dim -> 256 -> 512 -> num_points * 3 (hidden widths scaled by
  `width`, ReLU between, the last layer linear), reshaped to (B, num_points, 3). No
  BatchNorm in the decoder, so decode(z) does not depend on the mode or the batch.

The buffers ``latent_mean``, ``latent_std``, ``latent_lo`` and ``latent_hi`` hold the
statistics of the training set's codes (eval mode), for initializing and bounding a latent
search; they are saved with the weights.

Training (`train_autoencoder`): Adam on the symmetric Chamfer loss
(:func:`flowam_fast.ops.chamfer.chamfer`, squared distances, mean both ways) with a cosine
schedule stepped per batch, no augmentation (the model should reproduce the data's
manifold, not a widened one).

Measured on the procedural shapes (12 classes x 200 train / 50 test, first 512 points) with
the defaults (10 epochs = 750 steps, batch 32, lr 1e-3, latent 128, width 1), torch CPU on
the 2-core development machine while other jobs kept its load at 4-6: 58 s with 1 thread
(50 s of CPU time, so at most about 50 s on an idle core), 93 s with 2 threads. Reconstruction
Chamfer on the test split: mean 0.0073 (median 0.0068, worst 0.015; train split 0.0070),
against 0.0066 between two disjoint 512-point samplings of one and the same test cloud (what
resampling one surface costs) and 0.049 between two real clouds of one class. Shorter
runs: 2 epochs 0.015, 4 epochs 0.010. Solids reconstruct cleanly; thin parts (chair legs,
the dumbbell's bar) come out blurred, the usual failure of Chamfer-trained decoders.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .. import __version__
from ..atomic import atomic_path
from ..ops.chamfer import chamfer
from ..models.checkpoint import CheckpointError, _read, load_state
from ..models.linear import RowLinear
from ..models.pointnet import scaled

FORMAT = "flowam_fast.autoencoder"
DEFAULT_EPOCHS = 10


class PointAutoencoder(nn.Module):
    """Point cloud (B, N, 3) -> code (B, latent_dim) -> point cloud (B, num_points, 3)."""

    def __init__(self, num_points: int = 512, latent_dim: int = 128, width: float = 1.0):
        super().__init__()
        if num_points < 1 or latent_dim < 1 or not width > 0:
            raise ValueError(f"num_points and latent_dim must be >= 1 and width > 0, got "
                             f"num_points={num_points}, latent_dim={latent_dim}, width={width}")
        self.config = {"num_points": int(num_points), "latent_dim": int(latent_dim), "width": float(width)}
        self.num_points = int(num_points)
        self.latent_dim = int(latent_dim)
        c1, c2 = scaled(64, width), scaled(128, width)
        self.conv1 = nn.Conv1d(3, c1, 1)
        self.bn1 = nn.BatchNorm1d(c1)
        self.conv2 = nn.Conv1d(c1, c2, 1)
        self.bn2 = nn.BatchNorm1d(c2)
        self.conv3 = nn.Conv1d(c2, latent_dim, 1)
        h1, h2 = scaled(256, width), scaled(512, width)
        self.fc1 = RowLinear(latent_dim, h1)
        self.fc2 = RowLinear(h1, h2)
        self.fc3 = RowLinear(h2, num_points * 3)
        # Neutral values until set_latent_stats: a standard normal and no bounds.
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.register_buffer("latent_lo", torch.full((latent_dim,), -math.inf))
        self.register_buffer("latent_hi", torch.full((latent_dim,), math.inf))

    @property
    def arch(self) -> str:
        return "autoencoder"

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        if points.dim() != 3 or points.shape[2] != 3:
            raise ValueError(f"encode expects points (B, N, 3), got {tuple(points.shape)}")
        # The shared MLP runs points-last, as F.linear on the Conv1d weights and BatchNorm on
        # (B*N, C): the same function and parameters as conv1d on (B, C, N), but on the CPU a
        # kernel-1 conv1d is 2-3x slower than the matmul and BatchNorm on (B, C, N) about 4x.
        b, n, _ = points.shape
        x = F.linear(points, self.conv1.weight.squeeze(-1), self.conv1.bias)
        x = F.relu(self.bn1(x.reshape(b * n, -1)))
        x = F.linear(x, self.conv2.weight.squeeze(-1), self.conv2.bias)
        x = F.relu(self.bn2(x))
        x = F.linear(x, self.conv3.weight.squeeze(-1), self.conv3.bias)
        return x.view(b, n, -1).max(dim=1).values

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"decode expects codes (B, {self.latent_dim}), got {tuple(z.shape)}")
        x = F.relu(self.fc1(z))
        x = F.relu(self.fc2(x))
        return self.fc3(x).view(z.shape[0], self.num_points, 3)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(points))

    @torch.no_grad()
    def set_latent_stats(self, codes: torch.Tensor) -> None:
        """Store mean, std, min and max per dimension of codes (S, latent_dim)."""
        codes = torch.as_tensor(codes, dtype=self.latent_mean.dtype, device=self.latent_mean.device)
        if codes.dim() != 2 or codes.shape[1] != self.latent_dim or codes.shape[0] < 1:
            raise ValueError(f"codes must have shape (S >= 1, {self.latent_dim}), got {tuple(codes.shape)}")
        if not torch.isfinite(codes).all():
            raise ValueError("codes contain NaN or inf")
        self.latent_mean.copy_(codes.mean(0))
        # One code has no spread (std with correction would be NaN); call it 0.
        self.latent_std.copy_(codes.std(0) if codes.shape[0] > 1 else torch.zeros_like(codes[0]))
        self.latent_lo.copy_(codes.min(0).values)
        self.latent_hi.copy_(codes.max(0).values)


def chamfer_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the symmetric Chamfer distance (squared, mean both ways)."""
    return chamfer(pred, target).mean()


@torch.no_grad()
def encode_all(model: PointAutoencoder, points, batch_size: int = 256) -> torch.Tensor:
    """Codes (S, latent_dim) of points (S, N, 3) in eval mode (the mode is restored)."""
    was = model.training
    model.eval()
    pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    codes = [model.encode(pts[s:s + batch_size]) for s in range(0, len(pts), batch_size)]
    model.train(was)
    return torch.cat(codes) if codes else torch.zeros(0, model.latent_dim)


def train_autoencoder(dataset, epochs: int = DEFAULT_EPOCHS, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                      num_points: int | None = None, latent_dim: int = 128, width: float = 1.0,
                      quiet: bool = False) -> PointAutoencoder:
    """Train an autoencoder on the first `num_points` points of dataset.points (S, N, 3).

    Deterministic for a seed on the CPU (the initial weights and the shuffling). Returns the
    model in eval mode with its latent statistics set from the training set's codes;
    ``model.train_history`` holds the per-step losses and the training seconds.
    """
    pts = torch.as_tensor(np.asarray(dataset.points), dtype=torch.float32)
    if pts.dim() != 3 or pts.shape[2] != 3:
        raise ValueError(f"dataset.points must have shape (S, N, 3), got {tuple(pts.shape)}")
    num_points = pts.shape[1] if num_points is None else int(num_points)
    if not 1 <= num_points <= pts.shape[1]:
        raise ValueError(f"num_points must be in [1, {pts.shape[1]}] (points per sample), got {num_points}")
    if batch_size < 2 or len(pts) < 2:
        raise ValueError(f"training needs batches of at least 2 samples (BatchNorm); got batch_size={batch_size} "
                         f"and {len(pts)} training samples")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    pts = pts[:, :num_points].contiguous()
    torch.manual_seed(seed)
    model = PointAutoencoder(num_points=num_points, latent_dim=latent_dim, width=width)
    gen = torch.Generator().manual_seed(seed)
    # A last batch of one is skipped, so count only the steps that run (for the schedule).
    steps_per_epoch = len(pts) // batch_size + (len(pts) % batch_size >= 2)
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total))
    losses = []
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc="autoencoder", disable=quiet, unit="step")
    for _ in range(epochs):
        order = torch.randperm(len(pts), generator=gen)
        for s in range(0, len(pts), batch_size):
            idx = order[s:s + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            x = pts[idx]
            loss = chamfer_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
            bar.update(1)
    bar.close()
    model.eval()
    model.set_latent_stats(encode_all(model, pts))
    model.train_history = {"losses": losses, "seconds": time.perf_counter() - t0}
    return model


def save_autoencoder(model: PointAutoencoder, path, **meta) -> None:
    """Save weights, latent statistics and config, so load_autoencoder(path) needs nothing else."""
    blob = {"format": FORMAT, "version": __version__, "arch": model.arch, "config": dict(model.config),
            "model_state_dict": model.state_dict(), "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_autoencoder(path) -> PointAutoencoder:
    """The autoencoder saved at `path` by save_autoencoder, in eval mode."""
    blob = _read(path)
    fmt = blob.get("format") if isinstance(blob, dict) else None
    if fmt != FORMAT:
        what = (f"a classifier checkpoint ({blob.get('arch')!r}; load it with load_checkpoint)"
                if fmt == "flowam_fast.checkpoint" else f"not a {FORMAT} file")
        raise CheckpointError(f"{path} is {what}, not an autoencoder saved by save_autoencoder")
    config, state = blob.get("config"), blob.get("model_state_dict")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: autoencoder file without its config or model_state_dict")
    try:
        model = PointAutoencoder(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad autoencoder config {config!r}: {exc}") from None
    load_state(model, state, source=str(path))
    return model.eval()


def load_or_train_autoencoder(data_dir, path=None, cache_dir=None, num_points: int = 512, epochs: int | None = None,
                              quiet: bool = False):
    """The autoencoder of the ae-latent baseline: from `path`, else cache_dir/autoencoder.pt,
    trained there first (defaults, on data_dir's training split) if it is missing."""
    from ..atomic import cached_file
    from ..data import ModelNet40

    def make(target):
        model = train_autoencoder(ModelNet40(data_dir, "train", num_points=num_points),
                                  epochs=epochs or DEFAULT_EPOCHS, quiet=quiet)
        save_autoencoder(model, target, train_seconds=model.train_history["seconds"])

    path = cached_file(path, cache_dir, "autoencoder.pt", make, f"autoencoder on {data_dir}")
    model = load_autoencoder(path)
    if model.num_points != num_points:
        raise ValueError(f"{path} decodes {model.num_points} points but {num_points} are needed")
    return model
