"""An AM step of the built-in models under `torch.compile(fullgraph=True)`: the fused ops are
PyTorch operators with fake kernels and registered autograd, so the whole step (the fast path's
forward, the objective and its backward to the points) is one graph, and it computes what the
eager step computes, for the paper's objective and for a composed one (a channel with the flows
as prior). With flows, the objective's flow term reads the taps inside the step
(requests on `Tap`s, which the fused layers consult as plain attributes: no hooks)."""
import pytest
import torch

from flowam_fast.am.engine import AM, FlowAM
from flowam_fast.am.flows import compute_flows
from flowam_fast.models import DGCNN, PointNet
from flowam_fast.objectives import channel_prior
from flowam_fast.ops import backend

from tests.helpers import random_data, randomize

pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")

MODELS = {
    "pointnet": lambda: PointNet(num_classes=3, width=0.125),
    "dgcnn": lambda: DGCNN(num_classes=3, k=4, emb_dims=32, width=0.125),
}


@pytest.mark.parametrize("objective", ["logit", "flowam", "channel"])
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_compiled_am_step_has_no_graph_break_and_matches_eager(arch, objective):
    model = randomize(MODELS[arch]())
    if objective == "flowam":  # FlowAM's objective: the logit, the flow term on the model's flow layers, continuity
        engine = FlowAM(model, compute_flows(model, random_data(num=24, n=48), quiet=True), num_points=48, quiet=True)
        assert engine.config.flow_weight > 0 and engine.config.alignment == "moments"
    elif objective == "channel":  # a composed objective: a channel of the last flow layer, the all-class flow prior
        flows = compute_flows(model, random_data(num=24, n=48), quiet=True)
        engine = AM(model, channel_prior(model.flow_layers[-1], flows), flows=flows, num_points=48, quiet=True)
    else:
        engine = FlowAM(model, method="vanilla", num_points=48, quiet=True)
    classes = torch.tensor([0, 2])

    def step(x):
        total, logits, _ = engine.loss(x, classes)
        return total.sum(), logits

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)  # fullgraph: a graph break is an error
    x0 = torch.rand(2, 48, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    results = []
    for fn in (compiled, step):
        x = x0.clone().requires_grad_(True)
        loss, logits = fn(x)
        loss.backward()
        results.append((loss.detach(), logits.detach(), x.grad))
    (loss_c, logits_c, grad_c), (loss_e, logits_e, grad_e) = results
    torch.testing.assert_close(logits_c, logits_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_c, grad_e, rtol=1e-4, atol=1e-6)
    assert grad_e.abs().max() > 0  # the objective reaches the points
