"""The HTML viewer of an explanations store: a self-contained page, one job shown at a time,
names escaped, clear errors; and the page in a real headless Chromium."""
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from flowam_fast.am.explanations import Explanations
from flowam_fast.am.viewer import figure, write_html

#: A class name that would run script if it reached the page as markup: it closes the page's
#: <title> and sets the title, which the browser test reads back.
HOSTILE = "</title><img src=x onerror=document.title='pwned'>"
HOSTILE_TEXT = "&lt;/title&gt;&lt;img src=x onerror=document.title='pwned'&gt;"


def make_store(num_classes=3, num_seeds=2, n=48, names=None, method="flowam", seed=0):
    """Jobs in shuffled order (the viewer sorts them), one failure: job (class 1, seed 0)."""
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(num_classes), num_seeds)
    seeds = np.tile(np.arange(num_seeds), num_classes)
    logits = rng.normal(size=(len(classes), num_classes)).astype(np.float32)
    logits[np.arange(len(classes)), classes] += 5.0
    logits[(classes == 1) & (seeds == 0), 0] += 20.0
    # Each cloud is offset by its job so a test can tell which one a trace holds.
    points = (rng.normal(size=(len(classes), n, 3)) * 0.3 + np.arange(len(classes))[:, None, None] * 0.1)
    order = rng.permutation(len(classes))
    names = [f"shape{c}" for c in range(num_classes)] if names is None else names
    return Explanations(points[order].astype(np.float32), classes[order].astype(np.int64),
                        seeds[order].astype(np.int64), logits[order], method, "{}", '{"class": "TinyNet"}', names)


def make_refs(classes, m=80, seed=1):
    rng = np.random.default_rng(seed)
    return {c: (rng.normal(size=(m, 3)) * 0.4).astype(np.float32) for c in classes}


def page_figure(text):
    """(data, layout) of the figure embedded in a written page."""
    start = text.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    decoder, values, pos = json.JSONDecoder(), [], start
    for _ in range(3):  # the div id, the data, the layout
        while text[pos] in " \n\t,":
            pos += 1
        value, pos = decoder.raw_decode(text, pos)
        values.append(value)
    return values[1], values[2]


def decode(array):
    """A trace's coordinates: plotly writes numpy arrays as base64 typed arrays."""
    if isinstance(array, dict):
        dtype = {"f4": np.float32, "f8": np.float64}[array["dtype"]]
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=dtype)
    return np.asarray(array)


def test_page_is_self_contained_and_shows_every_job(tmp_path):
    e = make_store()
    refs = make_refs([0, 2])  # class 1 has no real sample
    path = e.to_html(tmp_path / "view.html", references=refs, title="my view")
    assert path == tmp_path / "view.html" and os.listdir(tmp_path) == ["view.html"]  # no temporary left
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link)\b[^>]*\b(src|href)=", text)  # nothing fetched: no network needed
    assert get_plotlyjs() in text
    assert "<title>my view</title>" in text

    data, layout = page_figure(text)
    s = e.sorted()
    jobs = [t for t in data if t["scene"] == "scene"]
    real = [t for t in data if t["scene"] == "scene2"]
    assert len(jobs) == len(e) == 6 and len(real) == 2
    assert data[:len(jobs)] == jobs  # jobs first, in (class, seed) order, then the references
    for i, trace in enumerate(jobs):
        xyz = np.stack([decode(trace[k]) for k in "xyz"], 1)
        np.testing.assert_array_equal(xyz, s.points[i])
    np.testing.assert_array_equal(decode(real[1]["x"]), refs[2][:, 0])

    steps = layout["sliders"][0]["steps"]
    assert len(steps) == len(e)
    for i, step in enumerate(steps):
        c, seed = int(s.classes[i]), int(s.seeds[i])
        shown = [k for k, v in enumerate(step["args"][0]["visible"]) if v]
        assert shown == [i] + ([len(e) + [0, 2].index(c)] if c in refs else [])
        assert step["label"] == f"shape{c} · s{seed}"
        left, right = (a["text"] for a in step["args"][1]["annotations"])
        logit = float(s.logits[i, c])
        assert f"<b>shape{c}</b> (class {c}) · seed {seed}" in left and f"target logit {logit:.3f}" in left
        assert ("argmax = target ✓" in left) == bool(s.success[i])
        assert right == (f"<b>shape{c}</b><br>real sample" if c in refs else f"no real sample of shape{c}<br> ")
    assert "argmax = shape0 ✗" in steps[2]["args"][1]["annotations"][0]["text"]  # class 1, seed 0
    # The class menu jumps to each class's first seed and moves the slider there.
    buttons = layout["updatemenus"][0]["buttons"]
    assert [b["label"] for b in buttons] == ["shape0", "shape1", "shape2"]
    assert [b["args"][1]["sliders[0].active"] for b in buttons] == [0, 2, 4]
    assert [b["args"][0] for b in buttons] == [steps[i]["args"][0] for i in (0, 2, 4)]

    # One cube for every axis of both scenes, holding every cloud: shapes keep their proportions.
    ranges = [tuple(layout[sc][f"{a}axis"]["range"]) for sc in ("scene", "scene2") for a in "xyz"]
    assert len({r[1] - r[0] for r in ranges}) == 1
    assert layout["scene"]["aspectmode"] == layout["scene2"]["aspectmode"] == "cube"
    everything = np.concatenate([s.points.reshape(-1, 3), *refs.values()])
    for a, r in zip("xyz", ranges[:3]):
        col = everything[:, "xyz".index(a)]
        assert r[0] <= col.min() and col.max() <= r[1]


