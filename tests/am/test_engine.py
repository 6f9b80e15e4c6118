import numpy as np
import pytest
import torch

from flowam_fast import ops
from flowam_fast.am.engine import FlowAM, continuity_loss
from flowam_fast.am.spaces import initial_points
from flowam_fast.am.explanations import Explanations
from flowam_fast.am.flows import compute_flows

from tests.helpers import random_data as _data


@pytest.fixture
def flows(tiny_net):
    return compute_flows(tiny_net, _data(num=24, n=64), layers=["act1", "act2"], quiet=True)


def _engine(tiny_net, flows, **kw):
    kw.setdefault("steps", 15)
    kw.setdefault("num_points", 48)
    return FlowAM(tiny_net, flows, quiet=True, **kw)


def test_initial_points_depend_only_on_class_and_seed():
    a = initial_points(2, 5, 64)
    assert torch.equal(a, initial_points(2, 5, 64))
    assert not torch.equal(a, initial_points(2, 6, 64))
    assert not torch.equal(a, initial_points(3, 5, 64))
    assert a.abs().max() <= 0.5


@pytest.mark.parametrize("method", ["flowam", "regularized", "vanilla"])
def test_batch_composition_invariance(tiny_net, flows, method):
    eng = _engine(tiny_net, flows, method=method)
    together = eng.run([0, 1, 2], [0, 1]).sorted()
    alone = Explanations.concat([eng.run([c], [s]) for c in [0, 1, 2] for s in [0, 1]]).sorted()
    pairs = eng.run([0, 1, 2], [0, 1], batch_size=4).sorted()
    for other in (alone, pairs):
        assert np.array_equal(other.classes, together.classes) and np.array_equal(other.seeds, together.seeds)
        np.testing.assert_allclose(other.points, together.points, rtol=0, atol=1e-5)
        np.testing.assert_allclose(other.logits, together.logits, rtol=1e-5, atol=1e-5)


def test_determinism(tiny_net, flows):
    a = _engine(tiny_net, flows).run([0, 2], [3])
    b = _engine(tiny_net, flows).run([0, 2], [3])
    assert np.array_equal(a.points, b.points) and np.array_equal(a.logits, b.logits)


def test_stored_logits_belong_to_stored_points_and_best_iterate(tiny_net, flows):
    res = _engine(tiny_net, flows, steps=30).run([0, 1, 2], [0, 1])
    with torch.no_grad():
        logits = tiny_net(torch.from_numpy(res.points).transpose(1, 2))
    np.testing.assert_allclose(logits.numpy(), res.logits, rtol=1e-4, atol=1e-4)
    assert res.points.shape == (6, 48, 3) and res.logits.shape == (6, 3)
    # Clamped into the data bounds.
    assert (res.points >= flows.lo.numpy() - 1e-6).all() and (res.points <= flows.hi.numpy() + 1e-6).all()


def _one_step(x, loss_fn, lr=1e-2):
    x = x.clone().requires_grad_(True)
    before = loss_fn(x)
    before.sum().backward()
    with torch.no_grad():
        after = loss_fn(x - lr * x.grad / x.grad.abs().max())
    return before.detach(), after


def test_each_term_moves_x_the_right_way(tiny_net, flows):
    eng = _engine(tiny_net, flows)
    cls = torch.tensor([0, 1, 2])
    x = torch.stack([initial_points(c, 0, 48) for c in range(3)])
    _, logits, terms = eng.loss(x, cls)

    def logit_loss(p):
        return -eng.loss(p, cls)[2]["logit"]

    def flow_loss(p):  # the flow term is minus the alignment
        return -eng.loss(p, cls)[2]["flow"]

    def cont_loss(p):
        return continuity_loss(p, 3, flows.d2_target)

    for fn in (logit_loss, flow_loss, cont_loss):
        before, after = _one_step(x, fn)
        assert (after < before).all(), fn.__name__


def test_vanilla_needs_no_flows_and_others_do(tiny_net, flows):
    res = FlowAM(tiny_net, None, method="vanilla", steps=3, num_points=16, quiet=True).run([1], [0])
    assert res.method == "vanilla" and len(res) == 1
    with pytest.raises(ValueError, match="needs flows"):
        FlowAM(tiny_net, None, method="flowam")
    with pytest.raises(ValueError, match="unknown method"):
        FlowAM(tiny_net, flows, method="dream")
    with pytest.raises(ValueError, match="unknown class 9"):
        _engine(tiny_net, flows).run([9], [0])


