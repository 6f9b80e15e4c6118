"""Metrics of explanations, vectorized over jobs and references (no Python loops over points,
no batch-1 forwards).

- Shape: `chamfer` / `chamfer_to_class` (fused knn) and `emd` / `emd_to_class` (exact optimal
  transport, POT), both in squared-distance units.
- Realism: `fid_per_class`, the Fréchet distance between Gaussian fits of an evaluator's
  features (`evaluator_features`: inputs of a PointNet's fc1 and fc3) of the explanations and
  of the real samples of each class.
- Diversity: `m_inception_score` (m-IS), per class, from the evaluator's predictions.

Choices:

- Minimum set size 2 (`MIN_SET_SIZE`) for a Gaussian fit: one sample has no covariance. Per
  class this is usually far below the feature dimension d (1024 for PointNet's global
  feature), and with n <= d the sample covariance is singular (rank <= n - 1). The Fréchet
  distance of a singular fit is still defined but its covariance terms are noise, so the
  default is Ledoit-Wolf shrinkage toward the scaled identity, (1 - alpha) S + alpha
  (tr S / d) I, with the 2004 optimal alpha estimated per set (positive definite whenever
  alpha > 0 and tr S > 0). shrinkage=None gives the plain sample covariance (ddof=1) of
  the usual FID. FIDs are comparable only between runs with the same shrinkage and
  similar set sizes.
- Matrix square roots through symmetric eigendecompositions, tiny negative eigenvalues
  clipped to 0, never scipy's sqrtm of the non-symmetric Sa Sb (complex rounding noise).
- m-IS of a class with a single explanation is 1.0 (no pairs: no measurable diversity).
- EMD: POT's exact network simplex, one LP per pair of clouds. The only approximation is
  that clouds with more than `max_points` points are replaced by a random subset of that
  size (fixed numpy seed), since the LP grows with N * M.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from ..ops.chamfer import chamfer

#: Fewest samples a Gaussian fit (FID) accepts per set; see the module docstring.
MIN_SET_SIZE = 2
#: Probabilities are clamped to this before the log in m-IS (KL against a zero is infinite).
PROB_EPS = 1e-12
#: Iteration cap of the exact EMD solver, well above what 256 x 256 problems need.
EMD_MAX_ITER = 1_000_000


def success_rate(logits, classes) -> float:
    """Fraction of jobs whose target class is the argmax of their logits.

    Args:
        logits: Logits (J, K).
        classes: Target class of each job (J,).

    Returns:
        The fraction, NaN for no jobs.
    """
    logits = torch.as_tensor(logits)
    classes = torch.as_tensor(classes)
    return float((logits.argmax(1) == classes).float().mean()) if len(classes) else float("nan")


def references_by_class(points: np.ndarray, labels: np.ndarray, num_refs: int, seed: int = 0) -> dict:
    """Up to `num_refs` real samples per class, chosen at random by a fixed seed.

    Args:
        points: Real clouds (M, P, 3).
        labels: Their classes (M,).
        num_refs: Samples per class at most.
        seed: Seed of the choice.

    Returns:
        {class: float32 tensor (R, P, 3)}, the samples in dataset order.
    """
    rng = np.random.default_rng(seed)
    refs = {}
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        if idx.size > num_refs:
            idx = np.sort(rng.choice(idx, num_refs, replace=False))
        refs[int(c)] = torch.as_tensor(points[idx], dtype=torch.float32)
    return refs


def to_device(refs: dict, device) -> dict:
    """The same references on `device`."""
    return {c: r.to(device) for c, r in refs.items()}


def chamfer_to_class(points, classes, refs: dict, chunk: int = 256, backend: str = "auto") -> np.ndarray:
    """Per job, the Chamfer distance to the real samples of its class, averaged over them.

    Runs on the device of the references (move them with `to_device` to measure on a GPU).

    Args:
        points: Clouds (J, N, 3).
        classes: Class of each cloud (J,).
        refs: {class: (R, M, 3)}, as from `references_by_class`.
        chunk: (cloud, reference) pairs per kernel call.
        backend: Kernel backend of the Chamfer distance.

    Returns:
        The mean distance of each job (J,), float64, in squared-distance units.

    Raises:
        ValueError: A class without references.
    """
    points = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    classes = np.asarray(classes)
    missing = sorted(set(classes.tolist()) - set(refs))
    if missing:
        raise ValueError(f"no real samples of classes {missing} to compare with")
    out = np.zeros(len(classes), np.float64)
    for c in np.unique(classes):
        jobs = np.nonzero(classes == c)[0]
        ref = refs[int(c)]
        # Every (job, reference) pair of this class, a chunk of pairs at a time.
        pj = np.repeat(jobs, ref.shape[0])
        pr = np.tile(np.arange(ref.shape[0]), jobs.size)
        vals = np.empty(pj.size, np.float64)
        for s in range(0, pj.size, chunk):
            a = points[pj[s:s + chunk]].to(ref.device)
            b = ref[pr[s:s + chunk]]
            vals[s:s + chunk] = chamfer(a, b, backend=backend).double().cpu().numpy()
        out[jobs] = vals.reshape(jobs.size, ref.shape[0]).mean(1)
    return out


def nearest_class(points, refs: dict, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Per job, the real class whose samples are closest, over every class in refs.

    Class-agnostic realism: a cloud can look real without looking like the class it was made
    for. A class's distance is the mean Chamfer distance over its references.

    Args:
        points: Clouds (J, N, 3).
        refs: {class: (R, M, 3)}, as from `references_by_class`.
        backend: Kernel backend of the Chamfer distance.

    Returns:
        A tuple of the distance to the nearest class (J,) and that class (J,).

    Raises:
        ValueError: No references.
    """
    points = np.asarray(points)
    if not refs:
        raise ValueError("nearest_class needs references of at least one class")
    names = sorted(refs)
    d = np.stack([chamfer_to_class(points, np.full(len(points), c), refs, backend=backend) for c in names], 1)
    best = d.argmin(1)
    return d[np.arange(len(points)), best], np.asarray(names)[best]


