"""The fused layers (models.fast, dgcnn.EdgeConv, pointnet2.GroupScale) one by one: each
module's fused path gives its plain path's output, input gradient and tap values, on every
kernel backend here; and the one way taps are read (activations.Tap requests, forward hooks
on an own model's modules)."""
import pytest
import torch
import torch.nn as nn

from flowam_fast import ops
from flowam_fast.models import PointNet, PointNet2SSG, as_classifier, get_activations, plain_path
from flowam_fast.models.activations import ActivationRecorder, Tap
from flowam_fast.models.dgcnn import EdgeConv
from flowam_fast.models.fast import Fused, LinearBNMax, SharedLinear
from flowam_fast.models.pointnet import feature_transform_regularizer
from flowam_fast.models.pointnet2 import GroupScale
from flowam_fast.ops import LinearActs, backend

from tests.helpers import randomize
from tests.ops.backends import each_backend

pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")

FUSED_OPS = ("linear_max", "group_linear_max", "edge_max", "knn", "ball_query", "group_gather")


@pytest.fixture
def on_backend(monkeypatch, on):
    """The fused layers' ops on `on`'s backend (they ask for "auto")."""
    for name in FUSED_OPS:
        orig = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _o=orig, **k: _o(*a, **{**k, "backend": on.backend}))
    return on


def _conv_bn(cin, cout, dims, bias=True):
    conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(cin, cout, 1, bias=bias)
    return conv, (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(cout)


def _mlp(widths, cin):
    convs, bns = nn.ModuleList(), nn.ModuleList()
    for cout in widths:
        conv, bn = _conv_bn(cin, cout, 2)
        convs.append(conv)
        bns.append(bn)
        cin = cout
    return convs, bns, nn.ModuleList(Tap() for _ in widths)


def _fused_vs_plain(module, owner, inputs, taps=(), linear=False):
    """Run `module` (its layers in `owner`) fused and plain on copies of `inputs`, with each
    tap requested; the outputs, the gradients of the inputs that are floating point and the
    taps' values must agree."""
    randomize(owner).to(inputs[0].device)
    module.eval()
    runs = {}
    for fused in (True, False):
        module.fused = fused
        xs = [x.clone().requires_grad_(True) if x is not None else None for x in inputs]
        seen = {}
        records = [lambda a, i=i: seen.__setitem__(i, a) for i in range(len(taps))]
        for tap, record in zip(taps, records):
            tap.request(record, linear)
        try:
            out = module(*xs)
        finally:
            for tap, record in zip(taps, records):
                tap.withdraw(record)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
        loss = (out * weights).sum() + sum(s.dense().square().mean() if isinstance(s, LinearActs) else s.square().mean()
                                           for s in seen.values())
        loss.backward()
        runs[fused] = (out.detach(), [x.grad for x in xs if x is not None], seen)
    (out_f, grads_f, seen_f), (out_p, grads_p, seen_p) = runs[True], runs[False]
    assert out_f.shape == out_p.shape
    torch.testing.assert_close(out_f, out_p, rtol=1e-4, atol=1e-4)
    for gf, gp in zip(grads_f, grads_p):
        torch.testing.assert_close(gf, gp, rtol=1e-3, atol=1e-4)
    assert sorted(seen_f) == sorted(seen_p) == list(range(len(taps)))
    for i in seen_p:
        got, want = seen_f[i], seen_p[i].flatten(2)
        if isinstance(got, LinearActs):  # a grouped layer's points in another order: the same set
            got, want = got.dense().sort(-1).values, want.sort(-1).values
        torch.testing.assert_close(got.flatten(2), want, rtol=1e-4, atol=1e-4)
    return runs


@each_backend
@pytest.mark.parametrize("dims, slope, after", [(1, 0.0, False), (1, 0.2, True), (2, None, False)])
def test_shared_linear_fused_equals_plain(on_backend, dims, slope, after):
    conv, bn = _conv_bn(5, 7, dims)
    tap = Tap()
    layer = SharedLinear(conv, bn, tap, negative_slope=slope, tap_after_act=after)
    x = torch.randn((2, 5, 30) if dims == 1 else (2, 5, 6, 4))
    _fused_vs_plain(layer, nn.ModuleList([conv, bn]), [on_backend(x)], taps=[tap])


@each_backend
@pytest.mark.parametrize("dims, slope, linear", [(1, None, False), (1, 0.0, True), (2, 0.0, False), (2, 0.0, True)])
def test_linear_bn_max_fused_equals_plain_with_its_tap_in_either_form(on_backend, dims, slope, linear):
    """The max over the points (over each group's K for (B, C, K, S)); the tap, requested as
    dense activations or as LinearActs, sees the plain path's pre-activations."""
    conv, bn = _conv_bn(6, 9, dims)
    tap = Tap()
    layer = LinearBNMax(conv, bn, tap, negative_slope=slope)
    x = torch.randn((2, 6, 40) if dims == 1 else (2, 6, 5, 8))
    runs = _fused_vs_plain(layer, nn.ModuleList([conv, bn]), [on_backend(x)], taps=[tap], linear=linear)
    assert isinstance(runs[True][2][0], LinearActs) == linear and isinstance(runs[False][2][0], torch.Tensor)
    # Unrequested, the fused path does not call the tap at all.
    _fused_vs_plain(layer, nn.ModuleList([conv, bn]), [on_backend(x)])


@each_backend
def test_edge_conv_fused_equals_plain(on_backend):
    conv, bn = _conv_bn(8, 6, 2, bias=False)
    block = nn.Sequential(conv, bn, nn.LeakyReLU(0.2))
    _fused_vs_plain(EdgeConv(block, k=5), block, [on_backend(torch.randn(2, 4, 40))])


@each_backend
@pytest.mark.parametrize("radius, features, features_first, tapped", [
    (0.6, 0, False, ()), (0.6, 4, False, (0, 2)), (0.6, 4, True, ()), (None, 4, False, (0,))])
def test_group_scale_fused_equals_plain(on_backend, radius, features, features_first, tapped):
    """Groups around the centroids (or the one group of every point), the first layer on
    P_j - Q_i (dense where its tap is requested), the MLP, the max over each group."""
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(2, 48, 3, generator=g) - 0.5
    feats = torch.randn(2, 48, features, generator=g) if features else None
    convs, bns, taps = _mlp((8, 8, 12), 3 + features)
    scale = GroupScale(radius, 6, convs, bns, taps, features_first)
    centroids = xyz[:, ::4].detach() if radius is not None else None
    inputs = [on_backend(xyz), on_backend(feats) if feats is not None else None,
              on_backend(centroids) if centroids is not None else None]
    runs = _fused_vs_plain(scale, nn.ModuleList([convs, bns]), inputs, taps=[taps[i] for i in tapped])
    assert runs[True][0].shape == (2, 12 if radius is not None else 1, 12)


def test_fast_path_sets_every_fused_layer_and_plain_path_restores_it():
    model = PointNet(3, width=0.125)
    fused = [m for m in model.modules() if isinstance(m, Fused)]
    assert len(fused) == 9 and all(m.fused for m in fused)  # 3 layers in each T-Net and the encoder
    with plain_path(model):
        assert not any(m.fused for m in fused)
    assert model.fast_path and all(m.fused for m in fused)


def test_tap_requests_say_which_form_is_wanted_and_end_with_the_recorder():
    model = PointNet(3, width=0.125).eval()
    tap = model.feat.act3
    assert tap.wanted() is None
    with ActivationRecorder(model, ["feat.act3"], linear=True):
        assert tap.wanted() == "linear"
        with ActivationRecorder(model, ["feat.act3"]):
            assert tap.wanted() == "dense"
        assert tap.wanted() == "linear"
    with pytest.raises(RuntimeError, match="boom"), ActivationRecorder(model, ["feat.act3"]):
        raise RuntimeError("boom")
    assert tap.wanted() is None


@pytest.mark.parametrize("model, layer", [(PointNet(3, width=0.25), "feat.act3"),
                                          (PointNet2SSG(3, width=0.125, npoints=(24, 8), nsamples=(8, 8)),
                                           "sa1.acts.2")], ids=["pointnet", "pointnet2_ssg"])
def test_a_tap_read_as_linear_acts_gives_the_dense_flow_term(model, layer):
    """The flow term and its gradient on the points are the same whether the fused layer hands
    its tap LinearActs (PointNet's max-pooled conv3; PointNet++'s grouped last layer, every
    (neighbour, centroid) pair a point) or the dense activations."""
    randomize(model)
    x0 = torch.rand(3, 3, 64, generator=torch.Generator().manual_seed(2)) - 0.5
    classes = torch.tensor([0, 2, 1])
    out = {}
    for linear in (True, False):
        x = x0.clone().requires_grad_(True)
        _, acts = get_activations(model, x, [layer], linear=linear)
        a = acts[layer]
        assert isinstance(a, LinearActs) == linear
        c = a.shape[1]
        g = torch.Generator().manual_seed(3)
        mu, sigma = torch.randn(3, c, generator=g), torch.rand(3, c, generator=g) + 0.5
        term = ops.flow_align(a, classes, mu, sigma)
        term.sum().backward()
        out[linear] = (term.detach(), x.grad)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-3, atol=1e-4 * out[False][1].abs().max().item())


