"""The faithfulness study of one model (`flowam-fast study`, docs/design.md "Faithfulness").

The randomization test (`evaluation.sanity`) of FlowAM at each of the trade-off's flow
weights (weight 0 is regularized AM), of AE-latent AM and of the `random` control (plain AM
optional), both variants, on the first classes of the model with S seeds a side; the
trade-off plot; the test's calibration (false-positive rate, power against planted
mixtures, `evaluation.calibration`); a Markdown + PNG report (OUT/sanity.md, sanity.png,
tradeoff.png, sanity.json) with the provenance header.

Every AM run is a task: the trained model's explanations of each objective, and each
randomized model's. Tasks run on the sweep's executors (`sweep.tasks.run_tasks`: local
processes or Ray) and each task's explanations are saved to their own file as soon as it
finishes (atomically: OUT/runs/<check hash>/<task hash>.h5, the hash naming everything the
result depends on), so a study killed at any point and run again repeats nothing finished;
its report is then the one an uninterrupted run writes.

The demo's output directory (`flowam-fast demo`) is a complete input: its model, flows, data,
evaluator and autoencoder, and its explanation stores where their config matches.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import provenance
from ..am.autoencoder import load_autoencoder
from ..am.config import AMConfig, cloud_size
from ..am.explanations import Explanations
from ..am.names import ALIGNMENTS, METHODS
from ..am.flows import Flows
from ..data import ModelNet40
from ..evaluation.calibration import calibrate
from ..evaluation.evaluator import load_evaluator
from ..evaluation.metrics import references_by_class, to_device
from ..evaluation.permutation import ALPHA, N_PERM
from ..evaluation.sanity import CLASS_REFS, REALISM_REFS, VARIANTS, SanityCheck, side_seeds, stage_name, tradeoff
from ..models import load_checkpoint
from ..sweep.driver import remove_temporaries
from ..sweep.inputs import file_digest
from ..sweep.tasks import run_tasks
from .study_settings import DEMO_FILES, STUDY_CLASSES, STUDY_REFERENCES, STUDY_SEEDS, STUDY_STEPS, STUDY_WEIGHTS

def demo_inputs(demo_dir) -> dict:
    """The paths a study of the demo's model reads from its output directory.

    Raises:
        FileNotFoundError: The directory lacks one of them (run the demo first).
    """
    demo_dir = Path(demo_dir)
    paths = {k: demo_dir / v for k, v in DEMO_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{demo_dir} is not a finished demo directory (missing {', '.join(missing)}): run "
                                f"`flowam-fast demo --out {demo_dir}` first")
    paths["stores"] = [demo_dir / f"{m}.h5" for m in METHODS if (demo_dir / f"{m}.h5").exists()]
    return paths


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_task(payload, method: str, am: dict, mods, classes, seeds, seed: int, known):
    """One AM run of the study, where it runs: the trained model's explanations (mods None) or
    those of the model with `mods` re-initialized."""
    model, flows, train_set, autoencoder = payload
    check = SanityCheck(model, None, flows=flows, train_set=train_set, method=method, quiet=True, seed=seed,
                        autoencoder=autoencoder if method == "ae-latent" else None, **am)
    if mods is None:
        return check.trained_explanations(classes, seeds, known)
    return check.stage(mods, classes, seeds)


class _Runs:
    """The study's AM runs as resumable tasks: each result in its own file, named by a hash of
    everything it depends on; a file that exists is a finished task."""

    def __init__(self, out: Path, payload, inputs_hash: str, am: dict, executor: str, address, workers: int,
                 bar):
        self.out, self.payload, self.inputs_hash, self.am = out / "runs", payload, inputs_hash, am
        self.executor, self.address, self.workers, self.bar = executor, address, workers, bar
        self.ran = 0

    def path(self, check, mods, classes, seeds) -> Path:
        folder = _hash([self.inputs_hash, check.am_config, check.seed])
        return self.out / folder / f"{_hash([mods and sorted(mods), list(classes), list(seeds)])}.h5"

    def run(self, items) -> list:
        """items: (check, mods or None, classes, seeds, label, known); returns their explanations."""
        results, todo = [None] * len(items), []
        for i, (check, mods, classes, seeds, label, _) in enumerate(items):
            path = self.path(check, mods, classes, seeds)
            if path.exists():
                results[i] = Explanations.load(path)
                self.bar.update()
            else:
                todo.append(i)

        def done(j, expl):
            i = todo[j]
            check, mods, classes, seeds, label, _ = items[i]
            expl.save(self.path(check, mods, classes, seeds))  # atomic: from here on the task is finished
            results[i] = expl
            self.ran += 1
            self.bar.set_description(label)
            self.bar.update()

        run_tasks(_run_task, self.payload,
                  [(items[i][0].method, self.am | _weight(items[i][0]), items[i][1], items[i][2], items[i][3],
                    items[i][0].seed, items[i][5]) for i in todo],
                  done, executor=self.executor, address=self.address, workers=self.workers)
        return results

    def stages(self, checks, preps, quiet) -> list:
        """The runner of `tradeoff`: every randomization of every check, as tasks."""
        items = [(c, list(key), p["classes"], p["seeds"], f"{c.label}: {stage_name(c.plan, key)}", None)
                 for c, p in zip(checks, preps) for key in p["todo"]]
        flat = iter(self.run(items))
        return [[next(flat) for _ in p["todo"]] for p in preps]


def _weight(check) -> dict:
    return {"flow_weight": check.config.flow_weight} if check.method == "flowam" else {}


def run_study(out, model=None, flows=None, data=None, evaluator=None, autoencoder=None, demo_dir=None,
              classes=None, num_classes: int = STUDY_CLASSES, seeds: int = STUDY_SEEDS, steps: int = STUDY_STEPS,
              lr: float = AMConfig.lr, flow_weights=STUDY_WEIGHTS, vanilla: bool = False, variants=VARIANTS,
              alpha: float = ALPHA, n_perm: int = N_PERM, alignment: str = "moments", executor: str = "local",
              address=None, workers: int = 2,
              device="cpu", quiet: bool = False, calibration: dict | None = None, batch_size: int | None = None):
    """Run the faithfulness study of one model into `out` (see the module docstring).

    Args:
        out: Output directory: the report (sanity.md, sanity.png, tradeoff.png, sanity.json)
            and the finished runs (runs/).
        model: The classifier checkpoint (a built-in architecture); with `flows` and `data`,
            unless `demo_dir` is given.
        flows: Its flows file.
        data: The dataset directory (ModelNet40 HDF5 layout): the training split for the flows
            of randomized models, the test split for the realism columns and perceptibility.
        evaluator: The evaluator PointNet checkpoint (required without `demo_dir`).
        autoencoder: The autoencoder of AE-latent AM (required without `demo_dir`).
        demo_dir: A demo's output directory, which provides all of the above and its stores.
        classes: The classes (indices); None takes the first `num_classes`.
        num_classes: How many classes where `classes` is None.
        seeds: Seeds per class on each side of the test.
        steps: AM steps of every method.
        lr: Adam's learning rate.
        flow_weights: FlowAM's flow weights (the trade-off's points).
        vanilla: Also test plain AM.
        variants: "cascading", "independent" or both.
        alpha: Level of each test after Holm's adjustment.
        n_perm: Permutations of each test.
        alignment: FlowAM's flow term, "moments" or "quantiles" (flows with quantiles).
        executor: "local" (processes) or "ray".
        address: The Ray cluster's address; None starts a local one on loopback.
        workers: Local processes (executor "local").
        device: Where the models run.
        quiet: No progress bar.
        calibration: Keyword arguments of `calibrate` (draws, power_draws, n_perm).
        batch_size: Jobs per AM batch; None runs each task's jobs in one batch.

    Returns:
        The `SanityResult`, with the trade-off and the calibration.

    Raises:
        FileNotFoundError: A missing input.
        ValueError: Too few classes or seeds for the test, or invalid settings.
    """
    t0 = time.perf_counter()
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; choose one of {ALIGNMENTS}")
    if demo_dir is not None:
        paths = demo_inputs(demo_dir)
    else:
        paths = {"model": model, "flows": flows, "data": data, "evaluator": evaluator, "autoencoder": autoencoder,
                 "stores": []}
        missing = [k for k in ("model", "flows", "data", "evaluator", "autoencoder") if paths[k] is None]
        if missing:
            raise ValueError(f"give demo_dir, or every one of model, flows, data, evaluator, autoencoder "
                             f"(missing: {', '.join(missing)})")
        for k in ("model", "flows", "evaluator", "autoencoder"):
            if not Path(paths[k]).is_file():
                raise FileNotFoundError(f"{k} not found: {paths[k]}")
    device = torch.device(device)
    out = Path(out)
    net = load_checkpoint(paths["model"]).to(device)
    fl = Flows.load(paths["flows"])
    num_points = cloud_size(flows=fl, checkpoint=paths["model"])
    train_set = ModelNet40(paths["data"], "train", num_points=num_points)
    test_set = ModelNet40(paths["data"], "test", num_points=num_points)
    ae = load_autoencoder(paths["autoencoder"]).to(device)
    ev = load_evaluator(paths["data"], paths["evaluator"], quiet=True).to(device)
    classes = list(range(min(num_classes, fl.num_classes))) if classes is None else [int(c) for c in classes]
    first, second = side_seeds(seeds)
    references = ("vanilla",) * bool(vanilla) + STUDY_REFERENCES
    am = dict(steps=steps, lr=lr, num_points=num_points, alignment=alignment, alpha=alpha, n_perm=n_perm,
              batch_size=batch_size)
    inputs_hash = _hash([file_digest(paths["model"]), file_digest(paths["flows"]), file_digest(paths["autoencoder"]),
                         str(Path(paths["data"]).resolve()), len(train_set.labels), str(device)])
    stores = [Explanations.load(p) for p in paths["stores"]]
    # The checks of the trade-off, to run each objective's trained explanations as tasks first.
    weights = list(dict.fromkeys(float(w) for w in flow_weights))
    checks, objectives = [], set()
    for method, weight in [("flowam", w) for w in weights] + [(m, None) for m in references]:
        check = SanityCheck(net, ev, flows=fl, train_set=train_set, method=method, variants=variants, quiet=True,
                            autoencoder=ae if method == "ae-latent" else None,
                            **({} if weight is None else {"flow_weight": weight}), **am)
        objective = check.config.objective_key()
        if objective not in objectives:
            objectives.add(objective)
            checks.append(check)
    checks[0].check_design(len(classes), seeds)  # before any run: can the tests reach alpha?
    plan = checks[0].plan
    stage_tasks = len(checks) * len({tuple(sorted(m)) for _, _, m in plan})
    bar = tqdm(total=len(checks) + stage_tasks, disable=quiet, unit="run", desc="study")
    if (out / "runs").is_dir():
        remove_temporaries(out / "runs")  # a study killed while saving a run leaves its temporary
    runs = _Runs(out, (net, fl, train_set, ae), inputs_hash, {k: am[k] for k in ("num_points", "steps", "lr",
                                                                                  "alignment", "batch_size")},
                 executor, address, workers, bar)
    known = {c.label: c.known(stores) for c in checks}
    trained = runs.run([(c, None, classes, first + second, f"{c.label}: trained", known[c.label]) for c in checks])
    refs = to_device(references_by_class(test_set.points, test_set.labels, num_refs=REALISM_REFS), device)
    class_refs = to_device(references_by_class(test_set.points, test_set.labels, num_refs=CLASS_REFS), device)
    result = tradeoff(net, ev, fl, train_set, classes, seeds, weights, refs, class_refs=class_refs, autoencoder=ae,
                      baselines=references, variants=variants, quiet=True, trained=trained, runner=runs.stages, **am)
    bar.close()
    result.calibration = calibrate(result, **(calibration or {}))
    seconds = time.perf_counter() - t0
    command = provenance.invoked_command(fallback=shlex.join(
        ["flowam-fast", "study", *(["--demo-dir", str(demo_dir)] if demo_dir is not None else
                                   ["--model", str(model), "--flows", str(flows), "--data", str(data)]),
         "--out", str(out)]))
    result.header = "\n".join([
        provenance.markdown(command), "",
        f"Model {paths['model']}: {len(classes)} classes x {seeds} seeds a side (trained seeds {first[0]}-{first[-1]}, "
        f"randomized {second[0]}-{second[-1]}), {steps} AM steps, {n_perm} permutations per test, alpha {alpha:g} "
        f"after Holm's adjustment over the stages of each variant. {runs.ran} of {len(checks) + stage_tasks} AM runs "
        f"made in this invocation ({executor} executor), the others read from {out / 'runs'}; "
        f"{seconds:.0f} s."])
    result.write_report(out, title="Faithfulness study")
    return result