def test_without_references_one_scene(tmp_path):
    e = make_store(num_classes=2, num_seeds=1)
    text = write_html(e, tmp_path / "v.html").read_text(encoding="utf-8")
    data, layout = page_figure(text)
    assert [t["scene"] for t in data] == ["scene", "scene"] and "scene2" not in layout
    assert len(layout["annotations"]) == 1 and layout["scene"]["domain"]["x"] == [0.0, 1.0]
    assert "<title>flowam explanations</title>" in text


def test_names_method_and_model_are_escaped(tmp_path):
    e = make_store(names=[HOSTILE, "<b>bold</b> & co", "ok"], method="<i>am</i>")
    e.model = '<a href="javascript:alert(1)">m</a>'
    text = e.to_html(tmp_path / "v.html", references=make_refs([0, 1, 2]), title=HOSTILE).read_text(encoding="utf-8")
    ours = text.replace(get_plotlyjs(), "")  # plotly.js itself holds markup of its own
    for raw in ("<img src=x onerror=", "<b>bold", "<i>am", "<a href="):
        assert raw not in ours
    assert f"<title>{HOSTILE_TEXT}</title>" in text
    _, layout = page_figure(text)
    assert layout["title"]["text"] == HOSTILE_TEXT
    assert layout["title"]["subtitle"]["text"] == 'model: &lt;a href="javascript:alert(1)"&gt;m&lt;/a&gt;'
    left = layout["annotations"][0]["text"]
    assert left.startswith(f"<b>{HOSTILE_TEXT}</b> (class 0)") and "&lt;i&gt;am&lt;/i&gt;: target logit" in left
    menu = [b["label"] for b in layout["updatemenus"][0]["buttons"]]
    assert menu == [HOSTILE_TEXT, "&lt;b&gt;bold&lt;/b&gt; &amp; co", "ok"]
    assert layout["sliders"][0]["steps"][0]["label"] == f"{HOSTILE_TEXT} · s0"


def test_bad_input_is_refused_clearly(tmp_path):
    e = make_store()
    with pytest.raises(ValueError, match="store is empty"):
        write_html(e.select(classes=[]), tmp_path / "v.html")
    with pytest.raises(FileNotFoundError, match="does not exist; create it"):
        e.to_html(tmp_path / "missing" / "v.html")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match=r"references\[1\] must be an \(M, 3\) array .* got shape \(80, 2\)"):
        e.to_html(tmp_path / "v.html", references={0: make_refs([0])[0], 1: np.zeros((80, 2))})
    with pytest.raises(ValueError, match=r"references\[0\] must be .* got shape \(0, 3\)"):
        e.to_html(tmp_path / "v.html", references={0: np.zeros((0, 3))})
    with pytest.raises(ValueError, match="class 7 is out of range for a model of 3 classes"):
        e.to_html(tmp_path / "v.html", references=make_refs([7]))
    with pytest.raises(ValueError, match="references must be a dict"):
        e.to_html(tmp_path / "v.html", references=[np.zeros((5, 3))])
    bad = make_store()
    bad.logits = bad.logits[:, :2]
    with pytest.raises(ValueError, match="inconsistent shapes"):
        figure(bad)
    assert os.listdir(tmp_path) == []


# --- The page in a real browser -------------------------------------------------------------

