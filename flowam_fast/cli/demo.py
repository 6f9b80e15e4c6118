"""`flowam-fast demo --out DIR`: the whole pipeline on the embedded procedural shapes
(pipelines/demo.py)."""
from __future__ import annotations

from ..am.engine import ALIGNMENTS
from ..pipelines.demo import run_demo
from ..training import DEMO_CONFIGS
from .options import add_device_argument, device_of, parse_weights


def add_arguments(p) -> None:
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--model", choices=sorted(DEMO_CONFIGS), default="pointnet",
                   help="the demo classifier (default: pointnet; recipes in flowam_fast/training/recipes.py)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per class (default: 2)")
    p.add_argument("--steps", type=int, default=None,
                   help="AM steps of every method (default: 600 with moments, 400 with quantiles; DEMO_STEPS)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo config's)")
    p.add_argument("--ae-epochs", type=int, default=None, help="autoencoder training epochs (default: its own)")
    p.add_argument("--evaluator-epochs", type=int, default=None,
                   help="evaluator training epochs (default: EVALUATOR_CONFIG's)")
    p.add_argument("--shapes", default="all",
                   help='procedural classes to generate, "all" or a comma list of names (default: all 12)')
    p.add_argument("--train-per-class", type=int, default=200)
    p.add_argument("--test-per-class", type=int, default=50)
    p.add_argument("--sanity-classes", default="cube,cone,torus,chair",
                   help='classes of the sanity check ("none" skips it; default: cube,cone,torus,chair)')
    p.add_argument("--sanity-seeds", type=int, default=3,
                   help="seeds per class in the sanity check, at least 2 (default: 3, i.e. 3 seed pairs per class "
                        "for its seed-to-seed threshold)")
    p.add_argument("--flow-weights", default="default",
                   help='the flow weight trade-off at these weights on the sanity classes, e.g. "0,1,10,100", with '
                        'the sanity check ("none" skips it; default: 0,10,100 for the pointnet demo with moments, '
                        'none for the dgcnn one or with quantiles; each weight costs one sanity check)')
    p.add_argument("--alignment", choices=ALIGNMENTS, default=None,
                   help="FlowAM's flow term: per-channel mean and std, or per-channel quantiles (default: the demo "
                        "model's, moments for pointnet, quantiles for dgcnn; DEMO_FLOWAM in pipelines/demo.py)")
    p.add_argument("--flow-weight", type=float, default=None,
                   help="FlowAM's flow weight (default: the demo model's, 100 for pointnet, 300 for dgcnn)")
    p.add_argument("--fresh", action="store_true", help="redo every stage, ignoring earlier outputs")
    p.add_argument("--quiet", action="store_true")
    add_device_argument(p)


def run(args) -> int:
    run_demo(args.out, seeds=args.seeds, steps=args.steps, epochs=args.epochs, ae_epochs=args.ae_epochs,
             evaluator_epochs=args.evaluator_epochs, shapes=args.shapes, train_per_class=args.train_per_class,
             test_per_class=args.test_per_class, sanity_classes=args.sanity_classes, sanity_seeds=args.sanity_seeds,
             fresh=args.fresh, quiet=args.quiet, device=device_of(args), model=args.model,
             tradeoff_weights=_weights(args.flow_weights), alignment=args.alignment, flow_weight=args.flow_weight)
    return 0


def _weights(text: str):
    text = text.strip()
    return text if text == "default" else None if text == "none" else parse_weights(text)
