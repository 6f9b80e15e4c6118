"""Own models end to end: a tuple-returning PointNet adapted with as_classifier, through
compute_flows (from a plain list of pairs, a torch Dataset and a DataLoader) and FlowAM;
layers of shape (B, C, K, S) against a direct computation for both alignments; and the
errors a new user meets."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flowam_fast.am.engine import FlowAM
from flowam_fast.am.flows import compute_flows
from flowam_fast.models import ActivationRecorder, ClassifierOutputError, as_classifier

from tests.helpers import randomize
from tests.models.test_adapter import LAYERS, build

N = 32


def _clouds(num=10, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num, N, 3, generator=g) * 0.4, torch.arange(num) % k


def _raw(net, layers, x):
    """Each layer's output on x (B, 3, N), read by hooks of our own: the direct computation."""
    out = {}
    handles = [net.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o)) for n in layers]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return out


def _direct_moments(acts, labels, c):
    """Per-channel mean and population std over every trailing position of every sample of class c."""
    a = acts[labels == c].double().flatten(2).transpose(0, 1).reshape(acts.shape[1], -1)
    return a.mean(1), a.std(1, unbiased=False)


def test_a_tuple_model_through_compute_flows_from_pairs_a_dataset_and_a_dataloader():
    net = build(k=4)
    model = as_classifier(net, "fc3")
    pts, labels = _clouds()
    pairs = [(p.numpy(), int(y)) for p, y in zip(pts, labels)]  # as a new user would hold them
    flows = compute_flows(model, pairs, layers=LAYERS, batch_size=4, quiet=True)
    # K from the classifier's output width: class 3 has no samples.
    assert flows.num_classes == 4 and flows.count.tolist() == [4, 3, 3, 0] and flows.class_names == []
    raw = _raw(net, LAYERS, pts.transpose(1, 2))
    for layer in LAYERS:
        for c in range(3):
            mean, std = _direct_moments(raw[layer], labels, c)
            torch.testing.assert_close(flows.mean[layer][c].double(), mean, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(flows.std[layer][c].double(), std, rtol=1e-5, atol=1e-5)
        assert torch.isnan(flows.std[layer][3]).all()
    flat = pts.reshape(-1, 3)
    assert torch.equal(flows.lo, flat.min(0).values) and torch.equal(flows.hi, flat.max(0).values)
    assert flows.num_points == N
    for other in (TensorDataset(pts, labels), DataLoader(TensorDataset(pts, labels), batch_size=3)):
        again = compute_flows(model, other, layers=LAYERS, quiet=True)
        assert torch.equal(again.count, flows.count) and again.d2_target == pytest.approx(flows.d2_target)
        for layer in LAYERS:
            torch.testing.assert_close(again.mean[layer], flows.mean[layer], equal_nan=True)
            torch.testing.assert_close(again.std[layer], flows.std[layer], equal_nan=True)
    assert compute_flows(model, pairs, layers=LAYERS, num_classes=6, quiet=True).num_classes == 6
    named = TensorDataset(pts, labels)
    named.classes = ["a", "b", "c", "d"]
    assert compute_flows(model, DataLoader(named, batch_size=5), layers=LAYERS, quiet=True).class_names == named.classes


@pytest.mark.parametrize("alignment", ["moments", "quantiles"])
def test_flowam_end_to_end_on_an_adapted_tuple_model(alignment):
    model = as_classifier(build(k=4), "fc3")
    pts, labels = _clouds(num=12)
    flows = compute_flows(model, list(zip(pts, labels)), layers=LAYERS, quiet=True, quantile_levels=8)
    engine = FlowAM(model, flows, steps=3, num_points=N, quiet=True, alignment=alignment)
    result = engine.run([0, 2], [0, 1])
    assert len(result) == 4 and result.points.shape == (4, N, 3) and np.isfinite(result.points).all()
    # The stored logits are the adapted model's logits of the stored clouds.
    with torch.no_grad():
        logits = model(torch.from_numpy(result.points).transpose(1, 2))
    torch.testing.assert_close(torch.from_numpy(result.logits), logits, rtol=1e-4, atol=1e-4)
    assert '"class": "TinyPointNetCls"' in result.model


def test_errors_say_what_to_pass():
    net = build(k=4)
    pts, labels = _clouds()
    pairs = [(p.numpy(), int(y)) for p, y in zip(pts, labels)]
    with pytest.raises(ClassifierOutputError, match=r"the model returned a tuple of 3 \(\(4, 4\), \(4, 3, 3\), "
                                                    r"NoneType\) for 4 clouds.*as_classifier\(model, logits=0\)"):
        compute_flows(net, pairs, layers=LAYERS, batch_size=4, quiet=True)
    model = as_classifier(net, "fc3")
    flows = compute_flows(model, pairs, layers=LAYERS, quiet=True)
    with pytest.raises(ClassifierOutputError, match=r"as_classifier\(model, logits=0\)"):
        FlowAM(net, flows, steps=1, num_points=N, quiet=True)
    with pytest.raises(ClassifierOutputError, match=r"as_classifier\(model, logits=0\)"):
        FlowAM(net, flows, method="regularized", steps=1, num_points=N, quiet=True)
    assert not net.training  # the model's mode is restored after a failed pass
    with pytest.raises(ValueError, match=r"sample 0 has points of shape \(3, 32\), channels first; compute_flows "
                                         r"takes points \(N, 3\): transpose them \(points.T\)"):
        compute_flows(model, [(p.T, y) for p, y in pairs], layers=LAYERS, quiet=True)
    loader = DataLoader(TensorDataset(pts.transpose(1, 2), labels), batch_size=4)
    with pytest.raises(ValueError, match=r"batch 0 of the DataLoader has points of shape \(4, 3, 32\), channels "
                                         r"first; compute_flows takes points \(B, N, 3\): transpose them "
                                         r"\(points.transpose\(1, 2\)\)"):
        compute_flows(model, loader, layers=LAYERS, quiet=True)
    with pytest.raises(ValueError, match=r"unknown layer names \['wrapped.feat.bn1'\] in TinyPointNetCls"):
        compute_flows(model, pairs, layers=["wrapped.feat.bn1"], quiet=True)
    with pytest.raises(ValueError, match=r"sample 0 is a tuple of 3; compute_flows reads \(points, label\) pairs"):
        compute_flows(model, [(p, y, "x") for p, y in pairs], layers=LAYERS, quiet=True)
    with pytest.raises(ValueError, match=r"samples 0..3: labels must be 4 integer class indices, got torch.float64"):
        compute_flows(model, [(p, float(y)) for p, y in pairs], layers=LAYERS, batch_size=4, quiet=True)
    with pytest.raises(ValueError, match=r"labels outside \[0, 2\) in the dataset \(found 0..2\)"):
        compute_flows(model, pairs, layers=LAYERS, num_classes=2, quiet=True)
    with pytest.raises(TypeError, match="sequence or torch Dataset of \\(points \\(N, 3\\), label\\) pairs"):
        compute_flows(model, iter(pairs), layers=LAYERS, quiet=True)
    with pytest.raises(ValueError, match="TinyPointNetCls has no default flow layers; pass layers="):
        compute_flows(model, pairs, quiet=True)


class GroupedNet(nn.Module):
    """PointNet++-like: the points in G groups of S (B, 3, G, S), a shared MLP on every point of
    every group ("act", (B, C, G, S)), pooled per group ("act2", (B, C', G)), then pooled."""

    def __init__(self, k=3, groups=4):
        super().__init__()
        self.groups = groups
        self.conv, self.bn, self.act = nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.LeakyReLU(0.2)
        self.mix, self.act2 = nn.Conv1d(6, 8, 1), nn.Tanh()
        self.fc = nn.Linear(8, k)

    def forward(self, x):
        b, _, n = x.shape
        h = self.act(self.bn(self.conv(x.reshape(b, 3, self.groups, n // self.groups)))).max(dim=3).values
        return self.fc(self.act2(self.mix(h)).max(dim=2).values)


def test_grouped_layers_are_read_as_views_with_every_position_a_point():
    net = randomize(GroupedNet(), seed=2)
    x = torch.randn(2, 3, N)
    raw = {}
    net.act.register_forward_hook(lambda m, i, o: raw.setdefault("act", o))
    with ActivationRecorder(net, ["act"]) as rec, torch.no_grad():
        net(x)
    assert raw["act"].shape == (2, 6, 4, 8) and rec.activations["act"].shape == (2, 6, 32)
    assert rec.activations["act"].data_ptr() == raw["act"].data_ptr()  # flattened without a copy
    with pytest.raises(ValueError, match=r"layer 'fc' must output per-point activations \(B, C, \*\) with at least "
                                         r"one point dimension, got \(2, 3\)"):
        with ActivationRecorder(net, ["fc"]), torch.no_grad():
            net(x)


@pytest.mark.parametrize("alignment", ["moments", "quantiles"])
def test_grouped_layers_flows_and_alignment_match_a_direct_computation(alignment):
    net = randomize(GroupedNet(), seed=2)
    pts, labels = _clouds(num=9)
    layers = ["act", "act2"]
    # Q = G * S levels: each sample's quantile function is then its sorted values, exactly.
    flows = compute_flows(net, list(zip(pts, labels)), layers=layers, quiet=True, batch_size=4, quantile_levels=N)
    raw = _raw(net, layers, pts.transpose(1, 2))
    for layer in layers:
        for c in range(3):
            mean, std = _direct_moments(raw[layer], labels, c)
            torch.testing.assert_close(flows.mean[layer][c].double(), mean, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(flows.std[layer][c].double(), std, rtol=1e-5, atol=1e-5)
    sorted_act = raw["act"].flatten(2).sort(-1).values.double()
    for c in range(3):
        torch.testing.assert_close(flows.quantiles["act"][c].double(), sorted_act[labels == c].mean(0),
                                   rtol=1e-5, atol=1e-5)
    # The engine's flow term on the (B, C, G, S) layer, against the definitions of ops.reference.
    engine = FlowAM(net, flows, steps=1, num_points=N, layers=["act"], quiet=True, alignment=alignment)
    x = torch.randn(3, N, 3, generator=torch.Generator().manual_seed(5)) * 0.4
    cls = torch.tensor([0, 1, 2])
    with torch.no_grad():
        _, _, terms = engine.loss(x, cls)
    a = _raw(net, ["act"], x.transpose(1, 2))["act"].flatten(2).double()
    sigma = flows.std["act"][cls].double()
    s = sigma + 1e-3
    if alignment == "moments":
        m, sd = a.mean(-1), torch.sqrt(a.var(-1, unbiased=False) + 1e-8)
        want = (((m - flows.mean["act"][cls].double()) / s) ** 2 + ((sd - sigma) / s) ** 2).mean(-1)
    else:
        target = flows.quantiles["act"][cls].double()
        want = ((a.sort(-1).values - target) / s[..., None]).square().mean(-1).mean(-1)
    torch.testing.assert_close(-terms["flow"].double(), want, rtol=1e-4, atol=1e-5)  # minus the alignment


def test_the_sanity_check_randomizes_an_adapted_model_by_its_own_names():
    from flowam_fast.evaluation.sanity import SanityCheck, randomization_groups
    from flowam_fast.models import build_model

    net = build(k=3)
    model = as_classifier(net, "fc3")
    groups = [name for name, _ in randomization_groups(model)]
    assert groups[:3] == ["fc3", "bn2", "fc2"] and groups[-1] == "feat.stn.conv1"
    pts, labels = _clouds(num=9)
    data = list(zip(pts, labels))
    flows = compute_flows(model, data, layers=LAYERS, quiet=True)
    torch.manual_seed(0)
    evaluator = build_model("pointnet", num_classes=3, width=0.125).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    check = SanityCheck(model, evaluator, flows=flows, train_set=data, steps=2, num_points=N, quiet=True,
                        variants=("independent",))
    check.plan = check.plan[:1] + check.plan[-1:]  # the head (trained flows reused) and the first layer (recomputed)
    res = check.run([0, 1], 3).methods[0]
    assert [s["randomized"] for s in res["stages"]] == [["fc3"], ["feat.stn.conv1"]]
    assert all(np.isfinite(s["effect"]) and 0 < s["p_value"] <= 1 for s in res["stages"])
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # stages work on copies
