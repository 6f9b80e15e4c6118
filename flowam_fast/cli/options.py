"""Argument groups shared by several commands. Torch-free at import: see cli/__init__.py."""
from __future__ import annotations

from ..am.config import AMConfig
from ..am.names import ALIGNMENTS, ARCHITECTURES, PRESETS


def add_arch_argument(p) -> None:
    p.add_argument("--arch", choices=ARCHITECTURES,
                   help="architecture of a checkpoint in a reference layout (default: read from the checkpoint)")


def add_model_arguments(p, help: str = "classifier checkpoint (.pt)") -> None:
    """--model and how to load it: a built-in architecture (--arch), or your own module
    (--factory, --trusted) with --logits where its output is not the logits. See `load_model`."""
    p.add_argument("--model", required=True, help=help)
    add_arch_argument(p)
    p.add_argument("--factory", metavar="PKG.MODULE:NAME",
                   help="your own model: an importable callable that builds the module (called without arguments; "
                        "the current directory is searched too); the checkpoint's state_dict is loaded into it")
    p.add_argument("--trusted", action="store_true",
                   help="the checkpoint may pickle objects other than tensors, e.g. a whole module (needs no "
                        "--factory then); only for files you trust: unpickling runs code from them")
    p.add_argument("--logits", metavar="INDEX|KEY|SUBMODULE",
                   help="where your module's output holds the logits (B, K): an index into a tuple output (0), a "
                        "key of a dict output, or the name of the submodule that computes them (fc3, for a "
                        "module that returns log-softmax) (default: the output is the logits)")


def parse_logits(text: str):
    """--logits "0" -> 0 (an index); any other text is a key or a submodule name."""
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def load_model(args, device, num_points: int = 1024):
    """The classifier that --model, --arch, --factory, --trusted and --logits name, on `device`.

    An own model (--factory, --trusted or --logits) is run once on `num_points` random
    points, so that an output that is not logits is reported here in the options' words.

    Raises:
        CheckpointError: The checkpoint cannot be loaded; the message names the options that
            would load it.
        ValueError: --arch with --factory, or an own model whose output is not logits (the
            message says what --logits to pass).
    """
    import torch

    from ..models.adapter import ClassifierOutputError, as_classifier, classify
    from ..models.checkpoint import CheckpointError, fix_text, load_checkpoint

    if args.arch and args.factory:
        raise ValueError("pass --arch (a built-in architecture) or --factory (your own module), not both")
    try:
        model = load_checkpoint(args.model, arch=args.arch, trusted=args.trusted, factory=args.factory)
    except CheckpointError as exc:
        if not exc.fixes:
            raise
        raise CheckpointError(f"{exc.problem}; pass {fix_text(exc.fixes, cli=True)}") from None
    if args.logits is not None:
        model = as_classifier(model, parse_logits(args.logits))
    model = model.to(device)
    if args.factory or args.trusted or args.logits is not None:
        try:
            with torch.no_grad():
                classify(model, torch.rand(2, 3, num_points, device=device) - 0.5)
        except ClassifierOutputError as exc:
            what = f"--logits {exc.fix}" if exc.fix is not None else \
                "--logits with the index, key or submodule name of the logits"
            raise ValueError(f"{args.model}: {exc.problem}; a classifier must return logits (B, K): pass {what}") \
                from None
    return model


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
    p.add_argument("--steps", type=int, default=AMConfig.steps, help="Adam steps of every job")
    p.add_argument("--lr", type=float, default=AMConfig.lr, help="Adam's learning rate")
    p.add_argument("--flow-weight", type=float, default=None,
                   help=f"weight of the flow term (default: the method's preset: {_presets(0)})")
    p.add_argument("--continuity-weight", type=float, default=None,
                   help=f"weight of the continuity term (default: the method's preset: {_presets(1)})")
    p.add_argument("--alignment", choices=ALIGNMENTS, default=ALIGNMENTS[0],
                   help="flow term: per-channel mean and std (moments), or per-channel quantiles (1-D Wasserstein; "
                        "needs flows made with --quantile-levels)")
    p.add_argument("--num-points", type=int, default=None, help="points per explanation (default: the autoencoder's for ae-latent, else the flows', else the "
                        "checkpoint's, else 1024)")
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
