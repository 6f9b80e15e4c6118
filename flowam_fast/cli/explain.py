"""`flowam-fast explain`: FlowAM or a baseline over a (class x seed) grid, or any objective
(`--objective`, `--channel`) over a (target x seed) grid, from the CLI."""
from __future__ import annotations

from ..am.names import ALIGNMENTS, CHANNEL_PRIOR, METHODS
from .options import add_am_arguments, add_device_argument, add_model_arguments, device_of, load_model


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--flows", required=True, help="flows file from `flowam-fast flows`")
    p.add_argument("--classes", "--targets", dest="targets", default="all",
                   help='the targets: "all" or a comma list of class indices or names; with --channel or a channel '
                        'objective, channel indices and ranges, e.g. "0-7,12"')
    p.add_argument("--seeds", default="0-1", help='e.g. "0-9" or "0,3,5"')
    p.add_argument("--method", choices=METHODS, default=None, help=f"FlowAM or a baseline (default: {METHODS[0]})")
    p.add_argument("--objective",
                   help="any objective instead of a method, e.g. \"logit() + 100 * flow() + continuity()\" or "
                        "\"neuron('feat.act3', 5)\": terms logit(), channel(layer), neuron(layer, point), flow(), "
                        "continuity(), diversity(), added and scaled by numbers; flow() reads --flows")
    p.add_argument("--channel", metavar="LAYER",
                   help="visualize channels of LAYER (--targets): channel(LAYER) + FLOW_WEIGHT * flow() + "
                        f"CONTINUITY_WEIGHT * continuity(), the weights from --flow-weight and --continuity-weight "
                        f"(default: {CHANNEL_PRIOR['flow_weight']:g} and {CHANNEL_PRIOR['continuity_weight']:g})")
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

    from ..am.flows import Flows
    from ..am.grid import parse_seeds, parse_targets
    from .view import class_references, write_views

    chosen = [name for name, value in (("--method", args.method), ("--objective", args.objective),
                                       ("--channel", args.channel)) if value]
    if len(chosen) > 1:
        raise ValueError(f"give one of --method, --objective and --channel, not {' and '.join(chosen)}")
    device = device_of(args)
    flows = Flows.load(args.flows)
    seeds = parse_seeds(args.seeds)
    engine = _engine(args, flows, device)
    targets = parse_targets(args.targets, engine.target_kind, flows.class_names, engine.num_targets)
    if args.fresh:
        Path(args.out).unlink(missing_ok=True)
    result = engine.run(targets, seeds, batch_size=args.batch_size, store=args.out)
    if args.ply:
        result.to_ply(args.ply)
    if args.data and result.target_layer and (args.png or args.html):
        raise ValueError("--data shows a real sample of each target class; the targets here are channels")
    references = class_references(args.data, result) if args.data and (args.png or args.html) else None
    write_views(result, html=args.html, png=args.png, references=references)
    if result.target_layer:
        print(f"{len(result)} explanations of channels of {result.target_layer} ({engine.objective}) in {args.out}")
    else:
        print(f"{len(result)} explanations ({result.method}) in {args.out}; success {result.success.mean():.1%}")
    return 0


def _engine(args, flows, device):
    """FlowAM with a preset method, or AM with the objective of --objective or --channel."""
    from ..am.autoencoder import load_autoencoder
    from ..am.config import cloud_size
    from ..am.engine import AM, FlowAM
    from ..objectives import channel_prior, parse_objective

    method = args.method or METHODS[0]
    ae = None
    if method == "ae-latent":
        if not args.autoencoder:
            raise ValueError("--method ae-latent needs --autoencoder CKPT")
        ae = load_autoencoder(args.autoencoder).to(device)
    num_points = cloud_size(args.num_points, autoencoder=ae, flows=flows, checkpoint=args.model)
    model = load_model(args, device, num_points=num_points)
    common = dict(steps=args.steps, lr=args.lr, num_points=num_points, quiet=args.quiet, device=device)
    if args.objective or args.channel:
        if args.objective and (args.flow_weight is not None or args.continuity_weight is not None
                               or args.alignment != ALIGNMENTS[0]):
            raise ValueError("--flow-weight, --continuity-weight and --alignment set a method's terms; write them "
                             "into --objective, e.g. \"logit() + 300 * flow(alignment='quantiles')\"")
        objective = parse_objective(args.objective, flows) if args.objective else channel_prior(
            args.channel, flows, args.flow_weight, args.continuity_weight, args.alignment)
        return AM(model, objective, flows=flows, **common)
    return FlowAM(model, flows, method=method, autoencoder=ae, flow_weight=args.flow_weight,
                  continuity_weight=args.continuity_weight, alignment=args.alignment, **common)
