"""Procedural shapes: a small ModelNet40-like dataset made in seconds, the package's default data.

Twelve classes of simple solids and objects (:data:`CLASSES`). Each class is a fixed
canonical surface made of primitive parts; a sample draws points uniformly over the total
surface area (a multinomial over the parts by area, then uniform on the part), applies a
random anisotropic scale, normalizes the cloud to the unit sphere and adds small Gaussian
noise. Shapes stand upright (y up) with one heading, as ModelNet40's HDF5 files mostly do;
``rotation`` adds a random turn about the vertical axis. The default keeps one heading
because an activation flow pools all points of all samples of a class: with random headings
a dumbbell's flow is the average over headings, and the shape that matches it best is a
round blob, not a dumbbell (docs/design.md, "Aligned layers"). Classifiers learn yaw invariance from
training augmentation instead (``train(rotate=True)``). Classes
that share a silhouette family (cube and cylinder, pyramid and cone) also differ in their
proportions by more than the random scale can undo, so a small model tells them apart.

:func:`generate_shapes` writes the modelnet40_ply_hdf5_2048 layout, so
``ModelNet40(out_dir, split)`` reads it. Everything is vectorized numpy: the default 12 x
(200 + 50) samples of 2048 points take about two seconds. The output depends only on the
arguments: every (split, class) pair has its own random stream seeded by (seed, split,
class), so changing the number of test samples leaves the training clouds as they were, and
choosing other classes leaves each class's clouds as they were (only the shuffled order moves).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_path
from .modelnet40 import SHAPE_NAMES, normalize_unit_sphere

#: Index of the vertical axis (ModelNet40's HDF5 files are y-up).
UP_AXIS = 1
#: Range of the per-axis random scale applied before the rotation.
SCALE_RANGE = (0.75, 1.25)
NOISE_STD = 0.01

_SPLIT_IDS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class Part:
    """A surface patch: its area and a sampler drawing n uniform points on it, (n, 3)."""

    area: float
    sample: Callable[[np.random.Generator, int], np.ndarray]


def _y_up(x, y, z):
    return np.stack([x, y, z], axis=-1)


def sphere(center=(0, 0, 0), r=0.5, hemisphere: int = 0) -> Part:
    """A sphere, or its upper (hemisphere=+1) or lower (-1) half."""
    c = np.asarray(center, dtype=np.float64)

    def sample(rng, n):
        v = rng.standard_normal((n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        if hemisphere:
            v[:, UP_AXIS] = hemisphere * np.abs(v[:, UP_AXIS])
        return c + r * v

    return Part((2.0 if hemisphere else 4.0) * np.pi * r * r, sample)


def triangles(tris) -> Part:
    """A triangle mesh (T, 3, 3), triangles picked by area."""
    tris = np.asarray(tris, dtype=np.float64)
    a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)

    def sample(rng, n):
        t = rng.choice(len(tris), size=n, p=areas / areas.sum())
        u, v = rng.random((2, n, 1))
        flip = (u + v) > 1
        u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
        return a[t] + u * (b[t] - a[t]) + v * (c[t] - a[t])

    return Part(float(areas.sum()), sample)


def _box_tris(center, size):
    c, h = np.asarray(center, float), 0.5 * np.asarray(size, float)
    corners = c + h * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    # Faces as corner-index quads (corner index = 4*x + 2*y + z with x, y, z in {0, 1}).
    quads = [(0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]
    return [corners[[q[0], q[1], q[2]]] for q in quads] + [corners[[q[0], q[2], q[3]]] for q in quads]


def boxes(*specs) -> Part:
    """The surfaces of axis-aligned boxes, each given as (center, size)."""
    return triangles([t for center, size in specs for t in _box_tris(center, size)])


def _axis_frame(points_y, axis: int):
    """Points built around the y axis, re-expressed around `axis` (0, 1 or 2)."""
    if axis == UP_AXIS:
        return points_y
    order = [0, 1, 2]
    order[axis], order[UP_AXIS] = order[UP_AXIS], order[axis]
    return points_y[:, order]


def cylinder_side(center=(0, 0, 0), r=0.5, h=1.0, axis: int = UP_AXIS) -> Part:
    c = np.asarray(center, float)

    def sample(rng, n):
        theta = rng.uniform(0, 2 * np.pi, n)
        y = rng.uniform(-h / 2, h / 2, n)
        return c + _axis_frame(_y_up(r * np.cos(theta), y, r * np.sin(theta)), axis)

    return Part(2 * np.pi * r * h, sample)


def disk(center=(0, 0, 0), r=0.5, r_inner=0.0) -> Part:
    """A horizontal disk (or annulus), area-uniform: radius = sqrt of a uniform in r^2."""
    c = np.asarray(center, float)

    def sample(rng, n):
        theta = rng.uniform(0, 2 * np.pi, n)
        rad = np.sqrt(rng.uniform(r_inner**2, r**2, n))
        return c + _y_up(rad * np.cos(theta), np.zeros(n), rad * np.sin(theta))

    return Part(np.pi * (r * r - r_inner * r_inner), sample)


def cone_side(base=(0, 0, 0), r=0.5, h=1.0) -> Part:
    """The lateral surface of an upright cone; the area up to distance t from the apex grows
    as t^2, so t = sqrt(uniform)."""
    b = np.asarray(base, float)

    def sample(rng, n):
        t = np.sqrt(rng.random(n))
        theta = rng.uniform(0, 2 * np.pi, n)
        return b + _y_up(r * t * np.cos(theta), h * (1 - t), r * t * np.sin(theta))

    return Part(np.pi * r * np.hypot(r, h), sample)


def torus(center=(0, 0, 0), R=0.6, r=0.25) -> Part:
    """A horizontal torus. The surface density in the tube angle phi is proportional to
    R + r cos(phi); it is drawn through a tabulated inverse CDF."""
    c = np.asarray(center, float)
    grid = np.linspace(0, 2 * np.pi, 2049)
    cdf = (R * grid + r * np.sin(grid)) / (2 * np.pi * R)

    def sample(rng, n):
        phi = np.interp(rng.random(n), cdf, grid)
        theta = rng.uniform(0, 2 * np.pi, n)
        ring = R + r * np.cos(phi)
        return c + _y_up(ring * np.cos(theta), r * np.sin(phi), ring * np.sin(theta))

    return Part(4 * np.pi**2 * R * r, sample)


def _legs(xs, zs, y_top, y_bottom, thickness):
    h = y_top - y_bottom
    return [((x, y_bottom + h / 2, z), (thickness, h, thickness)) for x in xs for z in zs]


def _pyramid():
    apex, s, y0 = np.array([0, 0.35, 0]), 0.6, -0.35
    base = [np.array(p, float) for p in ((-s, y0, -s), (s, y0, -s), (s, y0, s), (-s, y0, s))]
    sides = [[base[i], base[(i + 1) % 4], apex] for i in range(4)]
    return [triangles(sides + [[base[0], base[1], base[2]], [base[0], base[2], base[3]]])]


SHAPES: dict[str, Callable[[], list[Part]]] = {
    "sphere": lambda: [sphere(r=0.5)],
    "cube": lambda: [boxes(((0, 0, 0), (1, 1, 1)))],
    "cylinder": lambda: [cylinder_side(r=0.35, h=1.2), disk((0, 0.6, 0), 0.35), disk((0, -0.6, 0), 0.35)],
    "cone": lambda: [cone_side((0, -0.65, 0), r=0.45, h=1.3), disk((0, -0.65, 0), 0.45)],
    "torus": lambda: [torus(R=0.6, r=0.22)],
    "pyramid": _pyramid,
    "plate": lambda: [boxes(((0, 0, 0), (1.0, 0.06, 1.0)))],
    "capsule": lambda: [cylinder_side(r=0.3, h=1.1), sphere((0, 0.55, 0), 0.3, +1), sphere((0, -0.55, 0), 0.3, -1)],
    "dumbbell": lambda: [sphere((-0.7, 0, 0), 0.3), sphere((0.7, 0, 0), 0.3), cylinder_side(r=0.07, h=1.0, axis=0)],
    "ring": lambda: [cylinder_side(r=0.8, h=0.3), cylinder_side(r=0.7, h=0.3),
                     disk((0, 0.15, 0), 0.8, 0.7), disk((0, -0.15, 0), 0.8, 0.7)],
    "chair": lambda: [boxes(((0, 0, 0), (0.8, 0.1, 0.8)), ((0, 0.45, -0.35), (0.8, 0.8, 0.1)),
                            *_legs((-0.35, 0.35), (-0.35, 0.35), -0.05, -0.65, 0.08))],
    "table": lambda: [boxes(((0, 0.3, 0), (1.4, 0.08, 0.9)),
                            *_legs((-0.62, 0.62), (-0.37, 0.37), 0.26, -0.45, 0.08))],
}
CLASSES = tuple(SHAPES)
"""Names of the procedural shape classes, in their default label order."""


def sample_surface(parts: list[Part], rng: np.random.Generator, num_samples: int, num_points: int) -> np.ndarray:
    """(num_samples, num_points, 3) points uniform over the union of `parts` by area."""
    total = num_samples * num_points
    areas = np.array([p.area for p in parts], float)
    which = rng.choice(len(parts), size=total, p=areas / areas.sum())
    out = np.empty((total, 3))
    for i, part in enumerate(parts):
        sel = np.flatnonzero(which == i)
        out[sel] = part.sample(rng, len(sel))
    return out.reshape(num_samples, num_points, 3)


def yaw_matrices(angle: np.ndarray) -> np.ndarray:
    """(S, 3, 3) rotations about the vertical axis by `angle` (S,) radians."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.zeros((len(angle), 3, 3))
    rot[:, UP_AXIS, UP_AXIS] = 1
    rot[:, 0, 0], rot[:, 0, 2], rot[:, 2, 0], rot[:, 2, 2] = c, s, -s, c
    return rot


