"""PointNet++ (SSG, MSG): the public implementation's checkpoints load, and the forward pass is
the public algorithm (checked against a plain implementation written here from the public
code, yanx27/Pointnet_Pointnet2_pytorch, with FPS starting at point 0)."""
import pytest
import torch
import torch.nn.functional as F

from flowam_fast.cli import main
from flowam_fast.data import generate_shapes
from flowam_fast.models import PointNet2MSG, PointNet2SSG, get_activations, load_checkpoint, plain_path, save_checkpoint
from flowam_fast.models.checkpoint import CheckpointError
from flowam_fast.models.pointnet2 import ball_query, farthest_point_sample

from tests.helpers import randomize

# The public models' layers without normals (normal_channel=False), read off
# models/pointnet2_cls_ssg.py, pointnet2_cls_msg.py and pointnet2_utils.py:
# (conv, its BatchNorm, input channels, output channels). Each conv is a 1x1 Conv2d with bias.
SSG_LAYERS = [
    ("sa1.mlp_convs.0", "sa1.mlp_bns.0", 3, 64), ("sa1.mlp_convs.1", "sa1.mlp_bns.1", 64, 64),
    ("sa1.mlp_convs.2", "sa1.mlp_bns.2", 64, 128),
    ("sa2.mlp_convs.0", "sa2.mlp_bns.0", 131, 128), ("sa2.mlp_convs.1", "sa2.mlp_bns.1", 128, 128),
    ("sa2.mlp_convs.2", "sa2.mlp_bns.2", 128, 256),
    ("sa3.mlp_convs.0", "sa3.mlp_bns.0", 259, 256), ("sa3.mlp_convs.1", "sa3.mlp_bns.1", 256, 512),
    ("sa3.mlp_convs.2", "sa3.mlp_bns.2", 512, 1024),
]
MSG_LAYERS = [
    ("sa1.conv_blocks.0.0", "sa1.bn_blocks.0.0", 3, 32), ("sa1.conv_blocks.0.1", "sa1.bn_blocks.0.1", 32, 32),
    ("sa1.conv_blocks.0.2", "sa1.bn_blocks.0.2", 32, 64),
    ("sa1.conv_blocks.1.0", "sa1.bn_blocks.1.0", 3, 64), ("sa1.conv_blocks.1.1", "sa1.bn_blocks.1.1", 64, 64),
    ("sa1.conv_blocks.1.2", "sa1.bn_blocks.1.2", 64, 128),
    ("sa1.conv_blocks.2.0", "sa1.bn_blocks.2.0", 3, 64), ("sa1.conv_blocks.2.1", "sa1.bn_blocks.2.1", 64, 96),
    ("sa1.conv_blocks.2.2", "sa1.bn_blocks.2.2", 96, 128),
    ("sa2.conv_blocks.0.0", "sa2.bn_blocks.0.0", 323, 64), ("sa2.conv_blocks.0.1", "sa2.bn_blocks.0.1", 64, 64),
    ("sa2.conv_blocks.0.2", "sa2.bn_blocks.0.2", 64, 128),
    ("sa2.conv_blocks.1.0", "sa2.bn_blocks.1.0", 323, 128), ("sa2.conv_blocks.1.1", "sa2.bn_blocks.1.1", 128, 128),
    ("sa2.conv_blocks.1.2", "sa2.bn_blocks.1.2", 128, 256),
    ("sa2.conv_blocks.2.0", "sa2.bn_blocks.2.0", 323, 128), ("sa2.conv_blocks.2.1", "sa2.bn_blocks.2.1", 128, 128),
    ("sa2.conv_blocks.2.2", "sa2.bn_blocks.2.2", 128, 256),
    ("sa3.mlp_convs.0", "sa3.mlp_bns.0", 643, 256), ("sa3.mlp_convs.1", "sa3.mlp_bns.1", 256, 512),
    ("sa3.mlp_convs.2", "sa3.mlp_bns.2", 512, 1024),
]
HEAD = [("fc1", "bn1", 1024, 512), ("fc2", "bn2", 512, 256), ("fc3", None, 256, 40)]
#: Per SA layer: (npoint, [(radius, nsample, [conv names])] per scale, features before offsets).
SSG_SA = [(512, [(0.2, 32, [f"sa1.mlp_convs.{i}" for i in range(3)])], False),
          (128, [(0.4, 64, [f"sa2.mlp_convs.{i}" for i in range(3)])], False)]