def _d2_target(engine):
    """The target squared neighbour distance of the engine's continuity term (None without one)."""
    return next((t.target for t in engine.objective.terms if t.name == "continuity"), None)


def test_continuity_target_follows_the_point_count_and_k(tiny_net, flows):
    # Flows measured on 64-point clouds: clouds of 128 points are twice as dense on a surface.
    assert flows.num_points == 64 and flows.continuity_k == 3
    assert _d2_target(_engine(tiny_net, flows, num_points=64)) == pytest.approx(flows.d2_target)
    assert _d2_target(_engine(tiny_net, flows, num_points=128)) == pytest.approx(flows.d2_target / 2)
    # The rule is what a surface gives: sampling a sphere twice as densely halves d2.
    def on_sphere(n):
        data = _data(num=24, n=n)
        data.points /= np.linalg.norm(data.points, axis=2, keepdims=True)
        return compute_flows(tiny_net, data, layers=["act1"], quiet=True).d2_target

    assert on_sphere(256) / on_sphere(512) == pytest.approx(2.0, rel=0.1)
    assert _d2_target(_engine(tiny_net, flows, method="vanilla")) is None
    with pytest.raises(ValueError, match="measured with k=3"):
        _engine(tiny_net, flows, continuity_k=5)
    assert _engine(tiny_net, flows, continuity_k=5, continuity_weight=0).config.continuity_k == 5


def test_flows_of_another_model_are_rejected(flows):
    from tests.helpers import TinyNet

    other = TinyNet()
    other.conv1 = torch.nn.Conv1d(3, 8, 1)
    other.conv2 = torch.nn.Conv1d(8, 32, 1)
    with pytest.raises(ValueError, match="channel counts"):
        FlowAM(other, flows, num_points=16)


def test_store_roundtrip_and_resume(tmp_path, tiny_net, flows):
    store = tmp_path / "e.h5"
    eng = _engine(tiny_net, flows)
    first = eng.run([0, 1], [0], store=store)
    back = Explanations.load(store)
    assert np.array_equal(back.points, first.points) and back.config == first.config
    assert back.method == "flowam" and back.version and back.model == first.model
    # A restarted, larger sweep only runs the missing jobs and keeps the stored ones bit for bit.
    calls = []
    orig = eng._optimize
    eng._optimize = lambda jobs, bar: calls.append(list(jobs)) or orig(jobs, bar)
    full = eng.run([0, 1, 2], [0], store=store).sorted()
    assert calls == [[(2, 0)]]
    assert np.array_equal(full.select(classes=[0, 1]).points, first.sorted().points)
    with pytest.raises(ValueError, match="another config"):
        _engine(tiny_net, flows, steps=3).run([0], [0], store=store)


def test_ply_and_png(tmp_path, tiny_net, flows):
    res = _engine(tiny_net, flows, steps=2).run([0, 1], [0, 1])
    files = res.to_ply(tmp_path / "ply")
    assert len(files) == 4
    from plyfile import PlyData

    v = PlyData.read(str(files[0]))["vertex"]
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), res.points[0])
    res.plot(tmp_path / "sheet.png")
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A sheet with a real-sample column: the first cloud of each class, one column more.
    from matplotlib.image import imread

    from flowam_fast.am.sheets import class_examples, contact_sheet

    data = _data(num=6, n=16)
    real = class_examples(data.points, data.labels)
    assert sorted(real) == [0, 1, 2] and np.array_equal(real[1], data.points[np.nonzero(data.labels == 1)[0][0]])
    contact_sheet([res], tmp_path / "with_real.png", references=real)
    assert imread(tmp_path / "with_real.png").shape[1] > imread(tmp_path / "sheet.png").shape[1]


