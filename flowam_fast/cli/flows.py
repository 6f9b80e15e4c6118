"""`flowam-fast flows`: per-class activation flows of a model on a dataset's training split."""
from __future__ import annotations

from .options import add_device_argument, add_model_arguments, device_of, load_model


def add_arguments(p) -> None:
    add_model_arguments(p, help="checkpoint (.pt) written by `flowam-fast train`, a reference layout, or your own "
                                "model's (with --factory or --trusted)")
    p.add_argument("--data", required=True, help="dataset directory in the ModelNet40 HDF5 layout")
    p.add_argument("--out", required=True, help="output flows file (.h5)")
    p.add_argument("--layers", help="comma-separated module names whose outputs are per-point activations (B, C, *), "
                                    "e.g. feat.bn1,feat.bn2 (default: the model's flow_layers)")
    p.add_argument("--num-points", type=int, default=None, help="points per sample (default: the count the checkpoint "
                                                                "records, else 1024)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per forward pass")
    p.add_argument("--quantile-levels", type=int, default=0,
                   help="also store each class's per-channel quantiles at this many levels, for --alignment "
                        "quantiles (e.g. 64; 0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(p)


def run(args) -> int:
    from ..am.config import cloud_size
    from ..am.flows import compute_flows
    from ..data import ModelNet40

    num_points = cloud_size(args.num_points, checkpoint=args.model)
    model = load_model(args, device_of(args), num_points=num_points)
    data = ModelNet40(args.data, split="train", num_points=num_points)
    layers = [name.strip() for name in args.layers.split(",") if name.strip()] if args.layers else None
    flows = compute_flows(model, data, layers=layers, batch_size=args.batch_size, quiet=args.quiet,
                          quantile_levels=args.quantile_levels)
    flows.save(args.out)
    print(f"flows of {len(flows.layers)} layers for {flows.num_classes} classes written to {args.out}")
    return 0