# --------------------------------------------------------------------------------------------
# Features of an evaluator network


def _points_array(points, name: str = "points", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(J, N, 3) tensor from numpy or torch; rejects other shapes and non-finite values."""
    pts = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points)
    if pts.ndim != 3 or pts.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (J, N, 3), got {tuple(pts.shape)}")
    pts = pts.detach().to(dtype)
    if not bool(torch.isfinite(pts).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return pts


def _evaluator_taps(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    taps = tuple(getattr(model, name, None) for name in ("fc1", "fc3"))
    if not all(isinstance(t, torch.nn.Module) for t in taps):
        raise ValueError(
            f"evaluator_features needs a PointNet evaluator (modules `fc1` and `fc3`); "
            f"{type(model).__name__} has no such modules")
    return taps


def evaluator_features(model: torch.nn.Module, points, batch_size: int = 256) -> dict:
    """The evaluator's features of J clouds, for FID, m-IS and the sanity check.

    The model runs in eval mode, `batch_size` clouds per forward pass.

    Args:
        model: The evaluator, a PointNet (its fc1 and fc3 inputs are read).
        points: Clouds (J, N, 3).
        batch_size: Clouds per forward pass.

    Returns:
        A dict of float64 numpy arrays: "global" (J, C_global), the input of `fc1`;
        "penultimate" (J, C_pen), the input of `fc3`; "logits" (J, K); "probs" (J, K),
        their softmax.

    Raises:
        ValueError: batch_size < 1, a model without fc1 and fc3, or points that are not
            (J, N, 3) or contain NaN or Inf.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fc1, fc3 = _evaluator_taps(model)
    param = next(model.parameters())
    pts = _points_array(points, dtype=param.dtype)
    device = param.device
    captured: dict[str, list[torch.Tensor]] = {"global": [], "penultimate": []}

    def recorder(key):
        # Pre-hooks see the modules' inputs on the plain and on the fused path alike.
        return lambda _module, args: captured[key].append(args[0].detach().double().cpu())

    handles = [fc1.register_forward_pre_hook(recorder("global")),
               fc3.register_forward_pre_hook(recorder("penultimate"))]
    # Per module, so a submodule kept in eval on purpose stays so.
    modes = [(m, m.training) for m in model.modules()]
    logits = []
    try:
        model.eval()
        with torch.no_grad():
            for s in range(0, pts.shape[0], batch_size):
                x = pts[s:s + batch_size].to(device).transpose(1, 2).contiguous()
                logits.append(model(x).double().cpu())
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode

    def stack(parts: list[torch.Tensor], width: int) -> np.ndarray:
        return torch.cat(parts).numpy() if parts else np.zeros((0, width))

    out = {"global": stack(captured["global"], fc1.in_features),
           "penultimate": stack(captured["penultimate"], fc3.in_features),
           "logits": stack(logits, fc3.out_features)}
    out["probs"] = torch.softmax(torch.from_numpy(out["logits"]), dim=1).numpy()
    return out


# --------------------------------------------------------------------------------------------
# Fréchet distance between Gaussian fits of feature sets


def _feature_set(x, name: str) -> np.ndarray:
    """(n, d) float64 array with n >= MIN_SET_SIZE and only finite values."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D feature set (n, d), got shape {x.shape}")
    if x.shape[0] < MIN_SET_SIZE:
        raise ValueError(f"{name} has {x.shape[0]} samples; a Gaussian fit needs at least {MIN_SET_SIZE}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def ledoit_wolf_alpha(x) -> float:
    """Ledoit & Wolf's (2004) optimal shrinkage weight of the scaled identity (tr S / d) I.

    Computed from (n, d) samples x with the paper's quantities and its normalized Frobenius
    norm ||A||^2 = tr(A A^T) / d:
    delta^2 = ||S - mu I||^2, beta^2 = min(delta^2, sum_k ||x_k x_k^T - S||^2 / n^2),
    alpha = beta^2 / delta^2, with S the biased (1/n) covariance of the centered x_k.

    Returns:
        alpha, in [0, 1].
    """
    x = _feature_set(x, "x")
    n, d = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    s_fro2 = float(np.sum(s * s))
    mu = np.trace(s) / d
    delta2 = (s_fro2 - d * mu * mu) / d
    # sum_k ||x_k x_k^T - S||_F^2 = sum_k ||x_k||^4 - n ||S||_F^2, since sum_k x_k x_k^T = n S.
    beta2 = (np.sum(np.sum(xc * xc, 1) ** 2) / n - s_fro2) / (n * d)
    if delta2 <= 0.0:
        return 0.0  # S is already a multiple of the identity: shrinking changes nothing.
    return float(np.clip(min(beta2, delta2) / delta2, 0.0, 1.0))


def _shrinkage_alpha(x: np.ndarray, shrinkage) -> float:
    if shrinkage is None:
        return 0.0
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit-wolf":
            raise ValueError(f"unknown shrinkage {shrinkage!r}; use None, a float in [0, 1] or 'ledoit-wolf'")
        return ledoit_wolf_alpha(x)
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, numbers.Real) or not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be None, a float in [0, 1] or 'ledoit-wolf', got {shrinkage!r}")
    return float(shrinkage)


def gaussian_fit(x, shrinkage="ledoit-wolf") -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian fit of a feature set, with a shrunk covariance.

    The sample covariance S (ddof=1) shrunk as (1 - alpha) S + alpha (tr S / d) I. The
    Ledoit-Wolf alpha is estimated on the 1/n covariance, but it is scale-free, so it applies
    to S as it is.

    Args:
        x: Features (n, d), n >= `MIN_SET_SIZE`.
        shrinkage: As in `frechet_distance`.

    Returns:
        A tuple of the mean (d,) and the covariance (d, d).
    """
    x = _feature_set(x, "x")
    alpha = _shrinkage_alpha(x, shrinkage)
    mean = x.mean(0)
    cov = np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])
    if alpha > 0.0:
        cov = (1.0 - alpha) * cov + alpha * (np.trace(cov) / cov.shape[0]) * np.eye(cov.shape[0])
    return mean, cov


