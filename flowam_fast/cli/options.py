"""Argument groups shared by several commands. Torch-free at import: see cli/__init__.py."""
from __future__ import annotations

from ..am.names import ALIGNMENTS, ARCHITECTURES, PRESETS


def add_arch_argument(p) -> None:
    p.add_argument("--arch", choices=ARCHITECTURES,
                   help="architecture of a checkpoint in a reference layout (default: read from the checkpoint)")


def add_device_argument(p) -> None:
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where models and the engine run (cuda: the current CUDA device)")


def device_of(args):
    """The torch device named by --device, with a clear error where it does not exist."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible to this torch "
                           f"({torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)")
    return torch.device(args.device)


def add_am_arguments(p) -> None:
    """Options of the objective, shared by the commands that run the engine."""
    p.add_argument("--steps", type=int, default=600, help="Adam steps of every job")
    p.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate")
    p.add_argument("--flow-weight", type=float, default=None,
                   help=f"weight of the flow term (default: the method's preset: {_presets(0)})")
    p.add_argument("--continuity-weight", type=float, default=None,
                   help=f"weight of the continuity term (default: the method's preset: {_presets(1)})")
    p.add_argument("--alignment", choices=ALIGNMENTS, default=ALIGNMENTS[0],
                   help="flow term: per-channel mean and std (moments), or per-channel quantiles (1-D Wasserstein; "
                        "needs flows made with --quantile-levels)")
    p.add_argument("--num-points", type=int, default=None, help="points per explanation (default: as in the flows)")
    p.add_argument("--batch-size", type=int, default=None, help="jobs per batch (default: all at once)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _presets(index: int) -> str:
    """One preset weight of every method (flowam_fast.am.names.PRESETS): "flowam 100, ..."."""
    return ", ".join(f"{method} {preset[index]:g}" for method, preset in PRESETS.items())


def parse_weights(text: str) -> list:
    """--flow-weights "0,1,10,100" -> [0.0, 1.0, 10.0, 100.0]."""
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"--flow-weights must be a comma list of numbers, got {text!r}") from None
    if not weights or any(not w >= 0 for w in weights):
        raise ValueError(f"--flow-weights must list weights >= 0, got {text!r}")
    return weights
