"""The demo pipeline (`flowam-fast demo`): the whole pipeline on the embedded procedural shapes, end to end.

DIR/data (procedural dataset, ModelNet40 HDF5 layout) -> DIR/model.pt (the demo PointNet, or
with model="dgcnn", "pointnet2_ssg" (alias "pointnet2") or "pointnet2_msg" that demo
classifier; `training.DEMO_CONFIGS`) ->
DIR/flows.h5 -> DIR/{flowam,vanilla,regularized,ae-latent}.h5 (every class, 2 seeds; ae-latent
with DIR/autoencoder.pt) -> DIR/channels.h5 and DIR/channels.png (the most class-selective
channels of the last flow layer, with the flows as prior: `pipelines.channels.demo_section`)
-> DIR/explanations.png (FlowAM and plain AM side by side) and
DIR/baselines.png (regularized and AE-latent AM), DIR/explanations.html (FlowAM's explanations
beside real samples, an interactive 3-D viewer) -> DIR/evaluator.pt and the metrics
(DIR/metrics.json, bar charts) -> local explanations of a few test clouds per class with their
faithfulness curves (DIR/attribution, `pipelines.attribute.demo_section`) -> DIR/report.md, with
the classifier's test accuracy and the real-vs-real Chamfer beside the methods'. The faithfulness study (the randomization
test and the flow weight's trade-off) runs on these outputs afterwards: `flowam-fast study
--demo-dir DIR` (pipelines/study.py).
Finished stages are reused when the demo is run again (use --fresh to redo them); the cached
data, models, flows and explanation stores of an output directory written by another demo
version (DIR/demo.json) are redone, and the classifier's own outputs (model, flows, stores)
when it was written for the other demo model.
"""
from __future__ import annotations

import contextlib
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..am.autoencoder import load_or_train_autoencoder
from ..am.engine import FlowAM
from ..am.explanations import Explanations
from ..am.flows import DEFAULT_QUANTILE_LEVELS, Flows, compute_flows
from ..am.sheets import class_examples, contact_sheet
from ..data import ModelNet40, generate_shapes
from ..evaluation.evaluator import load_evaluator
from ..evaluation.report import RealData, evaluate_sets, method_table, write_report
from .. import provenance
from ..identity import Identity, setting
from ..models import checkpoint_meta, load_checkpoint
from ..models.activations import default_layers
from ..am.names import ALIGNMENTS, ARCHITECTURE_ALIASES, DEMO_MODELS
from ..training import DEMO_CONFIGS, demo_config, train_demo_model
from .attribute import DEFAULT_METHODS, demo_section
from .channels import demo_section as channels_section


def demo_model_name(model: str) -> str:
    """The architecture a demo model name stands for (`am.names.ARCHITECTURE_ALIASES`: "pointnet2"
    is "pointnet2_ssg").

    Raises:
        ValueError: Neither a demo recipe's name nor an alias of one.
    """
    model = ARCHITECTURE_ALIASES.get(model, model)
    if model not in DEMO_CONFIGS:
        raise ValueError(f"unknown demo model {model!r}; choose one of {list(DEMO_MODELS)}")
    return model


METHODS = ("flowam", "vanilla", "regularized", "ae-latent")
#: The version of the demo's recipes (the procedural data, the training of its models), bumped
#: when they change: what no run config identifies (an explanation store of the same model is
#: reused or redone by `AMConfig.matches` alone; docs/design.md, "Run identity"). 2: shapes keep
#: one heading, classifiers learn yaw invariance from augmentation, flows include the input
#: T-Net's layers.
DEMO_RECIPE = 2


