"""Objectives as values: algebra, their text (a run's identity), binding to a run, and each
term's value against its definition."""
import pytest
import torch

from flowam_fast.am.flows import compute_flows
from flowam_fast.models.activations import get_activations
from flowam_fast.objectives import (Run, Step, channel, channel_prior, continuity, continuity_loss, diversity, flow,
                                    logit, neuron, parse_objective)

from tests.helpers import random_data


@pytest.fixture
def flows(tiny_net):
    return compute_flows(tiny_net, random_data(num=24, n=64), layers=["act1", "act2"], quiet=True)


def test_terms_add_scale_and_print_as_they_were_written():
    assert str(logit() + 100 * flow() + continuity()) == "logit() + 100 * flow(alignment='moments') + continuity()"
    assert str(-channel("a") / 2 - 0.5 * diversity()) == "-0.5 * channel('a') - 0.5 * diversity()"
    assert str(sum([logit(), 2 * logit()])) == "logit() + 2 * logit()"
    assert str(0 * flow() + logit()) == "logit()"  # zero weights drop out
    assert logit() + 3 * neuron("a", 4) == parse_objective("logit() + 3*neuron('a', 4)")
    with pytest.raises(TypeError, match="objectives add to objectives"):
        logit() + "flow"
    with pytest.raises(TypeError, match="scales by a number"):
        logit() * logit()
    with pytest.raises(ValueError, match="finite"):
        logit() * float("nan")
    with pytest.raises(ValueError, match="point index"):
        neuron("a", -1)
    with pytest.raises(ValueError, match="unknown alignment"):
        flow(alignment="medians")
    with pytest.raises(TypeError, match="module name"):
        channel(3)


def test_the_target_kind_is_one_and_refused_when_mixed():
    assert (logit() + flow()).target_kind() == "class"
    assert (channel("a") + 2 * neuron("a", 1) + flow()).target_kind() == "channel"
    assert (channel("a") + flow()).target_layer() == "a"
    assert continuity().target_kind() == "class"
    with pytest.raises(ValueError, match="mixes class targets"):
        (logit() + channel("a")).target_kind()
    with pytest.raises(ValueError, match="several layers"):
        (channel("a") + channel("b")).target_kind()


def test_expressions_allow_terms_and_numbers_only():
    assert str(parse_objective("channel('act2') + 10 * flow(layers=['act1']) - continuity(k=3) / 2")) == \
        "channel('act2') + 10 * flow(alignment='moments', layers=('act1',)) - 0.5 * continuity(k=3)"
    for text, message in [("__import__('os').system('true')", "not allowed"), ("logit() +", "not an expression"),
                          ("3 * 4", "is a number"), ("channel(name)", "not a literal"), ("logit(1)", "logit()"),
                          ("logit() ** 2", "not allowed"), ("flow(**{'a': 1})", "not allowed")]:
        with pytest.raises(ValueError, match=message):
            parse_objective(text)


def test_binding_resolves_defaults_and_refuses_what_cannot_run(tiny_net, flows):
    run = Run(tiny_net, flows, 48, "class")
    bound = (logit() + flow() + continuity()).bind(run)
    assert str(bound) == "logit() + flow(alignment='moments', layers=('act1', 'act2')) + continuity(k=3)"
    bound_c = continuity().bind(run).terms[0]
    assert bound_c.target == pytest.approx(flows.d2_target * flows.num_points / 48)  # scaled to the cloud size
    assert continuity(k=2, d2=0.5).bind(Run(tiny_net, None, 48, "class")).terms[0].target == 0.5
    with pytest.raises(ValueError, match="needs the model's flows"):
        flow().bind(Run(tiny_net, None, 48, "class"))
    with pytest.raises(ValueError, match="continuity target was measured with k=3"):
        continuity(k=5).bind(run)
    with pytest.raises(ValueError, match="needs the data's neighbour distance"):
        continuity().bind(Run(tiny_net, None, 48, "class"))
    with pytest.raises(ValueError, match="fixes the class of a channel objective"):
        flow(cls=1).bind(run)
    channel_run = Run(tiny_net, flows, 48, "channel")
    with pytest.raises(ValueError, match="quantile alignment compares with one class"):
        flow(alignment="quantiles").bind(channel_run)
    with pytest.raises(ValueError, match="unknown class"):
        flow(cls="c9").bind(channel_run)
    assert flow(cls="c2").bind(channel_run).terms[0].cls == 2
    assert str(channel_prior("act2")) == "channel('act2') + 3 * flow(alignment='moments') + continuity()"


