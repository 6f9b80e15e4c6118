"""`flowam-fast attribute`: local explanations of every cloud of a split, with faithfulness curves.

flowam-fast attribute --model CKPT --data DIR --methods saliency,integrated-gradients,grad-cam,critical-points,occlusion --out DIR

Writes DIR/attribution.h5 (scores per cloud and method), DIR/attribution.json (per method the
areas over the deletion and under the insertion curve, against a random order, with
intervals), DIR/curves.png, DIR/report.md and the views (DIR/attribution.html, .png). Batches
run on the sweep executors and are kept as they finish (DIR/shards/): a rerun computes only
what is missing (flowam_fast.pipelines.attribute).
"""
from __future__ import annotations

from .options import add_device_argument, add_model_arguments, device_of, load_model

METHOD_NAMES = "saliency, spherical-saliency, integrated-gradients, grad-cam, critical-points, occlusion"


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--data", required=True, help="dataset directory (ModelNet40 HDF5 layout)")
    p.add_argument("--out", required=True, help="output directory (finished batches there are reused)")
    p.add_argument("--methods", default="saliency,integrated-gradients,grad-cam,critical-points,occlusion",
                   help=f"comma list of methods: {METHOD_NAMES}")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which split's clouds")
    p.add_argument("--limit", type=int, default=None, help="only the first N clouds of the split")
    p.add_argument("--num-points", type=int, default=None, help="points per cloud (default: the model's, else 1024)")
    p.add_argument("--targets", choices=["predicted", "label"], default="predicted",
                   help="the class explained in each cloud: the model's prediction or the label")
    p.add_argument("--batch-size", type=int, default=32, help="clouds per batch (the unit of work and of resumption)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: batches one after another here; ray: one Ray task per batch")
    p.add_argument("--address", help="Ray cluster address, e.g. HEAD:6379 (default: start a local Ray)")
    p.add_argument("--layer", help="grad-cam's per-point layer, by module name (default: the model's last flow layer)")
    p.add_argument("--pool-layer", help="critical-points' max-pooled layer (default: the model's last flow layer)")
    p.add_argument("--steps", type=int, default=32, help="integrated gradients' interpolation steps")
    p.add_argument("--patches", type=int, default=32, help="occlusion's patches per cloud")
    p.add_argument("--k", type=int, default=None, help="occlusion's points per patch (default: ceil(2N / patches))")
    p.add_argument("--alpha", type=float, default=1.0, help="spherical-saliency's rescaling exponent")
    p.add_argument("--seed", type=int, default=0, help="seed of the random order, the bootstrap and the randomization")
    p.add_argument("--randomization-clouds", type=int, default=8,
                   help="clouds of the model randomization check (the first ones); 0 skips it")
    p.add_argument("--views", type=int, default=6, help="clouds in the HTML and PNG views; 0 skips them")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_device_argument(p)


def method_options(args, methods) -> dict:
    """{method: its options} from the command line, for the methods asked for."""
    every = {"integrated-gradients": {"steps": args.steps}, "occlusion": {"patches": args.patches, "k": args.k},
             "spherical-saliency": {"alpha": args.alpha}, "grad-cam": {"layer": args.layer},
             "critical-points": {"layer": args.pool_layer}}
    return {m: {k: v for k, v in every[m].items() if v is not None} for m in methods if m in every}


def run(args) -> int:
    from ..am.config import cloud_size
    from ..data.modelnet40 import ModelNet40
    from ..pipelines.attribute import parse_methods, run_attribution

    methods = parse_methods(args.methods)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    device = device_of(args)
    num_points = cloud_size(args.num_points, checkpoint=args.model)
    model = load_model(args, device, num_points=num_points)
    data = ModelNet40(args.data, split=args.split, num_points=num_points)
    count = len(data) if args.limit is None else min(args.limit, len(data))
    result = run_attribution(model, data.points[:count], data.labels[:count], args.out, methods=methods,
                             options=method_options(args, methods), targets=args.targets, class_names=data.classes,
                             executor=args.executor, address=args.address, device=device,
                             batch_size=args.batch_size, seed=args.seed,
                             randomization_clouds=args.randomization_clouds, views=args.views, quiet=args.quiet)
    for m, s in result["methods"].items():
        print(f"{m}: deletion area {s['deletion_area']:.3f} (random {s['random_deletion_area']:.3f}), "
              f"insertion area {s['insertion_area']:.3f} (random {s['random_insertion_area']:.3f})")
    print(f"{result['clouds']} clouds, {result['ran']} batches run, {result['reused']} reused, "
          f"{result['seconds']:.1f} s; report: {args.out}/report.md")
    return 0
