"""The ModelNet40 HDF5 layout (modelnet40_ply_hdf5_2048), as distributed with PointNet.

A dataset directory holds `ply_data_{split}*.h5` files, each with `data` (M, P, 3) float32
and `label` (M, 1) or (M,) integers, and `shape_names.txt` with one class name per line.
The procedural shapes of :mod:`flowam_fast.data.shapes` are written in the same layout, so
one reader serves both.

Everything is read into memory at construction time and checked there, so a bad file fails
at once with its name and the problem, not in the middle of a training or explanation run.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

SHAPE_NAMES = "shape_names.txt"


class DatasetError(ValueError):
    """A dataset file exists but cannot be used (corrupt, wrong shape, bad labels, NaN...)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset directory or file is missing."""


def split_files(root: str | os.PathLike, split: str) -> list[Path]:
    """The split's HDF5 files in sorted order (the order their samples are concatenated)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset directory {str(root)!r} does not exist")
    files = sorted(root.glob(f"ply_data_{split}*.h5"))
    if not files:
        raise DatasetNotFoundError(f"no files matching ply_data_{split}*.h5 in {str(root)!r}")
    return files


def read_shape_names(root: str | os.PathLike) -> list[str]:
    path = Path(root) / SHAPE_NAMES
    if not path.is_file():
        raise DatasetNotFoundError(f"{str(path)!r} is missing (one class name per line)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{str(path)!r} lists no class names")
    return names


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{str(path)!r} is not a readable HDF5 file ({exc})") from exc
    with f:
        for key in ("data", "label"):
            if key not in f:
                raise DatasetError(f"{str(path)!r} has no dataset {key!r} (found: {sorted(f.keys())})")
        try:
            data = np.asarray(f["data"][...])
            label = np.asarray(f["label"][...])
        except (OSError, RuntimeError) as exc:
            raise DatasetError(f"{str(path)!r}: cannot read its datasets ({exc})") from exc
    if data.ndim != 3 or data.shape[2] != 3:
        raise DatasetError(f"{str(path)!r}: 'data' must have shape (M, P, 3), got {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        raise DatasetError(f"{str(path)!r}: 'data' must be floating point, got {data.dtype}")
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.ndim != 1 or label.shape[0] != data.shape[0]:
        raise DatasetError(
            f"{str(path)!r}: 'label' must have shape ({data.shape[0]}, 1) or ({data.shape[0]},) "
            f"to match 'data' {data.shape}, got {label.shape}"
        )
    if not np.issubdtype(label.dtype, np.integer):
        raise DatasetError(f"{str(path)!r}: 'label' must be integers, got {label.dtype}")
    return data, label


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre each cloud on its centroid and scale it so its farthest point has norm 1.

    A cloud that is a single repeated point is only centred.

    Args:
        points: Clouds (..., P, 3).

    Returns:
        The normalized clouds, of the same shape.
    """
    centred = points - points.mean(axis=-2, keepdims=True)
    radius = np.sqrt((centred**2).sum(-1)).max(axis=-1)[..., None, None]
    return centred / np.where(radius > 0, radius, 1.0)


class ModelNet40(torch.utils.data.Dataset):
    """A split of a dataset in the ModelNet40 HDF5 layout.

    A dataset directory holds `ply_data_{split}*.h5` files, each with `data` (M, P, 3) and
    `label` (M, 1) or (M,), and `shape_names.txt` with one class name per line. Everything is
    read into memory and checked at construction, so a bad file fails at once with its name
    and the problem. Items are `(points, label)`: points a float32 tensor (num_points, 3) (the
    first `num_points` stored points, so the same every time), label an int.

    Args:
        root: The dataset directory.
        split: "train" or "test".
        num_points: Points per sample, at most the number stored.
        normalize: Centre each cloud and scale it into the unit sphere
            (`normalize_unit_sphere`).

    Attributes:
        classes: Class names, from shape_names.txt.
        labels: Label of each sample, int64 array (M,).
        points: All samples, float32 array (M, num_points, 3), for batched access without
            a DataLoader.
        files: The HDF5 files read, in the order their samples are concatenated.

    Raises:
        ValueError: An unknown split or a num_points that is not a positive int.
        DatasetNotFoundError: The directory, its split files or shape_names.txt are missing.
        DatasetError: A file is unreadable, has the wrong shapes or dtypes, labels outside
            the classes, NaN or Inf, or fewer points than num_points.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", num_points: int = 1024, normalize: bool = True):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f"num_points must be a positive int, got {num_points!r}")
        self.root = Path(root)
        self.split = split
        self.num_points = num_points
        self.files = split_files(self.root, split)
        self.classes = read_shape_names(self.root)

        chunks, labels = [], []
        for path in self.files:
            data, label = _read_h5(path)
            if num_points > data.shape[1]:
                raise DatasetError(
                    f"{str(path)!r} stores {data.shape[1]} points per sample, fewer than num_points={num_points}"
                )
            if label.size and (label.min() < 0 or label.max() >= len(self.classes)):
                raise DatasetError(
                    f"{str(path)!r}: labels must be in [0, {len(self.classes)}) (the classes of {SHAPE_NAMES}), "
                    f"got min {int(label.min())}, max {int(label.max())}"
                )
            pts = data[:, :num_points].astype(np.float32)
            bad = ~np.isfinite(pts).all(axis=(1, 2))
            if bad.any():
                raise DatasetError(f"{str(path)!r}: sample {int(np.argmax(bad))} contains NaN or Inf")
            chunks.append(pts)
            labels.append(label.astype(np.int64))
        points = np.concatenate(chunks)
        if normalize:
            points = normalize_unit_sphere(points).astype(np.float32)
        self.points = np.ascontiguousarray(points)
        self.labels = np.concatenate(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.points[i]), int(self.labels[i])

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    def class_indices(self, c: int) -> np.ndarray:
        """Indices of the samples of class c."""
        return np.flatnonzero(self.labels == c)

    def __repr__(self) -> str:
        return (f"ModelNet40(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}, "
                f"classes={len(self.classes)}, num_points={self.num_points})")
