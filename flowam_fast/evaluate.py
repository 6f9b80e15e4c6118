"""`flowam-fast evaluate`: metrics of stored explanations against real test data.

flowam-fast evaluate --explanations A.h5 [B.h5 ...] --data DIR --out REPORT_DIR [--evaluator CKPT]

Writes REPORT_DIR/report.md (a table per method and a per-class table), REPORT_DIR/metrics.json
and one bar chart per metric (REPORT_DIR/<metric>.png). FID and m-IS need the evaluator
PointNet: pass a checkpoint, or one is trained on DIR's training split (EVALUATOR_CONFIG) and
kept as REPORT_DIR/evaluator.pt for the next run.
"""
from __future__ import annotations

from pathlib import Path


def load_evaluator(data_dir, path=None, cache_dir=None, epochs: int | None = None, quiet: bool = False):
    """The evaluator PointNet: from `path`, else cache_dir/evaluator.pt, trained there first if missing."""
    from .atomic import cached_file
    from .models import load_checkpoint
    from .train import train_evaluator

    path = cached_file(path, cache_dir, "evaluator.pt", lambda t: train_evaluator(data_dir, t, epochs=epochs, quiet=quiet),
                       f"evaluator PointNet on {data_dir}")
    model = load_checkpoint(path)
    if not (hasattr(model, "fc1") and hasattr(model, "fc3")):
        raise ValueError(f"{path}: the evaluator must be a PointNet (its fc1/fc3 inputs are the FID features)")
    return model


def real_data(data_dir, num_points: int, evaluator, **kw):
    """The test split of data_dir, prepared once for every explanation set (see report.RealData)."""
    from .data import ModelNet40
    from .report import RealData

    test = ModelNet40(data_dir, "test", num_points=num_points)
    return RealData(test.points, test.labels, evaluator=evaluator, **kw)


def check_same_classes(sets, class_names) -> None:
    """Explanations must index the dataset's classes: same count of names where both have them."""
    for e in sets:
        if e.class_names and class_names and list(e.class_names) != list(class_names):
            raise ValueError(f"explanations ({e.method}) name classes {e.class_names[:4]}... but the data "
                             f"{list(class_names)[:4]}...: they were made for another dataset")
        if len(e) and int(e.classes.max()) >= len(class_names):
            raise ValueError(f"explanations ({e.method}) have class {int(e.classes.max())} but the data has "
                             f"{len(class_names)} classes")


def write_report(results, real, out_dir, title: str = "flowam-fast evaluation", preamble: str = "",
                 appendix: str = "", extra_json: dict | None = None) -> list:
    """Results of report.evaluate_sets -> out_dir/metrics.json (with extra_json), out_dir/report.md
    (with preamble and appendix Markdown) and bar charts."""
    from .report import bar_charts, markdown_report, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = bar_charts(results, out_dir)
    write_json({"methods": results, **(extra_json or {})}, out_dir / "metrics.json")
    (out_dir / "report.md").write_text(markdown_report(results, real, title, charts, preamble, appendix))


def add_arguments(p) -> None:
    p.add_argument("--explanations", nargs="+", required=True, help="explanation stores (.h5), one per method")
    p.add_argument("--data", required=True, help="dataset directory (ModelNet40 HDF5 layout); its test split is used")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--evaluator", help="evaluator PointNet checkpoint (default: train one, kept in --out)")
    p.add_argument("--refs", type=int, default=20, help="real samples per class for Chamfer (default 20)")
    p.add_argument("--emd-refs", type=int, default=5, help="real samples per class for EMD (default 5)")
    p.add_argument("--emd-points", type=int, default=256, help="points per cloud for EMD (default 256)")
    p.add_argument("--quiet", action="store_true")


def run(args) -> int:
    from .data.modelnet40 import read_shape_names
    from .explanations import Explanations
    from .report import evaluate_sets, method_table

    sets = [Explanations.load(p) for p in args.explanations]
    methods = [e.method for e in sets]
    if len(set(methods)) != len(methods):
        raise ValueError(f"two stores hold the same method ({methods}); evaluate one store per method")
    check_same_classes(sets, read_shape_names(args.data))
    num_points = sets[0].points.shape[1]
    evaluator = load_evaluator(args.data, args.evaluator, cache_dir=args.out, quiet=args.quiet)
    real = real_data(args.data, num_points, evaluator, num_refs=args.refs, emd_refs=args.emd_refs,
                     emd_points=args.emd_points)
    results = evaluate_sets(sets, real)
    write_report(results, real, args.out)
    print(method_table(results))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0
