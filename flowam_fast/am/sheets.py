"""Contact sheets of explanations (PNG, matplotlib Agg): rows are classes, columns seeds and
methods, one viewpoint for every panel."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..atomic import atomic_path  # noqa: E402

#: One viewpoint for every panel, so shapes compare across classes, seeds and methods.
ELEV, AZIM = 20.0, -60.0
#: Matplotlib draws a 3D box well inside its panel; this fills the panel with the cloud.
ZOOM = 1.5


def _view_depth(xyz: np.ndarray) -> np.ndarray:
    """Distance along matplotlib's viewing direction for (ELEV, AZIM), larger = nearer."""
    e, a = np.radians(ELEV), np.radians(AZIM)
    return xyz @ np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


def marker_size(panel: float, n: int) -> float:
    """Marker area for clouds of n points in panels `panel` inches wide: it grows with the panel
    and shrinks for clouds denser than 1024 points."""
    return 4.0 * (panel / 2.0) ** 2 * min(1.0, (1024 / max(n, 1)) ** 0.5)


def scatter_cloud(ax, pts, lim, size, values=None, cmap: str = "viridis", vrange=(0.0, 1.0)) -> None:
    """Draw cloud `pts` (M, 3) on a 3-D axis from the sheets' viewpoint, within [-lim, lim].

    Points are coloured by depth (a cue on a flat PNG), or by `values` (M,) on `cmap` over
    `vrange` where given; far points are drawn first, so near surfaces cover far ones."""
    # Matplotlib's z axis is drawn vertically; the data's vertical axis is y.
    xyz = np.stack([pts[:, 0], pts[:, 2], pts[:, 1]], 1)
    depth = _view_depth(xyz)
    order = np.argsort(depth)
    colour, (lo, hi) = (depth, (-lim, lim)) if values is None else (np.asarray(values), vrange)
    ax.scatter(*xyz[order].T, s=size, c=colour[order], cmap=cmap, vmin=lo, vmax=hi, depthshade=False,
               linewidths=0)
    ax.view_init(elev=ELEV, azim=AZIM)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_zlim(-lim, lim)
    ax.set_box_aspect((1, 1, 1), zoom=ZOOM)
    ax.set_axis_off()


def class_examples(points, labels) -> dict:
    """{class: the first cloud of that class}: the real-sample column of a contact sheet."""
    labels = np.asarray(labels)
    return {int(c): np.asarray(points[int(np.argmax(labels == c))]) for c in np.unique(labels)}


def contact_sheet(sets, path, labels=None, references=None, lim: float = 1.0, panel: float = 2.0,
                  dpi: int = 90, reference_title: str = "real sample") -> None:
    """Rows are targets (classes, or channels), columns are seeds; several explanation sets go
    side by side, each with its own column block titled by its method (or `labels`).
    references: optional {target: (M, 3) real cloud}, drawn in a first column titled
    `reference_title` so each row shows what the class looks like (or, for a channel, the
    real cloud that excites it most)."""
    sets = [s.sorted() for s in sets]
    labels = labels or [s.method for s in sets]
    classes = sorted(set(np.concatenate([s.classes for s in sets]).tolist()))
    seeds = [sorted(set(s.seeds.tolist())) for s in sets]
    lead = 1 if references else 0
    ncols = lead + sum(len(x) for x in seeds)
    size = marker_size(panel, max([s.points.shape[1] for s in sets] + [1]))
    fig = plt.figure(figsize=(panel * ncols, panel * len(classes) + 0.4))
    for r, c in enumerate(classes):
        name = sets[0].class_name(c) if sets else str(c)
        if lead:
            ax = fig.add_subplot(len(classes), ncols, r * ncols + 1, projection="3d")
            if c in references:
                scatter_cloud(ax, np.asarray(references[c]), lim, size)
                ax.set_title(f"{name}\n{reference_title}", fontsize=8)
            else:
                ax.set_axis_off()
        col = lead
        for si, s in enumerate(sets):
            for sd in seeds[si]:
                col += 1
                ax = fig.add_subplot(len(classes), ncols, r * ncols + col, projection="3d")
                hit = np.nonzero((s.classes == c) & (s.seeds == sd))[0]
                if hit.size:
                    i = hit[0]
                    scatter_cloud(ax, s.points[i], lim, size)
                    mark = "" if s.target_layer or s.success[i] else " (fail)"
                    ax.set_title(f"{s.class_name(c)}\n{labels[si]} s{sd}{mark}", fontsize=8)
                else:
                    ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.4 / fig.get_figheight(), wspace=0, hspace=0.12)
    save_figure(fig, path, dpi)


def save_figure(fig, path, dpi: int) -> None:
    """Write `fig` as a PNG atomically and free it (figures are never shown here)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
