"""`flowam-fast view STORE [--html OUT.html] [--png OUT.png] [--data DIR]`: what an explanations
store holds (method, model, jobs, classes, seeds, success, points, config), and its interactive
viewer page (`Explanations.to_html`) or contact sheet (`Explanations.plot`). `explain` writes
the same views of its result through `write_views` and `class_references` here."""
from __future__ import annotations

import json
import textwrap


def add_arguments(p) -> None:
    p.add_argument("store", help="explanations store (.h5) written by `flowam-fast explain`, `demo` or `sweep`")
    p.add_argument("--html", help="write the interactive viewer page (HTML) to this file")
    p.add_argument("--png", help="write the contact sheet (PNG) to this file")
    p.add_argument("--data", help="dataset directory (ModelNet40 HDF5 layout): show a real test sample of each class "
                                  "beside the explanations in --html and --png")


def run(args) -> int:
    from ..am.explanations import Explanations

    e = Explanations.load(args.store)
    print(summary(e, args.store))
    references = class_references(args.data, e) if args.data and (args.html or args.png) else None
    for path in write_views(e, html=args.html, png=args.png, references=references):
        print(f"wrote {path}")
    return 0


def summary(e, name) -> str:
    """A few lines on the store `e` read from `name`: what a user checks before opening it."""
    from ..am.reprs import int_ranges

    classes = sorted(set(e.classes.tolist()))
    if not len(e):
        success = "empty"
    elif e.target_layer:
        success = f"targets: channels of {e.target_layer}"
    else:
        success = f"success {e.success.mean():.1%} ({int(e.success.sum())} of {len(e)})"
    rows = [
        ("method", f"{e.method} (flowam_fast {e.version or 'of unknown version'})"),
        ("model", _fields(e.model, first="class")),
        ("jobs", f"{len(e)}, {success}"),
        ("channels" if e.target_layer else "classes",
         f"{len(classes)}: " + (", ".join(map(str, classes)) if e.target_layer
                                else ", ".join(f"{c} {e.class_name(c)}" for c in classes))),
        ("seeds", int_ranges(e.seeds.tolist()) or "none"),
        ("points", f"{e.points.shape[1]} per cloud"),
        ("config", _fields(e.config)),
    ]
    wrap = textwrap.TextWrapper(width=100, initial_indent="  ", subsequent_indent=" " * 12)
    return "\n".join([f"{name}:"] + [wrap.fill(f"{key + ':':<9} {text}") for key, text in rows])


def _fields(text: str, first: str | None = None) -> str:
    """A stored JSON object (config, model description) as "key value, ..."; `first`'s value
    leads without its key."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError:
        return text
    if not isinstance(d, dict):
        return text
    lead = [str(d.pop(first))] if first in d else []
    return ", ".join(lead + [f"{k} {'none' if v == '' else v}" for k, v in sorted(d.items())])


def class_references(data_dir, e) -> dict:
    """{class: a real test cloud of it} from the dataset at `data_dir`, for the classes of the
    store `e`, at its points per cloud; refused if the dataset is not the store's."""
    from ..am.sheets import class_examples
    from ..data import ModelNet40
    from ..evaluation.report import check_same_classes

    data = ModelNet40(data_dir, "test", num_points=int(e.points.shape[1]))
    check_same_classes([e], data.classes)
    wanted = set(e.classes.tolist())
    return {c: cloud for c, cloud in class_examples(data.points, data.labels).items() if c in wanted}


def write_views(e, html=None, png=None, references=None) -> list:
    """Write the viewer page to `html` and the contact sheet to `png` (each where given);
    returns the paths written."""
    written = []
    if html:
        e.to_html(html, references=references)
        written.append(html)
    if png:
        e.plot(png, references=references)
        written.append(png)
    return written
