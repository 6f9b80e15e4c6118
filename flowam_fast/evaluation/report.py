"""Metrics of explanation sets against real data, as dicts, Markdown tables, JSON and bar charts.

`evaluate_sets` is the one place where every metric of `flowam_fast.metrics` is applied to
stored explanations; the `evaluate` command and the demo both go through it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import metrics
from ..atomic import atomic_path

#: (key, column title, format, higher is better) of the per-method metrics.
COLUMNS = (("success", "success", "{:.1%}", True), ("chamfer", "Chamfer", "{:.4f}", False),
           ("emd", "EMD", "{:.4f}", False), ("fid", "FID", "{:.2f}", False), ("mis", "m-IS", "{:.3f}", True))


class RealData:
    """Real test samples and what the metrics need of them, computed once for every set.

    Holds per-class reference clouds for Chamfer and EMD and the evaluator's features of every
    sample (for FID and m-IS).

    Args:
        points: Real clouds (M, P, 3).
        labels: Their classes (M,).
        evaluator: The evaluator PointNet; None leaves out FID and m-IS.
        num_refs: Reference clouds per class for Chamfer.
        emd_refs: Of those, the ones EMD compares with (it is far slower).
        emd_points: Points per cloud in EMD (a random subset of larger clouds).
        seed: Seed of the choice of references.
        device: Where Chamfer runs (the references are moved there); None keeps them on CPU.
    """

    def __init__(self, points: np.ndarray, labels: np.ndarray, evaluator=None, num_refs: int = 20,
                 emd_refs: int = 5, emd_points: int = 256, seed: int = 0, device=None):
        self.points = np.asarray(points, np.float32)
        self.labels = np.asarray(labels, np.int64)
        self.refs = metrics.references_by_class(self.points, self.labels, num_refs=num_refs, seed=seed)
        if device is not None:  # Chamfer runs where the references are
            self.refs = metrics.to_device(self.refs, device)
        self.emd_refs = emd_refs
        self.emd_points = emd_points
        self.evaluator = evaluator
        self.features = metrics.evaluator_features(evaluator, self.points) if evaluator is not None else None
        self.fits = {}  # Gaussian fits of the real features per (class, layer), shared by all sets

    def real_chamfer(self) -> float:
        """The Chamfer metric of real samples themselves: each reference cloud against the
        other references of its class, averaged. What an explanation indistinguishable from
        the real data would score, the floor to read the methods' Chamfer against.

        Returns:
            The mean distance (squared-distance units); NaN when no class has two references.
        """
        vals = []
        for c, refs in self.refs.items():
            for i in range(refs.shape[0] if refs.shape[0] > 1 else 0):
                others = {c: torch.cat((refs[:i], refs[i + 1:]))}
                vals.append(metrics.chamfer_to_class(refs[i:i + 1].cpu().numpy(), np.array([c]), others))
        return float(np.concatenate(vals).mean()) if vals else float("nan")


def set_metrics(expl, real: RealData) -> dict:
    """Every metric of one explanation set, overall and per class (keys as in COLUMNS)."""
    cd = metrics.chamfer_to_class(expl.points, expl.classes, real.refs)
    em = metrics.emd_to_class(expl.points, expl.classes, real.refs, num_refs=real.emd_refs,
                              max_points=real.emd_points)
    ok = expl.success
    per_class = {}
    for c in np.unique(expl.classes):
        m = expl.classes == c
        per_class[int(c)] = {"name": expl.class_name(int(c)), "jobs": int(m.sum()), "success": float(ok[m].mean()),
                             "chamfer": float(cd[m].mean()), "emd": float(em[m].mean())}
    out = {"method": expl.method, "jobs": len(expl), "success": float(ok.mean()), "chamfer": float(cd.mean()),
           "emd": float(em.mean())}
    if real.evaluator is not None:
        feats = metrics.evaluator_features(real.evaluator, expl.points)
        fid = metrics.fid_per_class(feats, expl.classes, real.features, real.labels, real_cache=real.fits)
        mis = metrics.m_inception_score(feats["probs"], expl.classes)
        out.update(fid=fid["mean"], fid_per_layer=fid["per_layer"], mis=mis["mean"],
                   evaluator_success=float((feats["probs"].argmax(1) == expl.classes).mean()))
        for c, row in per_class.items():
            row["fid"] = fid["per_class"][c]["mean"]
            row["mis"] = mis["per_class"][c]
    out["per_class"] = {row.pop("name"): row for row in per_class.values()}
    return out


def evaluate_sets(sets, real: RealData) -> list:
    """Every metric of each explanation set against the real data.

    Args:
        sets: `Explanations` to evaluate, one per method.
        real: The real data, as from `real_data`.

    Returns:
        One dict per set: method, jobs, success, Chamfer and EMD (and, with an evaluator,
        FID, FID per layer, m-IS and the evaluator's success), overall and per class.
    """
    return [set_metrics(e, real) for e in sets]


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))


def _present(results) -> list:
    return [c for c in COLUMNS if all(c[0] in r for r in results)]


def method_table(results: list) -> str:
    """A Markdown table of `evaluate_sets`' results, one row per method."""
    cols = _present(results)
    lines = ["| method | jobs | " + " | ".join(c[1] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for r in results:
        lines.append(f"| {r['method']} | {r['jobs']} | " + " | ".join(c[2].format(r[c[0]]) for c in cols) + " |")
    return "\n".join(lines)


def class_table(results: list) -> str:
    """One row per (class, method)."""
    cols = _present(results)
    lines = ["| class | method | jobs | " + " | ".join(c[1] for c in cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    classes = list(dict.fromkeys(c for r in results for c in r["per_class"]))
    for name in classes:
        for r in results:
            row = r["per_class"].get(name)
            if row is not None:
                lines.append(f"| {name} | {r['method']} | {row['jobs']} | "
                             + " | ".join(c[2].format(row[c[0]]) for c in cols) + " |")
    return "\n".join(lines)


def metric_notes(real: RealData) -> str:
    parts = [f"Chamfer: squared distances, mean in both directions, averaged over {len(next(iter(real.refs.values())))} "
             f"real test samples of the target class. EMD: exact optimal transport (POT), squared distances, "
             f"{real.emd_points} points per cloud, averaged over {real.emd_refs} real samples."]
    if real.evaluator is not None:
        parts.append("FID: per class, between the explanations and the real test samples of the class, on the "
                     "evaluator PointNet's global (1024-d) and penultimate (256-d) features, Ledoit-Wolf shrunk "
                     "covariances, averaged over classes and the two layers. m-IS: exp of the mean pairwise KL "
                     "divergence of the evaluator's class probabilities within a class (1 = no diversity). "
                     "success: argmax of the explained model is the target class.")
    return " ".join(parts)


def bar_charts(results: list, out_dir) -> list:
    """One PNG per metric: bars per method, for each class and the mean."""
    from .plots import bar_chart

    out_dir = Path(out_dir)
    written = []
    for key, title, _fmt, higher in _present(results):
        values = {"mean": {r["method"]: r[key] for r in results}}
        for r in results:
            for name, row in r["per_class"].items():
                values.setdefault(name, {})[r["method"]] = row[key]
        path = out_dir / f"{key}.png"
        bar_chart(values, path, title=f"{title} ({'higher' if higher else 'lower'} is better)", ylabel=title)
        written.append(path)
    return written


def markdown_report(results: list, real: RealData, title: str, charts=(), preamble: str = "", appendix: str = "") -> str:
    """The whole report: title, `preamble`, metric notes, the tables, the charts, `appendix`."""
    text = [f"# {title}", ""] + ([preamble, ""] if preamble else []) + [
        "## Metrics", "", metric_notes(real), "", "### Per method", "", method_table(results), "",
        "### Per class", "", class_table(results), ""]
    if charts:
        text += ["### Charts", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in charts] + [""]
    if appendix:
        text += [appendix, ""]
    return "\n".join(text)


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
    """Write the results of `evaluate_sets` as JSON, a Markdown report and bar charts.

    Writes out_dir/metrics.json, out_dir/report.md and one bar chart per metric into out_dir
    (created if needed).

    Args:
        results: What `evaluate_sets` returned.
        real: The real data the results were measured against (described in the report).
        out_dir: The output directory.
        title: The report's title.
        preamble: Markdown placed before the tables.
        appendix: Markdown placed after them.
        extra_json: More entries of metrics.json, beside "methods".
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = bar_charts(results, out_dir)
    write_json({"methods": results, **(extra_json or {})}, out_dir / "metrics.json")
    (out_dir / "report.md").write_text(markdown_report(results, real, title, charts, preamble, appendix))
