"""Training recipes: the demo classifier (`DEMO_CONFIG`) and the metrics' evaluator
(`EVALUATOR_CONFIG`), each trained by `train_from_config` and saved as a checkpoint.

The demo model is a PointNet with feature transform at a quarter of the reference widths
(64, 128, 1024, 512, 256 -> 16, 32, 256, 128, 64 channels), trained for 8 epochs on the first
512 points of the procedural shapes (12 classes, 200 + 50 per class). 512 points rather than
1024: a training step costs about 5x less there (at 1024 points the (B, C, N) activations no
longer fit in cache), and the AM runs of the demo get cheaper too. Measured on the 2-core
development machine (torch 2.13 CPU, 2 threads), seeds 0-3: test accuracy 99.8-100%,
training 48-61 s when the machine was otherwise idle (about 165 s while other jobs shared its
two cores); generating the data takes about 2 s.
"""
from __future__ import annotations

import torch

from ..data import ModelNet40
from ..models import build_model, save_checkpoint
from .loop import DEFAULTS, train

# Both demo classifiers learn yaw invariance from augmentation: the stored shapes keep one
# heading (as ModelNet40's), so each class's activation flow describes one pose.
DEMO_CONFIG = {"arch": "pointnet", "width": 0.25, "num_points": 512, **DEFAULTS, "seed": 0, "rotate": True}

#: The DGCNN demo model, sized for a 2-core CPU: k = 10 neighbours (the reference's 20 doubles
#: every EdgeConv and kNN), EdgeConv widths at a quarter (16, 16, 32, 64), a 256-d conv5 (the
#: flows' five layers stay cheap to align) and 256 points: a DGCNN's graphs cost N^2 per layer
#: and its EdgeConvs N * k, so at 512 points one AM step of 12 jobs took 39 ms against 19 ms
#: at 256, and one training step (batch 32) 0.43 s against 0.13 s. The PointNet demo's data
#: and epochs.
DGCNN_DEMO_CONFIG = {"arch": "dgcnn", "width": 0.25, "k": 10, "emb_dims": 256, "num_points": 256, **DEFAULTS,
                     "seed": 0, "rotate": True}

#: The PointNet++ demo models: a quarter of the public widths on 256 points, with a quarter of
#: the public centroids (128 and 32) and half the neighbours (SSG: 16 and 32), at the public
#: radii. The public sizes (512 and 128 centroids, 32 and 64 neighbours, at least 512 points)
#: cost a training step (batch 32) about 3.4 s on the 2-core machine, these about 0.25 s; the
#: SSG reached 97.7% test accuracy after 4 epochs (84 s) and 99.0% after 5 (seed 0).
#: MSG keeps its three radii per layer with neighbours (8, 16, 32) and (16, 32, 32): about
#: 0.6-0.9 s a step, hence fewer epochs.
POINTNET2_SSG_DEMO_CONFIG = {"arch": "pointnet2_ssg", "width": 0.25, "num_points": 256, "npoints": [128, 32],
                             "radii": [0.2, 0.4], "nsamples": [16, 32], **DEFAULTS, "epochs": 4, "seed": 0,
                             "rotate": True}
POINTNET2_MSG_DEMO_CONFIG = {"arch": "pointnet2_msg", "width": 0.25, "num_points": 256, "npoints": [128, 32],
                             "radii": [[0.1, 0.2, 0.4], [0.2, 0.4, 0.8]], "nsamples": [[8, 16, 32], [16, 32, 32]],
                             **DEFAULTS, "epochs": 3, "seed": 0, "rotate": True}

#: The demo's classifiers by name (`flowam-fast demo --model NAME`); the first is the default.
DEMO_CONFIGS = {"pointnet": DEMO_CONFIG, "dgcnn": DGCNN_DEMO_CONFIG, "pointnet2_ssg": POINTNET2_SSG_DEMO_CONFIG,
                "pointnet2_msg": POINTNET2_MSG_DEMO_CONFIG}

#: Architecture arguments a config may carry beyond width; absent ones take the model's defaults.
_ARCH_KEYS = ("feature_transform", "k", "emb_dims", "dropout", "npoints", "radii", "nsamples")


#: The evaluator of the metrics (FID, m-IS, sanity-check features): a PointNet trained
#: separately from the explained model, at the reference widths so its global feature is
#: 1024-d and its penultimate 256-d, without the feature T-Net (not needed at 99% accuracy on
#: the procedural shapes, and it halves the training time), with its own seed.
EVALUATOR_CONFIG = {"arch": "pointnet", "width": 1.0, "feature_transform": False, "num_points": 256, "epochs": 3,
                    "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4, "seed": 1, "rotate": True}


def train_from_config(data_dir, out, config: dict, epochs: int | None = None, quiet: bool = False,
                      name: str = "model") -> dict:
    """Train a classifier described by `config` (DEMO_CONFIG's keys) on data_dir; save it to `out`."""
    cfg = dict(config)
    if epochs is not None:
        cfg["epochs"] = epochs
    train_set = ModelNet40(data_dir, "train", num_points=cfg["num_points"])
    test_set = ModelNet40(data_dir, "test", num_points=cfg["num_points"])
    torch.manual_seed(cfg["seed"])  # the initial weights
    extra = {key: cfg[key] for key in _ARCH_KEYS if key in cfg}
    model = build_model(cfg["arch"], num_classes=train_set.num_classes, width=cfg["width"], **extra)
    result = train(model, train_set, test_set, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                   weight_decay=cfg["weight_decay"], seed=cfg["seed"], quiet=quiet,
                   rotate=bool(cfg.get("rotate", False)))
    save_checkpoint(model, out, test_accuracy=result["test_accuracy"], train_seconds=result["seconds"],
                    num_points=cfg["num_points"], class_names=train_set.classes)
    print(f"{name}: test accuracy {result['test_accuracy']:.1%}, trained in {result['seconds']:.0f} s")
    return result


def demo_config(model: str = "pointnet") -> dict:
    """The demo recipe of `model`, a key of DEMO_CONFIGS (`pipelines.demo.demo_model_name`
    resolves the command line's aliases)."""
    if model not in DEMO_CONFIGS:
        raise ValueError(f"unknown demo model {model!r}; choose one of {list(DEMO_CONFIGS)}")
    return DEMO_CONFIGS[model]


def train_demo_model(data_dir, out, epochs: int | None = None, quiet: bool = False, model: str = "pointnet") -> dict:
    """Train the demo classifier `model` (DEMO_CONFIGS[model]) on data_dir and save it to `out`."""
    return train_from_config(data_dir, out, demo_config(model), epochs=epochs, quiet=quiet, name=f"demo {model}")


def train_evaluator(data_dir, out, epochs: int | None = None, quiet: bool = False) -> dict:
    """Train the metrics' evaluator PointNet (EVALUATOR_CONFIG) on data_dir and save it to `out`."""
    return train_from_config(data_dir, out, EVALUATOR_CONFIG, epochs=epochs, quiet=quiet, name="evaluator")
