"""Two-sample permutation tests between two sets of explanations, stratified by class
(docs/design.md, "Faithfulness"). Pure numpy: the caller computes the distances once, as a
matrix per class and per distance, and every permutation and bootstrap draw indexes it.

Layout: ``dists`` has shape (K, C, m, m): K distances (e.g. Chamfer between clouds and a
distance between evaluator features), C classes (the strata), m explanations per class, each
matrix symmetric with a zero diagonal. ``second`` (C, m) marks, per class, the explanations of
the second sample (the randomized model's); the others are the first (the trained model's).
Every class has the same number of explanations on each side.

- **Statistic.** Per distance, the energy distance of the two samples in each class,
  2 E d(X, Y) - E d(X, X') - E d(Y, Y') (pairs of distinct explanations), summed over
  classes. The K energy distances are put on one scale by standardizing each over the
  permutation distribution (its mean and standard deviation over the observed split and
  every permuted one), then summed: each distance counts as much as the other, whatever its
  units, and the standardization treats the observed split like any permuted one, which
  keeps the test exact.
- **Permutations** relabel the explanations within each class only, so a class that is
  easier to tell apart never stands in for another; p = (1 + #{permuted >= observed}) /
  (1 + n_perm), seeded.
- **Effect**: the probability that an explanation of the second sample is farther from one of
  the first than two explanations of the first are from each other, in the same class (an
  AUC; ties count one half), averaged over classes and over the K distances. 0.5 means the
  second sample sits among the first as one of them would; 1 means every cross pair is
  farther apart than every pair within the first sample.
- **Interval**: a percentile bootstrap, resampling explanations with replacement within each
  class and side, seeded; a pair of the same explanation drawn twice is not a pair.
- **Holm**'s step-down adjustment over a family of p-values (the stages of a variant).
"""
from __future__ import annotations

from math import comb

import numpy as np

#: Permutations of each test: the smallest p-value they can give is 1 / (1 + N_PERM).
N_PERM = 1999
#: Bootstrap draws of the effect's interval.
N_BOOT = 1000
#: Level of the tests.
ALPHA = 0.05


def _check(dists, second) -> tuple[np.ndarray, np.ndarray]:
    dists = np.asarray(dists, np.float64)
    second = np.asarray(second, bool)
    if dists.ndim != 4 or dists.shape[2] != dists.shape[3]:
        raise ValueError(f"dists must be (distances, classes, m, m), got shape {dists.shape}")
    if second.shape != dists.shape[1:3]:
        raise ValueError(f"second must be (classes, m) = {dists.shape[1:3]}, got {second.shape}")
    counts = second.sum(1)
    if np.unique(counts).size != 1 or not 2 <= counts[0] <= second.shape[1] - 2:
        raise ValueError(f"every class needs the same number (>= 2) of explanations on each side; second counts "
                         f"{counts.tolist()} of {second.shape[1]}")
    return dists, second


def energy(dists, second) -> np.ndarray:
    """The energy distance of each labelling, per distance, summed over classes.

    Args:
        dists: (K, C, m, m) distances (see the module docstring).
        second: Labellings (P, C, m) or one (C, m): True for the second sample.

    Returns:
        (P, K) energy distances ((K,) for one labelling).
    """
    dists = np.asarray(dists, np.float64)
    lab = np.asarray(second, bool)
    one = lab.ndim == 2
    b = lab[None] if one else lab
    b = b.astype(np.float64)
    a = 1.0 - b
    nx, ny = a.sum(-1).T, b.sum(-1).T  # (C, P)
    # x^T D y per (distance, class, labelling), batched matrix products over (distance, class);
    # the zero diagonal leaves pairs of distinct explanations only.
    a, b = a.transpose(1, 0, 2)[None], b.transpose(1, 0, 2)[None]  # (1, C, P, m)
    da, db = a @ dists, b @ dists  # (K, C, P, m)
    sxy, sxx, syy = (da * b).sum(-1), (da * a).sum(-1), (db * b).sum(-1)
    e = (2.0 * sxy / (nx * ny) - sxx / (nx * (nx - 1)) - syy / (ny * (ny - 1))).sum(1).T
    return e[0] if one else e


def permutations(second, n_perm: int, seed: int = 0) -> np.ndarray:
    """`n_perm` labellings (n_perm, C, m), each `second` shuffled within every class."""
    second = np.asarray(second, bool)
    rng = np.random.default_rng(seed)
    return rng.permuted(np.broadcast_to(second, (n_perm, *second.shape)), axis=-1)


