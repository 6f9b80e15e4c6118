"""`flowam-fast explain`: FlowAM or a baseline over a (class x seed) grid, from the CLI."""
from __future__ import annotations

from ..am.names import METHODS
from .options import add_am_arguments, add_device_argument, add_model_arguments, device_of, load_model


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--flows", required=True, help="flows file from `flowam-fast flows`")
    p.add_argument("--classes", default="all", help='"all" or a comma list of indices or names')
    p.add_argument("--seeds", default="0-1", help='e.g. "0-9" or "0,3,5"')
    p.add_argument("--method", choices=METHODS, default=METHODS[0], help="FlowAM or a baseline")
    p.add_argument("--autoencoder",
                   help="autoencoder checkpoint for --method ae-latent (flowam_fast.am.autoencoder)")
    p.add_argument("--out", required=True, help="explanations store (.h5); jobs already in it are skipped")
    p.add_argument("--fresh", action="store_true",
                   help="discard the jobs already in --out (made with another config, say) and start over")
    p.add_argument("--ply", help="also write one PLY per job into this directory")
    p.add_argument("--png", help="also write a contact sheet PNG")
    p.add_argument("--html", help="also write the interactive viewer page (HTML)")
    p.add_argument("--data", help="dataset directory (ModelNet40 HDF5 layout): show a real test sample of each class "
                                  "beside the explanations in --png and --html")
    add_am_arguments(p)
    add_device_argument(p)


def run(args) -> int:
    from pathlib import Path

    from ..am.autoencoder import load_autoencoder
    from ..am.config import cloud_size
    from ..am.engine import FlowAM
    from ..am.flows import Flows
    from ..am.grid import parse_classes, parse_seeds
    from .view import class_references, write_views

    device = device_of(args)
    flows = Flows.load(args.flows)
    model = load_model(args, device, num_points=cloud_size(args.num_points, flows=flows, checkpoint=args.model))
    classes = parse_classes(args.classes, flows.class_names, flows.num_classes)
    seeds = parse_seeds(args.seeds)
    ae = None
    if args.method == "ae-latent":
        if not args.autoencoder:
            raise ValueError("--method ae-latent needs --autoencoder CKPT")
        ae = load_autoencoder(args.autoencoder).to(device)
    engine = FlowAM(model, flows, method=args.method, autoencoder=ae, steps=args.steps, lr=args.lr,
                    flow_weight=args.flow_weight, continuity_weight=args.continuity_weight,
                    num_points=cloud_size(args.num_points, autoencoder=ae, flows=flows, checkpoint=args.model),
                    quiet=args.quiet, device=device, alignment=args.alignment)
    if args.fresh:
        Path(args.out).unlink(missing_ok=True)
    result = engine.run(classes, seeds, batch_size=args.batch_size, store=args.out)
    if args.ply:
        result.to_ply(args.ply)
    references = class_references(args.data, result) if args.data and (args.png or args.html) else None
    write_views(result, html=args.html, png=args.png, references=references)
    print(f"{len(result)} explanations ({args.method}) in {args.out}; success {result.success.mean():.1%}")
    return 0
