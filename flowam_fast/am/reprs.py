"""Pieces of the short reprs of the package's objects: long lists cut to their first items,
integer lists as ranges. A repr names the key facts on one line, never the arrays."""
from __future__ import annotations

import json


def short_list(items, limit: int = 3) -> str:
    """The first `limit` items as a list, with "..." when there are more: ['a', 'b', 'c', ...]."""
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def int_ranges(values) -> str:
    """Sorted distinct integers as runs, as seeds are written on the command line: "0-9,12"."""
    values = sorted({int(v) for v in values})
    runs = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def counted(n: int, noun: str) -> str:
    """'1 class', '12 classes'."""
    plural = noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s")
    return f"{n} {noun if n == 1 else plural}"


def model_name(description: str) -> str:
    """The class of the model that a stored model description (`describe_model`'s JSON) names;
    the description itself where it names none."""
    try:
        desc = json.loads(description)
    except (TypeError, json.JSONDecodeError):
        return str(description)
    return str(desc.get("class", description)) if isinstance(desc, dict) else str(description)
