import h5py
import numpy as np
import pytest

from flowam_fast.data import SHAPE_CLASSES, DatasetError, ModelNet40, generate_shapes


def _write(root, split="train", data=None, label=None, names=("a", "b", "c"), idx=0):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(idx)
    data = rng.normal(size=(5, 64, 3)).astype(np.float32) * 3 + 1 if data is None else data
    label = (np.arange(5) % len(names)).reshape(-1, 1).astype(np.uint8) if label is None else label
    with h5py.File(root / f"ply_data_{split}{idx}.h5", "w") as f:
        if data is not False:
            f["data"] = data
        if label is not False:
            f["label"] = label
    (root / "shape_names.txt").write_text("\n".join(names) + "\n")
    return data, label


def test_reads_modelnet40_layout_and_normalizes(tmp_path):
    d0, l0 = _write(tmp_path, idx=0)
    d1, l1 = _write(tmp_path, idx=1)
    ds = ModelNet40(tmp_path, "train", num_points=32)
    assert len(ds) == 10 and ds.classes == ["a", "b", "c"]
    pts, label = ds[6]
    assert pts.shape == (32, 3) and pts.dtype.is_floating_point and label == int(l1[1, 0])
    c = ds.points.mean(1)
    assert np.abs(c).max() < 1e-5
    assert np.allclose(np.linalg.norm(ds.points, axis=2).max(1), 1.0, atol=1e-5)
    raw = ModelNet40(tmp_path, "train", num_points=64, normalize=False)
    np.testing.assert_array_equal(raw.points[:5], d0)


@pytest.mark.parametrize("case, match", [
    ("missing_dir", "not"), ("no_split", "test"), ("no_names", "shape_names"), ("corrupt", "ply_data_train0"),
    ("no_data", "data"), ("no_label", "label"), ("bad_label", "labels"), ("too_few_points", "num_points"),
    ("nan", "NaN"), ("bad_shape", "shape")])
def test_bad_datasets_get_clear_errors(tmp_path, case, match):
    root = tmp_path / "ds"
    split = "train"
    if case == "missing_dir":
        root = tmp_path / "nope"
    elif case == "no_split":
        _write(root)
        split = "test"
    elif case == "no_names":
        _write(root)
        (root / "shape_names.txt").unlink()
    elif case == "corrupt":
        _write(root)
        (root / "ply_data_train0.h5").write_bytes(b"garbage, not hdf5")
    elif case == "no_data":
        _write(root, data=False)
    elif case == "no_label":
        _write(root, label=False)
    elif case == "bad_label":
        _write(root, label=np.full((5, 1), 7, np.uint8))
    elif case == "too_few_points":
        _write(root, data=np.zeros((5, 16, 3), np.float32))
    elif case == "nan":
        d = np.ones((5, 64, 3), np.float32)
        d[2, 3, 1] = np.nan
        _write(root, data=d)
    elif case == "bad_shape":
        _write(root, data=np.zeros((5, 64, 2), np.float32))
    with pytest.raises((DatasetError, FileNotFoundError), match=match):
        ModelNet40(root, split, num_points=32)


def test_procedural_shapes(tmp_path):
    a = generate_shapes(tmp_path / "a", train_per_class=3, test_per_class=2, num_points=256, seed=1)
    b = generate_shapes(tmp_path / "b", train_per_class=3, test_per_class=2, num_points=256, seed=1)
    c = generate_shapes(tmp_path / "c", train_per_class=3, test_per_class=2, num_points=256, seed=2)
    da, db, dc = (ModelNet40(p, "train", num_points=256) for p in (a, b, c))
    assert len(SHAPE_CLASSES) >= 10 and da.classes == list(SHAPE_CLASSES)
    assert len(da) == 3 * len(SHAPE_CLASSES) and np.bincount(da.labels).tolist() == [3] * len(SHAPE_CLASSES)
    np.testing.assert_array_equal(da.points, db.points)
    assert not np.array_equal(da.points, dc.points)
    assert len(ModelNet40(a, "test", num_points=128)) == 2 * len(SHAPE_CLASSES)
    # Classes differ in shape: the mean cloud-to-cloud distance between classes beats within.
    means = np.stack([np.sort(np.linalg.norm(da.points[da.labels == k], axis=2), axis=1).mean(0)
                      for k in range(len(SHAPE_CLASSES))])
    assert len({tuple(np.round(m[::32], 2)) for m in means}) == len(SHAPE_CLASSES)


def _heading(points):
    """Angle in the horizontal plane of each cloud's principal axis, in [0, pi)."""
    xz = points[..., [0, 2]] - points[..., [0, 2]].mean(1, keepdims=True)
    _, _, vt = np.linalg.svd(xz, full_matrices=False)
    return np.mod(np.arctan2(vt[:, 0, 1], vt[:, 0, 0]), np.pi)


def test_shapes_keep_one_heading_unless_rotated(tmp_path):
    kw = dict(train_per_class=8, test_per_class=1, num_points=256, classes=("dumbbell",))
    fixed = ModelNet40(generate_shapes(tmp_path / "a", **kw), "train", num_points=256).points
    turned = ModelNet40(generate_shapes(tmp_path / "b", rotation=180, **kw), "train", num_points=256).points
    # A dumbbell's bar lies along x by default; turned ones point anywhere.
    h = _heading(fixed)
    assert np.minimum(h, np.pi - h).max() < np.radians(3)
    h = _heading(turned)
    assert np.minimum(h, np.pi - h).max() > np.radians(30)
    with pytest.raises(ValueError, match="rotation"):
        generate_shapes(tmp_path / "c", rotation=200, **kw)