def test_flowam_runs_a_dgcnn_with_more_neighbours_than_16_points():
    from flowam_fast.models import DGCNN

    model = DGCNN(3, k=20, emb_dims=32, width=0.25).eval()
    data = _data(num=6, n=40)
    flows = compute_flows(model, data, quiet=True)
    res = FlowAM(model, flows, steps=2, num_points=40, quiet=True).run([0, 1], [0])
    assert res.points.shape == (2, 40, 3) and np.isfinite(res.points).all()
    assert len(FlowAM(model, None, method="vanilla", steps=1, num_points=40, quiet=True).run([2], [0])) == 1


def _tiny_ae(num_points=48, seed=0):
    from flowam_fast.am.autoencoder import PointAutoencoder, encode_all

    torch.manual_seed(seed)
    ae = PointAutoencoder(num_points=num_points, latent_dim=8, width=0.25).eval()
    ae.set_latent_stats(encode_all(ae, _data(num=24, n=64).points))
    return ae


def test_ae_latent_optimizes_the_code_and_stores_decoded_points(tiny_net, flows):
    ae = _tiny_ae()
    eng = _engine(tiny_net, flows, method="ae-latent", autoencoder=ae, steps=20)
    assert eng.config.flow_weight == 0 and eng.config.continuity_weight == 0 and '"PointAutoencoder"' in eng.config.autoencoder
    res = eng.run([0, 1, 2], [0, 1])
    # Every stored explanation is the decoding of some code inside the latent box, and its
    # stored logits are the classifier's on those points.
    with torch.no_grad():
        logits = tiny_net(torch.from_numpy(res.points).transpose(1, 2))
    np.testing.assert_allclose(res.logits, logits.numpy(), rtol=1e-4, atol=1e-4)
    assert res.points.shape == (6, 48, 3)
    # The target logit went up from the initial code's.
    from flowam_fast.am.spaces import initial_codes

    z0 = torch.stack([initial_codes(c, s, ae.latent_mean, ae.latent_std).clamp(ae.latent_lo, ae.latent_hi)
                      for c, s in zip(res.classes.tolist(), res.seeds.tolist())])
    with torch.no_grad():
        l0 = tiny_net(ae.decode(z0).transpose(1, 2)).gather(1, torch.from_numpy(res.classes)[:, None])
    assert (torch.from_numpy(res.logits).gather(1, torch.from_numpy(res.classes)[:, None]) >= l0 - 1e-6).all()
    assert (torch.from_numpy(res.logits).gather(1, torch.from_numpy(res.classes)[:, None]) > l0 + 1e-4).any()


def test_ae_latent_batch_invariance_and_determinism(tiny_net, flows):
    ae = _tiny_ae()
    eng = _engine(tiny_net, flows, method="ae-latent", autoencoder=ae)
    together = eng.run([0, 1, 2], [0, 1]).sorted()
    alone = Explanations.concat([eng.run([c], [s]) for c in [0, 1, 2] for s in [0, 1]]).sorted()
    np.testing.assert_allclose(alone.points, together.points, rtol=0, atol=1e-5)
    again = _engine(tiny_net, flows, method="ae-latent", autoencoder=_tiny_ae()).run([0, 1, 2], [0, 1]).sorted()
    assert np.array_equal(again.points, together.points)


def test_ae_latent_argument_errors(tiny_net, flows):
    ae = _tiny_ae()
    with pytest.raises(ValueError, match="needs autoencoder"):
        _engine(tiny_net, flows, method="ae-latent")
    with pytest.raises(ValueError, match="only it"):
        _engine(tiny_net, flows, method="flowam", autoencoder=ae)
    with pytest.raises(ValueError, match="decodes 48 points"):
        _engine(tiny_net, flows, method="ae-latent", autoencoder=ae, num_points=64)
    # No flows needed: the code is bounded by the autoencoder's latent range.
    assert len(FlowAM(tiny_net, None, method="ae-latent", autoencoder=ae, steps=2, num_points=48, quiet=True)
               .run([1], [0])) == 1


