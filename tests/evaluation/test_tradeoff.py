"""The flow weight's trade-off (`sanity.tradeoff`) on a tiny model: each point is the
randomization check at its weight, perceptibility is measured on the trained model's
explanations, randomized models' flows are computed once for all weights, and known results
are reused."""
import json

import numpy as np
import pytest
import torch

from flowam_fast.am.engine import FlowAM
from flowam_fast.am.flows import compute_flows
from flowam_fast.evaluation import metrics, sanity
from flowam_fast.evaluation.sanity import SanityCheck, tradeoff, tradeoff_markdown, worst_margin, write_tradeoff
from flowam_fast.models import build_model

from tests.helpers import TinyNet, random_data as _data

AM = dict(steps=3, num_points=48)
CLASSES, SEEDS = [0, 2], [0, 1]


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


def test_points_are_the_sanity_check_at_each_weight(setup, monkeypatch):
    model, data, flows, evaluator, refs = setup
    calls = []
    real = sanity.compute_flows
    monkeypatch.setattr(sanity, "compute_flows", lambda *a, **k: calls.append(1) or real(*a, **k))
    queued = []
    real_stages = sanity.run_stages
    monkeypatch.setattr(sanity, "run_stages", lambda checks, preps: queued.extend(c.method for c in checks)
                        or real_stages(checks, preps))
    res = _tradeoff(setup, [0, 100, 0])
    json.dumps(res)  # plain JSON
    # FlowAM at weight 0 is regularized AM under another name: one check serves both points.
    assert len(queued) == 2  # weight 100, and one check for weight 0 and regularized
    zero, (reg,) = res["points"][0], res["references"]
    assert zero["config"]["method"] == "flowam" and zero["config"]["flow_weight"] == 0.0
    assert {k: v for k, v in zero.items() if k not in ("method", "flow_weight", "config")} == \
        {k: v for k, v in reg.items() if k not in ("method", "flow_weight", "config")}
    assert [p["flow_weight"] for p in res["points"]] == [0.0, 100.0]  # a repeated weight is run once
    assert [(p["method"], p["flow_weight"]) for p in res["references"]] == [("regularized", None)]
    # The flows of the randomized models are computed once for the weights that use them: one
    # per stage below the head, plus the trained model's for the head stages.
    assert len(calls) == 3  # conv2, conv1; the trained model's for the head stage (fc)
    for p in res["points"] + res["references"]:  # weight 0 too: the sharing above is exact
        weight = {} if p["flow_weight"] is None else {"flow_weight": p["flow_weight"]}
        direct = SanityCheck(model, evaluator, flows=flows, train_set=data, method=p["method"], variants=("cascading",),
                             references=refs, quiet=True, **weight, **AM).run(CLASSES, SEEDS)
        assert p["verdict"] == direct["verdict"] and p["success"] == direct["trained"]["success"]
        assert [(s["chamfer_margin"], s["spearman_margin"], s["changed"]) for s in p["stages"]] == \
            [(s["chamfer_margin"], s["spearman_margin"], s["changed"]) for s in direct["stages"]]
        margins = [m for s in p["stages"] for m in (s["chamfer_margin"], s["spearman_margin"]) if m is not None]
        assert p["worst_margin"] == (min(margins) if margins else None)
        base = FlowAM(model, flows, method=p["method"], quiet=True, **weight, **AM).run(CLASSES, SEEDS)
        assert p["chamfer_to_class"] == pytest.approx(metrics.chamfer_to_class(base.points, base.classes, refs).mean())
    # Weight 0 has no flow term.
    assert res["points"][0]["config"]["layers"] == [] and res["points"][1]["config"]["flow_weight"] == 100.0


def test_known_results_and_explanations_are_reused(setup, monkeypatch):
    model, data, flows, evaluator, refs = setup
    trained = FlowAM(model, flows, flow_weight=10, quiet=True, **AM).run(CLASSES, SEEDS)
    done = SanityCheck(model, evaluator, flows=flows, train_set=data, flow_weight=10, variants=("cascading",),
                       references=refs, quiet=True, **AM).run(CLASSES, SEEDS)
    monkeypatch.setattr(SanityCheck, "run", lambda *a, **k: pytest.fail("ran again"))
    (p,) = _tradeoff(setup, [10], baselines=(), trained={"flowam": trained}, done=[done])["points"]
    assert p["verdict"] == done["verdict"] and [s["chamfer_margin"] for s in p["stages"]] == \
        [s["chamfer_margin"] for s in done["stages"]]
    assert p["chamfer_to_class"] == pytest.approx(metrics.chamfer_to_class(trained.points, trained.classes, refs).mean())


def test_errors(setup):
    with pytest.raises(ValueError, match="flow_weights"):
        _tradeoff(setup, [])
    with pytest.raises(ValueError, match="flow_weights"):
        _tradeoff(setup, [-1])
    with pytest.raises(ValueError, match="sets the flow weight"):
        _tradeoff(setup, [1], flow_weight=3)
    with pytest.raises(ValueError, match="unknown reference"):
        _tradeoff(setup, [1], baselines=("flowam",))


def test_worst_margin_and_outputs(tmp_path):
    stages = [{"chamfer_margin": 3.0, "spearman_margin": None}, {"chamfer_margin": 2.5, "spearman_margin": -1.0}]
    assert worst_margin(stages) == -1.0 and worst_margin([{"chamfer_margin": None, "spearman_margin": None}]) is None
    point = {"method": "flowam", "success": 1.0, "chamfer_to_class": 0.05, "stages": [], "verdict": {"passes": False}}
    res = {"classes": [0], "seeds": [0, 1], "sigmas": 2.0,
           "points": [dict(point, flow_weight=w, worst_margin=m) for w, m in ((0.0, 4.0), (100.0, 0.5), (1.0, None))],
           "references": [dict(point, method="ae-latent", flow_weight=None, worst_margin=1.0)]}
    write_tradeoff(res, tmp_path)
    assert json.loads((tmp_path / "tradeoff.json").read_text()) == res
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    md = tradeoff_markdown(res)
    assert "| flowam | 100 | 100% | 0.0500 | +0.5 | fails |" in md and "| ae-latent | n/a |" in md
    assert "| flowam | 1 | 100% | 0.0500 | n/a | fails |" in md
    assert "tradeoff.png" in (tmp_path / "tradeoff.md").read_text()