MSG_SA = [(512, [(r, k, [f"sa1.conv_blocks.{s}.{i}" for i in range(3)]) for s, (r, k) in
                 enumerate([(0.1, 16), (0.2, 32), (0.4, 128)])], True),
          (128, [(r, k, [f"sa2.conv_blocks.{s}.{i}" for i in range(3)]) for s, (r, k) in
                 enumerate([(0.2, 32), (0.4, 64), (0.8, 128)])], True)]
PUBLIC = {"pointnet2_ssg": (SSG_LAYERS, SSG_SA), "pointnet2_msg": (MSG_LAYERS, MSG_SA)}
#: The public sizes, as the models' configs hold them.
PUBLIC_SIZES = {PointNet2SSG: {"npoints": [512, 128], "radii": [0.2, 0.4], "nsamples": [32, 64]},
                PointNet2MSG: {"npoints": [512, 128], "radii": [[0.1, 0.2, 0.4], [0.2, 0.4, 0.8]],
                               "nsamples": [[16, 32, 128], [32, 64, 128]]}}


def _expected_shapes(layers) -> dict:
    shapes = {}
    for conv, bn, cin, cout in layers:
        shapes[f"{conv}.weight"], shapes[f"{conv}.bias"] = (cout, cin, 1, 1), (cout,)
        shapes.update({f"{bn}.{p}": (cout,) for p in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{bn}.num_batches_tracked"] = ()
    for fc, bn, cin, cout in HEAD:
        shapes[f"{fc}.weight"], shapes[f"{fc}.bias"] = (cout, cin), (cout,)
        if bn:
            shapes.update({f"{bn}.{p}": (cout,) for p in ("weight", "bias", "running_mean", "running_var")})
            shapes[f"{bn}.num_batches_tracked"] = ()
    return shapes


def _public_state(layers, seed=0) -> dict:
    """A state_dict in the public layout with weights of a trained model's scale: fan-in scaled
    convs, BatchNorms with some negative scales."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _expected_shapes(layers).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".weight") and len(shape) > 1:
            state[key] = torch.randn(shape, generator=g) / shape[1] ** 0.5
        elif key.endswith(".weight"):  # a BatchNorm's scale
            state[key] = torch.randn(shape, generator=g).sign() * (0.5 + torch.rand(shape, generator=g))
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


# --- The public forward pass, written plainly from the public code (FPS from point 0). ---

def _fps(xyz, npoint):
    b, n, _ = xyz.shape
    centroids = torch.zeros(b, npoint, dtype=torch.long)
    distance = torch.full((b, n), 1e10)
    farthest = torch.zeros(b, dtype=torch.long)
    for i in range(npoint):
        centroids[:, i] = farthest
        dist = ((xyz - xyz[torch.arange(b), farthest][:, None]) ** 2).sum(-1)
        distance = torch.where(dist < distance, dist, distance)
        farthest = torch.max(distance, -1)[1]
    return centroids


def _ball(radius, nsample, xyz, new_xyz):
    b, n, _ = xyz.shape
    s = new_xyz.shape[1]
    sqr = -2 * new_xyz @ xyz.transpose(1, 2) + (new_xyz ** 2).sum(-1)[:, :, None] + (xyz ** 2).sum(-1)[:, None, :]
    idx = torch.arange(n).repeat(b, s, 1)
    idx[sqr > radius ** 2] = n
    idx = idx.sort(dim=-1)[0][:, :, :nsample]
    first = idx[:, :, :1].repeat(1, 1, nsample)
    idx[idx == n] = first[idx == n]
    return idx


def _index(points, idx):
    return points[torch.arange(points.shape[0]).view(-1, *[1] * (idx.dim() - 1)), idx]


def _mlp(sd, convs, x):
    """conv + bn + relu per layer on (B, C, K, S), then max over K."""
    for conv in convs:
        bn = conv.replace("mlp_convs", "mlp_bns").replace("conv_blocks", "bn_blocks")
        x = F.conv2d(x, sd[f"{conv}.weight"], sd[f"{conv}.bias"])
        x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"],
                         False, 0.0, 1e-5)
        x = F.relu(x)
    return x.max(dim=2)[0]


def public_log_softmax(sd, arch, x):
    """The public model's output (log-softmax) for points x (B, 3, N), from its state_dict."""
    _, sa_layers = PUBLIC[arch]
    xyz, feats = x.transpose(1, 2), None
    for npoint, scales, feats_first in sa_layers:
        new_xyz = _index(xyz, _fps(xyz, npoint))
        pooled = []
        for radius, nsample, convs in scales:
            idx = _ball(radius, nsample, xyz, new_xyz)
            grouped = _index(xyz, idx) - new_xyz[:, :, None]
            if feats is not None:
                parts = [_index(feats, idx), grouped] if feats_first else [grouped, _index(feats, idx)]
                grouped = torch.cat(parts, dim=-1)
            pooled.append(_mlp(sd, convs, grouped.permute(0, 3, 2, 1)))
        xyz, feats = new_xyz, torch.cat(pooled, dim=1).transpose(1, 2)
    grouped = torch.cat([xyz, feats], dim=-1)[:, None]  # group all: raw coordinates, then features
    g = _mlp(sd, [f"sa3.mlp_convs.{i}" for i in range(3)], grouped.permute(0, 3, 2, 1)).reshape(x.shape[0], -1)
    for fc, bn in (("fc1", "bn1"), ("fc2", "bn2")):
        g = F.linear(g, sd[f"{fc}.weight"], sd[f"{fc}.bias"])
        g = F.relu(F.batch_norm(g, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"],
                                sd[f"{bn}.bias"], False, 0.0, 1e-5))
    return F.log_softmax(F.linear(g, sd["fc3.weight"], sd["fc3.bias"]), -1)


def _clouds(b=2, n=512, seed=1):
    return torch.rand(b, 3, n, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("arch, cls", [("pointnet2_ssg", PointNet2SSG), ("pointnet2_msg", PointNet2MSG)])
def test_public_layout(arch, cls):
    """width=1 has exactly the public keys and shapes."""
    got = {k: tuple(v.shape) for k, v in cls(40).state_dict().items()}
    assert got == _expected_shapes(PUBLIC[arch][0])


@pytest.mark.parametrize("arch, cls", [("pointnet2_ssg", PointNet2SSG), ("pointnet2_msg", PointNet2MSG)])
def test_public_training_checkpoint_loads_and_computes_the_public_forward(tmp_path, arch, cls):
    sd = _public_state(PUBLIC[arch][0])
    # As the public train_classification.py saves it.
    torch.save({"epoch": 12, "instance_acc": 0.9, "class_acc": 0.88, "model_state_dict": sd,
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}},
               tmp_path / "best_model.pth")
    model = load_checkpoint(tmp_path / "best_model.pth", arch=arch, num_classes=40)
    assert type(model) is cls and not model.training
    loaded = model.state_dict()
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], v) for k, v in sd.items())
    assert type(load_checkpoint(tmp_path / "best_model.pth")) is cls  # the arch told by the keys
    x = _clouds()
    with torch.no_grad():
        got = F.log_softmax(model(x), -1)
        want = public_log_softmax(sd, arch, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert want.exp().sum(-1).sub(1).abs().max() < 1e-5 and want.std() > 0.1  # a real, non-flat output


@pytest.mark.parametrize("arch, first", [("pointnet2_ssg", "sa1.mlp_convs.0.weight"),
                                         ("pointnet2_msg", "sa1.conv_blocks.0.0.weight")])
def test_checkpoint_with_normals_is_refused(tmp_path, arch, first):
    sd = _public_state(PUBLIC[arch][0])
    sd[first] = torch.zeros(sd[first].shape[0], 6, 1, 1)  # normal_channel=True
    torch.save({"epoch": 1, "model_state_dict": sd}, tmp_path / "normals.pth")
    with pytest.raises(CheckpointError, match="trained with normals .*AM optimizes point coordinates only"):
        load_checkpoint(tmp_path / "normals.pth", arch=arch)


def test_mismatched_checkpoint_lists_the_keys(tmp_path):
    sd = _public_state(MSG_LAYERS)
    torch.save({"model_state_dict": sd}, tmp_path / "msg.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "msg.pth", arch="pointnet2_ssg")
    msg = str(err.value)
    assert "does not match PointNet2SSG" in msg
    assert "missing keys (36): sa1.mlp_bns.0.bias" in msg and "unexpected keys (126): sa1.bn_blocks.0.0.bias" in msg
    assert "sa3.mlp_convs.0.weight: checkpoint (256, 643, 1, 1) vs model (256, 259, 1, 1)" in msg


def test_input_errors():
    model = PointNet2SSG(5, width=0.125).eval()
    with pytest.raises(ValueError, match=r"takes points \(B, 3, N\), got \(2, 6, 512\) \(a cloud with normals"):
        model(torch.zeros(2, 6, 512))
    with pytest.raises(ValueError, match="needs at least that many points per cloud, got 500"):
        model(torch.zeros(2, 3, 500))


def test_farthest_point_sampling_starts_at_zero_and_breaks_ties_to_the_smaller_index():
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [-2, 0, 0], [2, 0, 0], [0.5, 0, 0]]])
    # From 0: points 2 and 3 tie (squared distance 4), 2 is taken; then 3; then 1 (1 from
    # point 0) before 4 (0.25).
    assert farthest_point_sample(xyz, 4).tolist() == [[0, 2, 3, 1]]


