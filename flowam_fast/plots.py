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
