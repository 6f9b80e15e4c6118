"""Attributions of a whole test split at scale: every method on every cloud in batches, on the
sweep executors (this process, or a Ray cluster), resumable; then the faithfulness curves'
summary, the randomization check, the report and the views. What `flowam-fast attribute` runs.

A batch of clouds of one method is a shard (`sweep.shards.Shard`): its scores and curves are
computed together where it runs and written at once, atomically, as a small attribution store
under OUT/shards/<method>/, named by the hash of everything its results depend on (method,
options, grid, seed, model weights, clouds, targets) and of its clouds. A rerun reads the
finished shards back and computes only the clouds they do not hold, so a killed run resumes
where it stopped and a finished one costs nothing; a run with other settings leaves the old
shards unused. Then OUT holds:

- attribution.h5: the merged `attribution.AttributionStore` (scores, curves, extras);
- attribution.json: per method the areas (`deletion_area`, `insertion_area`,
  `random_deletion_area`, `random_insertion_area`), the gains over the random order, each
  with its 95 % bootstrap interval (`*_ci`), and the randomization check;
- curves.png, report.md (under the provenance block), attribution.html and attribution.png
  (a few clouds, points coloured by score).
"""
from __future__ import annotations

import hashlib
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__, provenance
from ..am.engine import frozen
from ..attribution.curves import FRACTIONS, faithfulness_curves, randomization_check
from ..attribution.methods import METHODS, OPTIONS, as_clouds, attribute, chunks, forward, model_device
from ..attribution.report import curves_plot, faithfulness_table, randomization_table, summarize
from ..attribution.store import AttributionStore
from ..attribution.views import attribution_sheet, write_html
from ..evaluation.report import write_json
from ..sweep.executors import EXECUTORS
from ..sweep.shards import Shard

#: The methods a run computes unless told otherwise (spherical saliency is asked for by name).
DEFAULT_METHODS = ("saliency", "integrated-gradients", "grad-cam", "critical-points", "occlusion")
#: Perturbed or interpolated clouds per forward pass (bounds the memory of the activations,
#: and of integrated gradients' backward pass).
ROWS_PER_PASS = 64
TARGETS = ("predicted", "label")


def parse_methods(text) -> list:
    """Method names from a comma list (or a list), checked.

    Raises:
        ValueError: An unknown or repeated method, or none.
    """
    names = [m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"methods must be distinct names from {', '.join(METHODS)}; got {names or text!r}")
    return names


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()


def model_digest(model) -> str:
    """A hash of a model's class and weights: what its attributions depend on."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Unit:
    """One method of a run, as the sweep executors read a unit: its engine's options, the hash
    that names its shards, its clouds (`jobs`, dataset positions)."""

    method: str
    options: dict
    config: str
    digest: str
    jobs: tuple
    batch_size: int | None = None
    model: str = "model"

    @property
    def key(self) -> str:
        return self.method


@dataclass
class Inputs:
    """What every worker needs: the model, the clouds, their labels and targets."""

    model: torch.nn.Module
    points: np.ndarray
    labels: np.ndarray
    targets: np.ndarray

    def payload(self) -> tuple:
        return self.model, self.points, self.labels, self.targets


class BatchAttributor:
    """One method's engine on a worker: `run_jobs(jobs)` gives the attribution store of those
    clouds (scores, curves, extras), computed as one batch."""

    def __init__(self, payload: tuple, method: str, options: dict, device=None):
        self.model, self.points, self.labels, self.targets = payload
        if device is not None:
            self.model = self.model.to(device)
        self.method, self.options = method, options

    def run_jobs(self, jobs, batch_size=None) -> AttributionStore:
        idx = np.asarray(jobs, dtype=np.int64)
        o = self.options
        pts = torch.as_tensor(self.points[idx])
        targets = torch.as_tensor(self.targets[idx])
        rows = o["rows_per_pass"]
        opts = dict(o["method_options"])
        opts.setdefault("batch_size", rows)
        scores, extras = attribute(self.model, pts, targets, method=self.method, return_extras=True, **opts)
        curves = faithfulness_curves(self.model, pts, targets, scores, fractions=o["fractions"], seed=o["seed"],
                                     indices=idx, batch_size=rows)
        return AttributionStore(
            config=o["config"], fractions=tuple(o["fractions"]), indices=idx, points=self.points[idx],
            labels=self.labels[idx], targets=self.targets[idx], scores={self.method: scores.cpu().numpy()},
            curves={self.method: curves}, extras={self.method: {k: v.cpu().numpy() for k, v in extras.items()}})


def make_attributor(payload, method, options, device=None) -> BatchAttributor:
    """The executors' factory of attribution engines."""
    return BatchAttributor(payload, method, options, device)


