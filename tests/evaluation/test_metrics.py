import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.optimize import linear_sum_assignment

from flowam_fast.evaluation import metrics
from flowam_fast.models import build_model, plain_path


def _sq_dists(a, b):
    """Full pairwise squared distances (P, N, M) by broadcasting."""
    return ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1)


def _brute_chamfer(a, b):
    d2 = _sq_dists(a.astype(np.float64), b.astype(np.float64))
    return d2.min(2).mean(1) + d2.min(1).mean(1)


def _clouds(p, n, seed):
    return np.random.default_rng(seed).normal(size=(p, n, 3)).astype(np.float32)


# ---------------------------------------------------------------------------- Chamfer


@pytest.mark.parametrize("n,m", [(16, 16), (20, 9)])
def test_chamfer_matches_brute_force(n, m):
    a, b = _clouds(4, n, 0), _clouds(4, m, 1)
    got = metrics.chamfer(torch.from_numpy(a), torch.from_numpy(b)).double().numpy()
    np.testing.assert_allclose(got, _brute_chamfer(a, b), rtol=1e-5, atol=1e-6)


def test_chamfer_to_class_is_mean_over_class_refs():
    real = _clouds(9, 12, 2)
    labels = np.array([0, 1, 2] * 3)
    refs = metrics.references_by_class(real, labels, num_refs=2)
    pts, classes = _clouds(5, 10, 3), np.array([0, 2, 2, 1, 0])
    got = metrics.chamfer_to_class(pts, classes, refs)
    for j, c in enumerate(classes):
        ref = refs[int(c)].numpy()
        want = _brute_chamfer(np.repeat(pts[j:j + 1], len(ref), 0), ref).mean()
        assert got[j] == pytest.approx(want, rel=1e-5)



def test_nearest_class_is_the_argmin_over_classes():
    rng = np.random.default_rng(5)
    # Three classes at well separated places: a cloud near class k's samples has nearest class k.
    centers = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0]], np.float32)
    labels = np.repeat(np.arange(3), 3)
    real = (rng.normal(size=(9, 12, 3)) * 0.1).astype(np.float32) + centers[labels][:, None]
    refs = metrics.references_by_class(real, labels, num_refs=3)
    which = np.array([2, 0, 1, 1])
    pts = (rng.normal(size=(4, 10, 3)) * 0.1).astype(np.float32) + centers[which][:, None]
    dist, cls = metrics.nearest_class(pts, refs)
    np.testing.assert_array_equal(cls, which)
    full = np.stack([metrics.chamfer_to_class(pts, np.full(4, c), refs) for c in range(3)], 1)
    np.testing.assert_allclose(dist, full.min(1))
    with pytest.raises(ValueError, match="at least one class"):
        metrics.nearest_class(pts, {})

# ---------------------------------------------------------------------------- Fréchet distance

SHRINKAGES = [None, 0.0, 0.3, "ledoit-wolf"]


