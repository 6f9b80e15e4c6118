"""The kernels as PyTorch operators: every op of csrc/op_list.h is registered, with a fake
kernel and (where differentiable) autograd that `torch.library.opcheck` accepts, on every
kernel backend here: the C++ kernels and their Triton twins."""
import pytest
import torch

from flowam_fast.ops import backend, library

from tests.ops.backends import KERNEL_BACKENDS, case_id

pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")


def _cloud(*shape, dtype, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)


def _index(upper, *shape, seed=1):
    return torch.randint(0, upper, shape, generator=torch.Generator().manual_seed(seed))


def _flows(K, C, dtype=torch.float64):
    return _cloud(K, C, dtype=dtype, seed=3), _cloud(K, C, dtype=dtype, seed=4).abs() + 0.1


def _samples(dtype):
    """Small valid arguments of every op, by name; the forward ops' float inputs require grad,
    so opcheck also checks their autograd."""
    B, N, M, C, K = 2, 9, 5, 4, 3
    x, ref = _cloud(B, M, 3, dtype=dtype, grad=True), _cloud(B, N, 3, dtype=dtype, grad=True, seed=2)
    feat, nbr = _cloud(B, N, C, dtype=dtype, grad=True), _index(N, B, M, K)
    w, scale, shift = _cloud(6, C, dtype=dtype, grad=True), _cloud(6, dtype=dtype, seed=5), _cloud(6, dtype=dtype)
    acts, labels = _cloud(B, C, N, dtype=dtype, grad=True), torch.tensor([0, 2])
    mu, sigma = _flows(3, C)
    loss, mean, std = torch.ops.flowam_fast.flow_align_forward(acts.detach(), labels, mu, sigma, False)
    _, arg = torch.ops.flowam_fast.linear_max_forward(feat.detach(), w.detach(), scale, shift, 0.2)
    out = torch.ops.flowam_fast.group_gather_forward(feat.detach(), x.detach()[..., :1].expand(B, M, C).contiguous(),
                                                     nbr, scale[:C], shift[:C])
    quantiles = torch.sort(_cloud(3, C, 7, dtype=dtype, seed=6), dim=-1).values
    return {
        "knn_forward": (x, ref, K),
        "knn_backward": (_cloud(B, M, K, dtype=dtype), x.detach(), ref.detach(), _index(N, B, M, K)),
        "edge_max_forward": (feat, nbr),
        "edge_max_backward": (_cloud(B, M, C, dtype=dtype), _index(N, B, M, C), N),
        "linear_max_forward": (feat, w, scale.requires_grad_(), shift.requires_grad_(), 0.2),
        "linear_max_backward": (_cloud(B, 6, dtype=dtype), feat.detach(), w.detach(), scale.detach(), shift.detach(),
                                arg, 0.2),
        "group_gather_forward": (feat, _cloud(B, M, C, dtype=dtype, grad=True), nbr, scale[:C].detach(),
                                 shift[:C].detach()),
        "group_gather_backward": (torch.ones_like(out), out, nbr, scale[:C].detach(), N),
        "flow_stats": (acts.detach(), labels, 3, False),
        "flow_align_forward": (acts, labels, mu, sigma, False),
        "flow_align_backward": (torch.ones_like(loss), acts.detach(), labels, mu, sigma, mean, std, False),
        "farthest_point_sample": (ref.detach(), 4),
        "ball_query": (ref.detach(), x.detach(), 0.8, 4),
        "quantile_align_forward": (acts, labels, quantiles, 1.0 / (sigma.to(dtype) + 1e-3), False),
        "quantile_sort": (acts.detach(), False),
    }


def test_every_op_has_a_sample():
    assert sorted(_samples(torch.float32)) == sorted(backend.KERNELS)


def _op_cases():
    return [pytest.param(on, name, id=f"{case_id(on)}-{name}") for on in KERNEL_BACKENDS for name in backend.KERNELS
            if on.backend == "cpu" or name not in backend.CPU_ONLY_KERNELS]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("on, name", _op_cases())
def test_opcheck(on, name, dtype):
    """Schema, fake kernel against the real one, autograd registration and AOT dispatch."""
    args = tuple(t.to(on.device).requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
                 for t in _samples(dtype)[name])
    torch.library.opcheck(library.kernel(on.backend, name), args)
