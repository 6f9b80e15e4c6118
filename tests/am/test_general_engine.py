"""`AM`, the engine of any objective: channel and neuron targets, coupled jobs, stores, and
the errors a user meets."""
import numpy as np
import pytest
import torch

from flowam_fast.am.engine import AM
from flowam_fast.am.explanations import Explanations
from flowam_fast.am.flows import compute_flows
from flowam_fast.am.spaces import initial_points
from flowam_fast.models.activations import get_activations
from flowam_fast.objectives import channel, channel_prior, diversity, flow, logit, neuron

from tests.helpers import random_data


@pytest.fixture
def flows(tiny_net):
    return compute_flows(tiny_net, random_data(num=24, n=64), layers=["act1", "act2"], quiet=True)


def _mean_act(model, points, layer="act2"):
    with torch.no_grad():
        return get_activations(model, torch.as_tensor(points).transpose(1, 2), [layer])[1][layer].mean(2)


def test_a_channel_objective_raises_its_channel(tiny_net, flows):
    """Each job's target channel of act2 ends above where its initial cloud had it, and above
    where the jobs of the other target leave it, while the prior keeps the cloud in the data
    bounds."""
    am = AM(tiny_net, channel_prior("act2", flow_weight=1.0), flows=flows, steps=40, num_points=48, quiet=True)
    assert am.target_kind == "channel" and am.num_targets == 32
    res = am.run([3, 17], [0, 1])
    assert res.target_layer == "act2" and res.class_name(17) == "channel 17"
    after = _mean_act(tiny_net, res.points)
    before = _mean_act(tiny_net, torch.stack([initial_points(int(t), int(s), 48) for t, s in zip(res.classes, res.seeds)]))
    rows = np.arange(len(res))
    assert ((after - before)[rows, res.classes] > 0).all()
    for t, other in ((3, 17), (17, 3)):
        mine, theirs = res.classes == t, res.classes == other
        assert (after[mine, t] > after[theirs, t]).all()
    lo, hi = flows.lo.numpy(), flows.hi.numpy()
    assert (res.points >= lo - 1e-6).all() and (res.points <= hi + 1e-6).all()
    with pytest.raises(ValueError, match="targets are channels"):
        res.success
    assert "channels of act2" in repr(res)


def test_a_neuron_objective_raises_one_point(tiny_net):
    def act2(points):
        with torch.no_grad():
            return get_activations(tiny_net, torch.as_tensor(points).transpose(1, 2), ["act2"])[1]["act2"]

    # A ReLU channel that is off at the point gives no gradient there: take one that is on.
    t = next(t for t in range(32) if act2(initial_points(t, 0, 48)[None])[0, t, 5] > 0)
    init = act2(initial_points(t, 0, 48)[None])
    am = AM(tiny_net, neuron("act2", 5), steps=30, num_points=48, quiet=True)
    acts = act2(am.run([t], [0]).points)
    assert acts[0, t, 5] > 2 * init[0, t, 5]
    # The other points are not the objective: the neuron's point rises above their mean.
    assert acts[0, t, 5] - init[0, t, 5] > (acts[0, t] - init[0, t]).mean()
    assert am.config.clamp is False  # no flows, no bounds


def test_jobs_do_not_depend_on_their_batch_unless_the_objective_couples_them(tiny_net, flows):
    am = AM(tiny_net, channel("act2") + flow(), flows=flows, steps=8, num_points=48, quiet=True)
    together = am.run([1, 2], [0, 1]).sorted()
    alone = Explanations.concat([am.run([t], [s]) for t in (1, 2) for s in (0, 1)]).sorted()
    # Equal up to the GEMMs' rounding, which depends on the batch's size.
    np.testing.assert_allclose(together.points, alone.points, rtol=0, atol=1e-5)
    coupled = AM(tiny_net, channel("act2") + 0.5 * diversity("act2"), steps=8, num_points=48, quiet=True)
    assert coupled.objective.couples_jobs()
    # batch_size 1 still optimizes a target's seeds together, so the result equals one batch.
    one = coupled.run([1, 2], [0, 1, 2]).sorted()
    np.testing.assert_allclose(coupled.run([1, 2], [0, 1, 2], batch_size=1).sorted().points, one.points, rtol=0,
                               atol=1e-5)
    # ... and diversity changes them: the seeds of a target push apart.
    plain = AM(tiny_net, channel("act2"), steps=8, num_points=48, quiet=True).run([1, 2], [0, 1, 2]).sorted()
    assert np.abs(one.points - plain.points).max() > 1e-3


def test_stores_resume_the_same_objective_and_refuse_another(tiny_net, flows, tmp_path):
    store = tmp_path / "units.h5"
    am = AM(tiny_net, channel("act2") + 2 * flow(), flows=flows, steps=4, num_points=48, quiet=True)
    first = am.run([0, 1], [0], store=store)
    again = AM(tiny_net, "channel('act2') + 2 * flow()", flows=flows, steps=4, num_points=48, quiet=True)
    assert again.config.matches(first.config) and again.config.objective == str(am.objective)
    both = again.run([0, 1, 2], [0], store=store)
    assert len(both) == 3 and np.array_equal(both.select(classes=[0, 1]).points, first.points)
    other = AM(tiny_net, channel("act2") + 3 * flow(), flows=flows, steps=4, num_points=48, quiet=True)
    with pytest.raises(ValueError, match="another config.*objective"):
        other.run([0], [0], store=store)
    assert Explanations.load(store).target_layer == "act2"


def test_objectives_that_do_not_fit_the_model_are_refused_before_any_step(tiny_net, flows):
    with pytest.raises(ValueError, match="unknown layer names"):
        AM(tiny_net, channel("conv9"), num_points=48, quiet=True)
    with pytest.raises(ValueError, match="has 48 points per cloud"):
        AM(tiny_net, neuron("act2", 48), num_points=48, quiet=True)
    with pytest.raises(ValueError, match="mixes class targets"):
        AM(tiny_net, logit() + channel("act2"), num_points=48, quiet=True)
    with pytest.raises(ValueError, match="clamps to the data bounds"):
        AM(tiny_net, logit(), clamp=True, num_points=48, quiet=True)
    with pytest.raises(TypeError, match="Objective"):
        AM(tiny_net, 3, num_points=48, quiet=True)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        AM(tiny_net, logit(), steps=0, num_points=48, quiet=True)
    am = AM(tiny_net, channel("act2"), num_points=48, quiet=True, steps=1)
    with pytest.raises(ValueError, match="it has 32 channels"):
        am.run([32], [0])
    with pytest.raises(TypeError, match="channels of 'act2'"):
        am.run(["c1"], [0])
    classes = AM(tiny_net, logit() + flow(), flows=flows, num_points=48, quiet=True, steps=1)
    with pytest.raises(ValueError, match="unknown class 'chair'"):
        classes.run(["chair"], [0])
    assert classes.run(["c2"], [0]).classes.tolist() == [2]  # class names, as FlowAM takes them