#: Put first in a copy of the page: records console.error calls, uncaught errors and rejected
#: promises on <html data-errors>, then drives the page as a user would, every slider step and
#: class menu entry, and a turn of the left camera, which the right scene must follow.
PROBE = """<script>
(function () {
  var errors = [];
  function note(msg) {
    errors.push(String(msg));
    document.documentElement.setAttribute('data-errors', JSON.stringify(errors));
  }
  var consoleError = console.error;
  console.error = function () {
    note([].slice.call(arguments).join(' '));
    return consoleError.apply(console, arguments);
  };
  window.addEventListener('error', function (e) { note('uncaught: ' + e.message); });
  window.addEventListener('unhandledrejection', function (e) { note('unhandled rejection: ' + e.reason); });
  window.addEventListener('load', async function () {
    var gd = document.querySelector('.plotly-graph-div');
    var commands = gd.layout.sliders[0].steps.concat(gd.layout.updatemenus[0].buttons);
    for (var i = 0; i < commands.length; i++) await Plotly.update(gd, commands[i].args[0], commands[i].args[1]);
    await Plotly.update(gd, commands[0].args[0], commands[0].args[1]);
    await Plotly.relayout(gd, {'scene.camera.eye': {x: 0.3, y: 2.2, z: 0.4}});
    await Plotly.relayout(gd, {'scene.camera': gd.layout.scene.camera});
    document.documentElement.setAttribute('data-driven', String(commands.length));
    document.documentElement.setAttribute('data-camera2', JSON.stringify(gd.layout.scene2.camera.eye));
  });
})();
</script>"""


def run_chromium(chromium, url, tmp_path, timeout=60):
    """(DOM after load, stderr, screenshot path) of `url` in a headless Chromium with software
    WebGL; the browser and its helpers are killed if it runs past `timeout`."""
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
           "--use-angle=swiftshader", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1200,800", "--virtual-time-budget=8000", "--enable-logging=stderr", "--v=0",
           f"--screenshot={shot}", "--dump-dom", url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish {url} within {timeout} s")
    finally:
        with contextlib.suppress(ProcessLookupError):  # helpers that outlived the browser
            os.killpg(proc.pid, signal.SIGKILL)
    return out, err, shot


def viridis_pixels(png):
    """Per half of the screenshot, the pixels coloured like the points (viridis): zero where
    WebGL drew nothing, whatever the page's text and axes."""
    from matplotlib import colormaps
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(np.int32)
    palette = (colormaps["viridis"](np.linspace(0, 1, 64))[:, :3] * 255).astype(np.int32)
    # Distances per distinct colour, not per pixel: a screenshot has a few thousand.
    packed, which = np.unique(rgb @ np.array([65536, 256, 1]), return_inverse=True)
    colours = np.stack([packed >> 16, (packed >> 8) & 255, packed & 255], 1)
    near = (np.abs(colours[:, None, :] - palette).sum(-1).min(-1) < 30)[which].reshape(rgb.shape[:2])
    half = rgb.shape[1] // 2
    return int(near[:, :half].sum()), int(near[:, half:].sum())


def test_page_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not found: apt-get install chromium")
    e = make_store(num_classes=3, num_seeds=2, n=256, names=[HOSTILE, "shape1", "shape2"], method="<b>am</b>")
    page = e.to_html(tmp_path / "view.html", references=make_refs([0, 1, 2], m=256), title=HOSTILE)
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    dom, err, shot = run_chromium(chromium, probed.as_uri(), tmp_path)

    html_tag = re.search(r"<html[^>]*>", dom).group(0)
    assert "data-errors" not in html_tag, html_tag
    assert not re.search(r"CONSOLE.*Uncaught", err), err
    assert 'data-driven="9"' in html_tag  # 6 slider steps and 3 menu entries ran
    assert json.loads(re.search(r'data-camera2="([^"]*)"', html_tag).group(1).replace("&quot;", '"')) == \
        {"x": 0.3, "y": 2.2, "z": 0.4}
    # The payload never ran and the name shows as its characters, in the title and in the
    # figure's own text (scripts aside, where the figure's data holds the same characters).
    assert f"<title>{HOSTILE_TEXT}</title>" in dom
    shown = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)
    assert "<img" not in shown
    labels = re.findall(r'<text class="annotation-text".*?</text>', shown, flags=re.S)
    assert len(labels) == 2 and HOSTILE_TEXT in labels[0] and HOSTILE_TEXT in labels[1]
    assert "&lt;b&gt;am&lt;/b&gt;: target logit" in labels[0]  # the method as text, not bold markup
    left, right = viridis_pixels(shot)
    assert left > 300 and right > 300, (left, right)
