import pytest
import torch

from flowam_fast.models import DGCNN, PointNet, get_activations, plain_path

from tests.helpers import randomize

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix):
    return {f"{prefix}.{s}" for s in BN}


def _wb(prefix):
    return {f"{prefix}.weight", f"{prefix}.bias"}


def reference_pointnet_keys():
    """Keys of fxia22/pointnet.pytorch PointNetCls(feature_transform=True)."""
    keys = set()
    for stn in ("feat.stn", "feat.fstn"):
        for layer in ("conv1", "conv2", "conv3", "fc1", "fc2", "fc3"):
            keys |= _wb(f"{stn}.{layer}")
        for i in range(1, 6):
            keys |= _bn(f"{stn}.bn{i}")
    for i in (1, 2, 3):
        keys |= _wb(f"feat.conv{i}") | _bn(f"feat.bn{i}") | _wb(f"fc{i}")
    return keys | _bn("bn1") | _bn("bn2")


def reference_dgcnn_keys():
    """Keys of WangYueFt/dgcnn (pytorch/model.py) DGCNN: each bnL also lives inside convL."""
    keys = set()
    for i in range(1, 6):
        keys |= {f"conv{i}.0.weight"} | _bn(f"bn{i}") | _bn(f"conv{i}.1")
    return keys | {"linear1.weight"} | _bn("bn6") | _wb("linear2") | _bn("bn7") | _wb("linear3")


def test_state_dict_keys_match_reference_layouts():
    assert set(PointNet(40).state_dict()) == reference_pointnet_keys()
    assert set(DGCNN(40).state_dict()) == reference_dgcnn_keys()
    sd = DGCNN(40).state_dict()
    assert sd["conv4.0.weight"].shape == (256, 256, 1, 1) and sd["conv5.0.weight"].shape == (1024, 512, 1)
    assert sd["linear1.weight"].shape == (512, 2048)
    sd = PointNet(40).state_dict()
    assert sd["feat.fstn.fc3.weight"].shape == (64 * 64, 256) and sd["feat.conv3.weight"].shape == (1024, 128, 1)


@pytest.mark.parametrize("model", [PointNet(7), PointNet(5, width=0.25), DGCNN(7, k=8),
                                   DGCNN(3, k=4, emb_dims=64, width=0.25)], ids=lambda m: type(m).__name__)
def test_output_shapes(model):
    for mode in (model.train, model.eval):
        mode()
        out = model(torch.randn(3, 3, 64))
        assert out.shape == (3, model.num_classes)


def test_taps_give_per_point_activations():
    p = PointNet(5, width=0.5).eval()
    _, acts = get_activations(p, torch.randn(2, 3, 40), ["feat.act1", "feat.act2", "feat.act3"])
    assert [tuple(a.shape) for a in acts.values()] == [(2, 32, 40), (2, 64, 40), (2, 512, 40)]
    # The taps sit before the ReLUs (no dead channels to align): the encoder's first tap is
    # bn1(conv1(.)) of the T-Net-transformed points, negative values included.
    with torch.no_grad(), plain_path(p):
        x = torch.randn(2, 3, 40)
        _, acts = get_activations(p, x, ["feat.act1"])
        want = p.feat.bn1(p.feat.conv1(torch.bmm(x.transpose(1, 2), p.feat.stn(x)).transpose(1, 2)))
    torch.testing.assert_close(acts["feat.act1"], want)
    assert bool((want < 0).any())
    # The input T-Net's taps see the raw points (no transform yet), also before the ReLUs; its
    # max-pooled conv3 is tapped before the pool, on the fast path as on the plain one.
    stn = p.feat.stn
    with torch.no_grad(), plain_path(p):
        _, plain = get_activations(p, x, ["feat.stn.act1", "feat.stn.act3"])
        want = stn.bn1(stn.conv1(x))
    torch.testing.assert_close(plain["feat.stn.act1"], want)
    assert bool((want < 0).any())
    with torch.no_grad():
        _, fast = get_activations(p, x, ["feat.stn.act1", "feat.stn.act3"])
    assert tuple(fast["feat.stn.act3"].shape) == (2, 512, 40) and bool((fast["feat.stn.act3"] < 0).any())
    for k in plain:
        torch.testing.assert_close(fast[k], plain[k], rtol=1e-4, atol=1e-4)
    d = DGCNN(5, k=6, emb_dims=96, width=0.5).eval()
    _, acts = get_activations(d, torch.randn(2, 3, 40), d.flow_layers)
    assert [tuple(a.shape) for a in acts.values()] == [(2, 32, 40), (2, 32, 40), (2, 64, 40), (2, 128, 40), (2, 96, 40)]
    with pytest.raises(ValueError, match="unknown layer names"):
        get_activations(p, torch.randn(1, 3, 8), ["feat.nope"])
    with pytest.raises(ValueError, match="activation taps"):
        get_activations(d, torch.randn(1, 3, 8), ["conv1"])
    # Every trailing position of a layer is one of its points: EdgeConv's (B, C, N, k) edge
    # features before the max are N * k points on the plain path.
    with plain_path(d):
        _, edges = get_activations(d, torch.randn(1, 3, 8), ["conv1"])
    assert tuple(edges["conv1"].shape) == (1, 32, 8 * 6)


