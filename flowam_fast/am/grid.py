"""The (class x seed) grid of a run: class and seed lists as users write them ("all",
"0,3,chair", "0-9"), resolved against a dataset's class names."""
from __future__ import annotations


def parse_classes(text: str, class_names, num_classes: int) -> list:
    """"all", or a comma list of indices and class names."""
    if text.strip() == "all":
        return list(range(num_classes))
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if tok.lstrip("-").isdigit():
            c = int(tok)
        elif tok in class_names:
            c = list(class_names).index(tok)
        else:
            raise ValueError(f"unknown class {tok!r}; known: {', '.join(class_names) or f'0..{num_classes - 1}'}")
        if not 0 <= c < num_classes:
            raise ValueError(f"unknown class {c}: classes are 0..{num_classes - 1}")
        out.append(c)
    if not out:
        raise ValueError("no classes given")
    return out


def parse_seeds(text: str) -> list:
    """"0-9", "0,3,7" or a mix."""
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
