"""Faithfulness curves on a model whose answer is known (it reads one point), the random control
against its exact expectation, the areas and their intervals, and the randomization check."""
import numpy as np
import pytest
import torch

from flowam_fast.attribution import (FRACTIONS, attribute, curve_areas, faithfulness_curves, randomization_check,
                                     summarize_curves)
from flowam_fast.attribution.curves import random_ranks
from flowam_fast.evaluation.sanity import randomization_groups
from flowam_fast.models import PointNet
from tests.helpers import randomize

KEY = torch.tensor([2.0, 0.0, 0.0])
HIGH = torch.softmax(torch.tensor([8.0, 4.0]), 0)[0].item()
LOW = torch.softmax(torch.tensor([0.0, 4.0]), 0)[0].item()


class OnePointReader(torch.nn.Module):
    """Class 0 while a point sits at KEY (logit 8 against 4), class 1 otherwise."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(8.0))

    def forward(self, x):
        d2 = (x - KEY[None, :, None]).pow(2).sum(1)
        near = torch.exp(-d2 / 1e-3).max(dim=1).values
        return torch.stack([self.scale * near, torch.full_like(near, 4.0)], dim=1)


def key_clouds(b=24, n=40, seed=0):
    """Clouds in the unit ball around the origin, each with one point at KEY (at index `where`)."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(b, n, 3))
    pts = pts / np.linalg.norm(pts, axis=2, keepdims=True) * rng.uniform(0.2, 1.0, size=(b, n, 1))
    where = rng.integers(0, n, size=b)
    pts[np.arange(b), where] = KEY.numpy()
    return torch.tensor(pts, dtype=torch.float32), where


def test_deleting_the_one_point_read_drops_the_probability_at_once():
    x, where = key_clouds()
    scores = torch.zeros(x.shape[:2])
    scores[torch.arange(len(x)), torch.as_tensor(where)] = 1.0
    curves = faithfulness_curves(OnePointReader(), x, 0, scores)
    assert set(curves) == {"deletion", "insertion", "random_deletion", "random_insertion"}
    for name in curves:
        assert curves[name].shape == (len(x), len(FRACTIONS))
    np.testing.assert_allclose(curves["deletion"][:, 0], HIGH, rtol=1e-5)
    np.testing.assert_allclose(curves["deletion"][:, 1:], LOW, rtol=1e-4)
    np.testing.assert_allclose(curves["insertion"][:, 0], LOW, rtol=1e-4)  # the centroid baseline
    np.testing.assert_allclose(curves["insertion"][:, 1:], HIGH, rtol=1e-5)


def test_the_random_control_is_its_exact_expectation_and_does_worse():
    x, where = key_clouds()
    n = x.shape[1]
    found = attribute(OnePointReader(), x, 0, method="occlusion", patches=8, k=5)
    # Occlusion finds the point (its patch's other points may tie with it).
    assert torch.equal(found[torch.arange(len(x)), torch.as_tensor(where)], found.max(1).values)
    scores = torch.zeros(x.shape[:2])
    scores[torch.arange(len(x)), torch.as_tensor(where)] = 1.0
    curves = faithfulness_curves(OnePointReader(), x, 0, scores, seed=7, indices=np.arange(100, 100 + len(x)))
    rank = random_ranks(np.arange(100, 100 + len(x)), n, 7, "cpu").numpy()[np.arange(len(x)), where]
    counts = np.rint(np.asarray(FRACTIONS) * n)
    gone = rank[:, None] < counts[None, :]
    np.testing.assert_allclose(curves["random_deletion"], np.where(gone, LOW, HIGH), rtol=1e-4)
    np.testing.assert_allclose(curves["random_insertion"], np.where(gone, HIGH, LOW), rtol=1e-4)
    summary = summarize_curves(curves, seed=3)
    assert summary["deletion_area"] > summary["random_deletion_area"] + 0.2
    assert summary["insertion_area"] > summary["random_insertion_area"] + 0.2
    assert summary["deletion_gain_ci"][0] > 0 and summary["insertion_gain_ci"][0] > 0
    lo, hi = summary["random_deletion_area_ci"]
    assert lo < summary["random_deletion_area"] < hi
    assert summary == summarize_curves(curves, seed=3)  # seeded


def test_a_clouds_curves_do_not_depend_on_its_batch():
    x, where = key_clouds(6)
    model = OnePointReader()
    scores = attribute(model, x, 0, method="saliency")
    full = faithfulness_curves(model, x, 0, scores, batch_size=7)
    part = faithfulness_curves(model, x[2:4], 0, scores[2:4], indices=[2, 3])
    for name in full:
        np.testing.assert_array_equal(part[name], full[name][2:4])


def test_areas_are_oriented_so_that_higher_is_more_faithful():
    f = np.asarray(FRACTIONS)
    fall = {"deletion": (1 - f)[None], "insertion": f[None] ** 2}
    areas = curve_areas(fall)
    assert areas["deletion_area"][0] == pytest.approx(0.5)
    assert areas["insertion_area"][0] == pytest.approx(1 / 3, abs=2e-3)  # the trapezoidal rule on 11 steps
    assert curve_areas({"deletion": np.ones((1, 11))})["deletion_area"][0] == 0.0


def test_bad_scores_and_grids_are_refused():
    x, _ = key_clouds(2)
    model = OnePointReader()
    with pytest.raises(ValueError, match=r"one per point, \(B, N\) = \(2, 40\)"):
        faithfulness_curves(model, x, 0, torch.zeros(2, 39))
    with pytest.raises(ValueError, match="scores hold NaN"):
        faithfulness_curves(model, x, 0, torch.full((2, 40), float("nan")))
    with pytest.raises(ValueError, match="fractions must rise from 0 to 1"):
        faithfulness_curves(model, x, 0, torch.zeros(2, 40), fractions=[0.0, 0.5])
    with pytest.raises(ValueError, match="at least one"):
        summarize_curves({"deletion": np.zeros((0, 11)), "insertion": np.zeros((0, 11))})


def test_randomization_check_follows_the_cascade():
    torch.manual_seed(0)
    model = randomize(PointNet(4, width=0.125), seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = (torch.rand(3, 48, 3) - 0.5) * 2
    out = randomization_check(model, x, [0, 1, 2], ["saliency", "critical-points"])
    stages = [s["stage"] for s in out["saliency"]]
    assert stages == [name for name, _ in randomization_groups(model)]
    # Critical points are the encoder's: randomizing the head alone leaves them as they are.
    head = [s["spearman"] for s in out["critical-points"] if s["stage"] in ("fc3", "fc2", "fc1")]
    assert head == [1.0, 1.0, 1.0]
    assert out["critical-points"][-1]["spearman"] < 0.9 and out["saliency"][-1]["spearman"] < 0.9
    assert all(-1 <= s["spearman_ci"][0] <= s["spearman"] <= s["spearman_ci"][1] <= 1
               for m in out.values() for s in m)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
