"""The (class x seed) grid of a run: class and seed lists as users write them ("all",
"0,3,chair", "0-9"), resolved against a dataset's class names."""
from __future__ import annotations


def parse_classes(text: str, class_names, num_classes: int) -> list:
    """Resolve a class list as users write it: "all", or a comma list of indices and class names.

    Args:
        text: E.g. "all" or "0,3,chair".
        class_names: Names of the classes, in index order (may be empty).
        num_classes: The number of classes.

    Returns:
        The class indices, in the order written.

    Raises:
        ValueError: An unknown name, an index out of range, or no class at all.
    """
    if text.strip() == "all":
        return list(range(num_classes))
    out = resolve_classes([t.strip() for t in text.split(",") if t.strip()], class_names, num_classes)
    if not out:
        raise ValueError("no classes given")
    return out


def parse_targets(text: str, kind: str, class_names, num_targets: int) -> list:
    """Resolve a target list as users write it: classes as `parse_classes` reads them, or for
    channel targets "all" or channel indices and ranges ("0-7,12"), which the engine checks
    against the layer (`AM.run`).

    Args:
        text: The list as written.
        kind: "class" or "channel" (`AM.target_kind`).
        class_names: Names of the classes (class targets only).
        num_targets: The number of classes, or the layer's channels.

    Raises:
        ValueError: An unknown class, or no target at all.
    """
    if kind == "class":
        return parse_classes(text, class_names, num_targets)
    out = list(range(num_targets)) if text.strip() == "all" else parse_seeds(text)
    if not out:
        raise ValueError("no channels given")
    return out


def resolve_classes(classes, class_names, num_classes: int) -> list:
    """Class indices of targets given by index or by name, as Python callers and the command
    line give them.

    Args:
        classes: Class indices (ints, or digit strings) and class names, e.g. `[0, "cube"]`.
        class_names: Names of the classes, in index order (may be empty).
        num_classes: The number of classes.

    Returns:
        The class indices, in the order given.

    Raises:
        ValueError: An unknown name (the message lists the known ones) or an index out of range.
        TypeError: A target that is neither an integer nor a string.
    """
    names = list(class_names)
    out = []
    for c in classes:
        if isinstance(c, str):
            tok = c.strip()
            if tok.lstrip("-").isdigit():
                c = int(tok)
            elif tok in names:
                c = names.index(tok)
            else:
                known = ", ".join(names) if names else f"none (the flows have no class names): use indices 0..{num_classes - 1}"
                raise ValueError(f"unknown class {tok!r}; known classes: {known}")
        elif isinstance(c, bool) or not hasattr(c, "__index__"):
            raise TypeError(f"a target class is an index or a class name, got {c!r}")
        c = int(c)
        if not 0 <= c < num_classes:
            raise ValueError(f"unknown class {c}: classes are 0..{num_classes - 1}")
        out.append(c)
    return out


def parse_seeds(text: str) -> list:
    """Resolve a seed list as users write it: ranges, single seeds or a mix.

    Args:
        text: E.g. "0-9", "0,3,7" or "0-4,9"; a range includes both ends.

    Returns:
        The seeds, in the order written.

    Raises:
        ValueError: An empty range, a token that is not an integer, or no seed at all.
    """
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if "-" in tok[1:]:
            a, b = tok.split("-", 1)
            lo, hi = int(a), int(b)
            if hi < lo:
                raise ValueError(f"empty seed range {tok!r}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(tok))
    if not out:
        raise ValueError("no seeds given")
    return out