def _fd_sqrtm(a, b):
    """The usual FID formula with scipy's sqrtm, on the sample mean and covariance (ddof=1)."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    d = a.mean(0) - b.mean(0)
    return d @ d + np.trace(sa) + np.trace(sb) - 2 * np.trace(scipy.linalg.sqrtm(sa @ sb)).real


@pytest.mark.parametrize("shrinkage", SHRINKAGES)
def test_frechet_identical_sets_is_zero(shrinkage):
    a = np.random.default_rng(0).normal(size=(30, 8)) * np.arange(1, 9)
    assert metrics.frechet_distance(a, a, shrinkage) == pytest.approx(0.0, abs=1e-9)


def test_frechet_matches_closed_form_of_known_gaussians():
    rng = np.random.default_rng(1)
    d, n = 4, 20000
    la, lb = rng.normal(size=(d, d)) + 2 * np.eye(d), rng.normal(size=(d, d)) + np.eye(d)
    ca, cb = la @ la.T, lb @ lb.T
    mu_a, mu_b = np.zeros(d), np.array([1.0, -1.0, 0.5, 2.0])
    a = mu_a + rng.normal(size=(n, d)) @ la.T
    b = mu_b + rng.normal(size=(n, d)) @ lb.T
    diff = mu_a - mu_b
    closed = diff @ diff + np.trace(ca) + np.trace(cb) - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb)).real
    assert metrics.frechet_distance(a, b, shrinkage=None) == pytest.approx(closed, rel=0.03)


def test_frechet_without_shrinkage_equals_sqrtm_formula():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 5)) @ (np.eye(5) + 0.3 * rng.normal(size=(5, 5)))
    b = 0.5 + 1.5 * rng.normal(size=(300, 5))
    assert metrics.frechet_distance(a, b, shrinkage=None) == pytest.approx(_fd_sqrtm(a, b), rel=1e-8)


@pytest.mark.parametrize("shrinkage", SHRINKAGES)
@pytest.mark.parametrize("sizes", [(2, 9, 64), (5, 30, 64), (40, 50, 64)])
def test_frechet_factored_equals_dense(shrinkage, sizes):
    """Few samples in many dimensions take the exact low-rank path (n_a + n_b < d); it must
    agree with the dense (d, d) computation, also when r >= d falls back to it."""
    na, nb, d = sizes
    rng = np.random.default_rng(7)
    a = rng.normal(size=(na, d)) @ rng.normal(size=(d, d)) * 0.2
    b = 0.3 + rng.normal(size=(nb, d))
    dense_b = metrics.gaussian_fit(b, shrinkage)
    got = metrics.frechet_distance(a, b, shrinkage)
    # Without shrinkage the dense covariances are singular, where the dense path's square
    # roots of clipped rounding noise cost it some digits.
    assert got == pytest.approx(metrics.frechet_distance(a, None, shrinkage, fit_b=dense_b), rel=1e-7)
    mu_a, sa = metrics.gaussian_fit(a, shrinkage)
    diff = mu_a - dense_b[0]
    want = diff @ diff + np.trace(sa) + np.trace(dense_b[1]) - 2 * np.trace(
        scipy.linalg.sqrtm(scipy.linalg.sqrtm(sa) @ dense_b[1] @ scipy.linalg.sqrtm(sa))).real
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("shrinkage", SHRINKAGES)
def test_frechet_is_symmetric(shrinkage):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(12, 20)), 1 + 2 * rng.normal(size=(15, 20))  # n < d on both sides
    fab, fba = metrics.frechet_distance(a, b, shrinkage), metrics.frechet_distance(b, a, shrinkage)
    assert np.isfinite(fab) and fab > 0
    assert fab == pytest.approx(fba, rel=1e-8)


def test_frechet_rejects_bad_input():
    a = np.random.default_rng(4).normal(size=(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.frechet_distance(a[:1], a)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.frechet_distance(a, a[:1])
    bad = a.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(a, bad)
    with pytest.raises(ValueError, match="dimensions differ"):
        metrics.frechet_distance(a, a[:, :2])
    with pytest.raises(ValueError, match="2-D"):
        metrics.frechet_distance(a[None], a)
    with pytest.raises(ValueError, match="shrinkage"):
        metrics.frechet_distance(a, a, shrinkage="oas")
    with pytest.raises(ValueError, match="shrinkage"):
        metrics.frechet_distance(a, a, shrinkage=1.5)


def test_ledoit_wolf_alpha_and_positive_definite_when_n_below_d():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 40)) * np.linspace(0.5, 3.0, 40)
    alpha = metrics.ledoit_wolf_alpha(x)
    assert 0.0 < alpha <= 1.0
    # The paper's formula term by term, with explicit outer products.
    n, d = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    mu = np.trace(s) / d
    delta2 = np.sum((s - mu * np.eye(d)) ** 2) / d
    outer = np.einsum("ki,kj->kij", xc, xc)
    beta2 = np.sum((outer - s) ** 2) / d / n ** 2
    assert alpha == pytest.approx(min(beta2, delta2) / delta2, rel=1e-10)
    _, shrunk = metrics.gaussian_fit(x, "ledoit-wolf")
    _, plain = metrics.gaussian_fit(x, None)
    assert np.linalg.eigvalsh(plain).min() < 1e-10  # rank <= n - 1 < d
    assert np.linalg.eigvalsh(shrunk).min() > 1e-3
    np.testing.assert_allclose(shrunk, (1 - alpha) * plain + alpha * np.trace(plain) / d * np.eye(d))
    # Plenty of samples of a far-from-spherical Gaussian: little shrinkage.
    many = rng.normal(size=(5000, 4)) * np.array([0.1, 1.0, 3.0, 10.0])
    assert 0.0 <= metrics.ledoit_wolf_alpha(many) < 0.01


# ---------------------------------------------------------------------------- FID per class


def _feature_sets(seed=6):
    rng = np.random.default_rng(seed)
    expl_classes = np.array([0, 2, 0, 2, 0, 2, 2])
    real_labels = np.array([0, 1, 2] * 4)
    expl = {"global": rng.normal(size=(7, 6)), "penultimate": rng.normal(size=(7, 3))}
    real = {"global": rng.normal(size=(12, 6)) + 1, "penultimate": rng.normal(size=(12, 3))}
    return expl, expl_classes, real, real_labels


def test_fid_per_class_equals_frechet_per_class_and_layer():
    expl, ec, real, rl = _feature_sets()
    out = metrics.fid_per_class(expl, ec, real, rl, shrinkage=0.2)
    assert set(out["per_class"]) == {0, 2}
    layers = ("global", "penultimate")
    for c in (0, 2):
        row = out["per_class"][c]
        assert set(row) == {*layers, "mean"}
        for layer in layers:
            want = metrics.frechet_distance(expl[layer][ec == c], real[layer][rl == c], shrinkage=0.2)
            assert row[layer] == pytest.approx(want, rel=1e-12)
        assert row["mean"] == pytest.approx(np.mean([row[layer] for layer in layers]))
    for layer in layers:
        assert out["per_layer"][layer] == pytest.approx(np.mean([out["per_class"][c][layer] for c in (0, 2)]))
    assert out["mean"] == pytest.approx(np.mean([out["per_class"][c][layer] for c in (0, 2) for layer in layers]))
    # Kept real fits give the same numbers, on the first call and on a second one.
    cache = {}
    for _ in range(2):
        again = metrics.fid_per_class(expl, ec, real, rl, shrinkage=0.2, real_cache=cache)
        assert again == out
    assert len(cache) == 4


def test_fid_per_class_rejects_bad_classes_and_features():
    expl, ec, real, rl = _feature_sets()
    ec1 = ec.copy()
    ec1[-1] = 1  # class 1 with a single explanation
    with pytest.raises(ValueError, match="class 1: 1 explanations"):
        metrics.fid_per_class(expl, ec1, real, rl)
    with pytest.raises(ValueError, match="class 2: no real samples"):
        metrics.fid_per_class(expl, ec, real, np.where(rl == 2, 1, rl))
    with pytest.raises(ValueError, match="feature dimensions differ"):
        metrics.fid_per_class(expl, ec, {**real, "global": real["global"][:, :5]}, rl)
    with pytest.raises(ValueError, match="no layer 'logits'"):
        metrics.fid_per_class(expl, ec, real, rl, layers=("logits",))


# ---------------------------------------------------------------------------- m-IS


def test_m_inception_score_identical_predictions_is_one():
    p = np.array([0.7, 0.2, 0.1])
    probs = np.vstack([np.tile(p, (6, 1)), [[0.1, 0.1, 0.8]]])
    out = metrics.m_inception_score(probs, [0, 0, 0, 1, 1, 1, 2])
    assert out["per_class"] == {0: 1.0, 1: 1.0, 2: 1.0}  # class 2: one explanation, no pairs
    assert out["mean"] == 1.0


def test_m_inception_score_matches_hand_computed_kl():
    p1, p2 = [0.98, 0.01, 0.01], [0.01, 0.98, 0.01]

    def kl(p, q):
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    probs = np.array([p1, p1, p2, p2, p2])
    out = metrics.m_inception_score(probs, [4, 4, 4, 7, 7])
    # Ordered pairs of class 4 (p1, p1, p2): two pairs of identical rows, two (p1, p2), two (p2, p1).
    assert out["per_class"][4] == pytest.approx(math.exp((2 * kl(p1, p2) + 2 * kl(p2, p1)) / 6), rel=1e-10)
    assert out["per_class"][7] == 1.0
    assert out["mean"] == pytest.approx((out["per_class"][4] + 1.0) / 2)


def test_m_inception_score_rejects_non_distributions():
    with pytest.raises(ValueError, match="probability distributions"):
        metrics.m_inception_score(np.array([[0.5, 0.6], [0.5, 0.5]]), [0, 0])
    with pytest.raises(ValueError, match="shape"):
        metrics.m_inception_score(np.full((3, 2), 0.5), [0, 0])


# ---------------------------------------------------------------------------- EMD


def test_emd_equals_optimal_assignment_on_equal_sizes():
    a, b = _clouds(3, 12, 7).astype(np.float64), _clouds(3, 12, 8).astype(np.float64) + 0.5
    got = metrics.emd(a, b)
    d2 = _sq_dists(a, b)
    for p in range(3):
        r, c = linear_sum_assignment(d2[p])
        assert got[p] == pytest.approx(d2[p][r, c].sum() / 12, rel=1e-9)
    perm = np.random.default_rng(0).permutation(12)
    assert metrics.emd(a, a[:, perm]) == pytest.approx(0.0, abs=1e-12)


def test_emd_bounds_each_chamfer_direction():
    a, b = _clouds(4, 20, 9).astype(np.float64), _clouds(4, 15, 10).astype(np.float64)
    d2 = _sq_dists(a, b)
    got = metrics.emd(a, b)
    # Every unit of mass moves at least to its nearest neighbour on the other side.
    assert np.all(d2.min(2).mean(1) <= got + 1e-12)
    assert np.all(d2.min(1).mean(1) <= got + 1e-12)
    assert np.all(_brute_chamfer(a, b) <= 2 * got + 1e-12)


def test_emd_subsampling_is_deterministic():
    a, b = _clouds(2, 300, 11), _clouds(2, 280, 12)
    first = metrics.emd(a, b, max_points=64, seed=3)
    np.testing.assert_array_equal(first, metrics.emd(a, b, max_points=64, seed=3))
    assert not np.array_equal(first, metrics.emd(a, b, max_points=64, seed=4))
    small_a, small_b = a[:, :40], b[:, :30]  # under max_points: no subsampling, seed irrelevant
    np.testing.assert_array_equal(metrics.emd(small_a, small_b, 64, seed=0), metrics.emd(small_a, small_b, 64, seed=1))


def test_emd_to_class_is_mean_over_first_refs():
    refs = {0: torch.from_numpy(_clouds(4, 10, 13)), 1: torch.from_numpy(_clouds(4, 10, 14))}
    pts, classes = _clouds(5, 10, 15), np.array([1, 0, 1, 1, 0])
    got = metrics.emd_to_class(pts, classes, refs, num_refs=3)
    for j, c in enumerate(classes):
        ref = refs[int(c)][:3].numpy()
        assert got[j] == pytest.approx(metrics.emd(np.repeat(pts[j:j + 1], 3, 0), ref).mean(), rel=1e-12)
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        metrics.emd_to_class(pts, np.array([0, 0, 2, 1, 1]), refs)


# ---------------------------------------------------------------------------- evaluator features


@pytest.fixture
def tiny_pointnet():
    torch.manual_seed(0)
    return build_model("pointnet", num_classes=3, width=0.125).eval()


def test_evaluator_features_shapes_and_batch_independence(tiny_pointnet):
    pts = _clouds(6, 32, 16)
    full = metrics.evaluator_features(tiny_pointnet, pts, batch_size=6)
    ones = metrics.evaluator_features(tiny_pointnet, torch.from_numpy(pts), batch_size=1)
    assert full["global"].shape == (6, 128) and full["penultimate"].shape == (6, 32)
    assert full["probs"].shape == full["logits"].shape == (6, 3)
    assert all(v.dtype == np.float64 for v in full.values())
    np.testing.assert_allclose(full["probs"].sum(1), 1.0, atol=1e-12)
    for key in full:
        np.testing.assert_allclose(ones[key], full[key], rtol=1e-5, atol=1e-5)


def test_evaluator_features_match_manual_hook(tiny_pointnet):
    pts = _clouds(5, 24, 17)
    x = torch.from_numpy(pts).transpose(1, 2)
    seen = []
    handle = tiny_pointnet.fc1.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        logits = tiny_pointnet(x)
    handle.remove()
    feats = metrics.evaluator_features(tiny_pointnet, pts, batch_size=2)
    np.testing.assert_allclose(feats["global"], seen[0].double().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(feats["logits"], logits.double().numpy(), rtol=1e-6, atol=1e-6)
    with plain_path(tiny_pointnet):
        plain = metrics.evaluator_features(tiny_pointnet, pts, batch_size=5)
    np.testing.assert_allclose(plain["penultimate"], feats["penultimate"], rtol=1e-4, atol=1e-5)


def test_evaluator_features_restores_mode_and_rejects_other_models(tiny_pointnet, tiny_net):
    tiny_pointnet.train()
    before = tiny_pointnet.feat.bn1.running_mean.clone()
    metrics.evaluator_features(tiny_pointnet, _clouds(3, 16, 18))
    assert tiny_pointnet.training and tiny_pointnet.feat.bn1.training
    assert torch.equal(tiny_pointnet.feat.bn1.running_mean, before)  # ran in eval mode
    with pytest.raises(ValueError, match="PointNet evaluator"):
        metrics.evaluator_features(tiny_net, _clouds(3, 16, 18))
    with pytest.raises(ValueError, match=r"\(J, N, 3\)"):
        metrics.evaluator_features(tiny_pointnet, np.zeros((3, 16, 2)))


def test_real_chamfer_is_each_reference_against_the_others_of_its_class():
    from flowam_fast.evaluation.report import RealData

    g = torch.Generator().manual_seed(0)
    points = torch.rand(9, 16, 3, generator=g).numpy()
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    real = RealData(points, labels, num_refs=3)
    # Each cloud's mean over the other references of its class, then the mean over clouds.
    per_cloud = []
    for c, refs in real.refs.items():
        r = refs.shape[0]
        for i in range(r):
            per_cloud.append(np.mean([float(metrics.chamfer(refs[i:i + 1], refs[j:j + 1])) for j in range(r) if j != i]))
    assert real.real_chamfer() == pytest.approx(np.mean(per_cloud), rel=1e-5)
    assert math.isnan(RealData(points[:1], labels[:1], num_refs=3).real_chamfer())
