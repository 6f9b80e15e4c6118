"""The stratified permutation test, its effect and interval, Holm's adjustment and the design
check (`evaluation.permutation`), on synthetic distance matrices where the answer is known."""
import numpy as np
import pytest
from scipy.stats import binom, kstest

from flowam_fast.evaluation.permutation import (check_size, effect, energy, holm, permutation_test, resampled_tests,
                                                smallest_p_value)

C, S = 6, 4


def _dists(rng, shift=0.0, classes=C, per_side=S):
    """Two distances between clouds summarized as points: Euclidean on 5-d points whose second
    side is shifted along one axis, and squared Euclidean on a noisy copy (another scale)."""
    x = rng.normal(size=(classes, 2 * per_side, 5))
    x[:, per_side:, 0] += shift
    y = x + rng.normal(size=x.shape)
    d1 = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)
    d2 = ((y[:, :, None] - y[:, None]) ** 2).sum(-1)
    return np.stack([d1, d2])


def _side(classes=C, per_side=S):
    side = np.zeros((classes, 2 * per_side), bool)
    side[:, per_side:] = True
    return side


def test_energy_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    d = _dists(rng, 0.5)
    side = rng.permuted(_side(), axis=1)
    want = np.zeros(2)
    for k in range(2):
        for c in range(C):
            x, y = np.nonzero(~side[c])[0], np.nonzero(side[c])[0]
            dxy = d[k, c][np.ix_(x, y)].mean()
            dxx = d[k, c][np.ix_(x, x)][~np.eye(S, dtype=bool)].mean()
            dyy = d[k, c][np.ix_(y, y)][~np.eye(S, dtype=bool)].mean()
            want[k] += 2 * dxy - dxx - dyy
    np.testing.assert_allclose(energy(d, side), want, rtol=1e-12)
    np.testing.assert_allclose(energy(d, side[None])[0], want, rtol=1e-12)


def test_p_values_are_uniform_under_the_null():
    """300 null comparisons: the share below 0.05 within the binomial's 99.9% range, and the
    p-values' distribution not told apart from uniform (KS)."""
    rng = np.random.default_rng(1)
    p = np.array([permutation_test(_dists(rng), _side(), n_perm=199, seed=i)["p_value"] for i in range(300)])
    lo, hi = binom.ppf([0.0005, 0.9995], 300, 0.05)
    assert lo <= (p < 0.05).sum() <= hi
    # Discrete p-values on a grid of 1/200: compare with the uniform on the same grid's scale.
    assert kstest(p, "uniform").pvalue > 0.001


def test_a_planted_effect_is_detected():
    rng = np.random.default_rng(2)
    d = _dists(rng, shift=3.0)
    res = permutation_test(d, _side(), n_perm=999, seed=0)
    assert res["p_value"] == pytest.approx(1 / 1000)  # every permutation below the observed split
    e = effect(d, _side(), n_boot=500)
    assert e["effect"] > 0.75 and e["effect_ci"][0] > 0.6 and e["effect_ci"][0] <= e["effect"] <= e["effect_ci"][1]
    # Under the null the effect sits near one half and its interval covers it.
    null = effect(_dists(rng), _side(), n_boot=500)
    assert null["effect_ci"][0] < 0.5 < null["effect_ci"][1]


def test_effect_is_the_cross_against_within_pair_probability():
    rng = np.random.default_rng(3)
    d = _dists(rng, shift=1.0)
    side = _side()
    got = effect(d, side, n_boot=10)["effect_by_distance"]
    for k in range(2):
        per_class = []
        for c in range(C):
            cross = d[k, c, :S, S:].ravel()
            within = d[k, c, :S, :S][np.triu_indices(S, 1)]
            per_class.append(np.mean([(a > b) + 0.5 * (a == b) for a in cross for b in within]))
        assert got[k] == pytest.approx(np.mean(per_class))
    # Seeded: the same interval twice.
    assert effect(d, side, seed=4) == effect(d, side, seed=4)


def test_holm_against_a_hand_worked_case():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02]
    with pytest.raises(ValueError, match="p-values"):
        holm([1.5])


def test_too_few_seeds_are_refused_with_the_number_needed():
    assert smallest_p_value(6, 4, 1999) == pytest.approx(1 / 2000)
    # 2 seeds a side: a class has 6 splits, 2 of them the observed one: (1/3) ** classes.
    assert smallest_p_value(4, 2, 1999) == pytest.approx(3.0 ** -4)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        check_size(6, 1, 7)
    with pytest.raises(ValueError, match="use at least 3 seeds per side"):
        check_size(4, 2, 7)
    with pytest.raises(ValueError, match="use at least 140 permutations"):
        check_size(6, 4, 7, n_perm=99)
    check_size(6, 4, 7)
    with pytest.raises(ValueError, match="same number"):
        permutation_test(np.zeros((1, 2, 5, 5)), np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], bool))


def test_resampled_null_and_planted_mixtures():
    """Pools of 8 null explanations per class and 4 shifted ones: null draws keep their rate,
    and mixing more of the shifted pool into the second sample raises effect and power."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(C, 12, 5))
    x[:, 8:, 0] += 2.5
    d = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)[None]
    first, second = np.tile(np.arange(8), (C, 1)), np.tile(np.arange(8, 12), (C, 1))
    null = resampled_tests(d, first, second, per_side=S, mixed=0, draws=200, n_perm=199, seed=1)
    assert (null["p_value"] < 0.05).sum() <= binom.ppf(0.9995, 200, 0.05)
    assert abs(null["effect"].mean() - 0.5) < 0.05
    power = [float((resampled_tests(d, first, second, S, mixed=m, draws=40, n_perm=199, seed=2)["p_value"] < 0.05)
                   .mean()) for m in (1, 4)]
    assert power[0] < power[1] == 1.0
    with pytest.raises(ValueError, match="cannot give"):
        resampled_tests(d, first, second, per_side=S, mixed=5)