def _step(model, x, targets, layers, linear=()):
    logits, acts = get_activations(model, x.transpose(1, 2), layers, linear=list(linear))
    return Step(x, targets, logits, acts)


def test_each_term_is_its_definition(tiny_net, flows):
    from flowam_fast import ops

    x = torch.rand(4, 48, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    t = torch.tensor([0, 5, 5, 31])
    step = _step(tiny_net, x, t, ["act1", "act2"])
    a2 = step.acts["act2"]
    rows = torch.arange(4)
    torch.testing.assert_close(channel("act2").terms[0].value(step), a2[rows, t].mean(1))
    torch.testing.assert_close(neuron("act2", 7).terms[0].value(step), a2[rows, t, 7])
    run = Run(tiny_net, flows, 48, "class")
    cls = torch.tensor([0, 1, 2, 1])
    step_c = _step(tiny_net, x, cls, ["act1", "act2"])
    torch.testing.assert_close(logit().terms[0].value(step_c), step_c.logits[rows, cls])
    want = torch.stack([ops.flow_align(step_c.acts[k], cls, *flows.class_flow(k)) for k in ("act1", "act2")]).mean(0)
    torch.testing.assert_close(flow().bind(run).terms[0].value(step_c), -want)
    d2 = flows.d2_target * flows.num_points / 48
    torch.testing.assert_close(continuity().bind(run).terms[0].value(step_c), -continuity_loss(x, 3, d2))


def test_the_all_class_flow_is_the_mixture_of_the_class_moments(tiny_net):
    """For channel targets the flow term compares with all classes' activations together: its
    moments are those of the pooled training activations (here recomputed from the data)."""
    data = random_data(num=24, n=64)
    flows = compute_flows(tiny_net, data, layers=["act2"], quiet=True)
    term = flow().bind(Run(tiny_net, flows, 48, "channel")).terms[0]
    mu, sd = term._mixture("act2", torch.device("cpu"))
    _, acts = get_activations(tiny_net, torch.from_numpy(data.points).transpose(1, 2), ["act2"])
    pooled = acts["act2"].double().transpose(0, 1).reshape(acts["act2"].shape[1], -1)
    torch.testing.assert_close(mu[0].double(), pooled.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sd[0].double(), pooled.std(1, unbiased=False), rtol=1e-4, atol=1e-5)


def test_diversity_is_minus_the_similarity_to_the_other_jobs_of_the_target(tiny_net):
    x = torch.rand(5, 48, 3, generator=torch.Generator().manual_seed(2)) - 0.5
    t = torch.tensor([1, 1, 1, 2, 0])
    step = _step(tiny_net, x, t, ["act2"])
    got = diversity("act2").terms[0].value(step)
    f = torch.nn.functional.normalize(step.acts["act2"].mean(2), dim=1)
    for j in range(5):
        others = [i for i in range(5) if i != j and t[i] == t[j]]
        want = -sum(float(f[j].detach() @ f[i].detach()) for i in others) / len(others) if others else 0.0
        assert float(got[j].detach()) == pytest.approx(want, abs=1e-6)
    # Identical clouds are as similar as can be: diversity -1; it rises as they differ.
    same = _step(tiny_net, x[:1].expand(3, -1, -1), torch.tensor([0, 0, 0]), ["act2"])
    torch.testing.assert_close(diversity("act2").terms[0].value(same), -torch.ones(3))
