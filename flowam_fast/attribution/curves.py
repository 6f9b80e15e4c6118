"""Faithfulness of attributions: deletion and insertion curves against a random order, their
areas with bootstrap intervals over clouds, and the model randomization check.

- **Deletion**: the points are removed in attribution order (highest score first; ties to the
  smaller index), a fraction f of them at each step of a fixed grid (`FRACTIONS`), and the
  target's probability (softmax of the logits) is read after each step. Removed points follow
  the replacement rule of `removal` (copies of the nearest kept point; N stays fixed; all
  removed is the centroid baseline).
- **Insertion**: the other way round: from the baseline (every point at the centroid: no shape,
  at the place the data are centred on), the highest-scored fraction f of the points is put
  back, the rest replaced by the rule.
- **Areas**, oriented so that higher means more faithful: the area *over* the deletion curve,
  the integral of 1 - p over f in [0, 1], and the area *under* the insertion curve, the
  integral of p (trapezoidal rule on the grid).
- **Random control**: the same curves with the points in a random order, drawn per cloud from
  a generator seeded by (seed, the cloud's index in its dataset), so a cloud's control does
  not depend on the batch it ran in.
- **Intervals**: percentile bootstrap over clouds (95 %, seeded); the gains (method minus
  random, per cloud) are resampled paired.
- **Randomization check** (Adebayo et al., 2018): the model's parameter blocks are
  re-initialized from the output down, cumulatively (`evaluation.sanity`'s cascading stages
  and weights), and each stage's attributions are compared with the trained model's by the
  Spearman rank correlation per cloud; a faithful method's correlation falls.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..am.engine import frozen
from .methods import as_clouds, as_targets, attribute, chunks, forward, model_device
from .removal import remove

#: The fractions of points removed (deletion) or put back (insertion) at each step of a curve.
FRACTIONS = tuple(np.round(np.linspace(0.0, 1.0, 11), 6).tolist())
#: The curves of a method, in the order they are stored.
CURVES = ("deletion", "insertion", "random_deletion", "random_insertion")
BOOTSTRAP = 1000


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """Each point's position in attribution order (0 = highest score; ties to the smaller index)."""
    order = torch.sort(-scores, dim=1, stable=True).indices
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def random_ranks(indices, n: int, seed: int, device) -> torch.Tensor:
    """Random positions (B, n), one permutation per cloud from (seed, its dataset index)."""
    return torch.as_tensor(np.stack([np.random.default_rng([int(seed), int(i)]).permutation(n) for i in indices]),
                           device=device)


def _check_fractions(fractions) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or f.size < 2 or f[0] != 0.0 or f[-1] != 1.0 or np.any(np.diff(f) <= 0):
        raise ValueError(f"fractions must rise from 0 to 1 in at least two steps, got {list(np.atleast_1d(f))}")
    return f


def faithfulness_curves(model, points, targets, scores, fractions=FRACTIONS, seed: int = 0, indices=None,
                        batch_size: int | None = None) -> dict:
    """The target's probability along the deletion and insertion curves, in attribution order
    and in the random order.

    Args:
        model: The classifier (as `attribute` takes it).
        points: Clouds (B, N, 3).
        targets: Target classes (B,).
        scores: Attributions (B, N), higher = more important.
        fractions: The grid of fractions, rising from 0 to 1.
        seed: Seed of the random order.
        indices: Each cloud's index in its dataset (B,), which seeds its random order; default
            0..B-1.
        batch_size: Perturbed clouds per forward pass (None: all at once).

    Returns:
        {curve: array (B, F)} for the curves "deletion", "insertion", "random_deletion" and
        "random_insertion".

    Raises:
        ValueError: Scores of another shape than the clouds' (B, N), NaN scores, or a bad grid.
    """
    f = _check_fractions(fractions)
    device = model_device(model)
    points = as_clouds(points).to(device)
    b, n, _ = points.shape
    scores = torch.as_tensor(scores).to(device)
    if tuple(scores.shape) != (b, n):
        raise ValueError(f"scores must be one per point, (B, N) = {(b, n)}, got {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores hold NaN or Inf")
    indices = np.arange(b) if indices is None else np.asarray(indices)
    counts = torch.as_tensor(np.rint(f * n).astype(np.int64), device=device)
    orders = {"": _ranks(scores), "random_": random_ranks(indices, n, seed, device)}
    with frozen(model), torch.no_grad():
        num_classes = forward(model, points[:1]).shape[1]
        targets = as_targets(targets, b, num_classes, device)
        # Rows (cloud, curve, fraction): a point is removed where its rank says so.
        masks, rows = [], []
        for prefix, ranks in orders.items():
            ahead = ranks[:, None, :] < counts[None, :, None]  # (B, F, N): among the first f of the order
            masks += [ahead, ~ahead]  # deletion removes them; insertion keeps only them
            rows += [prefix + "deletion", prefix + "insertion"]
        mask = torch.stack(masks, dim=1).reshape(-1, n)  # (B * 4 * F, N)
        cloud = torch.arange(b, device=device).repeat_interleave(len(masks) * len(f))
        prob = torch.empty(mask.shape[0], dtype=points.dtype, device=device)
        for start, stop in chunks(mask.shape[0], batch_size):
            c = cloud[start:stop]
            logits = forward(model, remove(points[c], mask[start:stop]))
            prob[start:stop] = logits.softmax(dim=1).gather(1, targets[c, None])[:, 0]
    prob = prob.view(b, len(masks), len(f)).cpu().numpy()
    return {name: prob[:, i] for i, name in enumerate(rows)}


