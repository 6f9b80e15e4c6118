"""PNG figures (matplotlib, Agg backend): contact sheets of point clouds and bar charts."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_path  # noqa: E402

#: One viewpoint for every panel, so shapes compare across classes, seeds and methods.
ELEV, AZIM = 20.0, -60.0


def _scatter(ax, pts, lim):
    # Matplotlib's z axis is drawn vertically; the data's vertical axis is y.
    ax.scatter(pts[:, 0], pts[:, 2], pts[:, 1], s=1.0, c=pts[:, 1], cmap="viridis", depthshade=False, linewidths=0)
    ax.view_init(elev=ELEV, azim=AZIM)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_zlim(-lim, lim)
    ax.set_box_aspect((1, 1, 1))
    ax.set_axis_off()


def contact_sheet(sets, path, labels=None, lim: float = 1.0, panel: float = 1.6, dpi: int = 90) -> None:
    """Rows are classes, columns are seeds; several explanation sets go side by side, each
    with its own column block titled by its method (or `labels`)."""
    sets = [s.sorted() for s in sets]
    labels = labels or [s.method for s in sets]
    classes = sorted(set(np.concatenate([s.classes for s in sets]).tolist()))
    seeds = [sorted(set(s.seeds.tolist())) for s in sets]
    ncols = sum(len(x) for x in seeds)
    fig = plt.figure(figsize=(panel * ncols, panel * len(classes) + 0.4))
    for r, c in enumerate(classes):
        col = 0
        for si, s in enumerate(sets):
            for sd in seeds[si]:
                col += 1
                ax = fig.add_subplot(len(classes), ncols, r * ncols + col, projection="3d")
                hit = np.nonzero((s.classes == c) & (s.seeds == sd))[0]
                if hit.size:
                    i = hit[0]
                    _scatter(ax, s.points[i], lim)
                    mark = "" if s.success[i] else " (fail)"
                    ax.set_title(f"{s.class_name(c)}\n{labels[si]} s{sd}{mark}", fontsize=7)
                else:
                    ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.4 / fig.get_figheight(), wspace=0, hspace=0.15)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def sanity_curves(results: list, path) -> None:
    """The randomization sanity check: similarity to the trained model's explanations per stage
    (Chamfer, lower = more different is up; Spearman), one line per method for the cascading
    variant, crosses for the independent one, dashed lines at each method's threshold."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, r in enumerate(results):
        color = f"C{i}"
        for ax, key, thr_key in ((axes[0], "chamfer_mean", "chamfer"), (axes[1], "spearman_mean", "spearman")):
            base = 0.0 if key == "chamfer_mean" else 1.0  # the trained model against itself
            for variant, style in (("cascading", dict(marker="o", ls="-")), ("independent", dict(marker="x", ls=""))):
                st = [s for s in r["stages"] if s["variant"] == variant]
                if not st:
                    continue
                xs = np.arange(len(st) + 1) if variant == "cascading" else np.arange(1, len(st) + 1)
                ys = ([base] if variant == "cascading" else []) + [s[key] for s in st]
                ax.plot(xs, ys, color=color, label=f"{r['method']} {variant}", **style)
            ax.axhline(r["threshold"][thr_key], color=color, ls="--", lw=0.8)
    names = ["trained"] + [s["stage"] for s in results[0]["stages"] if s["variant"] == "cascading"] if results else []
    for ax, title in ((axes[0], "Chamfer to the trained model's explanation"),
                      (axes[1], "Spearman of evaluator features")):
        ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("randomized down to (cascading) / only (independent)", fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle("Model-parameter randomization; dashed: seed-to-seed threshold", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