def permutation_test(dists, second, n_perm: int = N_PERM, seed: int = 0) -> dict:
    """The stratified permutation test of "both samples come from the same distribution in
    every class" (see the module docstring).

    Args:
        dists: (K, C, m, m) distances.
        second: (C, m), True for the second sample.
        n_perm: Permutations.
        seed: Seed of the permutations.

    Returns:
        A dict: "p_value", "statistic" (the observed combined statistic, in permutation
        standard deviations) and "energy" (the observed energy distance per distance).

    Raises:
        ValueError: Malformed inputs, or n_perm < 1.
    """
    dists, second = _check(dists, second)
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    e = energy(dists, np.concatenate([second[None], permutations(second, n_perm, seed)]))
    sd = e.std(0)
    z = np.where(sd > 0, (e - e.mean(0)) / np.where(sd > 0, sd, 1.0), 0.0)
    t = z.sum(1)
    # A permutation that reproduces the observed split (or swaps it) gives the observed value up
    # to summation order: count it as a tie, not as smaller.
    tol = 1e-9 * (1.0 + abs(t[0]))
    p = (1 + int((t[1:] >= t[0] - tol).sum())) / (1 + n_perm)
    return {"p_value": float(p), "statistic": float(t[0]), "energy": e[0].tolist()}


def _aucs(cross: np.ndarray, within: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """P(cross > within) + P(tie) / 2 over the last two axes' pairs; cross (..., a), within
    (..., b) with valid (..., b) marking real pairs. nan where no pair is valid."""
    gt = (cross[..., :, None] > within[..., None, :]) + 0.5 * (cross[..., :, None] == within[..., None, :])
    n = valid.sum(-1) * cross.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (gt * valid[..., None, :]).sum((-1, -2)) / n


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """The mean over `axis` of the values that are not nan; nan where there is none (a
    bootstrap draw can pick one explanation for every slot of a side: no pair to compare)."""
    ok = ~np.isnan(x)
    n = ok.sum(axis)
    return np.where(n > 0, np.where(ok, x, 0.0).sum(axis) / np.maximum(n, 1), np.nan)


def _effects(dists, first_idx, second_idx) -> np.ndarray:
    """AUC per (draw, distance), averaged over classes: first_idx (B, C, s1), second_idx (B, C, s2)
    index the m axis of dists (K, C, m, m)."""
    c = np.arange(dists.shape[1])[None, :, None, None]
    cross = dists[:, c, first_idx[..., :, None], second_idx[..., None, :]]   # (K, B, C, s1, s2)
    within = dists[:, c, first_idx[..., :, None], first_idx[..., None, :]]   # (K, B, C, s1, s1)
    valid = np.broadcast_to(first_idx[..., :, None] != first_idx[..., None, :], within.shape)
    k, b, cl = cross.shape[:3]
    auc = _aucs(cross.reshape(k, b, cl, -1), within.reshape(k, b, cl, -1), valid.reshape(k, b, cl, -1))
    return _nanmean(auc, 2).T  # (B, K)


def effect(dists, second, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """The effect (see the module docstring) with a percentile bootstrap interval.

    Args:
        dists: (K, C, m, m) distances.
        second: (C, m), True for the second sample.
        n_boot: Bootstrap draws.
        seed: Seed of the draws.
        level: Coverage of the interval.

    Returns:
        A dict: "effect" (the mean over distances), "effect_ci" ([low, high]) and
        "effect_by_distance" (the AUC of each distance).
    """
    dists, second = _check(dists, second)
    first_idx = np.stack([np.nonzero(~row)[0] for row in second])[None]
    second_idx = np.stack([np.nonzero(row)[0] for row in second])[None]
    observed = _effects(dists, first_idx, second_idx)[0]
    rng = np.random.default_rng(seed)
    pick = (lambda idx: np.take_along_axis(np.broadcast_to(idx, (n_boot, *idx.shape[1:])),
                                           rng.integers(0, idx.shape[-1], (n_boot, *idx.shape[1:])), -1))
    boot = _nanmean(_effects(dists, pick(first_idx), pick(second_idx)), 1)
    boot = boot[~np.isnan(boot)]
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1.0 - tail])
    return {"effect": float(observed.mean()), "effect_ci": [float(lo), float(hi)],
            "effect_by_distance": observed.tolist()}


def holm(p_values) -> list:
    """Holm's step-down adjustment: the i-th smallest of k p-values becomes the running
    maximum of (k - j + 1) p_(j) over j <= i, capped at 1; returned in the input's order."""
    p = np.asarray(p_values, np.float64)
    if p.ndim != 1 or ((p < 0) | (p > 1)).any():
        raise ValueError(f"p-values must be a list of numbers in [0, 1], got {p_values}")
    order = np.argsort(p, kind="stable")
    k = p.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((k - np.arange(k)) * p[order]))
    out = np.empty(k)
    out[order] = adjusted
    return out.tolist()


