"""DIR/sweep.json: the spec a sweep runs, the package version, each (model, method)'s settings
and input files, and each shard's state. The shard files are the truth about what is finished
(a file exists only once its shard is done); sweep.json tells a later run what the earlier one
ran with, so that a changed spec is refused instead of mixed into the old results."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .. import __version__
from ..am.config import migrated
from ..am.configdiff import changed_fields
from ..atomic import atomic_path
from .spec import DEFAULT_LOADING

FORMAT = "flowam_fast.sweep"
NAME = "sweep.json"


def read_record(out_dir) -> dict | None:
    path = Path(out_dir) / NAME
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); run with --fresh to start the sweep over") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a flowam_fast sweep record; choose another --out")
    return record


def write_record(out_dir, spec, units, shards, states: dict, stats: dict, device: str, executor: str) -> None:
    """states: Shard.key -> "done" | "reused" | "pending"; stats: Shard.key -> where and how long
    a shard of this run ran (executors.run_shard)."""
    record = {
        "format": FORMAT, "version": __version__, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "executor": executor, "device": device, "spec": spec.to_dict(),
        "units": {u.key: {**u.record(), "store": f"{u.key}.h5"} for u in units},
        "shards": [{"index": s.index, "unit": s.unit, "file": f"shards/{s.key}", "jobs": len(s.jobs),
                    "first": list(s.jobs[0]), "last": list(s.jobs[-1]), "state": states[s.key],
                    **stats.get(s.key, {})} for s in shards],
    }
    record["summary"] = {state: sum(1 for s in shards if states[s.key] == state)
                         for state in ("done", "reused", "pending")}
    # One line per shard: a sweep can have thousands.
    rows = record.pop("shards")
    text = json.dumps(record, indent=1)[:-2] + ',\n "shards": [' + ",".join(f"\n  {json.dumps(r)}" for r in rows)
    with atomic_path(Path(out_dir) / NAME) as tmp:
        tmp.write_text(text + "\n ]\n}\n")


def _diff(key: str, old: dict, new: dict, what: str) -> list:
    return [f"{key}: {line}" for line in changed_fields(old, new, what)]


def changes(old: dict, units) -> list:
    """What differs between the record of an earlier run and this run's units, as sentences;
    empty when the earlier shards are still valid. Added (model, method)s, classes and seeds
    are not changes: they are new work beside the old."""
    out = []
    version_changed = old.get("version") != __version__
    if version_changed:
        out.append(f"package version {old.get('version')} -> {__version__}")
    new = {u.key: u.record() for u in units}
    for key, o in old.get("units", {}).items():
        n = new.get(key)
        if n is None:
            out.append(f"{key}: no longer in the spec (a model or method was removed)")
            continue
        found = []
        for what in sorted(set(o["files"]) | set(n["files"])):
            a, b = o["files"].get(what), n["files"].get(what)
            if (a or {}).get("sha256") != (b or {}).get("sha256"):
                was = f" (was {a['path']})" if a and b and a["path"] != b["path"] else ""
                found.append(f"{key}: the {what} {(b or a)['path']}{was} is not the file the sweep ran with "
                             "(its contents differ)")
        # How the checkpoint loads (factory, logits, trusted); records from before these
        # settings existed loaded built-in models, DEFAULT_LOADING.
        found += _diff(key, {**DEFAULT_LOADING, **o.get("loading", {})}, {**DEFAULT_LOADING, **n["loading"]}, "")
        oc, nc = json.loads(migrated(o["config"])), json.loads(n["config"])
        found += _diff(key, oc, nc, "")
        found += _diff(key, {k: v for k, v in o["options"].items() if k not in oc},
                       {k: v for k, v in n["options"].items() if k not in nc}, "option ")
        for what in ("classes", "seeds"):
            gone = sorted(set(o[what]) - set(n[what]))
            if gone:
                found.append(f"{key}: {what} removed: {gone[:10]}{' ...' if len(gone) > 10 else ''}")
        if not found and not version_changed and o["hash"] != n["hash"]:
            found.append(f"{key}: settings hash {o['hash'][:12]} -> {n['hash'][:12]}")
        out += found
    return out