def _factor_fit(x, shrinkage="ledoit-wolf") -> tuple[np.ndarray, np.ndarray, float]:
    """`gaussian_fit` as (mean (d,), F (d, n), s) with covariance F F^T + s I: F is the
    centered samples scaled by sqrt((1 - alpha) / (n - 1)) and s = alpha tr S / d. With fewer
    samples than dimensions (a class's explanations, its real test samples) this is exact and
    far smaller than the (d, d) matrix."""
    x = _feature_set(x, "x")
    alpha = _shrinkage_alpha(x, shrinkage)
    n, d = x.shape
    mean = x.mean(0)
    xc = (x - mean).T / np.sqrt(n - 1)
    s = alpha * float(np.sum(xc * xc)) / d
    return mean, np.sqrt(1.0 - alpha) * xc, s


def _dense_cov(fit) -> np.ndarray:
    _, f, s = fit
    return f @ f.T + s * np.eye(f.shape[0])


def _trace_sqrt_factored(fa, fb) -> float:
    """tr((Sa Sb)^1/2) for S = F F^T + s I given as factors. With V an orthonormal basis of a
    space holding both F's columns (r = na + nb < d of them), both covariances are block
    diagonal in (V, V-perp), where they are s_a I and s_b I. So Sa^1/2 Sb Sa^1/2 is too: its
    eigenvalues are those of the r x r problem on V, and s_a s_b (d - r times). Exact, at
    O(d r^2) rather than O(d^3)."""
    (_, a, sa), (_, b, sb) = fa, fb
    d = a.shape[0]
    r = a.shape[1] + b.shape[1]
    if r >= d:
        return _trace_sqrt_product(_dense_cov(fa), _dense_cov(fb))
    q, _ = np.linalg.qr(np.concatenate([a, b], axis=1))
    pa, pb = q.T @ a, q.T @ b
    inner_a = pa @ pa.T + sa * np.eye(r)
    inner_b = pb @ pb.T + sb * np.eye(r)
    return _trace_sqrt_product(inner_a, inner_b) + (d - r) * float(np.sqrt(sa * sb))