class _OwnNet(nn.Module):
    """An own classifier: plain modules, no taps, no fused layers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 6, 1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return {"logits": self.fc(self.act(self.conv(x)).max(dim=2).values)}


def test_an_own_models_layers_are_read_through_forward_hooks():
    """A linear request on an own model's module gets its dense output through a forward hook,
    which the recorder removes on exit."""
    net = _OwnNet().eval()
    model = as_classifier(net, logits="logits")
    x = torch.randn(2, 3, 16)
    logits, acts = get_activations(model, x, ["act"], linear=True)
    with torch.no_grad():
        want = torch.relu(net.conv(x))
    torch.testing.assert_close(acts["act"], want)
    torch.testing.assert_close(logits, net(x)["logits"])
    with ActivationRecorder(model, ["act"]) as rec:
        pass
    model(x)
    assert rec.activations == {}  # the hook is gone after the block


def test_pointnet_logits_and_penalty():
    """The training loop's penalty is the orthogonality penalty of the feature T-Net's
    transform of the same pass (0 without a feature T-Net); the logits are forward's."""
    model = randomize(PointNet(3, width=0.125))
    x = torch.randn(2, 3, 32)
    logits, penalty = model.logits_and_penalty(x)
    torch.testing.assert_close(logits, model(x))
    with torch.no_grad():
        h = torch.relu(model.feat.bn1(model.feat.conv1(torch.bmm(x.transpose(1, 2), model.feat.stn(x)).transpose(1, 2))))
        want = feature_transform_regularizer(model.feat.fstn(h))
    torch.testing.assert_close(penalty, want, rtol=1e-4, atol=1e-6)
    assert float(penalty.detach()) > 0
    plain = randomize(PointNet(3, width=0.125, feature_transform=False))
    assert plain.logits_and_penalty(x)[1] == 0.0