def _shard_name(unit: Unit, jobs) -> str:
    return f"{unit.digest[:16]}-{_digest([int(j) for j in jobs])[:12]}.h5"


def _finished(out: Path, unit: Unit) -> dict:
    """{shard name: store} of the unit's valid shard files (its config, the clouds their names
    say, each cloud once)."""
    found, covered = {}, set()
    for path in sorted((out / "shards" / unit.key).glob(f"{unit.digest[:16]}-*.h5")):
        try:
            part = AttributionStore.load(path)
        except (ValueError, OSError):
            continue
        jobs = [int(j) for j in part.indices]
        if part.config != unit.config or part.methods != [unit.method] or path.name != _shard_name(unit, jobs) \
                or covered & set(jobs) or not set(jobs) <= set(unit.jobs):
            continue
        covered |= set(jobs)
        found[path.name] = part
    return found


def predicted_targets(model, points: np.ndarray, batch_size: int = ROWS_PER_PASS) -> np.ndarray:
    """The model's predicted class of each cloud (N, 3), in batches."""
    device = model_device(model)
    out = []
    with frozen(model), torch.no_grad():
        for a, b in chunks(len(points), batch_size):
            out.append(forward(model, torch.as_tensor(points[a:b]).to(device)).argmax(1).cpu().numpy())
    return np.concatenate(out)


def _views_clouds(store: AttributionStore, count: int) -> list:
    """Positions of up to `count` clouds, one per target class first (the first of each)."""
    _, first = np.unique(store.targets, return_index=True)
    rest = [i for i in range(len(store)) if i not in set(first)]
    return sorted(first.tolist())[:count] + rest[:max(0, count - len(first))]