def _psd_eigh(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD matrix; rounding can leave tiny negative
    eigenvalues, which are clipped to 0 so square roots stay real."""
    w, v = np.linalg.eigh((m + m.T) / 2.0)
    return np.clip(w, 0.0, None), v


def _left_factor(sa: np.ndarray) -> np.ndarray:
    """Some R with R R^T = Sa: Cholesky when Sa is positive definite (shrunk fits), else the
    symmetric root from `_psd_eigh` (a singular sample covariance)."""
    try:
        return np.linalg.cholesky(sa)
    except np.linalg.LinAlgError:
        w, v = _psd_eigh(sa)
        return (v * np.sqrt(w)) @ v.T


def _trace_sqrt_product(sa: np.ndarray, sb: np.ndarray) -> float:
    """tr((Sa^1/2 Sb Sa^1/2)^1/2) = tr((Sa Sb)^1/2), through symmetric matrices only: sqrtm of
    the non-symmetric Sa Sb leaves complex rounding noise (and fails when Sa is singular).
    R^T Sb R with R R^T = Sa has the same eigenvalues as Sa^1/2 Sb Sa^1/2, and only those are
    needed, so no eigenvectors are computed when Cholesky works (~3x cheaper at d = 1024)."""
    r = _left_factor(sa)
    inner = r.T @ sb @ r
    inner = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(np.clip(inner, 0.0, None)).sum())


def frechet_distance(a, b, shrinkage="ledoit-wolf", fit_b=None) -> float:
    """The Fréchet distance between Gaussian fits of two feature sets, in float64.

    ||mu_a - mu_b||^2 + tr Sa + tr Sb - 2 tr((Sa^1/2 Sb Sa^1/2)^1/2), clipped at >= 0.

    Args:
        a: Features (n, d).
        b: Features (m, d).
        shrinkage: None or 0.0 (sample covariance), alpha in [0, 1], or "ledoit-wolf"
            (alpha estimated per set); see the module docstring for why shrinkage is the
            default.
        fit_b: b's fit with the same shrinkage, when it is already known (a real set
            compared with many explanation sets): `gaussian_fit`'s (mean, covariance), or
            the factored (mean, F, s) that `fid_per_class` caches; b is not read then.

    Raises:
        ValueError: A set smaller than `MIN_SET_SIZE`, NaN or Inf, an invalid shrinkage, or
            feature dimensions that differ.
    """
    fa = _factor_fit(a, shrinkage)
    if fit_b is None:
        fit_b = _factor_fit(b, shrinkage)
    mu_a, mu_b = fa[0], fit_b[0]
    if mu_a.shape[0] != mu_b.shape[0]:
        raise ValueError(f"feature dimensions differ: a has {mu_a.shape[0]}, b has {mu_b.shape[0]}")
    diff = mu_a - mu_b
    if len(fit_b) == 3:  # factored (`_factor_fit`)
        trace_b = float(np.sum(fit_b[1] * fit_b[1])) + fit_b[2] * mu_b.shape[0]
        cross = _trace_sqrt_factored(fa, fit_b)
    else:  # (mean, covariance), as `gaussian_fit` gives
        trace_b = float(np.trace(fit_b[1]))
        cross = _trace_sqrt_product(_dense_cov(fa), fit_b[1])
    trace_a = float(np.sum(fa[1] * fa[1])) + fa[2] * mu_a.shape[0]
    value = float(diff @ diff) + trace_a + trace_b - 2.0 * cross
    return max(float(value), 0.0)


def _class_rows(labels: np.ndarray, c: int, minimum: int, what: str) -> np.ndarray:
    rows = np.nonzero(labels == c)[0]
    if rows.size == 0:
        raise ValueError(f"class {c}: no {what} to compare with (unknown class)")
    if rows.size < minimum:
        raise ValueError(f"class {c}: {rows.size} {what}; a Gaussian fit needs at least {minimum}")
    return rows


def _feature_layers(expl_feats: dict, real_feats: dict, layers, n_expl: int, n_real: int) -> None:
    for layer in layers:
        for feats, name, n in ((expl_feats, "expl_feats", n_expl), (real_feats, "real_feats", n_real)):
            if layer not in feats:
                raise ValueError(f"{name} has no layer {layer!r} (has {sorted(feats)})")
            shape = np.shape(feats[layer])
            if len(shape) != 2 or shape[0] != n:
                raise ValueError(f"{name}[{layer!r}] must have shape ({n}, C), got {shape}")
        if np.shape(expl_feats[layer])[1] != np.shape(real_feats[layer])[1]:
            raise ValueError(f"layer {layer!r}: feature dimensions differ, explanations "
                             f"{np.shape(expl_feats[layer])[1]} vs real {np.shape(real_feats[layer])[1]}")


def _layer_fid(expl, ex: np.ndarray, real, re: np.ndarray, shrinkage, c: int, layer: str, cache) -> float:
    try:
        key = (c, layer, repr(shrinkage))
        fit = cache.get(key) if cache is not None else None
        if fit is None:
            fit = _factor_fit(np.asarray(real)[re], shrinkage)
            if cache is not None:
                cache[key] = fit
        return frechet_distance(np.asarray(expl)[ex], None, shrinkage, fit_b=fit)
    except ValueError as err:
        raise ValueError(f"class {c}, layer {layer!r}: {err}") from err


def fid_per_class(expl_feats: dict, expl_classes, real_feats: dict, real_labels,
                  layers=("global", "penultimate"), shrinkage="ledoit-wolf", real_cache: dict | None = None) -> dict:
    """FID per class and layer between the explanations and the real samples of each class.

    Every class present in `expl_classes` needs at least `MIN_SET_SIZE` explanations and
    `MIN_SET_SIZE` real samples.

    Args:
        expl_feats: The explanations' features {layer: (J, C)}, e.g. from `evaluator_features`.
        expl_classes: Class of each explanation (J,).
        real_feats: The real samples' features {layer: (R, C)}.
        real_labels: Class of each real sample (R,).
        layers: Feature layers to compare.
        shrinkage: As in `frechet_distance`.
        real_cache: A dict kept between calls with the same real features, where the real
            sets' Gaussian fits are kept (they cost as much as the distances).

    Returns:
        A dict: "per_class" {c: {layer: fid, ..., "mean": over layers}}, "per_layer"
        {layer: mean over classes} and "mean" (over classes and layers).

    Raises:
        ValueError: No layers, missing or mis-shaped features, or a class with too few
            explanations or real samples.
    """
    expl_classes = np.asarray(expl_classes).reshape(-1)
    real_labels = np.asarray(real_labels).reshape(-1)
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers is empty")
    _feature_layers(expl_feats, real_feats, layers, expl_classes.size, real_labels.size)
    per_class = {}
    for c in np.unique(expl_classes).tolist():
        ex = _class_rows(expl_classes, c, MIN_SET_SIZE, "explanations")
        re = _class_rows(real_labels, c, MIN_SET_SIZE, "real samples")
        fids = {layer: _layer_fid(expl_feats[layer], ex, real_feats[layer], re, shrinkage, c, layer, real_cache)
                for layer in layers}
        per_class[int(c)] = {**fids, "mean": float(np.mean(list(fids.values())))}
    per_layer = {layer: float(np.mean([v[layer] for v in per_class.values()])) for layer in layers}
    overall = float(np.mean([v[layer] for v in per_class.values() for layer in layers])) if per_class else float("nan")
    return {"per_class": per_class, "per_layer": per_layer, "mean": overall}


# --------------------------------------------------------------------------------------------
# m-IS: intra-class diversity of the evaluator's predictions


def _kl_mean_over_pairs(p: np.ndarray) -> float:
    """Mean of KL(p_i || p_j) over ordered pairs i != j of the rows of p (n >= 2)."""
    # Identical rows are merged first and the KL of a row with itself is set to 0, so identical
    # predictions give exactly 0 (the matmul form below differs by rounding otherwise).
    uniq, counts = np.unique(p, axis=0, return_counts=True)
    logu = np.log(np.clip(uniq, PROB_EPS, None))
    kl = np.sum(uniq * logu, 1)[:, None] - uniq @ logu.T
    np.fill_diagonal(kl, 0.0)
    kl = np.clip(kl, 0.0, None)  # KL >= 0; negatives are rounding.
    n = p.shape[0]
    return float(counts @ kl @ counts) / (n * (n - 1))


def m_inception_score(probs, classes) -> dict:
    """m-IS (Gurumurthy et al. 2017), the intra-class diversity of the explanations.

    Per class c, exp(mean over ordered pairs i != j of KL(p_i || p_j)) over the evaluator's
    predicted distributions p of the explanations of class c. 1 means identical predictions.
    A class with a single explanation has no pairs and scores 1.0.

    Args:
        probs: Predicted distributions (J, K), rows summing to 1.
        classes: Class of each explanation (J,).

    Returns:
        A dict: "per_class" {c: m-IS} and "mean" (over classes).

    Raises:
        ValueError: Mis-shaped probs, NaN or Inf, or rows that are not distributions.
    """
    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    classes = np.asarray(classes).reshape(-1)
    if p.ndim != 2 or p.shape[0] != classes.size:
        raise ValueError(f"probs must have shape ({classes.size}, K) to match classes, got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probs contains NaN or inf")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-5):
        raise ValueError("probs rows must be probability distributions (non-negative, summing to 1)")
    per_class = {}
    for c in np.unique(classes).tolist():
        rows = p[classes == c]
        per_class[int(c)] = 1.0 if rows.shape[0] < 2 else float(np.exp(_kl_mean_over_pairs(rows)))
    mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return {"per_class": per_class, "mean": mean}


# --------------------------------------------------------------------------------------------
# Earth mover's distance


def _subsample(clouds: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Each cloud (P, N, 3) reduced to a random subset of max_points points (all if N <= it)."""
    if clouds.shape[1] <= max_points:
        return clouds
    # argsort of uniform keys: an independent random subset per cloud, in one call.
    keep = np.argsort(rng.random(clouds.shape[:2]), axis=1)[:, :max_points]
    return np.take_along_axis(clouds, keep[..., None], axis=1)


