"""Each attribution method against a direct computation on small models: the batched fast path
against a per-cloud loop on the plain path, integrated gradients' completeness, Grad-CAM's
formula, critical points against the reference max-pool's argmax, occlusion against a loop
over patches; then the errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowam_fast import ops
from flowam_fast.attribution import METHODS, attribute, critical_counts, remove
from flowam_fast.attribution.occlusion import patches_of
from flowam_fast.models import DGCNN, PointNet, plain_path
from flowam_fast.models.fast import fold_bn
from tests.helpers import TinyNet, randomize


@pytest.fixture(scope="module")
def pointnet():
    torch.manual_seed(0)
    return randomize(PointNet(4, width=0.125), seed=1)


@pytest.fixture(scope="module")
def dgcnn():
    torch.manual_seed(0)
    return randomize(DGCNN(4, k=6, emb_dims=32, width=0.125), seed=2)


def clouds(b=3, n=48, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, n, 3, generator=g, dtype=dtype) - 0.5) * 2


TARGETS = torch.tensor([0, 1, 3])


def _grad_loop(model, x, targets, loss=False):
    """Per-cloud input gradients on the plain path."""
    out = []
    with plain_path(model):
        for p, t in zip(x, targets):
            p = p[None].clone().requires_grad_(True)
            logits = model(p.transpose(1, 2))
            value = F.cross_entropy(logits, t[None]) if loss else logits[0, t]
            out.append(torch.autograd.grad(value, p)[0][0])
    return torch.stack(out)


@pytest.mark.parametrize("arch", ["pointnet", "dgcnn"])
def test_saliency_is_the_gradient_norm_of_the_plain_path_per_cloud(arch, request):
    model = request.getfixturevalue(arch)
    x = clouds()
    got = attribute(model, x, TARGETS, method="saliency")
    want = _grad_loop(model, x, TARGETS).norm(dim=2)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert model.fast_path and not model.training


def test_spherical_saliency_is_the_radial_derivative_of_the_loss(pointnet):
    x = clouds()
    alpha = 0.5
    got = attribute(pointnet, x, TARGETS, method="spherical-saliency", alpha=alpha)
    grad = _grad_loop(pointnet, x, TARGETS, loss=True)
    centre = x.median(dim=1, keepdim=True).values
    r = (x - centre).norm(dim=2)
    d_dr = (grad * (x - centre) / r[..., None]).sum(dim=2)
    torch.testing.assert_close(got, -d_dr * r ** (1 + alpha), rtol=1e-4, atol=1e-6)


def test_spherical_saliency_drops_a_point_along_its_radius_in_first_order():
    # A smooth model in float64: moving one point a little towards the centre changes the loss
    # by about -(dL/dr) * dr, which the score (alpha = 0) times dr / r predicts.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(3, 8, 1), torch.nn.Tanh(), torch.nn.Conv1d(8, 3, 1),
                              torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten()).double().eval()
    x = clouds(1, 16, dtype=torch.float64)
    t = torch.tensor([2])
    s = attribute(net, x, t, method="spherical-saliency", alpha=0.0)
    centre = x.median(dim=1, keepdim=True).values
    n, eps = 5, 1e-6
    moved = x.clone()
    moved[0, n] -= eps * (x[0, n] - centre[0, 0]) / (x[0, n] - centre[0, 0]).norm()
    with torch.no_grad():
        loss = [F.cross_entropy(net(c.transpose(1, 2)), t) for c in (x, moved)]
    r = (x[0, n] - centre[0, 0]).norm()
    assert float(loss[1] - loss[0]) == pytest.approx(float(s[0, n] / r * eps), rel=1e-4)


@pytest.mark.parametrize("arch", ["pointnet", "dgcnn"])
def test_integrated_gradients_completeness_error_shrinks_with_steps(arch, request):
    model = request.getfixturevalue(arch)
    x = clouds()
    errors = []
    for steps in (2, 8, 64):
        scores, extras = attribute(model, x, TARGETS, method="integrated-gradients", steps=steps, return_extras=True)
        torch.testing.assert_close(extras["completeness_error"], (scores.sum(1) - extras["delta"]).abs())
        errors.append(float(extras["completeness_error"].mean()))
    scale = float(extras["delta"].abs().mean())
    assert errors[2] < errors[0] and errors[2] < 0.05 * scale, (errors, scale)


def test_integrated_gradients_batched_equal_a_loop_over_clouds_and_steps(pointnet):
    x = clouds()
    steps = 5
    got = attribute(pointnet, x, TARGETS, method="integrated-gradients", steps=steps, batch_size=4)
    base = x.mean(dim=1, keepdim=True).expand_as(x)
    total = torch.zeros_like(x)
    for k in range(steps):
        a = (k + 0.5) / steps
        total += _grad_loop(pointnet, base + a * (x - base), TARGETS) / steps
    torch.testing.assert_close(got, ((x - base) * total).sum(2), rtol=1e-4, atol=1e-6)


def _cam_direct(model, x, targets, layer):
    """Grad-CAM per cloud from a hook on the layer, on the plain path."""
    module = dict(model.named_modules())[layer]
    out = []
    for p, t in zip(x, targets):
        seen = []
        handle = module.register_forward_hook(lambda _m, _i, o: seen.append(o))
        try:
            with plain_path(model) if hasattr(model, "fast_path") else torch.enable_grad():
                logits = model(p[None].transpose(1, 2).clone().requires_grad_(True))
        finally:
            handle.remove()
        a = seen[0]
        (g,) = torch.autograd.grad(logits[0, t], a)
        weights = g.mean(dim=2, keepdim=True)
        out.append(torch.relu((weights * a).sum(dim=1))[0].detach())
    return torch.stack(out)


@pytest.mark.parametrize("arch,layer", [("pointnet", "feat.act3"), ("pointnet", "feat.act2"), ("dgcnn", "act5"),
                                        ("dgcnn", "edge2"), ("tiny", "act1")])
def test_grad_cam_follows_its_formula(arch, layer, request):
    model = TinyNet(num_classes=4).eval() if arch == "tiny" else request.getfixturevalue(arch)
    x = clouds()
    got = attribute(model, x, TARGETS, method="grad-cam", layer=layer)
    torch.testing.assert_close(got, _cam_direct(model, x, TARGETS, layer), rtol=1e-4, atol=1e-6)
    assert (got >= 0).all() and (got > 0).any()


def test_grad_cam_defaults_to_the_last_flow_layer(pointnet):
    x = clouds()
    torch.testing.assert_close(attribute(pointnet, x, TARGETS, method="grad-cam"),
                               attribute(pointnet, x, TARGETS, method="grad-cam", layer="feat.act3"))


def test_critical_points_are_the_reference_max_pool_argmax(pointnet):
    x = clouds(4, 64)
    got = attribute(pointnet, x, 0, method="critical-points")
    # The reference linear_max of the encoder's conv3 on its input, through the dense activation.
    seen = []
    handle = pointnet.feat.conv3.register_forward_hook(lambda _m, i, _o: seen.append(i[0]))
    with torch.no_grad(), plain_path(pointnet):
        pointnet(x.transpose(1, 2))
    handle.remove()
    h = seen[0].transpose(1, 2)  # (B, N, C_in)
    w, scale, shift = fold_bn(pointnet.feat.conv3, pointnet.feat.bn3)
    z = torch.matmul(h, w.t()) * scale + shift
    pooled, argmax = z.max(dim=1)
    torch.testing.assert_close(pooled, ops.reference.linear_max(h, w, scale, shift, 1.0))
    want = torch.zeros(x.shape[:2]).scatter_add_(1, argmax, torch.ones_like(argmax, dtype=torch.float32))
    assert torch.equal(got, want)
    assert got.sum(1).tolist() == [w.shape[0]] * 4  # every channel has its argmax point
    # The critical set alone gives the same global feature: the other points never win a max.
    crit = remove(x, got == 0)
    with torch.no_grad():
        torch.testing.assert_close(pointnet(crit.transpose(1, 2)), pointnet(x.transpose(1, 2)), rtol=1e-5, atol=1e-5)


def test_critical_counts_of_any_max_pooled_layer(dgcnn):
    x = clouds()
    got = critical_counts(dgcnn, x, layer="act5")
    seen = []
    handle = dgcnn.act5.register_forward_hook(lambda _m, _i, o: seen.append(o))
    with torch.no_grad(), plain_path(dgcnn):
        dgcnn(x.transpose(1, 2))
    handle.remove()
    idx = seen[0].argmax(dim=2)
    for b in range(x.shape[0]):
        assert got[b].tolist() == np.bincount(idx[b].numpy(), minlength=x.shape[1]).tolist()


def test_occlusion_equals_a_loop_over_patches(dgcnn):
    x = clouds(2, 40)
    t = TARGETS[:2]
    patches, k = 6, 10
    got = attribute(dgcnn, x, t, method="occlusion", patches=patches, k=k, batch_size=5)
    with torch.no_grad():
        masks = patches_of(x, patches, k)
        want = torch.zeros(2, 40)
        for b in range(2):
            full = dgcnn(x[b:b + 1].transpose(1, 2))[0, t[b]]
            hits = torch.zeros(40)
            for p in range(patches):
                m = masks[b, p]
                assert int(m.sum()) == k
                # Each patch is the k nearest points of its centre.
                centre = x[b][ops.farthest_point_sample(x[b:b + 1], patches)[0, p]]
                far = (x[b] - centre).norm(dim=1)
                assert far[m].max() <= far[~m].min()
                drop = full - dgcnn(remove(x[b:b + 1], m[None]).transpose(1, 2))[0, t[b]]
                want[b] += drop * m
                hits += m
            want[b] /= hits.clamp_min(1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_removal_copies_the_nearest_kept_point():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.5, 0, 0], [5, 0, 0]]])
    out = remove(x, torch.tensor([[False, True, False, True]]))
    assert out[0].tolist() == [[0, 0, 0], [0.5, 0, 0], [0.5, 0, 0], [0.5, 0, 0]]
    everything = remove(x, torch.ones(1, 4, dtype=torch.bool))
    assert torch.allclose(everything, x.mean(1, keepdim=True).expand_as(x))


def test_attribute_restores_the_model_and_takes_arrays(tiny_net):
    tiny_net.train()
    flags = [p.requires_grad for p in tiny_net.parameters()]
    x = clouds().numpy()
    for method in METHODS:
        kwargs = {"layer": "act2"} if method in ("grad-cam", "critical-points") else {}
        s = attribute(tiny_net, x, [0, 1, 2], method=method, **kwargs)
        assert s.shape == (3, 48) and torch.isfinite(s).all()
    assert tiny_net.training and [p.requires_grad for p in tiny_net.parameters()] == flags


@pytest.mark.parametrize("kwargs,match", [
    ({"points": torch.zeros(2, 3, 48)}, r"clouds \(B, N, 3\).*transpose"),
    ({"points": torch.zeros(48, 3)}, r"clouds \(B, N, 3\)"),
    ({"points": torch.full((3, 48, 3), float("nan"))}, "NaN"),
    ({"method": "lime"}, "unknown attribution method 'lime'"),
    ({"method": "grad-cam", "layer": "nope"}, "unknown layer names"),
    ({"method": "grad-cam", "layer": "fc"}, "per-point activations"),
    ({"method": "occlusion", "k": 49}, r"k must be an integer in \[1, N=48\]"),
    ({"method": "occlusion", "patches": 0}, "patches must be"),
    ({"method": "saliency", "steps": 3}, r"unknown options \['steps'\]"),
    ({"targets": [0, 1, 3]}, r"targets must lie in \[0, 3\)"),
    ({"targets": [0, 1]}, "one integer class per cloud"),
    ({"method": "integrated-gradients", "steps": 0}, "steps must be"),
])
def test_bad_input_is_refused_with_a_clear_message(tiny_net, kwargs, match):
    args = {"points": clouds(), "targets": [0, 1, 2], "method": "saliency"} | kwargs
    with pytest.raises(ValueError, match=match):
        attribute(tiny_net, **args)


def test_a_layer_that_is_not_per_point_or_missing_is_refused(tiny_net):
    with pytest.raises(ValueError, match="no default layer"):
        attribute(tiny_net, clouds(), [0, 1, 2], method="grad-cam")
    with pytest.raises(TypeError, match="tensor or array"):
        attribute(tiny_net, [[0.0, 0.0, 0.0]], [0], method="saliency")