def smallest_p_value(classes: int, per_side: int, n_perm: int = N_PERM) -> float:
    """The smallest p-value a test of `classes` classes with `per_side` explanations of each
    class on each side can give: 1 / (1 + n_perm), or the share of permutations that reproduce
    the observed split (or swap its sides) in every class, whichever is larger."""
    ties = (2.0 / comb(2 * per_side, per_side)) ** classes
    return max(1.0 / (1 + n_perm), ties)


def check_size(classes: int, per_side: int, tests: int, n_perm: int = N_PERM, alpha: float = ALPHA) -> None:
    """Refuse a design whose tests cannot all come out significant after Holm's adjustment over
    `tests` tests: that needs tests * smallest_p_value < alpha.

    Raises:
        ValueError: Fewer than 2 explanations per class and side, or too few to reach alpha;
            the message says how many seeds (or permutations) are needed.
    """
    if per_side < 2:
        raise ValueError(f"the test needs at least 2 seeds per class on each side (pairs within a side), got "
                         f"{per_side}")
    if tests * smallest_p_value(classes, per_side, n_perm) < alpha:
        return
    if tests / (1 + n_perm) >= alpha:
        raise ValueError(f"{n_perm} permutations cannot give a p-value below alpha={alpha} after Holm's "
                         f"adjustment over {tests} tests: use at least {int(np.ceil(tests / alpha))} permutations")
    need = next(s for s in range(per_side + 1, 64) if tests * smallest_p_value(classes, s, n_perm) < alpha)
    raise ValueError(f"{per_side} seeds per class on each side, {classes} classes: the smallest p-value the test can "
                     f"give, {smallest_p_value(classes, per_side, n_perm):.3g}, cannot pass alpha={alpha} after Holm's "
                     f"adjustment over {tests} tests; use at least {need} seeds per side (or more classes)")


def resampled_tests(dists, first, second, per_side: int, mixed: int = 0, draws: int = 200, n_perm: int = N_PERM,
                    seed: int = 0) -> dict:
    """Tests on samples drawn from pools of explanations, for calibration (no new AM runs).

    Each draw takes, per class, `per_side` explanations of pool `first` for the first sample
    and, for the second, `mixed` explanations of pool `second` with `per_side - mixed` other
    explanations of pool `first`. mixed=0 is a null comparison (both samples from the first
    pool, disjoint); mixed > 0 plants an effect (a mixture) of a known share.

    Args:
        dists: (K, C, m, m) distances over the pools of every class.
        first: (C, a) indices of the first pool in each class, a >= 2 * per_side - mixed.
        second: (C, b) indices of the second pool, b >= mixed.
        per_side: Explanations per class and side.
        mixed: Explanations of the second pool in the second sample.
        draws: Tests.
        n_perm: Permutations of each test.
        seed: Seed of the draws and the tests.

    Returns:
        A dict of arrays over draws: "p_value" and "effect".
    """
    dists = np.asarray(dists, np.float64)
    first, second = np.asarray(first), np.asarray(second)
    if not 0 <= mixed <= min(per_side, second.shape[1]) or first.shape[1] < 2 * per_side - mixed:
        raise ValueError(f"pools of {first.shape[1]} and {second.shape[1]} explanations per class cannot give "
                         f"{per_side} per side with {mixed} mixed in")
    rng = np.random.default_rng(seed)
    side = np.zeros((dists.shape[1], 2 * per_side), bool)
    side[:, per_side:] = True
    p, eff = np.empty(draws), np.empty(draws)
    for d in range(draws):
        a = rng.permuted(first, axis=1)
        b = rng.permuted(second, axis=1)
        idx = np.concatenate([a[:, :2 * per_side - mixed], b[:, :mixed]], 1)  # first sample, then second
        sub = np.take_along_axis(np.take_along_axis(dists, idx[None, :, :, None], 2), idx[None, :, None, :], 3)
        p[d] = permutation_test(sub, side, n_perm, seed=int(rng.integers(2 ** 31)))["p_value"]
        eff[d] = _effects(sub, np.nonzero(~side[0])[0][None, None].repeat(sub.shape[1], 1),
                          np.nonzero(side[0])[0][None, None].repeat(sub.shape[1], 1))[0].mean()
    return {"p_value": p, "effect": eff}