def random_pose(points: np.ndarray, rng: np.random.Generator, noise_std: float = NOISE_STD,
                rotation: float = 0.0) -> np.ndarray:
    """Per sample: anisotropic scale, rotation about the up axis by an angle uniform in
    [-rotation, rotation] degrees, unit-sphere normalization, Gaussian noise. points (S, P, 3)."""
    S = points.shape[0]
    scale = rng.uniform(*SCALE_RANGE, size=(S, 1, 3))
    angle = np.radians(rotation) * rng.uniform(-1, 1, S)
    posed = normalize_unit_sphere(np.einsum("spi,sji->spj", points * scale, yaw_matrices(angle)))
    return posed + noise_std * rng.standard_normal(posed.shape)


def make_split(split: str, per_class: int, num_points: int = 2048, seed: int = 0, classes=CLASSES,
               rotation: float = 0.0):
    """(points (M, num_points, 3) float32, labels (M,) int64), samples shuffled."""
    split_id = _SPLIT_IDS[split]
    chunks, labels = [], []
    for label, name in enumerate(classes):
        rng = np.random.default_rng([seed, split_id, CLASSES.index(name)])
        pts = sample_surface(SHAPES[name](), rng, per_class, num_points)
        chunks.append(random_pose(pts, rng, rotation=rotation))
        labels.append(np.full(per_class, label, np.int64))
    points, labels = np.concatenate(chunks).astype(np.float32), np.concatenate(labels)
    order = np.random.default_rng([seed, split_id, 1_000_003]).permutation(len(labels))
    return points[order], labels[order]


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    with atomic_path(path) as tmp:
        write(str(tmp))


