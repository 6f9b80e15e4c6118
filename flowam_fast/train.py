"""Training of the classifiers (plain path: BatchNorm in training mode is not an affine map).

`flowam-fast train --model pointnet|dgcnn --data synthetic|DIR --epochs E --out ckpt.pt`

Recipe: augmentation per batch (random anisotropic scale, shift and jitter; with `rotate`,
first a random rotation about the vertical axis, as PointNet's reference recipe), cross-entropy
plus PointNet's feature-transform regularizer (0.001 ||I - A A^T||_F^2), Adam with a cosine
schedule stepped per batch. A last batch of one sample is skipped (BatchNorm needs two).
Deterministic for a seed on the CPU: the CLI and `train_demo_model` seed the
initial weights, `train` the shuffling, augmentation and dropout.

The demo model (`DEMO_CONFIG`) is a PointNet with feature transform at a quarter of the
reference widths (64, 128, 1024, 512, 256 -> 16, 32, 256, 128, 64 channels), trained for 8
epochs on the first 512 points of the procedural shapes (12 classes, 200 + 50 per class).
512 points rather than 1024: a training step costs about 5x less there (at 1024 points the
(B, C, N) activations no longer fit in cache), and the AM runs of the demo get cheaper too.
Measured on the 2-core development machine (torch 2.13 CPU, 2 threads), seeds 0-3:
test accuracy 99.8-100%, training 48-61 s when the machine was otherwise idle (about 165 s
while other jobs shared its two cores); generating the data takes about 2 s.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data.shapes import yaw_matrices
from .models import build_model, save_checkpoint
from .models.pointnet import feature_transform_regularizer

# Both demo classifiers learn yaw invariance from augmentation: the stored shapes keep one
# heading (as ModelNet40's), so each class's activation flow describes one pose.
DEMO_CONFIG = {"arch": "pointnet", "width": 0.25, "num_points": 512, "epochs": 8, "batch_size": 32,
               "lr": 2e-3, "weight_decay": 1e-4, "seed": 0, "rotate": True}
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
    pts = torch.from_numpy(dataset.points)
    labels = torch.from_numpy(dataset.labels)
    correct = 0
    for s in range(0, len(labels), batch_size):
        correct += int((model(pts[s:s + batch_size].transpose(1, 2)).argmax(1) == labels[s:s + batch_size]).sum())
    model.train(was)
    return correct / max(1, len(labels))


def train(model, train_set, test_set=None, epochs: int = DEMO_CONFIG["epochs"], batch_size: int = DEMO_CONFIG["batch_size"],
          lr: float = DEMO_CONFIG["lr"], weight_decay: float = DEMO_CONFIG["weight_decay"], seed: int = 0,
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
            x = augment(pts[idx], gen, rotate).transpose(1, 2)
            logits = model(x)
            loss = F.cross_entropy(logits, labels[idx])
            loss = loss + FT_REG_WEIGHT * feature_transform_regularizer(getattr(model, "last_trans_feat", None))
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


@contextlib.contextmanager
def _dataset_dir(data: str, data_dir: str | None, quiet: bool):
    """The dataset directory: `data` itself, or for "synthetic" the procedural shapes written
    to `data_dir` (kept) or to a temporary directory (removed on exit; the splits are read
    into memory before that)."""
    if data != "synthetic":
        yield Path(data)
        return
    from .data import generate_shapes

    with contextlib.ExitStack() as stack:
        out = Path(data_dir) if data_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flowam_shapes_")))
        if not quiet:
            print(f"procedural shapes dataset in {out}")
        yield generate_shapes(out)


#: The evaluator of the metrics (FID, m-IS, sanity-check features): a PointNet trained
#: separately from the explained model, at the reference widths so its global feature is
#: 1024-d and its penultimate 256-d, without the feature T-Net (not needed at 99% accuracy on
#: the procedural shapes, and it halves the training time), with its own seed.
EVALUATOR_CONFIG = {"arch": "pointnet", "width": 1.0, "feature_transform": False, "num_points": 256, "epochs": 3,
                    "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4, "seed": 1, "rotate": True}


def train_from_config(data_dir, out, config: dict, epochs: int | None = None, quiet: bool = False,
                      name: str = "model") -> dict:
    """Train a classifier described by `config` (DEMO_CONFIG's keys) on data_dir; save it to `out`."""
    from .data import ModelNet40

    cfg = dict(config)
    if epochs is not None:
        cfg["epochs"] = epochs
    train_set = ModelNet40(data_dir, "train", num_points=cfg["num_points"])
    test_set = ModelNet40(data_dir, "test", num_points=cfg["num_points"])
    torch.manual_seed(cfg["seed"])  # the initial weights
    extra = {"feature_transform": cfg["feature_transform"]} if "feature_transform" in cfg else {}
    model = build_model(cfg["arch"], num_classes=train_set.num_classes, width=cfg["width"], **extra)
    result = train(model, train_set, test_set, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                   weight_decay=cfg["weight_decay"], seed=cfg["seed"], quiet=quiet,
                   rotate=bool(cfg.get("rotate", False)))
    save_checkpoint(model, out, test_accuracy=result["test_accuracy"], train_seconds=result["seconds"],
                    num_points=cfg["num_points"], class_names=train_set.classes)
    print(f"{name}: test accuracy {result['test_accuracy']:.1%}, trained in {result['seconds']:.0f} s")
    return result


def train_demo_model(data_dir, out, epochs: int | None = None, quiet: bool = False) -> dict:
    """Train the demo PointNet (DEMO_CONFIG) on data_dir and save it to `out`."""
    return train_from_config(data_dir, out, DEMO_CONFIG, epochs=epochs, quiet=quiet, name="demo model")


def train_evaluator(data_dir, out, epochs: int | None = None, quiet: bool = False) -> dict:
    """Train the metrics' evaluator PointNet (EVALUATOR_CONFIG) on data_dir and save it to `out`."""
    return train_from_config(data_dir, out, EVALUATOR_CONFIG, epochs=epochs, quiet=quiet, name="evaluator")


def add_arguments(p) -> None:
    p.add_argument("--model", choices=["pointnet", "dgcnn"], default="pointnet")
    p.add_argument("--data", default="synthetic", help='"synthetic" (procedural shapes) or a ModelNet40-layout directory')
    p.add_argument("--data-dir", default=None,
                   help="with --data synthetic: where to write the shapes (default: a temporary directory)")
    p.add_argument("--epochs", type=int, default=DEMO_CONFIG["epochs"])
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (the demo uses 0.25)")
    p.add_argument("--k", type=int, default=20, help="DGCNN neighbours")
    p.add_argument("--num-points", type=int, default=DEMO_CONFIG["num_points"])
    p.add_argument("--batch-size", type=int, default=DEMO_CONFIG["batch_size"])
    p.add_argument("--lr", type=float, default=DEMO_CONFIG["lr"])
    p.add_argument("--weight-decay", type=float, default=DEMO_CONFIG["weight_decay"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rotate", action="store_true", help="augment with random rotations about the vertical axis")
    p.add_argument("--quiet", action="store_true")


def run(args) -> int:
    from .data import ModelNet40

    with _dataset_dir(args.data, args.data_dir, args.quiet) as root:
        train_set = ModelNet40(root, "train", num_points=args.num_points)
        test_set = ModelNet40(root, "test", num_points=args.num_points)
    kw = {"width": args.width}
    if args.model == "dgcnn":
        kw["k"] = args.k
    torch.manual_seed(args.seed)  # the initial weights
    model = build_model(args.model, num_classes=train_set.num_classes, **kw)
    result = train(model, train_set, test_set, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   weight_decay=args.weight_decay, seed=args.seed, quiet=args.quiet, rotate=args.rotate)
    save_checkpoint(model, args.out, test_accuracy=result["test_accuracy"], train_seconds=result["seconds"],
                    num_points=args.num_points, class_names=train_set.classes)
    print(f"test accuracy {result['test_accuracy']:.1%} after {args.epochs} epochs "
          f"({result['seconds']:.0f} s); checkpoint {args.out}")
    return 0
