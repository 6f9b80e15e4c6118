"""`flowam-fast train --model ARCH --data synthetic|DIR --epochs E --out ckpt.pt`:
train a classifier (training/loop.py) and save its checkpoint."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from ..am.names import ARCHITECTURES
from .options import add_device_argument, device_of

#: Options whose default is the demo recipe's (flowam_fast.training.DEMO_CONFIG), read in `run`:
#: the recipe lives beside the training code, which imports torch.
RECIPE_OPTIONS = ("epochs", "num_points", "batch_size", "lr", "weight_decay")


@contextlib.contextmanager
def _dataset_dir(data: str, data_dir: str | None, quiet: bool):
    """The dataset directory: `data` itself, or for "synthetic" the procedural shapes written
    to `data_dir` (kept) or to a temporary directory (removed on exit; the splits are read
    into memory before that)."""
    from ..data import generate_shapes

    if data != "synthetic":
        yield Path(data)
        return
    with contextlib.ExitStack() as stack:
        out = Path(data_dir) if data_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flowam_shapes_")))
        if not quiet:
            print(f"procedural shapes dataset in {out}")
        yield generate_shapes(out)


def add_arguments(p) -> None:
    p.add_argument("--model", choices=ARCHITECTURES, default=ARCHITECTURES[0], help="architecture")
    p.add_argument("--data", default="synthetic", help='"synthetic" (procedural shapes) or a ModelNet40-layout directory')
    p.add_argument("--data-dir", default=None,
                   help="with --data synthetic: where to write the shapes (default: a temporary directory)")
    recipe = "(default: the demo recipe's, flowam_fast.training.DEMO_CONFIG)"
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs {recipe}")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of the layers (the demo uses 0.25)")
    p.add_argument("--k", type=int, default=20, help="DGCNN neighbours")
    p.add_argument("--num-points", type=int, default=None, help=f"points per sample {recipe}")
    p.add_argument("--batch-size", type=int, default=None, help=f"samples per batch {recipe}")
    p.add_argument("--lr", type=float, default=None, help=f"Adam's learning rate {recipe}")
    p.add_argument("--weight-decay", type=float, default=None, help=f"Adam's weight decay {recipe}")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, shuffling and augmentation")
    p.add_argument("--rotate", action="store_true", help="augment with random rotations about the vertical axis")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(p)


def run(args) -> int:
    import torch

    from ..data import ModelNet40
    from ..models import build_model, save_checkpoint
    from ..training import DEMO_CONFIG, train

    for key in RECIPE_OPTIONS:
        if getattr(args, key) is None:
            setattr(args, key, DEMO_CONFIG[key])
    with _dataset_dir(args.data, args.data_dir, args.quiet) as root:
        train_set = ModelNet40(root, "train", num_points=args.num_points)
        test_set = ModelNet40(root, "test", num_points=args.num_points)
    kw = {"width": args.width}
    if args.model == "dgcnn":
        kw["k"] = args.k
    torch.manual_seed(args.seed)  # the initial weights
    model = build_model(args.model, num_classes=train_set.num_classes, **kw).to(device_of(args))
    result = train(model, train_set, test_set, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   weight_decay=args.weight_decay, seed=args.seed, quiet=args.quiet, rotate=args.rotate)
    save_checkpoint(model, args.out, test_accuracy=result["test_accuracy"], train_seconds=result["seconds"],
                    num_points=args.num_points, class_names=train_set.classes)
    print(f"test accuracy {result['test_accuracy']:.1%} after {args.epochs} epochs "
          f"({result['seconds']:.0f} s); checkpoint {args.out}")
    return 0