@dataclass(repr=False)
class DemoConfig(Identity):
    """What a demo output directory was made by (its stamp, DIR/demo.json): the recipes'
    version and the demo model. Another recipe redoes everything cached (`CACHED`), another
    model what depends on the classifier (`CLASSIFIER_CACHED`).

    Stored forms: version 2 and before stored the recipe as "version" (1: a directory without
    a stamp); version 3 stores it as "recipe". `model` is written only where it is not the
    PointNet (the only demo model when the stamp was introduced).
    """

    VERSION = 3
    NAME = "demo stamp"

    recipe: int = DEMO_RECIPE
    model: str = setting("pointnet", implied="pointnet", sparse=True)

    @classmethod
    def migrate(cls, stored: dict, version: int) -> dict:
        return {**stored, "recipe": version} if version < 3 else stored

    @classmethod
    def of(cls, out: Path):
        """The stamp of the directory `out`: None for an empty directory, recipe 1 for one made
        before stamps existed or with an unreadable stamp."""
        stamp = out / "demo.json"
        if not stamp.exists():
            return None if not any(out.iterdir()) else cls(recipe=1)
        try:
            return cls.from_json(stamp.read_text())
        except (ValueError, TypeError):
            return cls(recipe=1)
#: The local explanations' directory (`pipelines.attribute.demo_section`).
ATTRIBUTION = "attribution"
#: The channel visualizations' store (`pipelines.channels.demo_section`).
CHANNELS = "channels.h5"
#: The attribution methods of a demo model where not every default applies: PointNet++ has no
#: per-point layer (its layers are grouped), which Grad-CAM and the critical points need.
DEMO_ATTRIBUTIONS = {arch: ("saliency", "integrated-gradients", "occlusion") for arch in ("pointnet2_ssg", "pointnet2_msg")}
#: What a run reuses from an earlier one; all of it is redone for another DEMO_RECIPE.
CACHED = ("data", "model.pt", "flows.h5", "autoencoder.pt", "evaluator.pt", ATTRIBUTION, CHANNELS) + tuple(
    f"{m}.h5" for m in METHODS)
#: What depends on the explained classifier: redone when the directory was made for the other
#: demo model. The autoencoder decodes the demo model's point count (512 for the PointNet, 256
#: for the DGCNN and the PointNet++ models); the data and the evaluator do not depend on the model.
CLASSIFIER_CACHED = ("model.pt", "flows.h5", "autoencoder.pt", ATTRIBUTION, CHANNELS) + tuple(f"{m}.h5" for m in METHODS)


def _remove(out: Path, names) -> None:
    for name in names:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _clear_stale_cache(out: Path, model: str = "pointnet") -> None:
    made_by, now = DemoConfig.of(out), DemoConfig(model=model)
    changes = [] if made_by is None else made_by.changes(now)
    if "recipe" in changes:
        print(f"[demo] {out} was made by demo recipe {made_by.recipe}, this is {now.recipe}: "
              f"redoing {', '.join(CACHED)}", flush=True)
        _remove(out, CACHED)
    elif "model" in changes:
        print(f"[demo] {out} was written for the {made_by.model} demo, this is the {model} one: "
              f"redoing {', '.join(CLASSIFIER_CACHED)}", flush=True)
        _remove(out, CLASSIFIER_CACHED)
    (out / "demo.json").write_text(now.to_json() + "\n")


#: FlowAM's flow term in each model's demo, (alignment, flow weight), where run_demo's caller
#: leaves them None. The PointNet demo runs the paper's objective (the engine's defaults). On
#: the demo DGCNN that objective leaves the sphere a ball of points and the chair a seat (24
#: jobs: mean Chamfer to 10 real samples of the class 0.053, sphere 0.097, chair 0.056); the
#: quantile alignment at weight 300 gives every class its shape (0.033, sphere 0.052, chair
#: 0.038; quantiles at 100: 0.042, moments at 300: 0.045).
#: The PointNet++ demos run the paper's objective: on the demo SSG, weight 300 did not come closer
#: to the real samples than 100 (mean Chamfer 0.141 against 0.133 on sa1's layers).
DEMO_FLOWAM = {"pointnet": ("moments", 100.0), "dgcnn": ("quantiles", 300.0), "pointnet2_ssg": ("moments", 100.0),
               "pointnet2_msg": ("moments", 100.0)}