def run_attribution(model, points, labels, out_dir, methods=DEFAULT_METHODS, options: dict | None = None,
                    targets: str = "predicted", class_names=None, executor: str = "local", address=None,
                    device="cpu", batch_size: int = 32, seed: int = 0, fractions=FRACTIONS,
                    randomization_clouds: int = 8, views: int = 6, rows_per_pass: int = ROWS_PER_PASS,
                    quiet: bool = False, command: str | None = None) -> dict:
    """Attribute every cloud with every method and write the outputs (see the module docstring).

    Args:
        model: The classifier (on `device`).
        points: Clouds (C, N, 3), e.g. a test split's ``points``.
        labels: Their labels (C,).
        out_dir: The output directory (created; finished shards there are reused).
        methods: Method names (`attribution.METHODS`).
        options: {method: options of `attribution.attribute`} (not ``batch_size``, which is
            `rows_per_pass`).
        targets: "predicted" (the model's class for each cloud) or "label".
        class_names: Names of the classes, for the views.
        executor: "local" (this process) or "ray".
        address: The Ray cluster's address (executor "ray"); None starts a local one.
        device: Where the model runs ("cpu" or a CUDA device).
        batch_size: Clouds per shard (the unit of work and of resumption).
        seed: Seed of the random order and of the bootstrap and randomization.
        fractions: The curves' grid.
        randomization_clouds: Clouds of the randomization check (the first ones); 0 skips it.
        views: Clouds in the views; 0 skips them.
        rows_per_pass: Perturbed or interpolated clouds per forward pass.
        quiet: No progress lines.
        command: The command that reproduces the run, for the report's provenance block.

    Returns:
        The contents of attribution.json, with "ran" and "reused" shard counts and "seconds".

    Raises:
        ValueError: An unknown method, option, executor or target rule; clouds that are not
            (C, N, 3); labels that do not match them.
    """
    t0 = time.perf_counter()
    methods = parse_methods(methods)
    options = {m: dict(v) for m, v in (options or {}).items()}
    for m, o in options.items():
        if m not in methods:
            raise ValueError(f"options for {m!r}, which is not among the methods {methods}")
        unknown = sorted(set(o) - set(OPTIONS[m]) | ({"batch_size"} & set(o)))
        if unknown:
            raise ValueError(f"unknown options {unknown} of method {m!r}; it takes "
                             f"{sorted(set(OPTIONS[m]) - {'batch_size'})}")
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {sorted(EXECUTORS)}")
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    points = as_clouds(points).cpu().numpy().astype(np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(points),):
        raise ValueError(f"labels must be one per cloud ({len(points)}), got shape {labels.shape}")
    model = model.to(device)
    chosen = predicted_targets(model, points, rows_per_pass) if targets == "predicted" else labels
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frac = [float(x) for x in fractions]
    common = {"model": model_digest(model), "points": _digest(points.tobytes(), labels.tobytes()),
              "targets": _digest(chosen.astype(np.int64).tobytes()), "fractions": frac, "seed": int(seed),
              "version": __version__}
    units = []
    for m in methods:
        config = json.dumps({"method": m, "options": options.get(m, {}), **common}, sort_keys=True)
        units.append(Unit(m, {"method_options": options.get(m, {}), "fractions": frac, "seed": int(seed),
                              "rows_per_pass": int(rows_per_pass), "config": config},
                          config, _digest(config), tuple(range(len(points)))))
    parts, todo, shards = {}, [], 0
    for u in units:
        parts[u.key] = _finished(out, u)
        done = {int(j) for p in parts[u.key].values() for j in p.indices}
        rest = [j for j in u.jobs if j not in done]
        for a, b in chunks(len(rest), batch_size):
            jobs = tuple(rest[a:b])
            todo.append((u, Shard(u.key, jobs, _shard_name(u, jobs), index=shards)))
            shards += 1
    reused = sum(len(p) for p in parts.values())

    def on_done(unit, shard, result, _stats) -> None:
        result.save(shard.path(out))  # atomic: from here on the shard counts as finished
        parts[unit.key][shard.name] = result
        if not quiet:
            print(f"[attribute] {unit.method}: clouds {shard.jobs[0]}-{shard.jobs[-1]} done", flush=True)

    if todo:
        # Bad options (an unknown layer, k > N) fail here, on one cloud, not in a worker later.
        for m in dict.fromkeys(u.method for u, _ in todo):
            attribute(model, points[:1], chosen[:1], method=m, **options.get(m, {}))
        inputs = {"model": Inputs(model, points, labels, chosen)}
        EXECUTORS[executor](inputs, str(device), address=address, quiet=quiet, factory=make_attributor).run(todo,
                                                                                                            on_done)
    config = json.dumps({"methods": methods, "options": options, **common}, sort_keys=True)
    store = AttributionStore.merge([p for u in units for p in parts[u.key].values()], config=config)
    store.save(out / "attribution.h5")
    summaries = summarize(store, seed=seed)
    check = {}
    if randomization_clouds:
        r = min(int(randomization_clouds), len(points))
        check = randomization_check(model, torch.as_tensor(points[:r]), torch.as_tensor(chosen[:r]), methods,
                                    options={m: {**options.get(m, {}), "batch_size": rows_per_pass} for m in methods},
                                    seed=seed)
    result = {"methods": summaries, "randomization": check, "targets": targets, "clouds": len(points),
              "num_points": int(points.shape[1]), "fractions": frac, "seed": int(seed), "options": options,
              "store": "attribution.h5"}
    write_json(result, out / "attribution.json")
    curves_plot(summaries, out / "curves.png")
    if views:
        picked = _views_clouds(store, views)
        write_html(store, out / "attribution.html", clouds=picked, class_names=class_names)
        attribution_sheet(store, out / "attribution.png", clouds=picked, class_names=class_names)
    command = command or provenance.invoked_command(
        fallback=shlex.join(["flowam-fast", "attribute", "--out", str(out), "--methods", ",".join(methods)]))
    (out / "report.md").write_text(report_markdown(result, command, views=bool(views)))
    return {**result, "ran": len(todo), "reused": reused, "seconds": time.perf_counter() - t0}


