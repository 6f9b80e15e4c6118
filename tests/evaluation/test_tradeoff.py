"""The flow weight's trade-off (`sanity.tradeoff`) on a tiny model: each point is the
randomization check at its weight, perceptibility is measured on the trained model's
explanations, randomized models' flows are computed once for all weights, and one objective
under two names runs once."""
import json

import pytest
import torch

from flowam_fast.am.engine import FlowAM
from flowam_fast.am.flows import compute_flows
from flowam_fast.evaluation import metrics, sanity
from flowam_fast.evaluation.sanity import SanityCheck, tradeoff
from flowam_fast.evaluation.sanity_report import SanityResult, tradeoff_table
from flowam_fast.models import build_model

from tests.helpers import TinyNet, random_data as _data

AM = dict(steps=3, num_points=48, n_perm=199, n_boot=50)
# TinyNet has three stages a variant: 2 classes x 3 seeds a side reach alpha after Holm.
CLASSES, SEEDS = [0, 2], 3


def _pointnet(seed=0):
    torch.manual_seed(seed)
    return build_model("pointnet", num_classes=3, width=0.125, feature_transform=False).eval()


@pytest.fixture(scope="module")
def setup():
    # TinyNet: three randomization stages (fc, conv2, conv1), where a PointNet has seven.
    model, data = TinyNet().eval(), _data(num=24, n=64)
    flows = compute_flows(model, data, layers=["act1", "act2"], quiet=True)
    refs = metrics.references_by_class(data.points, data.labels, num_refs=2)
    return model, data, flows, _pointnet(seed=1), refs


def _tradeoff(setup, weights, **kw):
    model, data, flows, evaluator, refs = setup
    kw.setdefault("baselines", ("regularized",))
    return tradeoff(model, evaluator, flows, data, CLASSES, SEEDS, weights, refs, variants=("cascading",),
                    quiet=True, **kw, **AM)


def test_points_are_the_sanity_check_at_each_weight(setup, monkeypatch, tmp_path):
    model, data, flows, evaluator, refs = setup
    calls = []
    real = sanity.compute_flows
    monkeypatch.setattr(sanity, "compute_flows", lambda *a, **k: calls.append(1) or real(*a, **k))
    queued = []
    real_stages = sanity.run_stages
    monkeypatch.setattr(sanity, "run_stages", lambda checks, preps, quiet: queued.extend(c.method for c in checks)
                        or real_stages(checks, preps, quiet))
    res = _tradeoff(setup, [0, 100, 0], baselines=("regularized", "random"))
    assert isinstance(res, SanityResult)
    traded = res.tradeoff
    json.dumps(res.to_json())  # plain JSON
    # FlowAM at weight 0 is regularized AM under another name: one check serves both points.
    assert queued == ["flowam", "flowam", "random"]  # weights 0 and 100, then the control
    zero, (reg, rnd) = traded["points"][0], traded["references"]
    same = ("weakest_effect", "weakest_effect_ci", "stages_changed", "success", "chamfer_to_class", "passes")
    assert {k: zero[k] for k in same} == {k: reg[k] for k in same}
    assert res.method("regularized")["config"]["method"] == "regularized"
    assert [p["flow_weight"] for p in traded["points"]] == [0.0, 100.0]  # a repeated weight is run once
    assert [(p["method"], p["flow_weight"]) for p in traded["references"]] == [("regularized", None), ("random", None)]
    assert rnd["stages_changed"] == 0 and not rnd["passes"]
    # The flows of the randomized models are computed once for the weights that use them: one
    # per stage below the head, plus the trained model's for the head stages.
    assert len(calls) == 3  # conv2, conv1; the trained model's for the head stage (fc)
    for r, p in zip(res.methods, traded["points"] + traded["references"]):
        weight = {} if p["flow_weight"] is None else {"flow_weight": p["flow_weight"]}
        direct = SanityCheck(model, evaluator, flows=flows, train_set=data, method=p["method"], variants=("cascading",),
                             references=refs, quiet=True, **weight, **AM).run(CLASSES, SEEDS).methods[0]
        assert r["stages"] == direct["stages"] and r["null"] == direct["null"]
        weakest = min(direct["stages"], key=lambda s: s["effect"])
        assert (p["weakest_effect"], p["weakest_stage"]) == (weakest["effect"], weakest["stage"])
        base = FlowAM(model, flows, method=p["method"], quiet=True, **weight, steps=3, num_points=48).run(CLASSES,
                                                                                                         [0, 1, 2])
        assert p["chamfer_to_class"] == pytest.approx(metrics.chamfer_to_class(base.points, base.classes, refs).mean())
    # Weight 0 has no flow term.
    assert res.methods[0]["config"]["layers"] == [] and res.methods[1]["config"]["flow_weight"] == 100.0
    res.write_report(tmp_path)
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "sanity.md").read_text()
    assert "## Flow weight trade-off" in md and tradeoff_table(traded) in md
    assert json.loads((tmp_path / "sanity.json").read_text())["tradeoff"] == traded


def test_known_explanations_are_reused(setup, monkeypatch):
    model, data, flows, evaluator, refs = setup
    trained = FlowAM(model, flows, flow_weight=10, quiet=True, steps=3, num_points=48).run(CLASSES, range(6))
    engine_runs = []
    real = FlowAM.run_jobs
    monkeypatch.setattr(FlowAM, "run_jobs", lambda self, jobs, **k: engine_runs.append(len(jobs)) or real(self, jobs, **k))
    _tradeoff(setup, [10], baselines=(), trained={"flowam": trained})
    assert 12 not in engine_runs  # the trained model's 2 x 6 jobs came from the store


def test_errors(setup):
    with pytest.raises(ValueError, match="flow_weights"):
        _tradeoff(setup, [])
    with pytest.raises(ValueError, match="flow_weights"):
        _tradeoff(setup, [-1])
    with pytest.raises(ValueError, match="sets the flow weight"):
        _tradeoff(setup, [1], flow_weight=3)
    with pytest.raises(ValueError, match="unknown reference"):
        _tradeoff(setup, [1], baselines=("flowam",))
