"""Shards: a unit's jobs cut into pieces of `shard_size` jobs, each the unit of work, of retry
and of storage (docs/design.md, "Sweeps").

A shard's file, DIR/shards/<model>/<method>/<unit hash>-<jobs hash>.h5, is an explanations store
written atomically, so a file that exists is a finished shard. Its name says which settings and
which jobs it holds, and reading it back checks both, so a restarted sweep reuses exactly the
shards that are still valid and recomputes the rest. Shards are planned from the jobs that no
finished shard holds, which is what lets a sweep with added classes or seeds keep its old shards.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..am.config import AMConfig
from ..am.explanations import Explanations


@dataclass(frozen=True)
class Shard:
    unit: str   # the unit's key, "<model>/<method>"
    jobs: tuple  # ((class, seed), ...) in (class, seed) order
    name: str
    index: int = -1  # position in the sweep's shard list, in sweep.json

    @property
    def key(self) -> str:
        """Unique in a sweep (two units can share a hash when they list the same files twice)."""
        return f"{self.unit}/{self.name}"

    def path(self, out_dir) -> Path:
        return Path(out_dir) / "shards" / self.key


def jobs_digest(jobs) -> str:
    return hashlib.sha256(json.dumps([[int(c), int(s)] for c, s in jobs]).encode()).hexdigest()


def shard_name(unit, jobs) -> str:
    return f"{unit.digest[:16]}-{jobs_digest(jobs)[:12]}.h5"


def read_shard(path: Path, unit):
    """(jobs, explanations) of a shard file of `unit`, or None if it is not one (another config,
    another job list than its name says, unreadable)."""
    try:
        e = Explanations.load(path)
    except (ValueError, OSError):
        return None
    jobs = tuple(zip(e.classes.tolist(), e.seeds.tolist()))
    if not AMConfig.from_json(unit.config).matches(e.config) or path.name != shard_name(unit, jobs):
        return None
    return jobs, e


def finished_shards(out_dir, unit) -> list:
    """[(Shard, Explanations)] of the unit's valid shard files whose jobs are all wanted and no
    other accepted shard holds (two plans can overlap after a change of shard size; their
    results are the same, so either copy serves)."""
    wanted, covered, out = set(unit.jobs), set(), []
    folder = Path(out_dir) / "shards" / unit.key
    for path in sorted(folder.glob(f"{unit.digest[:16]}-*.h5")):
        got = read_shard(path, unit)
        if got is None:
            continue
        jobs, e = got
        if not set(jobs) <= wanted or covered & set(jobs):
            continue
        covered |= set(jobs)
        out.append((Shard(unit.key, jobs, path.name), e))
    return out


def plan(unit, done_jobs: set, shard_size: int) -> list:
    """Shards of `shard_size` jobs over the unit's jobs that no finished shard holds, in order."""
    rest = [j for j in unit.jobs if j not in done_jobs]
    return [Shard(unit.key, tuple(rest[i:i + shard_size]), shard_name(unit, rest[i:i + shard_size]))
            for i in range(0, len(rest), shard_size)]


def merge(parts) -> Explanations:
    """One store from a unit's finished shards, in (class, seed) order."""
    return Explanations.concat(parts).sorted()