def _fast_vs_plain(model, x, layers=None):
    out = {}
    for fast in (True, False):
        model.fast_path = fast
        xx = x.clone().requires_grad_(True)
        if layers:
            logits, acts = get_activations(model, xx, layers)
            loss = logits[:, 1].sum() + sum(a.square().mean() for a in acts.values())
        else:
            logits = model(xx)
            loss = logits[:, 1].sum()
        loss.backward()
        out[fast] = (logits.detach(), xx.grad)
    (lf, gf), (lp, gp) = out[True], out[False]
    torch.testing.assert_close(lf, lp, rtol=1e-4, atol=1e-4 * lp.abs().max().item())
    cos = torch.nn.functional.cosine_similarity(gf.flatten(), gp.flatten(), dim=0)
    assert cos >= 0.999, float(cos)


@pytest.mark.parametrize("layers", [None, PointNet.flow_layers, ("feat.act3",)])
def test_pointnet_fast_path_equals_plain_path(layers):
    _fast_vs_plain(randomize(PointNet(6, width=0.5)), torch.randn(3, 3, 128), layers)


@pytest.mark.parametrize("layers", [None, DGCNN.flow_layers])
def test_dgcnn_fast_path_equals_plain_path(layers):
    # A seeded input: on some draws two neighbours of a point are nearly equidistant in a
    # feature space, the fused and the dense kNN round their distances differently and pick
    # different ones, and the logits then differ by more than float tolerance.
    x = torch.randn(2, 3, 96, generator=torch.Generator().manual_seed(0))
    _fast_vs_plain(randomize(DGCNN(6, k=10, emb_dims=128, width=0.5)), x, layers)


def test_fast_path_runs_the_fused_ops(monkeypatch):
    from flowam_fast import ops
    from flowam_fast.models import fast

    calls = []
    for name in ("linear_max", "edge_max", "knn"):
        orig = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _o=orig, _n=name, **k: calls.append(_n) or _o(*a, **k))
    PointNet(4, width=0.25).eval()(torch.randn(2, 3, 32))
    assert calls.count("linear_max") == 3  # both T-Nets and the encoder
    DGCNN(4, k=5, emb_dims=32, width=0.25).eval()(torch.randn(2, 3, 32))
    assert calls.count("edge_max") == 4 and calls.count("knn") == 4
    calls.clear()
    m = PointNet(4, width=0.25).eval()
    with plain_path(m):
        m(torch.randn(2, 3, 32))
    assert calls == [] and m.fast_path
    assert fast.use_fast_path(m) and not fast.use_fast_path(m.train())


def test_dgcnn_training_graphs_come_from_the_fused_knn(monkeypatch):
    """Training builds each EdgeConv graph with the fused kNN, whose neighbours are the
    reference search's (random features have no ties), and its edge features are the same."""
    from flowam_fast.models import dgcnn

    x = torch.randn(3, 16, 64)
    assert torch.equal(dgcnn.fused_knn_indices(x, 7).sort(-1).values, dgcnn.knn_indices(x, 7).sort(-1).values)
    fused, ref = dgcnn.graph_feature(x, 7, fused=True), dgcnn.graph_feature(x, 7)
    assert torch.equal(fused.sort(-1).values, ref.sort(-1).values)
    seen = []
    monkeypatch.setattr(dgcnn, "fused_knn_indices", lambda x, k, _f=dgcnn.fused_knn_indices: seen.append(k) or _f(x, k))
    m = DGCNN(4, k=5, emb_dims=32, width=0.25)
    m.train()(torch.randn(2, 3, 32)).sum().backward()
    assert seen == [5] * 4
    seen.clear()
    with plain_path(m.eval()):
        m(torch.randn(2, 3, 32))
    assert seen == []  # the plain eval path keeps the reference's search
