"""An interactive viewer of an explanations store: one self-contained HTML page (plotly, its
JavaScript inline) to rotate each explanation beside a real sample of its class.

The page holds one figure with two 3-D scenes, the explanation and the real sample, and a
slider over the store's (class, seed) jobs plus a class menu that jump between them. Every job
is a trace of its own and only the selected one is visible: a browser keeps about 16 WebGL
contexts alive, so a scene per job would break on a store of a few dozen jobs, while two scenes
serve a store of any size.

Names come from data files (shape_names.txt, the store's method and model), so every string
that goes into the page is escaped: plotly draws titles, annotations and labels from an HTML
subset, and a class named like a tag must show as text, never run as markup.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from ..atomic import atomic_path

#: The data's vertical axis (ModelNet40 and the procedural shapes are y-up).
UP = {"x": 0, "y": 1, "z": 0}
EYE = {"x": 1.6, "y": 0.9, "z": 1.6}
#: Where each scene sits in the figure (paper coordinates); the top leaves room for the labels.
SCENE_TOP = 0.86
#: Keeps the two scenes' cameras together: rotating one turns the other the same way when the
#: drag ends. `{plot_id}` is filled in by plotly.
_SYNC_CAMERAS = """
var gd = document.getElementById('{plot_id}');
var syncing = false;
gd.on('plotly_relayout', function (ev) {
  if (syncing) return;
  var pairs = [['scene.camera', 'scene2.camera'], ['scene2.camera', 'scene.camera']];
  for (var i = 0; i < pairs.length; i++) {
    var cam = ev[pairs[i][0]];
    if (cam && gd._fullLayout[pairs[i][1].split('.')[0]]) {
      syncing = true;
      var update = {};
      update[pairs[i][1]] = cam;
      Plotly.relayout(gd, update).finally(function () { syncing = false; });
      return;
    }
  }
});
"""


def _text(s) -> str:
    """A user-provided string as page text: shown as its characters, never parsed as markup."""
    # Plotly's pseudo-HTML decodes &lt; &gt; &amp; and numeric entities but shows &quot; as
    # such, and a quote outside a tag is inert text (in the figure and in the <title>).
    return html.escape(str(s), quote=False)


def check_references(references, num_classes: int | None = None) -> dict:
    """Check the real samples shown beside the explanations.

    Args:
        references: {class index: (M, 3) array}, as `sheets.class_examples` returns.
        num_classes: If given, class indices must lie in [0, num_classes).

    Returns:
        The references as {class index: (M, 3) float32 array}.

    Raises:
        ValueError: `references` is not a mapping, or an entry is not a non-empty, finite
            (M, 3) cloud of a valid class index.
    """
    if not hasattr(references, "items"):
        raise ValueError(f"references must be a dict {{class index: (M, 3) points}} (as "
                         f"sheets.class_examples(points, labels) returns), got {type(references).__name__}")
    out = {}
    for c, pts in references.items():
        try:
            c = int(c)
        except (TypeError, ValueError):
            raise ValueError(f"references: class key {c!r} is not a class index") from None
        if num_classes is not None and not 0 <= c < num_classes:
            raise ValueError(f"references: class {c} is out of range for a model of {num_classes} classes")
        pts = np.asarray(pts, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
            raise ValueError(f"references[{c}] must be an (M, 3) array of points with M > 0, got shape "
                             f"{pts.shape}; pass one cloud per class, e.g. "
                             f"sheets.class_examples(points, labels)")
        if not np.isfinite(pts).all():
            raise ValueError(f"references[{c}] holds non-finite coordinates")
        out[c] = pts
    return out


def _check_store(e) -> None:
    j = len(e)
    if j == 0:
        raise ValueError("the explanations store is empty: there is nothing to view; run the explanations "
                         "first (FlowAM.run or `flowam-fast explain`) and view the store they write")
    if e.points.ndim != 3 or e.points.shape[0] != j or e.points.shape[2] != 3 or e.seeds.shape != (j,) \
            or e.logits.ndim != 2 or e.logits.shape[0] != j or e.logits.shape[1] <= int(e.classes.max()) \
            or int(e.classes.min()) < 0:
        raise ValueError(f"the explanations have inconsistent shapes: points {e.points.shape} (want (J, N, 3)), "
                         f"classes {e.classes.shape} in [{int(e.classes.min())}, {int(e.classes.max())}], "
                         f"seeds {e.seeds.shape}, logits {e.logits.shape} (want (J, K) with every class < K)")


def _cube(clouds) -> dict:
    """One axis range for x, y and z that holds every cloud: with aspectmode "cube", shapes keep
    their proportions and both scenes draw at one scale. Non-finite points (a diverged
    explanation) are left out of the bounds; plotly leaves them undrawn."""
    pts = np.concatenate([c.reshape(-1, 3) for c in clouds])
    pts = pts[np.isfinite(pts).all(1)]
    if not len(pts):
        pts = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    lo, hi = pts.min(0), pts.max(0)
    mid, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6) * 1.05
    return {k: [float(mid[i] - half), float(mid[i] + half)] for i, k in enumerate("xyz")}


def _scene(domain_x, cube: dict) -> dict:
    axes = {f"{k}axis": {"range": cube[k], "title": {"text": k}, "showspikes": False} for k in "xyz"}
    return {"domain": {"x": domain_x, "y": [0.0, SCENE_TOP]}, "aspectmode": "cube",
            "camera": {"up": UP, "eye": EYE}, **axes}


def _cloud(points, scene: str, visible: bool, cmin: float, cmax: float, values=None, colorscale: str = "Viridis",
           hover=None) -> dict:
    n = len(points)
    # Denser clouds get smaller markers so a shape does not turn into a blob.
    size = max(1.0, 3.0 * min(1.0, (1024 / max(n, 1)) ** 0.5))
    extra = {} if hover is None else {"customdata": hover}
    return {"type": "scatter3d", "mode": "markers", "scene": scene, "visible": visible, "showlegend": False,
            "x": points[:, 0], "y": points[:, 1], "z": points[:, 2],
            # Coloured by height (a depth cue that also reads the same in both scenes) unless
            # per-point values are given.
            "marker": {"size": size, "color": points[:, 1] if values is None else values, "colorscale": colorscale,
                       "cmin": cmin, "cmax": cmax, "showscale": False},
            "hovertemplate": "x %{x:.3f}<br>y %{y:.3f}<br>z %{z:.3f}"
                             + ("" if hover is None else "<br>value %{customdata:.4g}") + "<extra></extra>", **extra}


def _labels(e, i: int, has_ref: bool, two_scenes: bool) -> list:
    """The annotations above the scenes for job i: target, seed, target logit and argmax (for a
    channel target, the class the model predicts)."""
    c, s = int(e.classes[i]), int(e.seeds[i])
    name = _text(e.class_name(c))
    top = int(e.logits[i].argmax())
    if e.target_layer:
        predicted = e.class_names[top] if top < len(e.class_names) else f"class {top}"
        left = (f"<b>{name}</b> of {_text(e.target_layer)} · seed {s}<br>"
                f"{_text(e.method)}: predicted class {_text(predicted)}")
    else:
        verdict = "argmax = target ✓" if top == c else f"argmax = {_text(e.class_name(top))} ✗"
        left = (f"<b>{name}</b> (class {c}) · seed {s}<br>"
                f"{_text(e.method)}: target logit {float(e.logits[i, c]):.3f} · {verdict}")
    notes = [{"text": left, "x": 0.245 if two_scenes else 0.5}]
    if two_scenes:
        right = f"<b>{name}</b><br>real sample" if has_ref else f"no real sample of {name}<br> "
        notes.append({"text": right, "x": 0.755})
    return [dict(n, xref="paper", yref="paper", y=SCENE_TOP + 0.01, xanchor="center", yanchor="bottom",
                 showarrow=False, font={"size": 14}) for n in notes]


def figure(explanations, references=None, title: str | None = None):
    """The viewer's plotly figure: the explanation (and the real sample) of one job at a time.

    Args:
        explanations: An `Explanations` store with at least one job.
        references: Optional {class index: (M, 3) real cloud}; adds a second scene.
        title: The figure's title; defaults to "<method> explanations".

    Returns:
        A `plotly.graph_objects.Figure` whose traces are the jobs (in class, seed order) and
        then the references, with a slider over the jobs.

    Raises:
        ValueError: An empty or inconsistent store, or malformed references.
    """
    import plotly.graph_objects as go

    _check_store(explanations)
    refs = None if references is None else check_references(references, explanations.logits.shape[1])
    e = explanations.sorted()
    two = refs is not None
    ref_classes = sorted(set(refs) & set(e.classes.tolist())) if two else []
    clouds = list(e.points) + [refs[c] for c in ref_classes]
    cube = _cube(clouds)
    cmin, cmax = cube["y"]
    traces = [_cloud(e.points[i], "scene", i == 0, cmin, cmax) for i in range(len(e))]
    traces += [_cloud(refs[c], "scene2", c == int(e.classes[0]), cmin, cmax) for c in ref_classes]
    ref_trace = {c: len(e) + k for k, c in enumerate(ref_classes)}

    classes = sorted(set(e.classes.tolist()))
    first_job = {c: int(np.argmax(e.classes == c)) for c in classes}

    def show(i: int, **also) -> list:
        """`update` arguments that show job i (and its class's reference), plus layout `also`."""
        c = int(e.classes[i])
        visible = [k == i or k == ref_trace.get(c) for k in range(len(traces))]
        return [{"visible": visible}, {"annotations": _labels(e, i, c in ref_trace, two), **also}]

    steps = [{"method": "update", "label": f"{_text(e.class_name(int(e.classes[i])))} · s{int(e.seeds[i])}",
              "args": show(i, **{"updatemenus[0].active": classes.index(int(e.classes[i]))})}
             for i in range(len(e))]
    slider = {"active": 0, "steps": steps, "x": 0.05, "len": 0.9, "y": 0.0, "yanchor": "top",
              "pad": {"t": 10, "b": 10},
              # Plotly labels every k-th tick so that labels never overlap; the current job's
              # label above the slider names the one shown.
              "currentvalue": {"prefix": "job: ", "font": {"size": 14}}, "font": {"size": 10}}
    menu = {"type": "dropdown", "active": 0, "direction": "down", "x": 0.0, "xanchor": "left", "y": 1.0,
            "yanchor": "top", "showactive": True,
            "buttons": [{"method": "update", "label": _text(e.class_name(c)),
                         "args": show(first_job[c], **{"sliders[0].active": first_job[c]})} for c in classes]}
    heading = _text(title if title is not None else f"{e.method} explanations")
    layout = {
        "title": {"text": heading, "x": 0.5, "xanchor": "center",
                  "subtitle": {"text": f"model: {_text(e.model)}"}},
        "margin": {"l": 10, "r": 10, "t": 90, "b": 10},
        "scene": _scene([0.0, 0.49] if two else [0.0, 1.0], cube),
        "annotations": _labels(e, 0, int(e.classes[0]) in ref_trace, two),
        "sliders": [slider], "updatemenus": [menu], "paper_bgcolor": "white",
    }
    if two:
        layout["scene2"] = _scene([0.51, 1.0], cube)
    return go.Figure(data=traces, layout=layout)


def write_html(explanations, path, references=None, title: str | None = None) -> Path:
    """Write the viewer of `explanations` as one self-contained HTML page (no network needed).

    Args:
        explanations: An `Explanations` store with at least one job.
        path: The .html file to write (atomically); its directory must exist.
        references: Optional {class index: (M, 3) real cloud}, e.g.
            `sheets.class_examples(points, labels)`, shown beside each explanation.
        title: The page's title; defaults to "<method> explanations".

    Returns:
        The path written.

    Raises:
        FileNotFoundError: The directory of `path` does not exist.
        ValueError: An empty or inconsistent store, or malformed references.
    """
    _check_directory(path)
    fig = figure(explanations, references, title)
    return _write_page(fig, path, title if title is not None else f"{explanations.method} explanations",
                       synced=references is not None)


def _check_directory(path) -> None:
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist; create it "
                                f"first or choose another path")


