"""The attribution store: the scores of every cloud and method, with the clouds, their targets,
the faithfulness curves and each method's per-cloud extras, in one HDF5 file.

One format serves a batch of clouds of one method (a shard of a long run, written as soon as
it is computed) and the merged result of a run (`AttributionStore.merge`); a file is written
atomically, so one that exists is complete.

Layout: attributes ``config`` (JSON: what the scores depend on), ``methods`` (JSON: their
order) and ``fractions``; datasets
``indices`` (C,) (each cloud's index in its dataset), ``points`` (C, N, 3), ``labels`` (C,),
``targets`` (C,); per method, ``scores/<method>`` (C, N), ``curves/<method>/<curve>``
(C, F) and ``extras/<method>/<name>`` (C,).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..atomic import atomic_path


@dataclass
class AttributionStore:
    """Attributions of a set of clouds by one or more methods.

    Attributes:
        config: JSON text of the settings the scores depend on.
        fractions: The grid of the curves.
        indices: Each cloud's index in its dataset, (C,).
        points: The clouds, (C, N, 3).
        labels: Their labels, (C,).
        targets: The classes explained, (C,).
        scores: {method: (C, N)}.
        curves: {method: {curve: (C, F)}} (see `curves.faithfulness_curves`).
        extras: {method: {name: (C,)}} (integrated gradients' completeness error).
    """

    config: str
    fractions: tuple
    indices: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    scores: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def methods(self) -> list:
        """The methods held, in the order they were added."""
        return list(self.scores)

    def save(self, path) -> None:
        """Write the store to `path` (HDF5), atomically."""
        import h5py

        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["config"] = self.config
            f.attrs["fractions"] = np.asarray(self.fractions, dtype=np.float64)
            f.attrs["methods"] = json.dumps(self.methods)  # HDF5 lists groups by name, not in this order
            for name in ("indices", "points", "labels", "targets"):
                f.create_dataset(name, data=getattr(self, name))
            for m in self.methods:
                f.create_dataset(f"scores/{m}", data=np.asarray(self.scores[m], dtype=np.float32))
                for group in ("curves", "extras"):
                    for k, v in getattr(self, group).get(m, {}).items():
                        f.create_dataset(f"{group}/{m}/{k}", data=np.asarray(v))

    @classmethod
    def load(cls, path) -> AttributionStore:
        """Read a store written by `save`.

        Raises:
            FileNotFoundError: No file at `path`.
            ValueError: The file is not an attribution store.
        """
        import h5py

        from pathlib import Path

        if not Path(path).is_file():
            raise FileNotFoundError(f"attribution store not found: {path}")
        try:
            with h5py.File(path, "r") as f:
                if "config" not in f.attrs or "methods" not in f.attrs or "scores" not in f:
                    raise ValueError(f"{path} is not an attribution store (no config or scores)")
                read = {g: {m: {k: v[()] for k, v in f[g][m].items()} for m in f[g]} if g in f else {}
                        for g in ("curves", "extras")}
                return cls(config=str(f.attrs["config"]), fractions=tuple(float(x) for x in f.attrs["fractions"]),
                           **{n: f[n][()] for n in ("indices", "points", "labels", "targets")},
                           scores={m: f["scores"][m][()] for m in json.loads(f.attrs["methods"])}, **read)
        except OSError as exc:
            raise ValueError(f"{path} is not a readable attribution store: {exc}") from None

    @classmethod
    def merge(cls, parts, config: str | None = None) -> AttributionStore:
        """One store from parts that each hold some clouds of some methods; every method must
        end up with the same clouds. Clouds are sorted by their index.

        Raises:
            ValueError: No parts, parts of different fractions, or methods that do not cover
                the same clouds.
        """
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to merge: no attribution parts")
        if len({p.fractions for p in parts}) != 1:
            raise ValueError("the parts were made on different grids of fractions")
        by_method: dict = {}
        for p in parts:
            for m in p.methods:
                by_method.setdefault(m, []).append(p)
        cloud_sets = {m: np.sort(np.concatenate([p.indices for p in ps])) for m, ps in by_method.items()}
        first = next(iter(cloud_sets.values()))
        if any(not np.array_equal(c, first) for c in cloud_sets.values()) or len(np.unique(first)) != len(first):
            raise ValueError("the methods' parts do not hold the same clouds once each: "
                             + ", ".join(f"{m}: {len(c)}" for m, c in cloud_sets.items()))

        def stacked(ps, get):
            order = np.argsort(np.concatenate([p.indices for p in ps]), kind="stable")
            return np.concatenate([get(p) for p in ps])[order]

        ps0 = next(iter(by_method.values()))
        out = cls(config=config if config is not None else parts[0].config, fractions=parts[0].fractions,
                  indices=first,
                  **{n: stacked(ps0, lambda p, n=n: getattr(p, n)) for n in ("points", "labels", "targets")})
        for m, ps in by_method.items():
            out.scores[m] = stacked(ps, lambda p: p.scores[m])
            for group in ("curves", "extras"):
                keys = getattr(ps[0], group).get(m, {})
                getattr(out, group)[m] = {k: stacked(ps, lambda p, k=k: getattr(p, group)[m][k]) for k in keys}
        return out
