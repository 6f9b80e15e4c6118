"""`flowam-fast evaluate`: metrics of stored explanations against real test data.

flowam-fast evaluate --explanations A.h5 [B.h5 ...] --data DIR --out REPORT_DIR [--evaluator CKPT]

Writes REPORT_DIR/report.md (a table per method and a per-class table), REPORT_DIR/metrics.json
and one bar chart per metric (REPORT_DIR/<metric>.png). FID and m-IS need the evaluator
PointNet: pass a checkpoint, or one is trained on DIR's training split (EVALUATOR_CONFIG) and
kept as REPORT_DIR/evaluator.pt for the next run.
"""
from __future__ import annotations

from pathlib import Path

from .options import add_device_argument, device_of


def add_arguments(p) -> None:
    p.add_argument("--explanations", nargs="+", required=True, help="explanation stores (.h5), one per method")
    p.add_argument("--data", required=True, help="dataset directory (ModelNet40 HDF5 layout); its test split is used")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--evaluator", help="evaluator PointNet checkpoint (default: train one, kept in --out)")
    p.add_argument("--refs", type=int, default=20, help="real samples per class for Chamfer")
    p.add_argument("--emd-refs", type=int, default=5, help="real samples per class for EMD")
    p.add_argument("--emd-points", type=int, default=256, help="points per cloud for EMD")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    add_device_argument(p)


def run(args) -> int:
    from ..am.explanations import Explanations
    from ..data.modelnet40 import read_shape_names
    from ..evaluation.evaluator import load_evaluator, real_data
    from ..evaluation.report import check_same_classes, evaluate_sets, method_table, write_report

    sets = [Explanations.load(p) for p in args.explanations]
    methods = [e.method for e in sets]
    if len(set(methods)) != len(methods):
        raise ValueError(f"two stores hold the same method ({methods}); evaluate one store per method")
    check_same_classes(sets, read_shape_names(args.data))
    num_points = sets[0].points.shape[1]
    device = device_of(args)
    evaluator = load_evaluator(args.data, args.evaluator, cache_dir=args.out, quiet=args.quiet).to(device)
    real = real_data(args.data, num_points, evaluator, num_refs=args.refs, emd_refs=args.emd_refs,
                     emd_points=args.emd_points, device=device)
    results = evaluate_sets(sets, real)
    write_report(results, real, args.out)
    print(method_table(results))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0
