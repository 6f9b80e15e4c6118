"""flow_align on `LinearActs` (a linear layer's activations given by its input and map): the
closed form from the input's covariance against the written-out activations, the float64
reference and gradcheck; and the fast path's use of it at PointNet's max-pooled layers."""
import pytest
import torch

from flowam_fast.models import PointNet, get_activations, plain_path
from flowam_fast.ops import LinearActs, backend, flow_align, reference

pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")


def _linear(B, N, cin, c, dtype=torch.float32, seed=0, relu=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, cin, generator=g, dtype=torch.float64) * 2 + 0.5
    if relu:  # the max-pooled layers read ReLU outputs: correlated, many zeros
        x = x.clamp_min(0)
    w = torch.randn(c, cin, generator=g, dtype=torch.float64) / cin ** 0.5
    shift = torch.randn(c, generator=g, dtype=torch.float64)
    return LinearActs(x.to(dtype), w.to(dtype), shift.to(dtype))


def _flow(K, C, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, C, generator=g, dtype=torch.float64), torch.rand(K, C, generator=g, dtype=torch.float64) + 0.1


def _grads(lin, loss_fn, g):
    x, w, s = (t.detach().clone().requires_grad_(True) for t in lin)
    loss = loss_fn(LinearActs(x, w, s))
    (loss * g.to(loss.dtype)).sum().backward()
    return loss.detach(), x.grad, w.grad, s.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, N, cin, c", [(3, 50, 5, 7), (1, 1, 2, 3), (4, 300, 32, 256)])
def test_closed_form_matches_the_written_out_activations(dtype, B, N, cin, c):
    lin = _linear(B, N, cin, c, dtype)
    labels = torch.tensor([2, 0, 1, 2][:B])
    mu, sigma = _flow(3, c)
    g = torch.linspace(0.5, 1.5, B, dtype=torch.float64)
    got = _grads(lin, lambda a: flow_align(a, labels, mu, sigma, backend="cpu"), g)
    # The oracle: the activations written out in float64, through the reference.
    want = _grads(LinearActs(*(t.double() for t in lin)),
                  lambda a: reference.flow_align(a.dense(), labels, mu, sigma), g)
    assert got[0].dtype == dtype and got[0].shape == (B,)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * b.abs().max().item())


def test_closed_form_gradcheck():
    lin = _linear(2, 9, 3, 4, torch.float64, seed=3)
    labels = torch.tensor([1, 0])
    mu, sigma = _flow(2, 4)
    inputs = tuple(t.clone().requires_grad_(True) for t in lin)
    assert torch.autograd.gradcheck(lambda x, w, s: flow_align(LinearActs(x, w, s), labels, mu, sigma), inputs)


