"""Views of attributions, points coloured by score: the interactive page (`am.viewer`'s plotly
machinery, one scene per method and a slider over the clouds) and a PNG sheet (`am.sheets`'
drawing, a row per cloud and a column per method).

Scores of different methods live on different scales (and integrated gradients' have a sign),
so both views colour each cloud by its scores' ranks, from 0 (lowest) to 1 (highest; bright);
the page shows the raw score on hover.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def score_ranks(scores) -> np.ndarray:
    """Each point's score rank within its cloud, scaled to [0, 1] (ties share their mean rank;
    a cloud of equal scores is 0.5 everywhere), (C, N)."""
    scores = np.asarray(scores, dtype=np.float64)
    ranks = rankdata(scores, axis=1) - 1.0
    n = scores.shape[1]
    return ranks / (n - 1) if n > 1 else np.full_like(scores, 0.5)


def _selection(store, clouds):
    rows = np.arange(min(len(store), 6)) if clouds is None else np.asarray(clouds, dtype=np.int64)
    if not len(rows) or rows.min() < 0 or rows.max() >= len(store):
        raise ValueError(f"clouds must be positions in the store, in [0, {len(store)}), got {rows.tolist()}")
    return rows


def _label(store, i: int, class_names) -> str:
    t = int(store.targets[i])
    name = class_names[t] if class_names is not None and t < len(class_names) else f"class {t}"
    return f"cloud {int(store.indices[i])} · target {name}"


def write_html(store, path, clouds=None, class_names=None, title: str = "Attributions"):
    """Write the interactive page of a store's attributions.

    Args:
        store: An `AttributionStore`.
        path: The .html file (its directory must exist).
        clouds: Positions of the clouds to show (default: the first six).
        class_names: Names of the classes, for the labels.
        title: The page's title.

    Returns:
        The path written.

    Raises:
        ValueError: An empty selection or positions outside the store.
        FileNotFoundError: The directory of `path` does not exist.
    """
    from ..am.viewer import write_values_html

    rows = _selection(store, clouds)
    values = {m: score_ranks(store.scores[m][rows]) for m in store.methods}
    raw = {m: np.asarray(store.scores[m][rows]) for m in store.methods}
    return write_values_html(store.points[rows], values, path, [_label(store, i, class_names) for i in rows], title,
                             hover=raw)


def attribution_sheet(store, path, clouds=None, class_names=None, panel: float = 2.0, dpi: int = 90) -> None:
    """Write a PNG sheet of a store's attributions: a row per cloud, a column per method.

    Args:
        store: An `AttributionStore`.
        path: The .png file.
        clouds: Positions of the clouds to show (default: the first six).
        class_names: Names of the classes, for the titles.
        panel: The size of a panel, inches.
        dpi: Resolution.

    Raises:
        ValueError: An empty selection or positions outside the store.
    """
    import matplotlib.pyplot as plt

    from ..am.sheets import marker_size, save_figure, scatter_cloud

    rows = _selection(store, clouds)
    methods = store.methods
    size = marker_size(panel, store.points.shape[1])
    lim = float(np.abs(store.points[rows]).max()) or 1.0
    fig = plt.figure(figsize=(panel * len(methods), panel * len(rows) + 0.4))
    for r, i in enumerate(rows):
        for k, m in enumerate(methods):
            ax = fig.add_subplot(len(rows), len(methods), r * len(methods) + k + 1, projection="3d")
            scatter_cloud(ax, store.points[i], lim, size, values=score_ranks(store.scores[m][i:i + 1])[0],
                          cmap="inferno")
            ax.set_title(f"{_label(store, i, class_names)}\n{m}", fontsize=7)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.4 / fig.get_figheight(), wspace=0, hspace=0.15)
    save_figure(fig, path, dpi)
