"""PNG figures of evaluation results (matplotlib, Agg backend): bar charts of metrics and the
randomization check's figures. Contact sheets of the explanations themselves are in am/sheets.py."""
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
    """The randomization check: each stage's effect (the probability that a randomized
    explanation is farther from a trained one than two trained ones are; 0.5 = no change) with
    its 95% interval, and, where measured, the Chamfer distance to the nearest real class; one
    line per method for the cascading variant, crosses for the independent one; stages that
    changed (Holm-adjusted p < alpha) filled, the others hollow."""
    panels = [("effect", "effect (0.5 = unchanged)")]
    if results and "nearest_real" in results[0]["trained"]:
        panels.append(("nearest_real", "Chamfer to the nearest real class (realism)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    axes = axes[0]
    for i, r in enumerate(results):
        color = f"C{i % 10}"
        for ax, (key, _) in zip(axes, panels):
            for variant, marker, ls in (("cascading", "o", "-"), ("independent", "x", "")):
                st = [s for s in r["stages"] if s["variant"] == variant]
                if not st:
                    continue
                xs = np.arange(1, len(st) + 1) + (0.1 if variant == "independent" else 0.0)
                ys = np.array([s[key] for s in st])
                if key == "effect":
                    err = np.abs(np.array([s["effect_ci"] for s in st]).T - ys)
                    ax.errorbar(xs, ys, yerr=err, color=color, ls=ls, lw=1, capsize=2, fmt="none")
                ax.plot(xs, ys, color=color, ls=ls, label=f"{r['label']} {variant}")
                changed = np.array([s["changed"] for s in st])
                ax.scatter(xs[changed], ys[changed], color=color, marker=marker, zorder=3)
                if variant == "cascading":
                    ax.scatter(xs[~changed], ys[~changed], facecolors="none", edgecolors=color, zorder=3)
    names = [s["stage"] for s in results[0]["stages"] if s["variant"] == "cascading"] if results else []
    axes[0].axhline(0.5, color="gray", ls="--", lw=0.8)
    for ax, (_, title) in zip(axes, panels):
        ax.set_xticks(np.arange(1, len(names) + 1), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("randomized down to (cascading) / only (independent)", fontsize=7)
    axes[0].legend(fontsize=6)
    fig.suptitle("Model-parameter randomization; filled: changed (Holm-adjusted p < alpha)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, 100)


def tradeoff_plot(result: dict, path) -> None:
    """The flow weight's trade-off (`sanity.tradeoff`): perceptibility (Chamfer distance to real
    samples of the target class, lower is more perceptible) against faithfulness (the weakest
    stage's effect with its 95% interval, higher is more faithful), one point per flow weight
    joined in weight order, the reference methods as separate markers, 0.5 (no change) dashed;
    points that pass (every stage changed) filled, the others hollow."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))

    def draw(points, fmt, color, label):
        xs = np.array([p["weakest_effect"] for p in points])
        ys = np.array([p["chamfer_to_class"] for p in points])
        err = np.abs(np.array([p["weakest_effect_ci"] for p in points]).T - xs)
        ax.errorbar(xs, ys, xerr=err, fmt=fmt, color=color, label=label, capsize=2, mfc="none")
        passes = np.array([p["passes"] for p in points])
        ax.plot(xs[passes], ys[passes], fmt[0], color=color)

    if result["points"]:
        draw(result["points"], "o-", "C0", "FlowAM (flow weight)")
        for p in result["points"]:
            ax.annotate(f"{p['flow_weight']:g}", (p["weakest_effect"], p["chamfer_to_class"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
    for i, p in enumerate(result["references"]):
        draw([p], "s", f"C{i + 1}", p["method"])
    ax.axvline(0.5, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("weakest stage's effect (0.5 = unchanged; faithfulness ->)", fontsize=8)
    ax.set_ylabel("Chamfer to real samples of the class (<- perceptible)", fontsize=8)
    ax.set_title("Flow weight: perceptibility vs faithfulness; filled: passes", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, 100)
