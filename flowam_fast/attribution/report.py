"""The results of attributions as files: the faithfulness summary per method (`summarize`), its
Markdown tables, the curves' PNG, and attribution.json."""
from __future__ import annotations

import numpy as np

from .curves import summarize_curves

#: The columns of the faithfulness table: (key of the summary, heading).
COLUMNS = (("deletion_area", "deletion area (over)"), ("random_deletion_area", "random"),
           ("insertion_area", "insertion area (under)"), ("random_insertion_area", "random"))


def summarize(store, seed: int = 0) -> dict:
    """{method: `curves.summarize_curves` of its curves}, plus integrated gradients' mean
    completeness error and the mean |delta| it is relative to, where the store has them."""
    out = {}
    for m in store.methods:
        out[m] = summarize_curves(store.curves[m], store.fractions, seed=seed)
        extras = store.extras.get(m, {})
        if "completeness_error" in extras:
            out[m]["completeness_error"] = float(np.mean(extras["completeness_error"]))
            out[m]["mean_abs_delta"] = float(np.mean(np.abs(extras["delta"])))
    return out


def _cell(summary: dict, key: str) -> str:
    lo, hi = summary[f"{key}_ci"]
    return f"{summary[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def faithfulness_table(summaries: dict) -> str:
    """A Markdown row per method: each area with its 95 % interval, against the random order's."""
    head = ["method", *(h for _, h in COLUMNS), "clouds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, s in summaries.items():
        lines.append("| " + " | ".join([m, *(_cell(s, k) for k, _ in COLUMNS), str(s["clouds"])]) + " |")
    return "\n".join(lines)


def randomization_table(check: dict) -> str:
    """A Markdown row per randomization stage, a column per method: the mean Spearman rank
    correlation with the trained model's attributions."""
    methods = list(check)
    if not methods:
        return ""
    lines = ["| randomized down to | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
    for i, stage in enumerate(check[methods[0]]):
        lines.append(f"| {stage['stage']} | " + " | ".join(f"{check[m][i]['spearman']:.3f}" for m in methods) + " |")
    return "\n".join(lines)


def curves_plot(summaries: dict, path) -> None:
    """Mean deletion and insertion curves of every method (solid) against the random order
    (dotted), one panel each."""
    from ..am.sheets import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (m, s) in enumerate(summaries.items()):
        f = s["fractions"]
        for ax, name in zip(axes, ("deletion", "insertion")):
            ax.plot(f, s["mean_curves"][name], color=f"C{i}", label=f"{m} ({s[f'{name}_area']:.3f})")
            ax.plot(f, s["mean_curves"][f"random_{name}"], color=f"C{i}", ls=":", lw=0.9)
    for ax, what in zip(axes, ("removed, most important first (area over the curve)",
                               "put back, most important first (area under the curve)")):
        ax.set_xlabel(f"fraction of points {what}", fontsize=8)
        ax.set_ylabel("target probability")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    axes[0].set_title("Deletion (dotted: random order)", fontsize=9)
    axes[1].set_title("Insertion (dotted: random order)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, 100)
