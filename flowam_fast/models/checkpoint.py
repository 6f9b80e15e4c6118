"""Checkpoints: ours (with the architecture config) and the reference implementations' layouts.

`load_checkpoint` accepts a raw state_dict, one saved from DataParallel (`module.` prefix),
and training-script dicts holding it under 'model_state_dict', 'model' or 'state_dict'; for
your own model, a factory that builds it (the state_dict is loaded into it) or, if you trust
the file, a pickled whole module.
"""
from __future__ import annotations

import importlib
import os
import pickle
import re
import sys
from pathlib import Path

import torch

from .. import __version__
from ..atomic import atomic_path
from .dgcnn import DGCNN
from .pointnet import PointNet
from .pointnet2 import PointNet2MSG, PointNet2SSG

ARCHS = {"pointnet": PointNet, "dgcnn": DGCNN, "pointnet2_ssg": PointNet2SSG, "pointnet2_msg": PointNet2MSG}
_STATE_KEYS = ("model_state_dict", "model", "state_dict")
# The last layer of each architecture, to read the number of classes off a state_dict.
_LAST = {"pointnet": "fc3.weight", "dgcnn": "linear3.weight", "pointnet2_ssg": "fc3.weight",
         "pointnet2_msg": "fc3.weight"}
#: PointNet++'s first shared layer, whose input channels tell a checkpoint trained with normals
#: (3 offsets + 3 normals) from one trained on coordinates alone.
_FIRST = {"pointnet2_ssg": "sa1.mlp_convs.0.weight", "pointnet2_msg": "sa1.conv_blocks.0.0.weight"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model.

    Attributes:
        problem: What is wrong, in words.
        fixes: The arguments of `load_checkpoint` that would load the file ("arch",
            "factory", "trusted", "num_classes"); the message ends with them in Python's
            words, `fix_text(fixes, cli=True)` gives the command line's.
    """

    def __init__(self, problem: str, fixes=()):
        self.problem, self.fixes = problem, tuple(fixes)
        super().__init__(f"{problem}; pass {fix_text(self.fixes)}" if self.fixes else problem)


def fix_text(fixes, cli: bool = False) -> str:
    """What to pass to load a checkpoint, in Python's words or the command line's (which has
    no option for num_classes: there its fix is a factory)."""
    archs = "|".join(ARCHS)
    words = {"arch": (f"arch= (one of {', '.join(map(repr, ARCHS))}) for a built-in architecture",
                      f"--arch {archs} for a built-in architecture"),
             "factory": ("factory= (a callable that builds your module; the file holds its state_dict)",
                         "--factory pkg.module:build (an importable callable that builds your module; the file "
                         "holds its state_dict)"),
             "trusted": ("trusted=True if you trust the file (unpickling runs code from it)",
                         "--trusted if you trust the file (unpickling runs code from it)"),
             "num_classes": ("num_classes=", None)}
    return ", or ".join(w for w in (words[f][int(cli)] for f in fixes) if w)


def build_model(arch: str, num_classes: int = 40, **kw) -> torch.nn.Module:
    """A new, untrained classifier of architecture `arch`.

    Args:
        arch: One of `ARCHS`: "pointnet", "dgcnn", "pointnet2_ssg", "pointnet2_msg".
        num_classes: Number of classes.
        **kw: Keyword arguments of the model class (`PointNet`, `DGCNN`, `PointNet2SSG`,
            `PointNet2MSG`), e.g. width.

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
        model: A built-in classifier (one of `ARCHS`).
        path: The file to write.
        **meta: Anything else to keep (accuracy, epochs, ...).
    """
    blob = {"format": "flowam_fast.checkpoint", "version": __version__, "arch": model.arch,
            "config": dict(model.config), "model_state_dict": model.state_dict(), "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def checkpoint_meta(path) -> dict:
    """What `save_checkpoint` kept beside the weights (test accuracy, training time, ...).

    Args:
        path: A checkpoint written by `save_checkpoint`.

    Returns:
        Its `**meta` keywords; {} for a checkpoint of another layout.

    Raises:
        FileNotFoundError: No such file.
        CheckpointError: The file cannot be read as a checkpoint.
    """
    blob = _read(path)
    meta = blob.get("meta") if isinstance(blob, dict) and blob.get("format") == "flowam_fast.checkpoint" else None
    return dict(meta) if isinstance(meta, dict) else {}


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
                f"{f' ({found.group(1)})' if found else ''}", fixes=("trusted",)) from None
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
    for arch, first in _FIRST.items():
        if first in state:
            return arch
    keys = ", ".join(list(state)[:6]) + (", ..." if len(state) > 6 else "")
    raise CheckpointError(f"cannot tell the architecture from the checkpoint's keys ({keys})",
                          fixes=("arch", "factory"))


def _guess_config(arch: str, state: dict) -> dict:
    """Widths a reference checkpoint implies: feature_transform for PointNet, emb_dims for DGCNN."""
    if arch == "pointnet":
        return {"feature_transform": any(k.startswith("feat.fstn.") for k in state)}
    w = state.get("conv5.0.weight") if arch == "dgcnn" else None
    return {"emb_dims": int(w.shape[0])} if w is not None else {}


def _refuse_normals(arch: str, state: dict, path) -> None:
    first = state.get(_FIRST.get(arch, ""))
    if first is not None and first.dim() > 1 and first.shape[1] == 6:
        raise CheckpointError(f"{path}: a {arch} checkpoint trained with normals (normal_channel=True: 6 input "
                              "channels); AM optimizes point coordinates only, so only models trained without "
                              "normals (normal_channel=False, 3 input channels) can be explained")


def load_state(model, state: dict, source: str = "checkpoint", fixes=()) -> None:
    """load_state_dict with one error that lists missing, unexpected and mis-shaped keys (and
    `fixes`, the `CheckpointError.fixes` that would load it another way)."""
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
        raise CheckpointError("; ".join(parts), fixes=fixes)
    model.load_state_dict(state)


def load_checkpoint(path, arch: str | None = None, num_classes: int | None = None, *, trusted: bool = False,
                    factory=None, **kw) -> torch.nn.Module:
    """Load the model stored at `path`, in eval mode.

    Reads our own checkpoints (`save_checkpoint`) and the reference implementations' layouts:
    a raw state_dict, one saved from DataParallel (`module.` prefix), or a training script's
    dict holding it under 'model_state_dict', 'model' or 'state_dict'. The architecture
    arguments are needed only where the checkpoint does not say them: our own checkpoints
    store them all; for a reference state_dict the architecture is told by its keys,
    num_classes is read off the last layer, feature_transform (PointNet) and emb_dims (DGCNN)
    off the weights, and DGCNN's k, which no weight shows, defaults to the reference's 20.
    PointNet++ checkpoints trained with normals are refused: AM optimizes coordinates only.

    Your own model: `factory` builds it and the checkpoint's state_dict (in any of the
    layouts above) is loaded into it; or, with `trusted=True`, a file that pickles the whole
    module (alone, or under one of the keys above) is returned as it is. Adapt a module whose
    output is not logits with `as_classifier`.

    Args:
        path: The checkpoint file.
        arch: "pointnet", "dgcnn", "pointnet2_ssg" or "pointnet2_msg"; None takes the
            checkpoint's, or guesses it from the keys.
        num_classes: Overrides the number of classes the checkpoint says or shows.
        trusted: The file is read with torch.load(weights_only=True); True also allows a
            checkpoint that pickles other objects (this runs code from the file), a whole
            module included.
        factory: Builds your own module, called with `**kw` (and num_classes where given):
            a callable, or its import path "package.module:name" (the current directory is
            searched too). `arch` does not apply then.
        **kw: The model's keyword arguments where the checkpoint does not say them (e.g. k=20
            for DGCNN, width); they override the checkpoint's.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: There is no file at `path`.
        CheckpointError: The file cannot be read, pickles objects other than tensors (and
            `trusted` is False), its weights do not fit the model, or a PointNet++ checkpoint
            was trained with normals.
        ValueError: An unknown architecture, both `arch` and `factory`, or a factory that
            cannot be imported or does not build a module.
    """
    if factory is not None and arch is not None:
        raise ValueError("pass arch= (a built-in architecture) or factory= (your own module), not both")
    blob = _read(path, trusted)
    whole = _whole_module(blob)
    if factory is not None:
        build = import_factory(factory) if isinstance(factory, str) else factory
        model = build(**kw, **({} if num_classes is None else {"num_classes": num_classes}))
        if not isinstance(model, torch.nn.Module):
            name = factory if isinstance(factory, str) else getattr(factory, "__qualname__", type(factory).__name__)
            raise ValueError(f"factory {name} returned a {type(model).__name__}, not an nn.Module")
        load_state(model, whole.state_dict() if whole is not None else extract_state_dict(blob), source=str(path))
        return model.eval()
    if whole is not None:
        if arch is not None or kw or num_classes is not None:
            raise ValueError(f"{path} holds a whole {type(whole).__name__}, returned as it is: arch=, num_classes= "
                             "and model arguments do not apply")
        return whole.eval()
    config = {}
    config_from_file = isinstance(blob, dict) and blob.get("format") == "flowam_fast.checkpoint"
    if config_from_file:
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
            raise CheckpointError(f"{path}: no {_LAST[arch]} to read the number of classes from",
                                  fixes=("num_classes", "factory"))
        config["num_classes"] = int(last.shape[0])
    _refuse_normals(arch, state, path)
    model = build_model(arch, **config)
    # A reference state_dict that does not fit: perhaps not this architecture at all.
    load_state(model, state, source=str(path), fixes=() if config_from_file else ("arch", "factory"))
    return model.eval()


def _whole_module(blob):
    """The module a trusted checkpoint pickles whole (alone or under a state key), else None."""
    if isinstance(blob, torch.nn.Module):
        return blob
    if isinstance(blob, dict):
        return next((blob[k] for k in _STATE_KEYS if isinstance(blob.get(k), torch.nn.Module)), None)
    return None


def import_factory(spec: str):
    """The callable that "package.module:name" names, imported (the current directory is
    searched after the Python path, as `python -m` would).

    Raises:
        ValueError: A malformed spec, a module that cannot be imported, or a name that is
            not a callable of it.
    """
    module_name, sep, name = str(spec).partition(":")
    if not (sep and module_name and name):
        raise ValueError(f"factory {spec!r} must name a callable as 'package.module:name'")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of factory {spec!r}: {exc}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"factory {spec!r}: {obj.__name__ if hasattr(obj, '__name__') else module_name} has no "
                             f"attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"factory {spec!r} is a {type(obj).__name__}, not a callable")
    return obj
