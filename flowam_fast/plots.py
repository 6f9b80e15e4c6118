"""PNG figures (matplotlib, Agg backend): contact sheets of point clouds and bar charts."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_path  # noqa: E402

#: One viewpoint for every panel, so shapes compare across classes, seeds and methods.
ELEV, AZIM = 20.0, -60.0
#: Matplotlib draws a 3D box well inside its panel; this fills the panel with the cloud.
ZOOM = 1.5


def _view_depth(xyz: np.ndarray) -> np.ndarray:
    """Distance along matplotlib's viewing direction for (ELEV, AZIM), larger = nearer."""
    e, a = np.radians(ELEV), np.radians(AZIM)
    return xyz @ np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


def _scatter(ax, pts, lim, size):
    # Matplotlib's z axis is drawn vertically; the data's vertical axis is y.
    xyz = np.stack([pts[:, 0], pts[:, 2], pts[:, 1]], 1)
    depth = _view_depth(xyz)
    # Far points first and darker, so near surfaces cover far ones: a depth cue on a flat PNG.
    order = np.argsort(depth)
    ax.scatter(*xyz[order].T, s=size, c=depth[order], cmap="viridis", vmin=-lim, vmax=lim, depthshade=False,
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
                  dpi: int = 90) -> None:
    """Rows are classes, columns are seeds; several explanation sets go side by side, each
    with its own column block titled by its method (or `labels`). references: optional
    {class: (M, 3) real cloud}, drawn in a first column so each row shows what the class
    looks like."""
    sets = [s.sorted() for s in sets]
    labels = labels or [s.method for s in sets]
    classes = sorted(set(np.concatenate([s.classes for s in sets]).tolist()))
    seeds = [sorted(set(s.seeds.tolist())) for s in sets]
    lead = 1 if references else 0
    ncols = lead + sum(len(x) for x in seeds)
    # Marker area grows with the panel and shrinks for clouds denser than 1024 points.
    n = max([s.points.shape[1] for s in sets] + [1])
    size = 4.0 * (panel / 2.0) ** 2 * min(1.0, (1024 / n) ** 0.5)
    fig = plt.figure(figsize=(panel * ncols, panel * len(classes) + 0.4))
    for r, c in enumerate(classes):
        name = sets[0].class_name(c) if sets else str(c)
        if lead:
            ax = fig.add_subplot(len(classes), ncols, r * ncols + 1, projection="3d")
            if c in references:
                _scatter(ax, np.asarray(references[c]), lim, size)
                ax.set_title(f"{name}\nreal sample", fontsize=8)
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
                    _scatter(ax, s.points[i], lim, size)
                    mark = "" if s.success[i] else " (fail)"
                    ax.set_title(f"{s.class_name(c)}\n{labels[si]} s{sd}{mark}", fontsize=8)
                else:
                    ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.4 / fig.get_figheight(), wspace=0, hspace=0.12)
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
