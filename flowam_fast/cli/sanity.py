"""`flowam-fast sanity`: the model-parameter randomization check (cascading and independent) of
one or more AM methods, as a permutation test per stage; writes sanity.json, sanity.md and
sanity.png. With --flow-weights, instead the flow weight's trade-off (FlowAM at each weight,
the regularized and AE-latent baselines as references), with tradeoff.png as well."""
from __future__ import annotations

from pathlib import Path

from ..am.names import METHODS
from .options import add_am_arguments, add_device_argument, add_model_arguments, device_of, load_model, parse_weights


def add_test_arguments(p, seeds: int = 4) -> None:
    """Options of the test shared by `sanity` and `study`."""
    p.add_argument("--seeds", type=int, default=seeds,
                   help="seeds per class on each side of the test: the trained model gets seeds 0..S-1, every "
                        "randomized model S..2S-1")
    p.add_argument("--variants", default="cascading,independent",
                   help="comma list of the randomization variants: cascading (parameter blocks re-initialized "
                        "from the output down, one more per stage) and independent (one block at a time)")
    p.add_argument("--alpha", type=float, default=0.05, help="level of each stage's test after Holm's adjustment")
    p.add_argument("--permutations", type=int, default=1999, help="permutations of each stage's test")


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--flows", required=True, help="the model's flows (`flowam-fast flows`)")
    p.add_argument("--data", required=True, help="dataset directory (ModelNet40 HDF5 layout)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--methods", default=METHODS[0], help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--classes", default="all", help='"all" or a comma list of indices or names')
    add_test_arguments(p)
    p.add_argument("--evaluator", help="evaluator PointNet checkpoint (default: train one, kept in --out)")
    p.add_argument("--autoencoder", help="autoencoder for ae-latent (default: train one, kept in --out)")
    p.add_argument("--flow-weights",
                   help='e.g. "0,1,10,100": run the trade-off of FlowAM over these flow weights instead (with '
                        'the methods of --tradeoff-references as references; --methods and --flow-weight are then '
                        'unused); adds tradeoff.png')
    p.add_argument("--tradeoff-references",
                   help='comma list of the reference methods of the trade-off, each checked once, or "none" '
                        "(default: flowam_fast.evaluation.sanity.TRADEOFF_REFERENCES)")
    add_am_arguments(p)
    add_device_argument(p)


def run(args) -> int:
    from ..am.autoencoder import load_or_train_autoencoder
    from ..am.config import cloud_size
    from ..am.flows import Flows
    from ..am.grid import parse_classes
    from ..data import ModelNet40
    from ..evaluation.evaluator import load_evaluator
    from ..evaluation.metrics import references_by_class, to_device
    from ..evaluation.sanity import CLASS_REFS, REALISM_REFS, TRADEOFF_REFERENCES, run_methods, tradeoff

    weights = parse_weights(args.flow_weights) if args.flow_weights else None
    listed = (args.tradeoff_references or ",".join(TRADEOFF_REFERENCES)) if weights else args.methods
    methods = [] if weights and listed.strip() == "none" else [m.strip() for m in listed.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not (methods or weights):
        raise ValueError(f"unknown methods {bad}; choose from {METHODS}")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    device = device_of(args)
    flows = Flows.load(args.flows)
    num_points = cloud_size(args.num_points, flows=flows, checkpoint=args.model)
    model = load_model(args, device, num_points=num_points)
    classes = parse_classes(args.classes, flows.class_names, flows.num_classes)
    train_set = ModelNet40(args.data, "train", num_points=num_points)
    test_set = ModelNet40(args.data, "test", num_points=num_points)
    evaluator = load_evaluator(args.data, args.evaluator, cache_dir=args.out, quiet=args.quiet).to(device)
    ae = None
    if "ae-latent" in methods:
        ae = load_or_train_autoencoder(args.data, args.autoencoder, cache_dir=args.out, num_points=num_points,
                                       quiet=args.quiet).to(device)
    refs = to_device(references_by_class(test_set.points, test_set.labels, num_refs=REALISM_REFS), device)
    kw = dict(steps=args.steps, lr=args.lr, continuity_weight=args.continuity_weight, num_points=num_points,
              alignment=args.alignment, batch_size=args.batch_size, alpha=args.alpha, n_perm=args.permutations)
    if weights:
        class_refs = to_device(references_by_class(test_set.points, test_set.labels, num_refs=CLASS_REFS), device)
        result = tradeoff(model, evaluator, flows, train_set, classes, args.seeds, weights, refs, class_refs=class_refs,
                          autoencoder=ae, baselines=methods, variants=variants, quiet=args.quiet, **kw)
    else:
        result = run_methods(model, methods, classes, args.seeds, evaluator, flows, train_set, autoencoder=ae,
                             variants=variants, references=refs, quiet=args.quiet, flow_weight=args.flow_weight, **kw)
    report = result.write_report(args.out)
    print(result)
    print(f"sanity check: {report}, {Path(args.out) / 'sanity.json'}, {Path(args.out) / 'sanity.png'}")
    return 0
