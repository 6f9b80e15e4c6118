"""The training loop of the classifiers (plain path: BatchNorm in training mode is not an
affine map).

Recipe: augmentation per batch (random anisotropic scale, shift and jitter; with `rotate`,
first a random rotation about the vertical axis, as PointNet's reference recipe), cross-entropy
plus PointNet's feature-transform regularizer (0.001 ||I - A A^T||_F^2), Adam with a cosine
schedule stepped per batch. A last batch of one sample is skipped (BatchNorm needs two).
Deterministic for a seed on the CPU: `train` seeds the shuffling, augmentation and dropout;
the caller seeds the initial weights (the recipes and the CLI do).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.shapes import yaw_matrices

#: Defaults of `train`: the demo recipe's (recipes.DEMO_CONFIG).
DEFAULTS = {"epochs": 8, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4}
FT_REG_WEIGHT = 1e-3


def augment(points: torch.Tensor, gen: torch.Generator, rotate: bool = False) -> torch.Tensor:
    """Random anisotropic scale in [0.8, 1.25], shift in [-0.1, 0.1] and jitter (std 0.01,
    clipped at 0.05), per sample, on a batch (B, N, 3); with `rotate`, first a rotation about
    the vertical axis (y) by a uniform angle."""
    b = points.shape[0]
    if rotate:
        angle = torch.rand(b, generator=gen, dtype=torch.float64) * (2 * math.pi)
        points = points @ torch.from_numpy(yaw_matrices(angle.numpy())).to(points.dtype).transpose(1, 2)
    scale = torch.empty(b, 1, 3).uniform_(0.8, 1.25, generator=gen)
    shift = torch.empty(b, 1, 3).uniform_(-0.1, 0.1, generator=gen)
    jitter = (torch.randn(points.shape, generator=gen) * 0.01).clamp_(-0.05, 0.05)
    return points * scale + shift + jitter


@torch.no_grad()
def accuracy(model, dataset, batch_size: int = 128) -> float:
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    pts = torch.from_numpy(dataset.points).to(device)
    labels = torch.from_numpy(dataset.labels).to(device)
    correct = 0
    for s in range(0, len(labels), batch_size):
        correct += int((model(pts[s:s + batch_size].transpose(1, 2)).argmax(1) == labels[s:s + batch_size]).sum())
    model.train(was)
    return correct / max(1, len(labels))


def train(model, train_set, test_set=None, epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
          lr: float = DEFAULTS["lr"], weight_decay: float = DEFAULTS["weight_decay"], seed: int = 0,
          quiet: bool = False, max_steps: int | None = None, rotate: bool = False) -> dict:
    """Train in place on datasets with `.points` (M, N, 3) and `.labels` (M,) arrays (as
    ModelNet40). Returns {"losses": per-step losses, "test_accuracy" (with a test set),
    "seconds"}; the model is left in eval mode."""
    if batch_size < 2 or len(train_set.labels) < 2:
        raise ValueError(f"training needs batches of at least 2 samples (BatchNorm); got batch_size={batch_size} "
                         f"and {len(train_set.labels)} training samples")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pts = torch.from_numpy(train_set.points)
    labels = torch.from_numpy(train_set.labels)
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total))
    losses = []
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc="train", disable=quiet, unit="step")
    step = 0
    while step < total:
        order = torch.randperm(len(labels), generator=gen)
        for s in range(0, len(labels), batch_size):
            idx = order[s:s + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            # Augmentation draws from the CPU generator, so a seed means the same batches anywhere.
            x = augment(pts[idx], gen, rotate).transpose(1, 2).to(device)
            # A model with a penalty term (PointNet's feature transform) returns it beside the logits.
            logits, penalty = model.logits_and_penalty(x) if hasattr(model, "logits_and_penalty") else (model(x), 0.0)
            loss = F.cross_entropy(logits, labels[idx].to(device)) + FT_REG_WEIGHT * penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
            bar.update(1)
            if step >= total:
                break
    bar.close()
    result = {"losses": losses, "seconds": time.perf_counter() - t0}
    if test_set is not None:
        result["test_accuracy"] = accuracy(model, test_set)
    model.eval()
    return result
