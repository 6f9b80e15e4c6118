"""`flowam-fast study`: the faithfulness study of one model (pipelines/study.py): the
randomization test of FlowAM at each flow weight, AE-latent AM and the random control, the
trade-off, the calibration; resumable, on local processes or Ray. `--demo-dir DIR` studies
the model of `flowam-fast demo --out DIR` with its flows, data, evaluator and autoencoder."""
from __future__ import annotations

from ..am.names import ALIGNMENTS
from ..pipelines.study_settings import STUDY_CLASSES, STUDY_SEEDS, STUDY_STEPS, STUDY_WEIGHTS
from .options import add_device_argument, device_of, parse_weights
from .sanity import add_test_arguments


def add_arguments(p) -> None:
    p.add_argument("--demo-dir", help="a demo's output directory: its model, flows, data, evaluator and autoencoder "
                                      "(instead of --model, --flows, --data, --evaluator, --autoencoder)")
    p.add_argument("--model", help="classifier checkpoint (a built-in architecture)")
    p.add_argument("--flows", help="the model's flows")
    p.add_argument("--data", help="dataset directory (ModelNet40 HDF5 layout)")
    p.add_argument("--evaluator", help="evaluator PointNet checkpoint")
    p.add_argument("--autoencoder", help="autoencoder of AE-latent AM")
    p.add_argument("--out", help="output directory (default: DEMO_DIR/study)")
    p.add_argument("--num-classes", type=int, default=STUDY_CLASSES, help="the first N classes (fewer where the model has "
                                                                          "fewer)")
    p.add_argument("--classes", help="comma list of class indices (instead of --num-classes)")
    add_test_arguments(p, seeds=STUDY_SEEDS)
    p.add_argument("--steps", type=int, default=STUDY_STEPS, help="AM steps of every method")
    p.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="jobs per AM batch (default: a run's jobs at once)")
    p.add_argument("--flow-weights", default=",".join(f"{w:g}" for w in STUDY_WEIGHTS),
                   help="FlowAM's flow weights (0 is regularized AM)")
    p.add_argument("--alignment", choices=ALIGNMENTS, default=ALIGNMENTS[0],
                   help="FlowAM's flow term: per-channel mean and std, or per-channel quantiles (flows with quantiles)")
    p.add_argument("--vanilla", action="store_true", help="also test plain AM")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where the AM runs go: local processes, or Ray tasks")
    p.add_argument("--address", help="the Ray cluster's address (default: a local cluster on loopback)")
    p.add_argument("--workers", type=int, default=2, help="local processes (--executor local), one thread each")
    p.add_argument("--calibration-draws", type=int, default=200,
                   help="null comparisons per method in the calibration (planted mixtures get half as many)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(p)


def run(args) -> int:
    from pathlib import Path

    from ..pipelines.study import run_study

    if args.demo_dir is None and args.out is None:
        raise ValueError("give --out (or --demo-dir, whose study goes to DEMO_DIR/study by default)")
    out = Path(args.out) if args.out else Path(args.demo_dir) / "study"
    classes = [int(c) for c in args.classes.split(",") if c.strip()] if args.classes else None
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    result = run_study(out, model=args.model, flows=args.flows, data=args.data, evaluator=args.evaluator,
                       autoencoder=args.autoencoder, demo_dir=args.demo_dir, classes=classes,
                       num_classes=args.num_classes, seeds=args.seeds, steps=args.steps, lr=args.lr,
                       flow_weights=parse_weights(args.flow_weights), vanilla=args.vanilla, variants=variants,
                       alpha=args.alpha, n_perm=args.permutations, alignment=args.alignment,
                       executor=args.executor, address=args.address, workers=args.workers, device=device_of(args),
                       quiet=args.quiet, batch_size=args.batch_size,
                       calibration={"draws": args.calibration_draws,
                                    "power_draws": max(1, args.calibration_draws // 2)})
    print(result)
    print(f"study: {out / 'sanity.md'}")
    return 0