@pytest.mark.parametrize("arch,method", [("pointnet", "flowam"), ("dgcnn", "flowam"), ("pointnet", "ae-latent")])
def test_builtin_models_are_batch_composition_invariant_bit_for_bit(arch, method):
    """Points *and* logits of a job do not depend on the jobs that share its batch, exactly, for
    the built-in models (what lets sweeps of any shard size give identical stores)."""
    from flowam_fast.models import build_model
    from tests.helpers import randomize

    torch.manual_seed(0)
    kw = {"k": 4, "emb_dims": 32} if arch == "dgcnn" else {"feature_transform": True}
    model = randomize(build_model(arch, num_classes=3, width=0.125, **kw))
    flows = compute_flows(model, _data(num=24, n=48), quiet=True)
    ae = _tiny_ae() if method == "ae-latent" else None
    eng = FlowAM(model, flows, method=method, autoencoder=ae, steps=3, num_points=48, quiet=True)
    together = eng.run([0, 1, 2], [0, 1]).sorted()
    for other in (Explanations.concat([eng.run([c], [s]) for c in [0, 1, 2] for s in [0, 1]]).sorted(),
                  eng.run([0, 1, 2], [0, 1], batch_size=4).sorted()):
        assert np.array_equal(other.points, together.points)
        assert np.array_equal(other.logits, together.logits)


def test_flow_term_on_the_pooled_layers_closed_form_equals_the_written_out_one(monkeypatch):
    """The built-in PointNet's fast path gives the flow term its max-pooled layers as
    LinearActs (moments from the input's covariance); the objective and its gradient match
    the same term on the written-out activations."""
    from flowam_fast.am import engine as engine_module
    from flowam_fast.models import build_model
    from tests.helpers import randomize

    torch.manual_seed(0)
    model = randomize(build_model("pointnet", num_classes=3, width=0.25, feature_transform=True)).eval()
    flows = compute_flows(model, _data(num=24, n=64), quiet=True)
    eng = FlowAM(model, flows, steps=1, num_points=64, quiet=True)
    x0 = torch.rand(4, 64, 3) - 0.5
    cls = torch.tensor([0, 1, 2, 1])
    seen = []
    orig = ops.flow_align
    monkeypatch.setattr(ops, "flow_align", lambda a, *r, **k: seen.append(type(a).__name__) or orig(a, *r, **k))
    out = {}
    for linear in (True, False):
        if not linear:  # the recorder asks every tap for dense activations
            dense = engine_module.get_activations
            monkeypatch.setattr(engine_module, "get_activations", lambda m, x, layers, linear: dense(m, x, layers))
        x = x0.clone().requires_grad_(True)
        total, _, terms = eng.loss(x, cls)
        total.sum().backward()
        out[linear] = (terms["flow"].detach(), x.grad)
    assert seen.count("LinearActs") == 2 and seen.count("Tensor") == 10  # 2 pooled of 6 layers, then all dense
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-3, atol=1e-4 * out[False][1].abs().max().item())


def test_random_control_is_uniform_in_the_bounds_and_independent_of_the_model(tiny_net, flows):
    """Method "random": each job's cloud is drawn uniformly in the flows' data bounds by its
    (class, seed) generator, no step is taken, and the model changes nothing."""
    from flowam_fast.am.spaces import job_seed
    from tests.helpers import TinyNet

    engine = FlowAM(tiny_net, flows, method="random", steps=40, num_points=2000, quiet=True)
    assert engine.config.steps == 0 and engine.config.clamp
    e = engine.run([0, 2], [0, 1])
    lo, hi = flows.lo.numpy(), flows.hi.numpy()
    assert (e.points >= lo).all() and (e.points <= hi).all()
    # Uniform: each axis's mean and spread are those of U(lo, hi) (2000 points, 4 sigma).
    mean, var = (lo + hi) / 2, (hi - lo) ** 2 / 12
    assert np.abs(e.points.mean(1) - mean).max() < 4 * np.sqrt(var / 2000).max()
    assert np.allclose(e.points.var(1), var, rtol=0.15)
    g = torch.Generator().manual_seed(job_seed(2, 1))
    want = flows.lo + (flows.hi - flows.lo) * torch.rand(2000, 3, generator=g)
    assert np.array_equal(e.select([2], [1]).points[0], want.numpy())
    other = FlowAM(TinyNet(seed=5).eval(), flows, method="random", num_points=2000, quiet=True).run([0, 2], [0, 1])
    assert np.array_equal(other.points, e.points)
    assert not np.array_equal(e.points[0], e.points[1])  # another seed, another cloud
    with pytest.raises(ValueError, match="needs flows"):  # the bounds are the flows'
        FlowAM(tiny_net, None, method="random")
