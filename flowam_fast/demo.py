"""`flowam-fast demo`: the whole pipeline on the embedded procedural shapes, end to end.

DIR/data (procedural dataset, ModelNet40 HDF5 layout) -> DIR/model.pt (demo PointNet) ->
DIR/flows.h5 -> DIR/flowam.h5 and DIR/vanilla.h5 (every class, 2 seeds) ->
DIR/explanations.png (FlowAM and plain AM side by side), DIR/metrics.json, DIR/report.md.
Finished stages are reused when the demo is run again (use --fresh to redo them).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch


def add_arguments(p) -> None:
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per class (default: 2)")
    p.add_argument("--steps", type=int, default=None, help="AM steps (default: the engine's, 600)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo config's)")
    p.add_argument("--train-per-class", type=int, default=200)
    p.add_argument("--test-per-class", type=int, default=50)
    p.add_argument("--fresh", action="store_true", help="redo every stage, ignoring earlier outputs")
    p.add_argument("--quiet", action="store_true")


def run(args) -> int:
    from .data import ModelNet40, generate_shapes
    from .engine import FlowAM
    from .explanations import Explanations
    from .flows import Flows, compute_flows
    from .metrics import references_by_class
    from .models import load_checkpoint
    from .plots import contact_sheet
    from .report import markdown_tables, method_metrics, write_json
    from .train import DEMO_CONFIG, train_demo_model

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t_all = time.perf_counter()

    def stage(name):
        timings[name] = time.perf_counter()
        print(f"[demo] {name}", flush=True)

    def done(name):
        timings[name] = time.perf_counter() - timings[name]

    data_dir = out / "data"
    stage("data")
    if not (data_dir / "shape_names.txt").exists():
        generate_shapes(data_dir, train_per_class=args.train_per_class, test_per_class=args.test_per_class)
    done("data")

    stage("train")
    ckpt = out / "model.pt"
    if not ckpt.exists():
        train_demo_model(data_dir, ckpt, epochs=args.epochs, quiet=args.quiet)
    model = load_checkpoint(ckpt)
    done("train")

    num_points = DEMO_CONFIG["num_points"]
    train_set = ModelNet40(data_dir, "train", num_points=num_points)
    test_set = ModelNet40(data_dir, "test", num_points=num_points)

    stage("flows")
    flows_path = out / "flows.h5"
    if flows_path.exists():
        flows = Flows.load(flows_path)
    else:
        flows = compute_flows(model, train_set, quiet=args.quiet)
        flows.save(flows_path)
    done("flows")

    classes = list(range(flows.num_classes))
    seeds = list(range(args.seeds))
    results = {}
    for method in ("flowam", "vanilla"):
        stage(method)
        kw = {} if args.steps is None else {"steps": args.steps}
        engine = FlowAM(model, flows, method=method, num_points=num_points, quiet=args.quiet, **kw)
        results[method] = engine.run(classes, seeds, store=out / f"{method}.h5")
        done(method)

    stage("report")
    contact_sheet([results["flowam"], results["vanilla"]], out / "explanations.png",
                  labels=["FlowAM", "plain AM"])
    refs = references_by_class(test_set.points, test_set.labels, num_refs=20)
    metrics = [method_metrics(results[m], refs) for m in ("flowam", "vanilla")]
    ratio = metrics[0]["chamfer"] / metrics[1]["chamfer"]
    done("report")
    timings["total"] = time.perf_counter() - t_all
    summary = {"methods": metrics, "chamfer_ratio_flowam_vs_vanilla": ratio,
               "timings_s": {k: round(v, 1) for k, v in timings.items()},
               "torch_threads": torch.get_num_threads()}
    write_json(summary, out / "metrics.json")
    text = ["# flowam-fast demo report", "",
            f"Procedural shapes, {flows.num_classes} classes x {len(seeds)} seeds, {num_points} points.",
            f"Chamfer distance to {refs[0].shape[0]} real test samples of the target class (squared distances, "
            "mean in both directions).", "", markdown_tables(metrics), "",
            f"FlowAM / plain AM Chamfer ratio: {ratio:.2f}", "",
            "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()), "",
            "![explanations](explanations.png)", ""]
    (out / "report.md").write_text("\n".join(text))
    print("\n".join(text[4:6]))
    print(f"[demo] done in {timings['total']:.0f} s; see {out / 'report.md'}")
    return 0
