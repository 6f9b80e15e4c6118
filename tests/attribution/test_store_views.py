"""The attribution store (round trip, merging parts, refusals) and the views coloured by score."""
import h5py
import numpy as np
import pytest

from flowam_fast.attribution import AttributionStore, attribution_sheet, write_html
from flowam_fast.attribution.views import score_ranks


def part(indices, method, seed=0, fractions=(0.0, 0.5, 1.0)):
    rng = np.random.default_rng(seed)
    c = len(indices)
    return AttributionStore(
        config="{}", fractions=fractions, indices=np.asarray(indices), points=rng.normal(size=(c, 8, 3)).astype("f4"),
        labels=np.asarray(indices) % 2, targets=np.asarray(indices) % 3, scores={method: rng.normal(size=(c, 8))},
        curves={method: {"deletion": rng.random((c, 3)), "insertion": rng.random((c, 3))}},
        extras={method: {"delta": rng.normal(size=c)}})


def test_store_round_trip_keeps_method_order(tmp_path):
    a = AttributionStore.merge([part([0, 1], "zeta"), part([0, 1], "alpha")])
    a.save(tmp_path / "s.h5")
    b = AttributionStore.load(tmp_path / "s.h5")
    assert b.methods == ["zeta", "alpha"] and b.fractions == (0.0, 0.5, 1.0)
    for m in a.methods:
        assert np.array_equal(a.scores[m].astype(np.float32), b.scores[m])  # scores are stored as float32
        assert all(np.array_equal(a.curves[m][k], b.curves[m][k]) for k in a.curves[m])
        assert np.array_equal(a.extras[m]["delta"], b.extras[m]["delta"])


def test_merge_sorts_clouds_by_index_and_checks_coverage():
    p1, p2 = part([3, 4], "s", seed=1), part([0, 1, 2], "s", seed=2)
    merged = AttributionStore.merge([p1, p2])
    assert merged.indices.tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(merged.scores["s"][3:], p1.scores["s"]) and np.array_equal(merged.points[:3], p2.points)
    with pytest.raises(ValueError, match="do not hold the same clouds"):
        AttributionStore.merge([p1, p2, part([0], "t")])
    with pytest.raises(ValueError, match="do not hold the same clouds"):
        AttributionStore.merge([p1, part([3], "s")])
    with pytest.raises(ValueError, match="different grids"):
        AttributionStore.merge([p1, part([0], "s", fractions=(0.0, 1.0))])
    with pytest.raises(ValueError, match="nothing to merge"):
        AttributionStore.merge([])


def test_load_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="attribution store not found"):
        AttributionStore.load(tmp_path / "none.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="is not an attribution store"):
        AttributionStore.load(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="not a readable attribution store"):
        AttributionStore.load(tmp_path / "text.h5")


def test_score_ranks_are_within_cloud_ranks():
    r = score_ranks(np.array([[3.0, -1.0, 10.0, 3.0], [0.0, 0.0, 0.0, 0.0]]))
    assert r[0].tolist() == [0.5, 0.0, 1.0, 0.5] and r[1].tolist() == [0.5] * 4


def test_views_colour_points_by_score_rank(tmp_path):
    store = AttributionStore.merge([part([0, 1, 2], "saliency"), part([0, 1, 2], "occlusion")])
    write_html(store, tmp_path / "a.html", clouds=[2, 0], class_names=["<b>x</b>", "y", "z"], title="T")
    page = (tmp_path / "a.html").read_text()
    assert "<!DOCTYPE html>" in page and "cloud 2 \\u00b7 target z" in page and "<b>x</b>" not in page
    assert "target &lt;b&gt;x&lt;\\u002fb&gt;" in page  # a class name is text, never markup
    attribution_sheet(store, tmp_path / "a.png", class_names=["a", "b", "c"])
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"clouds must be positions in the store, in \[0, 3\)"):
        write_html(store, tmp_path / "b.html", clouds=[3])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_html(store, tmp_path / "no" / "b.html")