def test_ball_query_keeps_the_first_points_in_index_order_and_pads_with_the_first():
    # Grid points: every squared distance is exact, so the boundary (d^2 = r^2 is inside) is sharp.
    xyz = torch.tensor([[[2.0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, -1, 0]]])
    centroids = torch.tensor([[[0.0, 0, 0], [0, -1, 0]]])
    assert ball_query(xyz, centroids, 1.0, 3).tolist() == [[[1, 2, 3], [1, 5, 1]]]


@pytest.mark.parametrize("cls", [PointNet2SSG, PointNet2MSG])
def test_save_load_round_trip(tmp_path, cls):
    model = randomize(cls(5, width=0.125))
    save_checkpoint(model, tmp_path / "m.pt", note="x")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert type(loaded) is cls and loaded.config == {"num_classes": 5, "width": 0.125, **PUBLIC_SIZES[cls]}
    x = _clouds(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def _tapped(model, names, x):
    """What the named taps (`models.activations.Tap`) see in one forward pass of x, unflattened:
    a request on each, withdrawn afterwards."""
    modules = dict(model.named_modules())
    seen = {}
    records = {name: lambda o, name=name: seen.__setitem__(name, o) for name in names}
    for name, record in records.items():
        modules[name].request(record, linear=False)
    with torch.no_grad():
        model(x)
    for name, record in records.items():
        modules[name].withdraw(record)
    assert not any(modules[name].wanted() for name in records)
    return seen


@pytest.mark.parametrize("cls, shapes", [
    (PointNet2SSG, {"sa1.acts.0": (2, 8, 32, 512), "sa1.acts.2": (2, 16, 32, 512), "sa2.acts.1": (2, 16, 64, 128),
                    "sa3.acts.2": (2, 128, 128, 1)}),
    (PointNet2MSG, {"sa1.acts.0.0": (2, 4, 16, 512), "sa1.acts.2.1": (2, 12, 128, 512),
                    "sa2.acts.1.2": (2, 32, 64, 128), "sa3.acts.0": (2, 32, 128, 1)}),
])
def test_taps_see_the_grouped_pre_activations(cls, shapes):
    """Each tap sees bn(conv(.)) of its layer, before the ReLU, in the public layout (B, C, K, S),
    on the fast path (where a requested tap makes its fused layer dense)."""
    model = randomize(cls(5, width=0.125))
    seen = _tapped(model, set(shapes) | set(model.flow_layers), _clouds())
    assert {name: tuple(seen[name].shape) for name in shapes} == shapes
    assert all(seen[name].dim() == 4 for name in model.flow_layers)
    assert all((seen[name] < 0).any() for name in shapes)  # before the ReLU


@pytest.mark.parametrize("arch, cls", [("pointnet2_ssg", PointNet2SSG), ("pointnet2_msg", PointNet2MSG)])
def test_input_gradient_is_the_public_forwards(arch, cls):
    """AM differentiates with respect to the coordinates (offsets, centroids, the group-all
    layer's raw coordinates): the same gradient as the public forward's, at a small width."""
    model = randomize(cls(3, width=0.125))
    grads = []
    for forward in (lambda x: F.log_softmax(model(x), -1), lambda x: public_log_softmax(model.state_dict(), arch, x)):
        x = _clouds(1).requires_grad_()
        forward(x)[0, 1].backward()
        grads.append(x.grad)
    assert (grads[1] != 0).sum() > 100
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cls", [PointNet2SSG, PointNet2MSG])
def test_randomization_groups_cover_every_parameter_once(cls):
    model = cls(5, width=0.125)
    params = [id(p) for _, mods in model.randomization_groups() for m in mods
              for p in model.get_submodule(m).parameters()]
    assert len(params) == len(set(params)) and set(params) == {id(p) for p in model.parameters()}
    assert model.randomization_groups()[0] == ("fc3", ["fc3"])


def test_cli_trains_and_saves_a_pointnet2(tmp_path, capsys):
    data = generate_shapes(tmp_path / "data", train_per_class=1, test_per_class=1, num_points=512)
    ckpt = tmp_path / "m.pt"
    assert main(["train", "--model", "pointnet2_ssg", "--data", str(data), "--epochs", "1", "--num-points", "512",
                 "--width", "0.125", "--batch-size", "12", "--out", str(ckpt), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    model = load_checkpoint(ckpt)
    assert type(model) is PointNet2SSG and model.config == {"num_classes": 12, "width": 0.125,
                                                            **PUBLIC_SIZES[PointNet2SSG]}
    # One step of training moved the weights away from the seeded initial ones.
    torch.manual_seed(0)
    assert not torch.equal(model.fc3.weight, PointNet2SSG(12, width=0.125).fc3.weight)


# --- Configurable sizes ---

SMALL = {PointNet2SSG: {"npoints": (48, 16), "radii": (0.3, 0.6), "nsamples": (8, 12)},
         PointNet2MSG: {"npoints": (48, 16), "radii": ((0.2, 0.3, 0.5), (0.4, 0.6, 0.9)),
                        "nsamples": ((4, 8, 12), (8, 12, 16))}}


@pytest.mark.parametrize("cls", [PointNet2SSG, PointNet2MSG])
def test_sizes_set_the_groups_and_round_trip_through_a_checkpoint(tmp_path, cls):
    model = randomize(cls(5, width=0.125, **SMALL[cls]))
    taps = ["sa1.acts.2", "sa2.acts.0"] if cls is PointNet2SSG else ["sa1.acts.2.2", "sa2.acts.1.0"]
    seen = {t: tuple(a.shape) for t, a in _tapped(model, taps, _clouds(2, 64)).items()}
    # (B, C, K, S): sa1's last scale groups its K neighbours around 48 centroids, sa2's around 16.
    k1, k2 = (8, 12) if cls is PointNet2SSG else (12, 12)
    assert [seen[t][2:] for t in taps] == [(k1, 48), (k2, 16)]
    save_checkpoint(model, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config == model.config and loaded.config["npoints"] == [48, 16]
    x = _clouds(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="needs at least that many points per cloud, got 40"):
        model(torch.zeros(1, 3, 40))


@pytest.mark.parametrize("kw, message", [
    ({"npoints": (16, 32)}, r"npoints\[1\] \(sa2's centroids\) must be at most npoints\[0\]"),
    ({"npoints": (64,)}, r"npoints must be a pair \(sa1, sa2\) of positive integers, got \(64,\)"),
    ({"radii": (0.2, -0.4)}, "radii must be a pair .* of positive numbers"),
    ({"nsamples": (16, 2.5)}, "nsamples must be a pair .* of positive integers"),
])
def test_invalid_sizes_are_refused(kw, message):
    with pytest.raises(ValueError, match="PointNet2SSG: " + message):
        PointNet2SSG(5, **kw)


def test_invalid_msg_sizes_name_the_scales():
    with pytest.raises(ValueError, match=r"nsamples must be a pair \(sa1, sa2\) of sequences of 3 positive integers "
                                         r"\(one per scale\)"):
        PointNet2MSG(5, nsamples=(16, 32))


# --- The fused fast path ---

def _fast_and_plain(model, x, layers=()):
    """(logits, input gradient, recorded activations) on each path, fast first."""
    out = []
    for fast in (True, False):
        model.fast_path = fast
        xx = x.clone().requires_grad_(True)
        logits, acts = get_activations(model, xx, list(layers))
        loss = logits[:, 1].sum() + sum(a.square().mean() for a in acts.values())
        loss.backward()
        out.append((logits.detach(), xx.grad, {k: v.detach() for k, v in acts.items()}))
    model.fast_path = True
    return out


def _assert_same(fast, plain):
    (lf, gf, af), (lp, gp, ap) = fast, plain
    torch.testing.assert_close(lf, lp, rtol=1e-4, atol=1e-4 * lp.abs().max().item())
    assert F.cosine_similarity(gf.flatten(), gp.flatten(), dim=0) >= 0.9999
    assert (gp != 0).sum() > gp.numel() // 4  # the gradient reaches most points
    assert af.keys() == ap.keys()
    for name in ap:
        torch.testing.assert_close(af[name], ap[name], rtol=1e-4, atol=1e-4 * ap[name].abs().max().item())


def _frozen(model):
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.mark.parametrize("cls", [PointNet2SSG, PointNet2MSG])
@pytest.mark.parametrize("recorded", ["none", "flow_layers", "last"])
def test_fast_path_equals_plain_path(cls, recorded):
    """Logits, input gradients and the recorded pre-activations (a tap with a recorder is
    computed densely) agree; randomize's BatchNorms have negative scales in every layer, which
    turn the fused maxima's argmax around."""
    model = _frozen(randomize(cls(6, width=0.25, **SMALL[cls])))
    assert any((bn.weight < 0).any() for bn in model.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    layers = {"none": (), "flow_layers": model.flow_layers, "last": [n for n, _ in model.named_modules()
                                                                    if n.startswith("sa3.acts.")][-1:]}[recorded]
    _assert_same(*_fast_and_plain(model, _clouds(3, 96), layers))


@pytest.mark.parametrize("cls", [PointNet2SSG, PointNet2MSG])
def test_fast_path_equals_plain_path_at_the_public_sizes(cls):
    model = _frozen(randomize(cls(40)))
    _assert_same(*_fast_and_plain(model, _clouds(2, 1024)))


def test_fast_path_with_trainable_parameters_gives_their_gradients():
    """In eval mode with parameters that require grad, the first layer leaves the fused
    gather (which has no gradient for the folded BatchNorm) and the parameters get the plain
    path's gradients."""
    model = randomize(PointNet2SSG(4, width=0.25, **SMALL[PointNet2SSG]))
    x = _clouds(2, 64)
    grads = []
    for fast in (True, False):
        model.fast_path = fast
        model.zero_grad()
        model(x)[:, 1].sum().backward()
        grads.append(model.sa1.mlp_bns[0].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_fast_path_runs_the_fused_ops_and_training_only_the_index_ops(monkeypatch):
    from flowam_fast import ops

    calls = []
    for name in ("farthest_point_sample", "ball_query", "group_gather", "group_linear_max", "linear_max"):
        monkeypatch.setattr(ops, name, lambda *a, _o=getattr(ops, name), _n=name, **k: calls.append(_n) or _o(*a, **k))
    x = _clouds(2, 64)
    ssg = _frozen(randomize(PointNet2SSG(4, width=0.25, **SMALL[PointNet2SSG])))
    ssg(x)
    # sa1, sa2: sample, group, first layer, last layer with its max; sa3: its last layer.
    assert sorted(calls) == sorted(["farthest_point_sample", "ball_query", "group_gather", "group_linear_max"] * 2
                                   + ["group_linear_max"])
    calls.clear()
    _frozen(randomize(PointNet2MSG(4, width=0.25, **SMALL[PointNet2MSG])))(x)
    assert calls.count("ball_query") == 6 and calls.count("group_gather") == 6 and calls.count("group_linear_max") == 7
    calls.clear()
    with plain_path(ssg):
        ssg(x)
    assert calls == []
    ssg.train()(x)
    assert sorted(calls) == sorted(["farthest_point_sample", "ball_query"] * 2)
