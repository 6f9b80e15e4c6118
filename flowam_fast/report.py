"""Per-method and per-class metric tables, as JSON and Markdown."""
from __future__ import annotations

import json

import numpy as np

from .atomic import atomic_path
from .metrics import chamfer_to_class


def method_metrics(expl, refs: dict) -> dict:
    """Success rate and Chamfer distance to real samples of the target class, overall and per class."""
    cd = chamfer_to_class(expl.points, expl.classes, refs)
    ok = expl.success
    per_class = {}
    for c in np.unique(expl.classes):
        m = expl.classes == c
        per_class[expl.class_name(int(c))] = {"success": float(ok[m].mean()), "chamfer": float(cd[m].mean()),
                                              "jobs": int(m.sum())}
    return {"method": expl.method, "jobs": len(expl), "success": float(ok.mean()), "chamfer": float(cd.mean()),
            "per_class": per_class}


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))


def markdown_tables(results: list) -> str:
    """A table of methods, then a per-class table with one success/Chamfer column pair per method."""
    lines = ["| method | jobs | success | Chamfer |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['jobs']} | {r['success']:.1%} | {r['chamfer']:.4f} |")
    classes = list(results[0]["per_class"]) if results else []
    head = "| class | " + " | ".join(f"{r['method']} success | {r['method']} Chamfer" for r in results) + " |"
    lines += ["", head, "|---|" + "---|---|" * len(results)]
    for c in classes:
        cells = []
        for r in results:
            pc = r["per_class"].get(c)
            cells += [f"{pc['success']:.0%}", f"{pc['chamfer']:.4f}"] if pc else ["", ""]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
