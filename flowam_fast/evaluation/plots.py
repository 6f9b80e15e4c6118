"""PNG figures of evaluation results (matplotlib, Agg backend): bar charts of metrics and the
sanity check's curves. Contact sheets of the explanations themselves are in am/sheets.py."""
from __future__ import annotations

import numpy as np

from ..am.sheets import plt, save_figure


def bar_chart(values: dict, path, title: str, ylabel: str) -> None:
    """values: {group: {series: value}}, drawn as grouped bars."""
    groups = list(values)
    series = sorted({k for v in values.values() for k in v})
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(groups) * max(1, len(series))), 3.2))
    x = np.arange(len(groups))
    for i, name in enumerate(series):
        ax.bar(x + i * width, [values[g].get(name, np.nan) for g in groups], width, label=name)
    ax.set_xticks(x + width * (len(series) - 1) / 2, groups, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, 100)


def sanity_curves(results: list, path) -> None:
    """The randomization sanity check: similarity to the trained model's explanations per stage
    (Chamfer; Spearman), and, where measured, the Chamfer distance to the nearest real class;
    one line per method for the cascading variant, crosses for the independent one, dashed
    lines at each method's threshold."""
    panels = [("chamfer_mean", "chamfer", "Chamfer to the trained model's explanation"),
              ("spearman_mean", "spearman", "Spearman of evaluator features")]
    if results and "nearest_real" in results[0]["trained"]:
        panels.append(("nearest_real", None, "Chamfer to the nearest real class (realism)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8))
    for i, r in enumerate(results):
        color = f"C{i}"
        for ax, (key, thr_key, _) in zip(axes, panels):
            # Stage 0 is the trained model, against itself for the similarity panels.
            base = {"chamfer_mean": 0.0, "spearman_mean": 1.0}.get(key, r["trained"].get(key))
            for variant, style in (("cascading", dict(marker="o", ls="-")), ("independent", dict(marker="x", ls=""))):
                st = [s for s in r["stages"] if s["variant"] == variant]
                if not st:
                    continue
                xs = np.arange(len(st) + 1) if variant == "cascading" else np.arange(1, len(st) + 1)
                ys = ([base] if variant == "cascading" else []) + [s[key] for s in st]
                ax.plot(xs, ys, color=color, label=f"{r['method']} {variant}", **style)
            if thr_key:
                ax.axhline(r["threshold"][thr_key], color=color, ls="--", lw=0.8)
    names = ["trained"] + [s["stage"] for s in results[0]["stages"] if s["variant"] == "cascading"] if results else []
    for ax, (_, _, title) in zip(axes, panels):
        ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("randomized down to (cascading) / only (independent)", fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle("Model-parameter randomization; dashed: seed-to-seed threshold", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, 100)


def tradeoff_plot(result: dict, path) -> None:
    """The flow weight's trade-off (`sanity.tradeoff`): perceptibility (Chamfer distance to real
    samples of the target class, lower is more perceptible) against faithfulness (the worst
    stage's margin in seed-to-seed standard deviations, higher is more faithful), one point per
    flow weight joined in weight order, the reference methods as separate markers, and the
    verdict's margin (SIGMAS) as a dashed line: points right of it changed at every stage."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    pts = [p for p in result["points"] if p["worst_margin"] is not None]
    ax.plot([p["worst_margin"] for p in pts], [p["chamfer_to_class"] for p in pts], "o-", color="C0",
            label="FlowAM (flow weight)")
    for p in pts:
        ax.annotate(f"{p['flow_weight']:g}", (p["worst_margin"], p["chamfer_to_class"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    for i, p in enumerate(r for r in result["references"] if r["worst_margin"] is not None):
        ax.plot([p["worst_margin"]], [p["chamfer_to_class"]], "s", color=f"C{i + 1}", label=p["method"])
    ax.axvline(result.get("sigmas", 2.0), color="gray", ls="--", lw=0.8)
    ax.set_xlabel("worst stage's margin (seed-to-seed σ; faithfulness →)", fontsize=8)
    ax.set_ylabel("Chamfer to real samples of the class (← perceptible)", fontsize=8)
    ax.set_title("Flow weight: perceptibility vs sanity-check margin", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, 100)