def _write_page(fig, path, title: str, synced: bool) -> Path:
    """`fig` as one self-contained page at `path` (atomically); synced: the scenes' cameras turn together."""
    import plotly.io as pio

    path = Path(path)
    # The figure fills the window; plotly.js goes inline so the page opens offline.
    div = pio.to_html(fig, include_plotlyjs=True, full_html=False, default_height="100vh",
                      config={"responsive": True, "displaylogo": False},
                      post_script=_SYNC_CAMERAS if synced else None)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_text(title)}</title>\n'
            f"<style>body {{ margin: 0; }}</style>\n</head>\n<body>\n{div}\n</body>\n</html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def values_figure(points, values: dict, labels, title: str, hover: dict | None = None):
    """Clouds coloured by per-point values: one scene per set of values, side by side, and a
    slider over the clouds (only the selected cloud's traces are visible, as in `figure`).

    Args:
        points: Clouds (C, N, 3).
        values: {name: (C, N)} per-point values, each drawn in its own scene on a colour
            scale over [0, 1] (normalize them first, e.g. to ranks).
        labels: One label per cloud, for the slider and the annotation.
        title: The figure's title.
        hover: {name: (C, N)} values shown on hovering over a point (e.g. the raw scores),
            or None.

    Returns:
        A `plotly.graph_objects.Figure`.

    Raises:
        ValueError: No clouds, no value sets, or values of another shape than the clouds'.
    """
    import plotly.graph_objects as go

    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[2] != 3 or not len(points) or not values:
        raise ValueError(f"values_figure needs clouds (C, N, 3) with C >= 1 and at least one set of values, got "
                         f"{points.shape} and {len(values)} sets")
    for name, v in values.items():
        if np.shape(v) != points.shape[:2]:
            raise ValueError(f"values {name!r} must be (C, N) = {points.shape[:2]}, got {np.shape(v)}")
    names, count = list(values), len(points)
    cube = _cube(list(points))
    width = 1.0 / len(names)
    traces = [_cloud(points[c], "scene" if k == 0 else f"scene{k + 1}", c == 0, 0.0, 1.0,
                     values=np.asarray(values[name][c], dtype=np.float64), colorscale="Inferno",
                     hover=None if hover is None else np.asarray(hover[name][c], dtype=np.float64))
              for c in range(count) for k, name in enumerate(names)]

    def notes(c: int) -> list:
        return [dict(text=f"<b>{_text(name)}</b><br>{_text(labels[c])}", x=(k + 0.5) * width, xref="paper",
                     yref="paper", y=SCENE_TOP + 0.01, xanchor="center", yanchor="bottom", showarrow=False,
                     font={"size": 13}) for k, name in enumerate(names)]

    steps = [{"method": "update", "label": _text(labels[c]),
              "args": [{"visible": [i // len(names) == c for i in range(len(traces))]}, {"annotations": notes(c)}]}
             for c in range(count)]
    layout = {"title": {"text": _text(title), "x": 0.5, "xanchor": "center"},
              "margin": {"l": 10, "r": 10, "t": 90, "b": 10}, "annotations": notes(0), "paper_bgcolor": "white",
              "sliders": [{"active": 0, "steps": steps, "x": 0.05, "len": 0.9, "y": 0.0, "yanchor": "top",
                           "pad": {"t": 10, "b": 10}, "currentvalue": {"prefix": "cloud: ", "font": {"size": 14}},
                           "font": {"size": 10}}]}
    for k in range(len(names)):
        layout["scene" if k == 0 else f"scene{k + 1}"] = _scene([k * width + 0.005, (k + 1) * width - 0.005], cube)
    return go.Figure(data=traces, layout=layout)


def write_values_html(points, values: dict, path, labels, title: str, hover: dict | None = None) -> Path:
    """Write `values_figure` as one self-contained HTML page (no network needed).

    Args:
        points: Clouds (C, N, 3).
        values: {name: (C, N)} per-point values in [0, 1], one scene each.
        path: The .html file to write (atomically); its directory must exist.
        labels: One label per cloud.
        title: The page's title.
        hover: {name: (C, N)} values shown on hovering over a point, or None.

    Returns:
        The path written.

    Raises:
        FileNotFoundError: The directory of `path` does not exist.
        ValueError: See `values_figure`.
    """
    _check_directory(path)
    return _write_page(values_figure(points, values, labels, title, hover), path, title, synced=False)