def curve_areas(curves: dict, fractions=FRACTIONS) -> dict:
    """Per-cloud areas of each curve, oriented so that higher = more faithful: over the
    deletion curves (the integral of 1 - p), under the insertion curves (of p), by the
    trapezoidal rule.

    Args:
        curves: {curve: probabilities (B, F)}; names ending in "deletion" are deletion curves.
        fractions: The grid (F,), rising from 0 to 1.

    Returns:
        {"<curve>_area": (B,)}.

    Raises:
        ValueError: A bad grid.
    """
    f = _check_fractions(fractions)
    out = {}
    for name, p in curves.items():
        p = np.asarray(p, dtype=np.float64)
        area = np.trapezoid(p, f, axis=1)
        out[f"{name}_area"] = 1.0 - area if name.endswith("deletion") else area
    return out


def _interval(values: np.ndarray, resample: np.ndarray) -> list:
    means = values[resample].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summarize_curves(curves: dict, fractions=FRACTIONS, seed: int = 0, resamples: int = BOOTSTRAP) -> dict:
    """One method's mean areas, their 95 % bootstrap intervals over clouds and the gains over the
    random order, from its `faithfulness_curves` (any number of batches concatenated).

    Returns:
        A dict with, for each of deletion_area, insertion_area, random_deletion_area,
        random_insertion_area, deletion_gain and insertion_gain (method minus random, per
        cloud), the mean and "<name>_ci" ([low, high]); "clouds"; and "mean_curves", each
        curve's mean probability at each fraction.

    Raises:
        ValueError: No clouds, or curves of different lengths.
    """
    areas = curve_areas(curves, fractions)
    sizes = {len(v) for v in areas.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"curves must hold the same clouds, at least one; got sizes {sorted(sizes)}")
    areas["deletion_gain"] = areas["deletion_area"] - areas["random_deletion_area"]
    areas["insertion_gain"] = areas["insertion_area"] - areas["random_insertion_area"]
    count = sizes.pop()
    # One resampling of the clouds for every quantity, so the intervals are paired.
    resample = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    out = {"clouds": count, "fractions": [float(x) for x in fractions]}
    for name, values in areas.items():
        out[name] = float(values.mean())
        out[f"{name}_ci"] = _interval(values, resample)
    out["mean_curves"] = {name: np.asarray(p).mean(axis=0).tolist() for name, p in curves.items()}
    return out


def _deep_copy(model):
    """A deep copy of `model`. Tensors that a forward pass left on its modules inside an
    autograd graph (an own model's cached output) cannot be deep-copied: the copy gets them
    detached; the model keeps its own."""
    held = [(m, k, v) for m in model.modules() for k, v in vars(m).items()
            if isinstance(v, torch.Tensor) and v.grad_fn is not None]
    try:
        for m, k, v in held:
            setattr(m, k, v.detach())
        return copy.deepcopy(model)
    finally:
        for m, k, v in held:
            setattr(m, k, v)


def randomization_check(model, points, targets, methods, options: dict | None = None, seed: int = 0,
                        groups=None) -> dict:
    """The Spearman rank correlation of each method's attributions on the trained model and
    on the model randomized from the output down (cascading, cumulative stages).

    Args:
        model: The trained classifier (left untouched; a copy is randomized).
        points: Clouds (B, N, 3).
        targets: Target classes (B,).
        methods: Method names (see `attribute`).
        options: {method: options of `attribute`}.
        seed: Seed of the re-initialized weights (as `evaluation.sanity`'s).
        groups: The blocks [(name, [module names])], from the output down; default
            `evaluation.sanity.randomization_groups(model)`.

    Returns:
        {method: [{"stage", "randomized", "spearman" (mean over clouds), "spearman_ci"}]} in
        stage order; the trained model's own correlation is 1.
    """
    from ..evaluation.sanity import randomization_groups, randomize, rank_vectors, stage_plan

    options = options or {}
    plan = stage_plan(randomization_groups(model) if groups is None else groups, ("cascading",))
    base = {m: attribute(model, points, targets, method=m, **options.get(m, {})).cpu().numpy() for m in methods}
    copy_ = _deep_copy(model)
    out = {m: [] for m in methods}
    done: list = []
    resample = np.random.default_rng(seed).integers(0, len(points), size=(BOOTSTRAP, len(points)))
    for _variant, stage, mods in plan:
        randomize(copy_, [name for name in mods if name not in done], seed)
        done = list(mods)
        for m in methods:
            again = attribute(copy_, points, targets, method=m, **options.get(m, {}))
            # Spearman's rho of each cloud's scores: the dot product of the unit rank vectors.
            rho = (rank_vectors(base[m]) * rank_vectors(again.cpu().numpy())).sum(1)
            out[m].append({"stage": stage, "randomized": list(mods), "spearman": float(rho.mean()),
                           "spearman_ci": _interval(rho, resample)})
    return out
