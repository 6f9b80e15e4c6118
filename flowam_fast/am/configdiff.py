"""What differs between two settings dicts (two runs' AM configs, say), as short lines such as
`steps 20 -> 40`: how a store or a sweep made with other settings says what changed."""
from __future__ import annotations

import json


def changed_fields(old: dict, new: dict, prefix: str = "") -> list:
    """One line per key whose value differs, in key order.

    Args:
        old: the earlier settings.
        new: the settings now.
        prefix: put before each key, e.g. "option ".

    Returns:
        Lines `<prefix><key> <old value> -> <new value>` (values as repr; None where a dict
        lacks the key); empty when the dicts agree.
    """
    return [f"{prefix}{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def config_changes(old: str, new: str) -> list:
    """`changed_fields` of two JSON configs (as stores keep them).

    Args:
        old: the earlier config, a JSON object.
        new: the config now.

    Returns:
        The changed fields' lines; where either text is not a JSON object, one line with both
        texts.
    """
    try:
        a, b = json.loads(old), json.loads(new)
    except json.JSONDecodeError:
        a = b = None
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [f"config {old!r} -> {new!r}"]
    return changed_fields(a, b)