#: Every method's AM steps in the demo, by FlowAM's alignment, where the caller leaves steps
#: None. A quantile step costs more (12 jobs, one thread: PointNet 51-55 ms against 14.5-16,
#: DGCNN about 1.2x), and 400 steps do nearly what 600 do (FlowAM Chamfer on the PointNet
#: 0.0243 against 0.0220, on the DGCNN 0.034 against 0.033, the ring the least finished).
DEMO_STEPS = {"moments": 600, "quantiles": 400}


def run_demo(out, seeds: int = 2, steps: int | None = None, epochs: int | None = None,
             ae_epochs: int | None = None, evaluator_epochs: int | None = None, shapes: str = "all",
             train_per_class: int = 200, test_per_class: int = 50, fresh: bool = False,
             quiet: bool = False, device="cpu", model: str = "pointnet",
             alignment: str | None = None, flow_weight: float | None = None) -> dict:
    """Run every stage into the directory `out` (see the module docstring); returns the metrics
    rows and the stage timings.
    Stages whose outputs exist are reused. Training runs on the CPU (the demo models are
    small); everything after it on `device`. model: the demo classifier, a key of
    `training.DEMO_CONFIGS` or an alias (`am.names.ARCHITECTURE_ALIASES`). alignment:
    FlowAM's flow term, "moments" or "quantiles" (the flows then store DEFAULT_QUANTILE_LEVELS),
    and flow_weight FlowAM's weight on it: DEMO_FLOWAM[model]'s where None; steps (every
    method's) DEMO_STEPS[alignment] where None."""
    model = demo_model_name(model)  # an alias is its architecture; an unknown model is refused here
    config = demo_config(model)
    alignment = DEMO_FLOWAM[model][0] if alignment is None else alignment
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; choose one of {ALIGNMENTS}")
    flow_weight = float(DEMO_FLOWAM[model][1] if flow_weight is None else flow_weight)
    if not flow_weight > 0:
        raise ValueError(f"FlowAM's flow_weight must be > 0 (0 is regularized AM), got {flow_weight}")
    steps = int(DEMO_STEPS[alignment] if steps is None else steps)
    device = torch.device(device)
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_stale_cache(out, model)
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
            shapes = {} if shapes == "all" else {"classes": [c.strip() for c in shapes.split(",") if c.strip()]}
            generate_shapes(data_dir, train_per_class=train_per_class, test_per_class=test_per_class,
                            **shapes)
    with stage("train"):
        ckpt = out / "model.pt"
        if not ckpt.exists():
            _remove(out, [ATTRIBUTION])  # scores of an earlier model
            train_demo_model(data_dir, ckpt, epochs=epochs, quiet=quiet, model=model)
        model_name, model = model, load_checkpoint(ckpt).to(device)
    num_points = config["num_points"]
    train_set = ModelNet40(data_dir, "train", num_points=num_points)
    with stage("flows"):
        flows_path = out / "flows.h5"
        flows = Flows.load(flows_path) if flows_path.exists() else None
        if flows is not None:
            try:
                flows.check_taps(model)
                if tuple(flows.layers) != tuple(default_layers(model)):
                    raise ValueError(f"they align {flows.layers}, the model's defaults are {default_layers(model)}")
                if alignment == "quantiles" and not flows.quantiles:
                    raise ValueError("they have no quantiles, which alignment='quantiles' needs")
            except ValueError as e:
                print(f"[demo] recomputing {flows_path}: {e}", flush=True)
                flows = None
        if flows is None:
            flows = compute_flows(model, train_set, quiet=quiet,
                                  quantile_levels=DEFAULT_QUANTILE_LEVELS if alignment == "quantiles" else 0)
            flows.save(flows_path)
    with stage("autoencoder"):
        ae = load_or_train_autoencoder(data_dir, None, cache_dir=out, num_points=num_points,
                                       epochs=ae_epochs, quiet=quiet).to(device)

    classes = list(range(flows.num_classes))
    seeds = list(range(seeds))
    am = {"steps": steps} | ({} if alignment == "moments" else {"alignment": alignment})
    results = {}
    for method in METHODS:
        with stage(method):
            engine = FlowAM(model, flows, method=method, num_points=num_points, quiet=quiet,
                            autoencoder=ae if method == "ae-latent" else None,
                            flow_weight=flow_weight if method == "flowam" else None, **am)
            store = out / f"{method}.h5"
            if store.exists() and not engine.config.matches(Explanations.load(store).config):
                # The demo's outputs are its own cache: one made by another version is redone.
                print(f"[demo] {store} was made with another config; redoing it", flush=True)
                store.unlink()
            results[method] = engine.run(classes, seeds, store=store)

    test_set = ModelNet40(data_dir, "test", num_points=num_points)
    with stage("channels"):
        units = channels_section(model, flows, test_set, out, seeds, steps=steps, num_points=num_points, quiet=quiet)
    with stage("sheets"):
        examples = class_examples(test_set.points, test_set.labels)
        contact_sheet([results["flowam"], results["vanilla"]], out / "explanations.png", labels=["FlowAM", "plain AM"],
                      references=examples)
        contact_sheet([results["regularized"], results["ae-latent"]], out / "baselines.png",
                      labels=["regularized AM", "AE-latent AM"], references=examples)
        results["flowam"].to_html(out / "explanations.html", references=examples, title="FlowAM explanations")
    with stage("evaluator"):
        evaluator = load_evaluator(data_dir, None, cache_dir=out, epochs=evaluator_epochs, quiet=quiet).to(device)
    with stage("metrics"):
        real = RealData(test_set.points, test_set.labels, evaluator=evaluator, device=device)  # the split loaded above
        metrics = evaluate_sets([results[m] for m in METHODS], real)
        real_floor = real.real_chamfer()
    with stage("attributions"):
        local = demo_section(model, test_set, out / ATTRIBUTION, quiet=quiet,
                             methods=DEMO_ATTRIBUTIONS.get(model_name, DEFAULT_METHODS))
    timings["total"] = time.perf_counter() - t_all
    ratio = metrics[0]["chamfer"] / metrics[1]["chamfer"]
    command = provenance.invoked_command(fallback=shlex.join(["flowam-fast", "demo", "--model", model_name,
                                                               "--out", str(out)]))
    meta = checkpoint_meta(ckpt)
    accuracy = f"{meta['test_accuracy']:.1%}" if "test_accuracy" in meta else "not recorded"
    preamble = "\n".join([
        provenance.markdown(command), "",
        f"Demo {model_name}; procedural shapes, {flows.num_classes} classes x {len(seeds)} seeds, {num_points} points; "
        f"FlowAM aligns {alignment} at flow weight {flow_weight:g}; FlowAM / plain AM Chamfer ratio: **{ratio:.2f}**.", "",
        f"Classifier test accuracy: {accuracy}. Chamfer of each real reference to the other references of its "
        f"class (the floor of the Chamfer column): {real_floor:.4f}.", "",
        "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()), "",
        "![explanations](explanations.png)", "", "![baselines](baselines.png)"])
    write_report(metrics, real, out, title="flowam-fast demo report", preamble=preamble, appendix=units + "\n\n" + local,
                 extra_json={"test_accuracy": meta.get("test_accuracy"), "real_chamfer": real_floor, "model": model_name, "flowam": {"alignment": alignment, "flow_weight": flow_weight},
                             "chamfer_ratio_flowam_vs_vanilla": ratio,
                             "timings_s": {k: round(v, 1) for k, v in timings.items()},
                             "torch_threads": torch.get_num_threads()})
    print(method_table(metrics))
    print(f"FlowAM / plain AM Chamfer ratio: {ratio:.2f}")
    print(f"[demo] done in {timings['total']:.0f} s; see {out / 'report.md'}")
    return {"metrics": metrics, "timings": timings}
