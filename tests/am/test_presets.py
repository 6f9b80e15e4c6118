"""FlowAM and its baselines are presets of the general engine (`AM` with `preset_objective`),
and give what the engine gave before it was general, bit for bit: the stores in stored/ were
written by that engine (tests/am/preset_runs.py; stored/demo: `make demo`'s model, flows and
FlowAM store) and are rerun here."""
from pathlib import Path

import numpy as np
import pytest
import torch

from flowam_fast.am.engine import AM, FlowAM, preset_objective
from flowam_fast.am.explanations import Explanations
from flowam_fast.objectives import continuity, flow, logit
from flowam_fast.ops import backend

from tests.am import preset_runs

STORED = Path(__file__).parent / "stored"
pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")


@pytest.mark.parametrize("name", sorted(preset_runs.RUNS))
def test_presets_rerun_the_stored_explanations_bit_for_bit(name):
    stored = Explanations.load(STORED / f"{name}.h5")
    now = preset_runs.run(name)
    assert now.same_run(stored) and now.config == stored.config  # the same stored form: old stores resume
    assert np.array_equal(now.classes, stored.classes) and np.array_equal(now.seeds, stored.seeds)
    if _same_kernels():
        assert np.array_equal(now.points, stored.points) and np.array_equal(now.logits, stored.logits)
    else:
        np.testing.assert_allclose(now.points, stored.points, atol=1e-4)


def _same_kernels() -> bool:
    """Bit equality is defined on the SIMD kernels that wrote the stores; elsewhere they round
    differently, and the comparison is to float tolerance."""
    return (STORED / "cpu.txt").read_text().strip() == torch.backends.cpu.get_cpu_capability()


def test_the_demo_flowam_store_reruns_bit_for_bit():
    """The demo PointNet's FlowAM explanations (12 classes x 2 seeds, 600 steps, one batch as the
    demo runs them), as `make demo` stored them before the engine was general."""
    from flowam_fast.am.flows import Flows
    from flowam_fast.models import load_checkpoint

    if not _same_kernels():
        pytest.skip("bit equality is defined on the SIMD kernels that wrote the store, not on this CPU's")
    demo = STORED / "demo"
    stored = Explanations.load(demo / "flowam.h5").sorted()
    engine = FlowAM(load_checkpoint(demo / "model.pt"), Flows.load(demo / "flows.h5"), quiet=True)
    assert engine.config.to_json() == stored.config
    now = engine.run(sorted(set(stored.classes.tolist())), sorted(set(stored.seeds.tolist()))).sorted()
    assert np.array_equal(now.points, stored.points) and np.array_equal(now.logits, stored.logits)


def _old_loss(engine, x, classes):
    """The preset objective as the engine computed it before objectives composed:
    -z_c + flow_weight * mean_l align_l + continuity_weight * cont."""
    from flowam_fast import ops
    from flowam_fast.models.activations import get_activations
    from flowam_fast.objectives import continuity_loss

    cfg, f = engine.config, engine.flows
    logits, acts = get_activations(engine.model, x.transpose(1, 2), list(cfg.layers), linear=cfg.alignment == "moments")
    align = ops.quantile_align if cfg.alignment == "quantiles" else ops.flow_align
    read = f.class_quantiles if cfg.alignment == "quantiles" else f.class_flow
    flow_term = torch.stack([align(acts[k], classes, *read(k)) for k in cfg.layers]).mean(0)
    total = -logits.gather(1, classes[:, None]).squeeze(1) + cfg.flow_weight * flow_term
    d2 = f.d2_target * f.num_points / cfg.num_points
    return total + cfg.continuity_weight * continuity_loss(x, cfg.continuity_k, d2)


@pytest.mark.parametrize("name", ["pointnet_flowam", "pointnet_quantiles", "dgcnn_flowam"])
def test_the_preset_loss_and_its_gradient_are_the_earlier_formula_bit_for_bit(name):
    arch, kw = preset_runs.RUNS[name]
    model, flows = preset_runs.model_and_flows(arch)
    engine = FlowAM(model, flows, steps=1, num_points=preset_runs.N, quiet=True, **kw)
    classes = torch.tensor([0, 1, 2, 1])
    x0 = torch.rand(4, preset_runs.N, 3, generator=torch.Generator().manual_seed(3)) - 0.5
    out = []
    for fn in (lambda x: engine.loss(x, classes)[0], lambda x: _old_loss(engine, x, classes)):
        x = x0.clone().requires_grad_(True)
        loss = fn(x)
        loss.sum().backward()
        out.append((loss.detach(), x.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_a_preset_is_the_general_engine_with_its_objective():
    """AM with FlowAM's objective written by hand makes FlowAM's explanations, bit for bit; only
    the config's method and objective text differ."""
    model, flows = preset_runs.model_and_flows("pointnet")
    preset = FlowAM(model, flows, steps=5, num_points=preset_runs.N, quiet=True)
    assert str(preset.objective) == str(preset_objective(preset.config, flows).bind(
        _run(model, flows))) == f"logit() + 100 * flow(alignment='moments', layers={tuple(flows.layers)!r}) + continuity(k=3)"
    general = AM(model, logit() + 100 * flow(flows) + continuity(), flows=flows, steps=5, num_points=preset_runs.N,
                 quiet=True)
    a, b = preset.run([0, 2], [0, 1]), general.run([0, 2], [0, 1])
    assert np.array_equal(a.points, b.points) and np.array_equal(a.logits, b.logits)
    assert general.config.method == "am" and general.config.objective == str(preset.objective)


def _run(model, flows):
    from flowam_fast.objectives import Run

    return Run(model, flows, preset_runs.N, "class")
