"""`flowam-fast demo --out DIR`: the whole pipeline on the embedded procedural shapes
(pipelines/demo.py); `flowam-fast study --demo-dir DIR` then tests its faithfulness."""
from __future__ import annotations

from ..am.names import ALIGNMENTS, DEMO_MODELS
from .options import add_device_argument, device_of


def add_arguments(p) -> None:
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--model", choices=DEMO_MODELS, default=DEMO_MODELS[0],
                   help="the demo classifier (its recipe: flowam_fast.training.DEMO_CONFIGS; pointnet2 is "
                        "pointnet2_ssg)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per class")
    p.add_argument("--steps", type=int, default=None,
                   help="AM steps of every method (default: by alignment, flowam_fast.pipelines.demo.DEMO_STEPS)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo model's recipe)")
    p.add_argument("--ae-epochs", type=int, default=None, help="autoencoder training epochs (default: flowam_fast.am.autoencoder.DEFAULT_EPOCHS)")
    p.add_argument("--evaluator-epochs", type=int, default=None,
                   help="evaluator training epochs (default: flowam_fast.training.EVALUATOR_CONFIG's)")
    p.add_argument("--shapes", default="all",
                   help='procedural classes to generate, "all" or a comma list of names '
                        "(flowam_fast.data.SHAPE_CLASSES)")
    p.add_argument("--train-per-class", type=int, default=200, help="training samples per class")
    p.add_argument("--test-per-class", type=int, default=50, help="test samples per class")
    p.add_argument("--alignment", choices=ALIGNMENTS, default=None,
                   help="FlowAM's flow term: per-channel mean and std, or per-channel quantiles (default: the demo "
                        "model's, flowam_fast.pipelines.demo.DEMO_FLOWAM)")
    p.add_argument("--flow-weight", type=float, default=None,
                   help="FlowAM's flow weight (default: the demo model's, flowam_fast.pipelines.demo.DEMO_FLOWAM)")
    p.add_argument("--fresh", action="store_true", help="redo every stage, ignoring earlier outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_argument(p)


def run(args) -> int:
    from ..pipelines.demo import run_demo

    run_demo(args.out, seeds=args.seeds, steps=args.steps, epochs=args.epochs, ae_epochs=args.ae_epochs,
             evaluator_epochs=args.evaluator_epochs, shapes=args.shapes, train_per_class=args.train_per_class,
             test_per_class=args.test_per_class, fresh=args.fresh, quiet=args.quiet, device=device_of(args),
             model=args.model, alignment=args.alignment, flow_weight=args.flow_weight)
    return 0
