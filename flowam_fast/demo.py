"""`flowam-fast demo`: the whole pipeline on the embedded procedural shapes, end to end.

DIR/data (procedural dataset, ModelNet40 HDF5 layout) -> DIR/model.pt (demo PointNet) ->
DIR/flows.h5 -> DIR/{flowam,vanilla,regularized,ae-latent}.h5 (every class, 2 seeds; ae-latent
with DIR/autoencoder.pt) -> DIR/explanations.png (FlowAM and plain AM side by side) and
DIR/baselines.png (regularized and AE-latent AM) -> DIR/evaluator.pt and the metrics
(DIR/metrics.json, bar charts) -> the randomization sanity check of FlowAM and AE-latent AM
on a few classes (DIR/sanity.json, DIR/sanity.png) -> DIR/report.md.
Finished stages are reused when the demo is run again (use --fresh to redo them); the cached
data, models, flows and explanation stores of an output directory written by another demo
version (DIR/demo.json) are redone.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import torch


def add_arguments(p) -> None:
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per class (default: 2)")
    p.add_argument("--steps", type=int, default=None, help="AM steps (default: the engine's, 600)")
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
    p.add_argument("--fresh", action="store_true", help="redo every stage, ignoring earlier outputs")
    p.add_argument("--quiet", action="store_true")


METHODS = ("flowam", "vanilla", "regularized", "ae-latent")
#: Bumped when the demo's data or models change. 2: shapes keep one heading, classifiers
#: learn yaw invariance from augmentation, flows include the input T-Net's layers.
DEMO_VERSION = 2
#: What a run reuses from an earlier one; all of it is redone for another DEMO_VERSION.
CACHED = ("data", "model.pt", "flows.h5", "autoencoder.pt", "evaluator.pt") + tuple(f"{m}.h5" for m in METHODS)


def _demo_version(out: Path):
    """The DEMO_VERSION that wrote `out`: None for an empty directory, 1 for one from before
    the stamp existed or with an unreadable stamp."""
    stamp = out / "demo.json"
    if not stamp.exists():
        return None if not any(out.iterdir()) else 1
    try:
        return json.loads(stamp.read_text()).get("version", 1)
    except (ValueError, AttributeError):
        return 1


def _clear_stale_cache(out: Path) -> None:
    version = _demo_version(out)
    if version not in (None, DEMO_VERSION):
        print(f"[demo] {out} was written by demo version {version}, this is {DEMO_VERSION}: "
              f"redoing {', '.join(CACHED)}", flush=True)
        for name in CACHED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    (out / "demo.json").write_text(json.dumps({"version": DEMO_VERSION}) + "\n")


def run(args) -> int:
    from .autoencoder import load_or_train_autoencoder
    from .data import ModelNet40, generate_shapes
    from .engine import FlowAM
    from .evaluate import load_evaluator, write_report
    from .explain import parse_classes
    from .explanations import Explanations
    from .flows import Flows, compute_flows
    from .metrics import references_by_class
    from .models import load_checkpoint
    from .models.activations import default_layers
    from .plots import class_examples, contact_sheet
    from .report import RealData, evaluate_sets, method_table
    from .sanity import markdown as sanity_markdown
    from .sanity import REALISM_REFS, run_methods, write_outputs
    from .train import DEMO_CONFIG, train_demo_model

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_stale_cache(out)
    timings = {}
    t_all = time.perf_counter()

    @contextlib.contextmanager
    def stage(name):
        print(f"[demo] {name}", flush=True)
        t = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - t

    data_dir = out / "data"
    with stage("data"):
        if not (data_dir / "shape_names.txt").exists():
            shapes = {} if args.shapes == "all" else {"classes": [c.strip() for c in args.shapes.split(",") if c.strip()]}
            generate_shapes(data_dir, train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                            **shapes)
    with stage("train"):
        ckpt = out / "model.pt"
        if not ckpt.exists():
            train_demo_model(data_dir, ckpt, epochs=args.epochs, quiet=args.quiet)
        model = load_checkpoint(ckpt)
    num_points = DEMO_CONFIG["num_points"]
    train_set = ModelNet40(data_dir, "train", num_points=num_points)
    with stage("flows"):
        flows_path = out / "flows.h5"
        flows = Flows.load(flows_path) if flows_path.exists() else None
        if flows is not None:
            try:
                flows.check_taps(model)
                if tuple(flows.layers) != tuple(default_layers(model)):
                    raise ValueError(f"they align {flows.layers}, the model's defaults are {default_layers(model)}")
            except ValueError as e:
                print(f"[demo] recomputing {flows_path}: {e}", flush=True)
                flows = None
        if flows is None:
            flows = compute_flows(model, train_set, quiet=args.quiet)
            flows.save(flows_path)
    with stage("autoencoder"):
        ae = load_or_train_autoencoder(data_dir, None, cache_dir=out, num_points=num_points,
                                       epochs=args.ae_epochs, quiet=args.quiet)

    classes = list(range(flows.num_classes))
    seeds = list(range(args.seeds))
    am = {} if args.steps is None else {"steps": args.steps}
    results = {}
    for method in METHODS:
        with stage(method):
            engine = FlowAM(model, flows, method=method, num_points=num_points, quiet=args.quiet,
                            autoencoder=ae if method == "ae-latent" else None, **am)
            store = out / f"{method}.h5"
            if store.exists() and Explanations.load(store).config != engine.config.to_json():
                # The demo's outputs are its own cache: one made by another version is redone.
                print(f"[demo] {store} was made with another config; redoing it", flush=True)
                store.unlink()
            results[method] = engine.run(classes, seeds, store=store)

    test_set = ModelNet40(data_dir, "test", num_points=num_points)
    with stage("sheets"):
        examples = class_examples(test_set.points, test_set.labels)
        contact_sheet([results["flowam"], results["vanilla"]], out / "explanations.png", labels=["FlowAM", "plain AM"],
                      references=examples)
        contact_sheet([results["regularized"], results["ae-latent"]], out / "baselines.png",
                      labels=["regularized AM", "AE-latent AM"], references=examples)
    with stage("evaluator"):
        evaluator = load_evaluator(data_dir, None, cache_dir=out, epochs=args.evaluator_epochs, quiet=args.quiet)
    sanity = []
    if args.sanity_classes.strip() != "none":
        with stage("sanity"):
            sanity_classes = parse_classes(args.sanity_classes, flows.class_names, flows.num_classes)
            refs = references_by_class(test_set.points, test_set.labels, num_refs=REALISM_REFS)
            sanity = run_methods(model, ["flowam", "ae-latent"], sanity_classes, list(range(args.sanity_seeds)),
                                 evaluator, flows, train_set,
                                 autoencoder=ae, references=refs, quiet=args.quiet, num_points=num_points, **am)
            write_outputs(sanity, out)
    with stage("metrics"):
        real = RealData(test_set.points, test_set.labels, evaluator=evaluator)  # the split loaded above
        metrics = evaluate_sets([results[m] for m in METHODS], real)
    timings["total"] = time.perf_counter() - t_all
    ratio = metrics[0]["chamfer"] / metrics[1]["chamfer"]
    preamble = "\n".join([
        f"Procedural shapes, {flows.num_classes} classes x {len(seeds)} seeds, {num_points} points; "
        f"FlowAM / plain AM Chamfer ratio: **{ratio:.2f}**.", "",
        "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()), "",
        "![explanations](explanations.png)", "", "![baselines](baselines.png)"])
    appendix = ("## Randomization sanity check\n\n" + sanity_markdown(sanity) + "\n\n![sanity](sanity.png)") if sanity else ""
    write_report(metrics, real, out, title="flowam-fast demo report", preamble=preamble,
                 appendix=appendix, extra_json={"chamfer_ratio_flowam_vs_vanilla": ratio, "sanity": sanity,
                                                "timings_s": {k: round(v, 1) for k, v in timings.items()},
                                                "torch_threads": torch.get_num_threads()})
    print(method_table(metrics))
    print(f"FlowAM / plain AM Chamfer ratio: {ratio:.2f}")
    if sanity:
        print(sanity_markdown(sanity).split("\n\n")[0])
    print(f"[demo] done in {timings['total']:.0f} s; see {out / 'report.md'}")
    return 0