def _emd_pairs(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Exact EMD (squared-Euclidean cost, uniform weights) between a[ia[k]] and b[ib[k]]."""
    import ot  # Here, not at the top: importing POT takes seconds, and only EMD needs it.

    wa = ot.unif(a.shape[1])
    wb = ot.unif(b.shape[1])
    out = np.empty(len(ia), np.float64)
    # POT's network simplex solves one LP per call; its batched solver (ot.batch.solve_batch)
    # is an iterative proximal/Sinkhorn method, not exact, and emd2's several-histograms mode
    # needs one shared cost matrix. So: a loop over pairs (never over points).
    for k, (i, j) in enumerate(zip(ia, ib)):
        # scipy's cdist sums squared differences; ot.dist's default |x|^2 + |y|^2 - 2 x.y
        # loses ~1e-8 relative to cancellation (and can go negative for close points).
        cost_matrix = ot.dist(a[i], b[j], metric="sqeuclidean", backend="scipy")
        cost, log = ot.emd2(wa, wb, cost_matrix, numItermax=EMD_MAX_ITER, log=True)
        if log.get("warning"):
            raise RuntimeError(f"emd: the exact solver did not converge on pair {k}: {log['warning']}")
        out[k] = cost
    return out


def _clouds_f64(x, name: str) -> np.ndarray:
    return _points_array(x, name, torch.float64).cpu().numpy()


def emd(a, b, max_points: int = 256, seed: int = 0) -> np.ndarray:
    """The earth mover's distance of each pair of clouds a[i], b[i].

    The exact optimal transport cost between uniform weights with squared-Euclidean cost, i.e.
    the mean squared distance moved (the unit of the Chamfer distance). Clouds over
    `max_points` points are first subsampled at random: the only approximation.

    Args:
        a: Clouds (P, N, 3).
        b: Clouds (P, M, 3).
        max_points: Points per cloud at most.
        seed: Seed of the numpy generator of the subsets.

    Returns:
        The distance of each pair (P,), float64.

    Raises:
        ValueError: max_points < 1, mis-shaped clouds, NaN or Inf, or a and b with different
            numbers of clouds.
        RuntimeError: The exact solver did not converge.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    a = _clouds_f64(a, "a")
    b = _clouds_f64(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must hold the same number of clouds, got {a.shape[0]} and {b.shape[0]}")
    rng = np.random.default_rng(seed)
    a = _subsample(a, max_points, rng)
    b = _subsample(b, max_points, rng)
    idx = np.arange(a.shape[0])
    return _emd_pairs(a, b, idx, idx)


def emd_to_class(points, classes, refs: dict, num_refs: int = 5, max_points: int = 256, seed: int = 0) -> np.ndarray:
    """Per job, the EMD to the first `num_refs` real samples of its class, averaged over them.

    Every cloud is subsampled once (see `emd`), so a job meets all its refs with one subset.

    Args:
        points: Clouds (J, N, 3).
        classes: Class of each cloud (J,).
        refs: {class: (R, M, 3)}, as from `references_by_class`.
        num_refs: References per class compared with.
        max_points: Points per cloud at most.
        seed: Seed of the subsets.

    Returns:
        The mean distance of each job (J,), float64.

    Raises:
        ValueError: num_refs or max_points < 1, mis-shaped input, or a class without
            references.
    """
    if num_refs < 1:
        raise ValueError(f"num_refs must be >= 1, got {num_refs}")
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    pts = _clouds_f64(points, "points")
    classes = np.asarray(classes).reshape(-1)
    if classes.size != pts.shape[0]:
        raise ValueError(f"classes has {classes.size} entries for {pts.shape[0]} clouds")
    missing = sorted(set(classes.tolist()) - set(refs))
    if missing:
        raise ValueError(f"no real samples of classes {missing} to compare with")
    rng = np.random.default_rng(seed)
    pts = _subsample(pts, max_points, rng)
    out = np.zeros(classes.size, np.float64)
    for c in np.unique(classes).tolist():
        jobs = np.nonzero(classes == c)[0]
        ref = _subsample(_clouds_f64(refs[int(c)][:num_refs], f"refs[{c}]"), max_points, rng)
        if ref.shape[0] == 0:
            raise ValueError(f"refs[{c}] is empty")
        pj = np.repeat(jobs, ref.shape[0])
        pr = np.tile(np.arange(ref.shape[0]), jobs.size)
        out[jobs] = _emd_pairs(pts, ref, pj, pr).reshape(jobs.size, ref.shape[0]).mean(1)
    return out
