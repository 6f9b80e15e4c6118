"""The explanations store: one HDF5 file per sweep (layout in docs/design.md, "Conventions")."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import atomic_path
from .config import migrated, stored_config
from .configdiff import config_changes
from .reprs import counted, int_ranges, model_name, short_list

FORMAT = "flowam_fast.explanations"


@dataclass(repr=False)
class Explanations:
    """A set of explanations, one per (class, seed) job, and how they were made.

    Attributes:
        points: Explanation clouds (J, N, 3), float32.
        classes: Target of each job (J,), int64: a class, or for a run of `AM` with channel
            targets (`target_layer`), a channel.
        seeds: Seed of each job (J,), int64.
        logits: The model's logits on each explanation (J, K), float32.
        method: The AM method ("flowam", "vanilla", "regularized", "ae-latent", "random", or
            "am" for `AM` with an objective of the user's, recorded in the config).
        config: The engine's configuration in its stored form (`AMConfig.to_json`); compare
            it with `same_run` or `AMConfig.matches`, never as text (stores of earlier
            versions write the same run differently).
        model: A description of the model, as JSON.
        class_names: Names of the model's classes (may be empty).
        version: The flowam_fast version that wrote them.
    """

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

    def __repr__(self) -> str:
        classes = sorted(set(self.classes.tolist()))
        layer = self.target_layer
        success = "no jobs" if not len(self) else f"channels of {layer}" if layer else f"success {self.success.mean():.1%}"
        return (f"Explanations(method={self.method!r}, model={model_name(self.model)!r}, "
                f"{counted(len(self), 'job')}, {counted(len(classes), 'channel' if layer else 'class')} "
                f"{short_list(self.class_name(c) for c in classes)}, seeds {int_ranges(self.seeds.tolist()) or 'none'}, "
                f"{self.points.shape[1]} points, {success})")

    @property
    def target_layer(self) -> str:
        """The layer whose channels the targets are (a run of `AM` with channel targets), or ""
        where the targets are classes."""
        try:
            return stored_config(self.config).target_layer
        except (ValueError, TypeError):
            return ""

    @property
    def success(self) -> np.ndarray:
        """Per job: the target class is the argmax of the stored logits.

        Raises:
            ValueError: The targets are channels, not classes.
        """
        if self.target_layer:
            raise ValueError(f"these explanations' targets are channels of {self.target_layer!r}: success (the "
                             "target class wins) is defined for class targets only")
        return self.logits.argmax(1) == self.classes

    def class_name(self, c: int) -> str:
        """The name of target `c`: its class's name, "class <c>" where the names do not cover
        it, or "channel <c>" for channel targets."""
        if self.target_layer:
            return f"channel {c}"
        return self.class_names[c] if c < len(self.class_names) else f"class {c}"

    def sorted(self) -> "Explanations":
        """The same explanations in (class, seed) order."""
        order = np.lexsort((self.seeds, self.classes))
        return self._take(order)

    def _take(self, order) -> "Explanations":
        return Explanations(self.points[order], self.classes[order], self.seeds[order], self.logits[order],
                            self.method, self.config, self.model, list(self.class_names), self.version)

    def select(self, classes=None, seeds=None) -> "Explanations":
        """The explanations of the given classes and seeds, in their stored order.

        Args:
            classes: Class indices to keep; None keeps every class.
            seeds: Seeds to keep; None keeps every seed.
        """
        keep = np.ones(len(self), bool)
        if classes is not None:
            keep &= np.isin(self.classes, list(classes))
        if seeds is not None:
            keep &= np.isin(self.seeds, list(seeds))
        return self._take(np.nonzero(keep)[0])

    def same_run(self, other: "Explanations") -> bool:
        """Whether `other` was made by the same method and config (`AMConfig.matches`)."""
        return self.method == other.method and _matches(self.config, other.config)

    @staticmethod
    def concat(parts) -> "Explanations":
        """The explanations of all `parts` (at least one) in one set, in order.

        Raises:
            ValueError: The parts were made with different methods or configs.
        """
        parts = list(parts)
        first = parts[0]
        for p in parts[1:]:
            if not first.same_run(p):
                raise ValueError("cannot merge explanations made with different methods or configs")
        return Explanations(np.concatenate([p.points for p in parts]), np.concatenate([p.classes for p in parts]),
                            np.concatenate([p.seeds for p in parts]), np.concatenate([p.logits for p in parts]),
                            first.method, first.config, first.model, list(first.class_names), first.version)

    def save(self, path) -> None:
        """Write the store to the HDF5 file `path`, atomically (a reader never sees half a file)."""
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
        """Read a store written by `save`.

        Raises:
            FileNotFoundError: There is no file at `path`.
            ValueError: The file is not a readable, complete and consistent store.
        """
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
    def resume(cls, path, config, empty: "Explanations") -> "Explanations":
        """The jobs already stored at `path` for the same config, or `empty` if there is no file.

        A store made with another config is an error rather than silently mixed or lost. A
        store of an earlier version that `matches` the config resumes; what is returned
        carries the config in today's stored form.

        Args:
            path: The store's HDF5 path.
            config: The engine's `AMConfig` (or its stored form).
            empty: What to return when there is no file yet.

        Raises:
            ValueError: The store was made with another config, or cannot be read.
        """
        if not Path(path).exists():
            return empty
        stored, config = cls.load(path), stored_config(config)
        if not config.matches(stored.config):
            raise ValueError(f"{path} holds explanations made with another config "
                             f"({', '.join(config_changes(migrated(stored.config), config.to_json()))}); delete it "
                             "or choose another store (on the command line: --fresh discards it and starts over, "
                             "or choose another --out)")
        stored.config = config.to_json()
        return stored

    def to_ply(self, directory) -> list:
        """Write one binary PLY (vertices x, y, z) per job.

        Files are named `<method>_<class:03d>_<name>_seed<seed>.ply`, e.g.
        `flowam_007_chair_seed3.ply`, where `<name>` is the class name with spaces and slashes
        replaced by underscores.

        Args:
            directory: where the files go; created if missing.

        Returns:
            The paths written, one per job, in the jobs' order.
        """
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
        """Draw the explanations as a contact sheet image at `path`.

        Args:
            path: The image file to write.
            **kw: Options of `flowam_fast.am.sheets.contact_sheet`.
        """
        from .sheets import contact_sheet

        contact_sheet([self], path, **kw)

    def to_html(self, path, references=None, title=None):
        """Write an interactive 3-D viewer of the explanations: one self-contained HTML page.

        Args:
            path: The .html file to write; its directory must exist.
            references: Optional {class index: (M, 3) real cloud}, as
                `flowam_fast.am.sheets.class_examples(points, labels)` returns, shown beside
                each explanation.
            title: The page's title; defaults to "<method> explanations".

        Returns:
            The path written.

        Raises:
            FileNotFoundError: The directory of `path` does not exist.
            ValueError: There are no explanations, or the references are malformed.
        """
        from .viewer import write_html

        return write_html(self, path, references=references, title=title)


def _matches(a: str, b: str) -> bool:
    """Two stored configs name the same run (either may be of an earlier version)."""
    try:
        return stored_config(a).matches(b)
    except (ValueError, TypeError):
        return a == b  # unreadable configs: only the same text is the same run
