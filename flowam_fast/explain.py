"""`flowam-fast explain`: FlowAM or a baseline over a (class x seed) grid, from the CLI."""
from __future__ import annotations

from .engine import METHODS, FlowAM
from .flows import Flows


def parse_classes(text: str, class_names, num_classes: int) -> list:
    """"all", or a comma list of indices and class names."""
    if text.strip() == "all":
        return list(range(num_classes))
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if tok.lstrip("-").isdigit():
            c = int(tok)
        elif tok in class_names:
            c = list(class_names).index(tok)
        else:
            raise ValueError(f"unknown class {tok!r}; known: {', '.join(class_names) or f'0..{num_classes - 1}'}")
        if not 0 <= c < num_classes:
            raise ValueError(f"unknown class {c}: classes are 0..{num_classes - 1}")
        out.append(c)
    if not out:
        raise ValueError("no classes given")
    return out


def parse_seeds(text: str) -> list:
    """"0-9", "0,3,7" or a mix."""
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if "-" in tok[1:]:
            a, b = tok.split("-", 1)
            lo, hi = int(a), int(b)
            if hi < lo:
                raise ValueError(f"empty seed range {tok!r}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(tok))
    if not out:
        raise ValueError("no seeds given")
    return out


def add_am_arguments(p) -> None:
    """Options of the objective, shared by the commands that run the engine."""
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--flow-weight", type=float, default=None, help="default: the method's preset (flowam: 100)")
    p.add_argument("--continuity-weight", type=float, default=None, help="default: the method's preset (1)")
    p.add_argument("--num-points", type=int, default=None, help="default: as in the flows")
    p.add_argument("--batch-size", type=int, default=None, help="jobs per batch (default: all at once)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="classifier checkpoint")
    p.add_argument("--arch", choices=["pointnet", "dgcnn"], help="architecture, for reference checkpoints")
    p.add_argument("--flows", required=True, help="flows file from `flowam-fast flows`")
    p.add_argument("--classes", default="all", help='"all" or a comma list of indices or names')
    p.add_argument("--seeds", default="0-1", help='e.g. "0-9" or "0,3,5"')
    p.add_argument("--method", choices=METHODS, default="flowam")
    p.add_argument("--autoencoder", help="autoencoder checkpoint for --method ae-latent (flowam_fast.autoencoder)")
    p.add_argument("--out", required=True, help="explanations store (.h5); jobs already in it are skipped")
    p.add_argument("--ply", help="also write one PLY per job into this directory")
    p.add_argument("--png", help="also write a contact sheet PNG")
    add_am_arguments(p)


def run(args) -> int:
    from .models import load_checkpoint

    model = load_checkpoint(args.model, arch=args.arch)
    flows = Flows.load(args.flows)
    classes = parse_classes(args.classes, flows.class_names, flows.num_classes)
    seeds = parse_seeds(args.seeds)
    ae = None
    if args.method == "ae-latent":
        from .autoencoder import load_autoencoder

        if not args.autoencoder:
            raise ValueError("--method ae-latent needs --autoencoder CKPT")
        ae = load_autoencoder(args.autoencoder)
    engine = FlowAM(model, flows, method=args.method, autoencoder=ae, steps=args.steps, lr=args.lr,
                    flow_weight=args.flow_weight, continuity_weight=args.continuity_weight,
                    num_points=args.num_points or (ae.num_points if ae is not None else flows.num_points) or 1024,
                    quiet=args.quiet)
    result = engine.run(classes, seeds, batch_size=args.batch_size, store=args.out)
    if args.ply:
        result.to_ply(args.ply)
    if args.png:
        result.plot(args.png)
    print(f"{len(result)} explanations ({args.method}) in {args.out}; success {result.success.mean():.1%}")
    return 0