def write_h5(path: str | os.PathLike, points: np.ndarray, labels: np.ndarray) -> None:
    """One ply_data_*.h5 file: `data` (M, P, 3) float32 and `label` (M, 1) uint8, atomically."""
    import h5py

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=np.asarray(points, np.float32))
            f.create_dataset("label", data=np.asarray(labels, np.uint8).reshape(-1, 1))

    _atomic_write(Path(path), write)


def generate_shapes(out_dir: str | os.PathLike, train_per_class: int = 200, test_per_class: int = 50,
                    num_points: int = 2048, seed: int = 0, classes=CLASSES, rotation: float = 0.0) -> Path:
    """Write the procedural dataset in the ModelNet40 HDF5 layout.

    Writes ply_data_train0.h5, ply_data_test0.h5 and shape_names.txt into out_dir, which is
    created if needed. Each sample is drawn from a generator seeded by (seed, split, class),
    so a class's samples do not depend on which other classes are generated.

    Args:
        out_dir: The dataset directory.
        train_per_class: Training samples per class.
        test_per_class: Test samples per class.
        num_points: Points per sample, uniform over each shape's surface by area.
        seed: Seed of the whole dataset.
        classes: Names of the shapes to generate, in label order (from `CLASSES`).
        rotation: Each sample turns about the vertical axis by an angle uniform in
            [-rotation, rotation] degrees (0: one heading; 180: any).

    Returns:
        out_dir, as a Path.

    Raises:
        ValueError: An unknown class, more than 256 classes, a count that is not a positive
            int, or a rotation outside [0, 180].
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape classes {unknown}; available: {list(CLASSES)}")
    if len(classes) > 256:
        raise ValueError("at most 256 classes fit the uint8 labels of the layout")
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class), ("num_points", num_points)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not 0.0 <= float(rotation) <= 180.0:
        raise ValueError(f"rotation must be an angle in [0, 180] degrees, got {rotation!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        points, labels = make_split(split, per_class, num_points, seed, tuple(classes), rotation)
        write_h5(out / f"ply_data_{split}0.h5", points, labels)
    _atomic_write(out / SHAPE_NAMES, lambda tmp: Path(tmp).write_text("\n".join(classes) + "\n"))
    return out
