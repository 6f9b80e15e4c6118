"""Checkpoints: ours (with the architecture config) and the reference implementations' layouts.

`load_checkpoint` accepts a raw state_dict, one saved from DataParallel (`module.` prefix),
and training-script dicts holding it under 'model_state_dict', 'model' or 'state_dict'.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from .. import __version__
from ..atomic import atomic_path
from .dgcnn import DGCNN
from .pointnet import PointNet

ARCHS = {"pointnet": PointNet, "dgcnn": DGCNN}
_STATE_KEYS = ("model_state_dict", "model", "state_dict")
# The last layer of each architecture, to read the number of classes off a state_dict.
_LAST = {"pointnet": "fc3.weight", "dgcnn": "linear3.weight"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def build_model(arch: str, num_classes: int = 40, **kw) -> torch.nn.Module:
    """A new, untrained classifier of architecture `arch`.

    Args:
        arch: "pointnet" or "dgcnn".
        num_classes: Number of classes.
        **kw: Keyword arguments of the model class (`PointNet` or `DGCNN`), e.g. width.

    Raises:
        ValueError: An unknown architecture.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch](num_classes=num_classes, **kw)


def save_checkpoint(model, path, **meta) -> None:
    """Save a model's weights with its architecture and config, atomically.

    `load_checkpoint(path)` then needs no other argument.

    Args:
        model: A `PointNet` or `DGCNN`.
        path: The file to write.
        **meta: Anything else to keep (accuracy, epochs, ...).
    """
    blob = {"format": "flowam_fast.checkpoint", "version": __version__, "arch": model.arch,
            "config": dict(model.config), "model_state_dict": model.state_dict(), "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _read(path, trusted: bool = False):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses pickled objects other than tensors and containers (a training
        # script's argparse.Namespace, say); unpickling those runs code, so only on request.
        if not trusted:
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            raise CheckpointError(
                f"cannot read checkpoint {path} with weights_only=True: it pickles objects other than tensors"
                f"{f' ({found.group(1)})' if found else ''}; if you trust the file, pass trusted=True") from None
    except Exception as exc:  # zip and torch errors all mean the same to the user
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None


def extract_state_dict(blob) -> dict:
    """The state_dict inside any of the accepted layouts, with a DataParallel prefix removed."""
    if not isinstance(blob, dict):
        raise CheckpointError(f"a checkpoint must hold a dict, got {type(blob).__name__}")
    for key in _STATE_KEYS:
        if isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError("no state_dict found (expected tensors, or one under "
                              + ", ".join(repr(k) for k in _STATE_KEYS) + ")")
    if all(k.startswith("module.") for k in blob):
        blob = {k[len("module."):]: v for k, v in blob.items()}
    return dict(blob)


def _guess_arch(state: dict) -> str:
    if "feat.conv1.weight" in state:
        return "pointnet"
    if "conv1.0.weight" in state:
        return "dgcnn"
    raise CheckpointError("cannot tell the architecture from the checkpoint's keys; pass arch=")


def _guess_config(arch: str, state: dict) -> dict:
    """Widths a reference checkpoint implies: feature_transform for PointNet, emb_dims for DGCNN."""
    if arch == "pointnet":
        return {"feature_transform": any(k.startswith("feat.fstn.") for k in state)}
    w = state.get("conv5.0.weight")
    return {"emb_dims": int(w.shape[0])} if w is not None else {}


def load_state(model, state: dict, source: str = "checkpoint") -> None:
    """load_state_dict with one error that lists missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    # Checkpoints written before torch 0.4.1 have no BatchNorm step counters; eval ignores them.
    state = {**{k: v for k, v in own.items() if k.endswith(".num_batches_tracked")}, **state}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{source} does not match {type(model).__name__}"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 20} more)" if len(items) > 20 else ""
                parts.append(f"{title} ({len(items)}): " + ", ".join(items[:20]) + more)
        raise CheckpointError("; ".join(parts))
    model.load_state_dict(state)


def load_checkpoint(path, arch: str | None = None, num_classes: int | None = None, *, trusted: bool = False,
                    **kw) -> torch.nn.Module:
    """Load the model stored at `path`, in eval mode.

    Reads our own checkpoints (`save_checkpoint`) and the reference implementations' layouts:
    a raw state_dict, one saved from DataParallel (`module.` prefix), or a training script's
    dict holding it under 'model_state_dict', 'model' or 'state_dict'. The architecture
    arguments are needed only where the checkpoint does not say them: our own checkpoints
    store them all; for a reference state_dict the architecture is told by its keys,
    num_classes is read off the last layer, feature_transform (PointNet) and emb_dims (DGCNN)
    off the weights, and DGCNN's k, which no weight shows, defaults to the reference's 20.

    Args:
        path: The checkpoint file.
        arch: "pointnet" or "dgcnn"; None takes the checkpoint's, or guesses it from the keys.
        num_classes: Overrides the number of classes the checkpoint says or shows.
        trusted: The file is read with torch.load(weights_only=True); True also allows a
            checkpoint that pickles other objects (this runs code from the file).
        **kw: The model's keyword arguments where the checkpoint does not say them (e.g. k=20
            for DGCNN, width); they override the checkpoint's.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: There is no file at `path`.
        CheckpointError: The file cannot be read, pickles objects other than tensors (and
            `trusted` is False), or its weights do not fit the model.
        ValueError: An unknown architecture.
    """
    blob = _read(path, trusted)
    config = {}
    if isinstance(blob, dict) and blob.get("format") == "flowam_fast.checkpoint":
        arch = arch or blob["arch"]
        config = dict(blob["config"])
    state = extract_state_dict(blob)
    arch = arch or _guess_arch(state)
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    config = {**_guess_config(arch, state), **config, **kw}
    if num_classes is not None:
        config["num_classes"] = num_classes
    elif "num_classes" not in config:
        last = state.get(_LAST[arch])
        if last is None:
            raise CheckpointError(f"{path}: no {_LAST[arch]} to read the number of classes from; pass num_classes=")
        config["num_classes"] = int(last.shape[0])
    model = build_model(arch, **config)
    load_state(model, state, source=str(path))
    return model.eval()