def test_constant_channel_and_constant_input():
    """A zero weight row (a constant channel) and a sample whose points all coincide have
    variance 0: std = sqrt(STD_EPS) there, as on the written-out activations."""
    lin = _linear(2, 20, 4, 5, torch.float64, seed=4, relu=False)
    w = lin.weight.clone()
    w[1] = 0.0
    x = lin.x.clone()
    x[1] = x[1, :1]  # every point of sample 1 is its first point
    lin = LinearActs(x, w, lin.shift)
    labels = torch.tensor([0, 1])
    mu, sigma = _flow(2, 5)
    g = torch.tensor([1.0, 1.0], dtype=torch.float64)
    got = _grads(lin, lambda a: flow_align(a, labels, mu, sigma, backend="cpu"), g)
    want = _grads(lin, lambda a: flow_align(a.dense(), labels, mu, sigma, backend="cpu"), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert torch.isfinite(got[1]).all()


def test_torch_backend_writes_the_activations_out():
    lin = _linear(3, 40, 6, 8, seed=5)
    labels = torch.tensor([0, 1, 0])
    mu, sigma = _flow(2, 8)
    got = flow_align(lin, labels, mu, sigma, backend="torch")
    assert torch.equal(got, reference.flow_align(lin.dense(), labels, mu, sigma))


def test_shape_and_dense_layout():
    lin = _linear(2, 11, 3, 5)
    assert lin.shape == (2, 5, 11)
    dense = lin.dense()
    assert dense.shape == (2, 5, 11) and dense.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(dense, (lin.x @ lin.weight.t() + lin.shift).transpose(1, 2))


@pytest.mark.parametrize("bad, err, match", [
    (lambda l: LinearActs(l.x[0], l.weight, l.shift), ValueError, "LinearActs.x must have 3 dimensions"),
    (lambda l: LinearActs(l.x, l.weight[:, :2], l.shift), ValueError, "input channels"),
    (lambda l: LinearActs(l.x, l.weight, l.shift[:3]), ValueError, "output channels"),
    (lambda l: LinearActs(l.x.masked_fill(l.x > 1, float("nan")), l.weight, l.shift), ValueError, "NaN"),
    (lambda l: LinearActs(l.x.long(), l.weight, l.shift), TypeError, "floating point"),
])
def test_errors(bad, err, match):
    lin = _linear(2, 10, 4, 5)
    mu, sigma = _flow(2, 5)
    with pytest.raises(err, match=match):
        flow_align(bad(lin), torch.tensor([0, 1]), mu, sigma)
    with pytest.raises(ValueError, match="channels of acts"):
        flow_align(lin, torch.tensor([0, 1]), mu[:, :4], sigma[:, :4])


def test_pointnet_fast_path_hands_over_linear_acts_at_max_pooled_layers():
    torch.manual_seed(0)
    model = PointNet(4, width=0.25).eval()
    x = torch.randn(2, 3, 64)
    layers = list(model.flow_layers)
    _, linear = get_activations(model, x, layers, linear=True)
    _, dense = get_activations(model, x, layers)
    with plain_path(model):
        _, plain = get_activations(model, x, layers)
    pooled = {name for name, a in linear.items() if isinstance(a, LinearActs)}
    assert pooled == {"feat.stn.act3", "feat.fstn.act3", "feat.act3"} & set(layers)
    assert all(isinstance(a, torch.Tensor) for a in dense.values())
    for name in layers:
        got = linear[name].dense() if name in pooled else linear[name]
        torch.testing.assert_close(got, plain[name], rtol=1e-4, atol=1e-4)
        assert linear[name].shape == plain[name].shape


def test_a_dense_request_keeps_the_layer_written_out():
    """A recorder that wants tensors gets the dense activations at a max-pooled layer even
    while a recorder that takes LinearActs also listens there; both get the same values."""
    from flowam_fast.models import ActivationRecorder

    model = PointNet(4, width=0.25).eval()
    x = torch.randn(1, 3, 32)
    with ActivationRecorder(model, ["feat.act3"]) as dense, ActivationRecorder(model, ["feat.act3"], linear=True) as lin:
        assert model.feat.act3.wanted() == "dense"
        model(x)
    assert model.feat.act3.wanted() is None
    assert isinstance(dense.activations["feat.act3"], torch.Tensor)
    assert lin.activations["feat.act3"] is dense.activations["feat.act3"]
    _, alone = get_activations(model, x, ["feat.act3"], linear=True)
    torch.testing.assert_close(alone["feat.act3"].dense(), dense.activations["feat.act3"], rtol=1e-4, atol=1e-4)


def test_a_samples_loss_and_gradient_do_not_depend_on_its_batch():
    """Bit for bit, at the demo PointNet's pooled-layer sizes: the AM engine's promise that a
    job's trajectory does not depend on the jobs beside it rests on this."""
    lin = _linear(7, 512, 32, 256, seed=6)
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    mu, sigma = _flow(3, 256)
    g = torch.ones(7, dtype=torch.float64)
    whole = _grads(lin, lambda a: flow_align(a, labels, mu, sigma, backend="cpu"), g)
    for rows in (slice(0, 1), slice(2, 5), slice(6, 7)):
        part = LinearActs(lin.x[rows], lin.weight, lin.shift)
        got = _grads(part, lambda a: flow_align(a, labels[rows], mu, sigma, backend="cpu"), g[rows])
        assert torch.equal(got[0], whole[0][rows]) and torch.equal(got[1], whole[1][rows])