def report_markdown(result: dict, command: str, views: bool = True) -> str:
    """report.md: the provenance block, the faithfulness table, the curves, the randomization
    check, integrated gradients' completeness and the views."""
    lines = ["# flowam-fast attributions", "", provenance.markdown(command), "",
             f"{result['clouds']} clouds of {result['num_points']} points; targets: {result['targets']} classes. "
             "Areas are oriented so that higher = more faithful: over the deletion curve, under the insertion "
             "curve of the target's probability; random = the same clouds in a random order (seed "
             f"{result['seed']}); 95 % bootstrap intervals over clouds.", "",
             faithfulness_table(result["methods"]), "", "![curves](curves.png)"]
    ig = result["methods"].get("integrated-gradients")
    if ig and "completeness_error" in ig:
        lines += ["", f"Integrated gradients' completeness error: {ig['completeness_error']:.4g} on average "
                      f"(|sum of scores - (y(x) - y(baseline))|; mean |y(x) - y(baseline)| = "
                      f"{ig['mean_abs_delta']:.4g})."]
    if result["randomization"]:
        lines += ["", "## Randomization check", "",
                  "Spearman rank correlation of each method's attributions with the trained model's, as the model's "
                  "blocks are re-initialized from the output down (a faithful method's falls):", "",
                  randomization_table(result["randomization"])]
    if views:
        lines += ["", "## Views", "", "Points coloured by score rank (bright = most important); "
                  "[interactive](attribution.html).", "", "![attributions](attribution.png)"]
    return "\n".join(lines) + "\n"


#: The demo's attributions: test clouds per class, and the methods' options sized for it.
DEMO_PER_CLASS = 3
DEMO_OPTIONS = {"integrated-gradients": {"steps": 16}, "occlusion": {"patches": 16}}


def demo_section(model, test_set, out_dir, methods=DEFAULT_METHODS, per_class: int = DEMO_PER_CLASS,
                 seed: int = 0, quiet: bool = True) -> str:
    """The demo report's section on local explanations: attributions of the first `per_class`
    test clouds of every class by every method, in out_dir (see `run_attribution`; reused on a
    rerun), as Markdown: the faithfulness table with intervals, the curves and one sheet of a
    few clouds. Image links are relative to out_dir's parent (the demo's directory).

    Args:
        model: The demo classifier.
        test_set: The demo's test split (``points``, ``labels``, ``classes``).
        out_dir: Where the attributions go (e.g. DEMO/attribution).
        methods: Method names.
        per_class: Test clouds per class.
        seed: Seed of the random order and the bootstrap.
        quiet: No progress lines.

    Returns:
        The section's Markdown, from its "## Local explanations" heading.
    """
    labels = np.asarray(test_set.labels)
    picked = np.sort(np.concatenate([np.nonzero(labels == c)[0][:per_class] for c in np.unique(labels)]))
    out = Path(out_dir)
    result = run_attribution(model, np.asarray(test_set.points)[picked], labels[picked], out, methods=methods,
                             options={m: o for m, o in DEMO_OPTIONS.items() if m in methods}, seed=seed,
                             class_names=list(test_set.classes), randomization_clouds=0, views=4, quiet=quiet,
                             command=shlex.join(["flowam-fast", "attribute", "--out", str(out)]))
    rel = out.name
    return "\n".join([
        "## Local explanations", "",
        f"Attributions of {result['clouds']} test clouds ({per_class} per class) for the predicted class; areas "
        "oriented so that higher = more faithful (over the deletion curve, under the insertion curve of the "
        "target's probability), against the same clouds in a random order, with 95 % bootstrap intervals.", "",
        faithfulness_table(result["methods"]), "", f"![attribution curves]({rel}/curves.png)", "",
        f"![attributions]({rel}/attribution.png)"])
