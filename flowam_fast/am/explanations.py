"""The explanations store: one HDF5 file per sweep (layout in DESIGN.md, "Conventions")."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import atomic_path

FORMAT = "flowam_fast.explanations"


@dataclass
class Explanations:
    """points (J,N,3) float32, classes (J,) int64, seeds (J,) int64, logits (J,K) float32, and
    the method, config (JSON), model description and class names they came from."""

    points: np.ndarray
    classes: np.ndarray
    seeds: np.ndarray
    logits: np.ndarray
    method: str
    config: str
    model: str
    class_names: list = field(default_factory=list)
    version: str = __version__

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    @property
    def success(self) -> np.ndarray:
        """Per job: the target class is the argmax of the stored logits."""
        return self.logits.argmax(1) == self.classes

    def class_name(self, c: int) -> str:
        return self.class_names[c] if c < len(self.class_names) else f"class {c}"

    def sorted(self) -> "Explanations":
        order = np.lexsort((self.seeds, self.classes))
        return self._take(order)

    def _take(self, order) -> "Explanations":
        return Explanations(self.points[order], self.classes[order], self.seeds[order], self.logits[order],
                            self.method, self.config, self.model, list(self.class_names), self.version)

    def select(self, classes=None, seeds=None) -> "Explanations":
        keep = np.ones(len(self), bool)
        if classes is not None:
            keep &= np.isin(self.classes, list(classes))
        if seeds is not None:
            keep &= np.isin(self.seeds, list(seeds))
        return self._take(np.nonzero(keep)[0])

    @staticmethod
    def concat(parts) -> "Explanations":
        parts = list(parts)
        first = parts[0]
        for p in parts[1:]:
            if (p.method, p.config) != (first.method, first.config):
                raise ValueError("cannot merge explanations made with different methods or configs")
        return Explanations(np.concatenate([p.points for p in parts]), np.concatenate([p.classes for p in parts]),
                            np.concatenate([p.seeds for p in parts]), np.concatenate([p.logits for p in parts]),
                            first.method, first.config, first.model, list(first.class_names), first.version)

    def save(self, path) -> None:
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f["points"] = self.points.astype(np.float32)
            f["classes"] = self.classes.astype(np.int64)
            f["seeds"] = self.seeds.astype(np.int64)
            f["logits"] = self.logits.astype(np.float32)
            f.attrs["format"] = FORMAT
            f.attrs["method"] = self.method
            f.attrs["config"] = self.config
            f.attrs["model"] = self.model
            f.attrs["class_names"] = json.dumps(list(self.class_names))
            f.attrs["version"] = self.version

    @classmethod
    def load(cls, path) -> "Explanations":
        if not Path(path).exists():
            raise FileNotFoundError(f"explanations file not found: {path}")
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(f"cannot read explanations file {path}: {exc}") from None
        with f:
            try:
                e = cls(points=f["points"][()], classes=f["classes"][()], seeds=f["seeds"][()],
                        logits=f["logits"][()], method=str(f.attrs["method"]), config=str(f.attrs["config"]),
                        model=str(f.attrs["model"]), class_names=json.loads(f.attrs.get("class_names", "[]")),
                        version=str(f.attrs.get("version", "")))
            except KeyError as exc:
                raise ValueError(f"explanations file {path} is incomplete: missing {exc}") from None
        j = len(e.classes)
        if e.points.ndim != 3 or e.points.shape[0] != j or e.points.shape[2] != 3 or e.seeds.shape != (j,) \
                or e.logits.shape[0] != j:
            raise ValueError(f"explanations file {path} has inconsistent shapes: points {e.points.shape}, "
                             f"classes {e.classes.shape}, seeds {e.seeds.shape}, logits {e.logits.shape}")
        return e

    @classmethod
    def resume(cls, path, config: str, empty: "Explanations") -> "Explanations":
        """The jobs already stored at `path` for the same config, or `empty` if there is no file.
        A store made with another config is an error rather than silently mixed or lost."""
        if not Path(path).exists():
            return empty
        stored = cls.load(path)
        if stored.config != config:
            raise ValueError(f"{path} holds explanations made with another config; choose another --out "
                             f"or delete it.\n stored: {stored.config}\n now:    {config}")
        return stored

    def to_ply(self, directory) -> list:
        """One binary PLY per job, named <class>_<name>_seed<seed>.ply."""
        from plyfile import PlyData, PlyElement

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for i in range(len(self)):
            c, s = int(self.classes[i]), int(self.seeds[i])
            name = self.class_name(c).replace(" ", "_").replace("/", "_")
            path = directory / f"{self.method}_{c:03d}_{name}_seed{s}.ply"
            vertex = np.empty(self.points.shape[1], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
            vertex["x"], vertex["y"], vertex["z"] = self.points[i].T
            with atomic_path(path) as tmp:
                PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))
            written.append(path)
        return written

    def plot(self, path, **kw) -> None:
        from .sheets import contact_sheet

        contact_sheet([self], path, **kw)
