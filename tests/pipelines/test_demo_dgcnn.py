"""The demo with the DGCNN (`flowam-fast demo --model dgcnn`) and with the flow weight's
trade-off, stage by stage on a tiny configuration; switching a directory between demo models."""
import json

import pytest

from flowam_fast.cli import main
from flowam_fast.am.flows import Flows
from flowam_fast.models import DGCNN, load_checkpoint
from flowam_fast.am.explanations import Explanations
from flowam_fast.pipelines.demo import CLASSIFIER_CACHED, DEMO_FLOWAM, DEMO_STEPS, DEMO_VERSION, _clear_stale_cache
from flowam_fast.training import DEMO_CONFIGS

TINY = ["--shapes", "sphere,cube", "--epochs", "1", "--ae-epochs", "1", "--evaluator-epochs", "1", "--steps", "2",
        "--train-per-class", "3", "--test-per-class", "2", "--sanity-classes", "sphere,cube", "--sanity-seeds", "2",
        "--quiet"]


def test_dgcnn_demo_with_tradeoff(tmp_path, monkeypatch):
    """Every stage runs for real on the DGCNN except the randomization checks (16 stages each on
    a DGCNN; tests/evaluation covers them), which are replaced by stand-ins that record what the
    demo hands them."""
    from flowam_fast.pipelines import demo

    seen = {}
    point = {"method": "flowam", "success": 1.0, "chamfer_to_class": 0.05, "stages": [], "verdict": {"passes": False}}
    canned = {"classes": [0, 1], "seeds": [0, 1], "sigmas": 2.0,
              "points": [dict(point, flow_weight=w, worst_margin=1.0) for w in (0.0, 300.0)],
              "references": [dict(point, method=m, flow_weight=None, worst_margin=3.0)
                             for m in ("regularized", "ae-latent")]}

    def fake_tradeoff(model, evaluator, flows, train_set, classes, seeds, weights, refs, **kw):
        seen.update(model=model, classes=classes, seeds=seeds, weights=weights, **kw)
        keep = [p for p in canned["points"] if p["flow_weight"] in weights]
        return dict(canned, points=keep, references=[r for r in canned["references"] if r["method"] in kw["baselines"]])

    monkeypatch.setattr(demo, "write_outputs", lambda results, out: seen.setdefault("sanity", results))
    monkeypatch.setattr(demo, "sanity_markdown", lambda results: "sanity table")
    monkeypatch.setattr(demo, "tradeoff", fake_tradeoff)
    out = tmp_path / "demo"
    # FlowAM's own weight (the DGCNN demo's 300, DEMO_FLOWAM) joins the weights asked for.
    assert main(["demo", "--model", "dgcnn", "--out", str(out), "--flow-weights", "0", *TINY]) == 0
    model = load_checkpoint(out / "model.pt")
    cfg = DEMO_CONFIGS["dgcnn"]
    assert isinstance(model, DGCNN) and model.k == cfg["k"] and model.emb_dims == cfg["emb_dims"]
    flows = Flows.load(out / "flows.h5")
    assert flows.layers == list(DGCNN.flow_layers) and flows.quantiles  # the EdgeConv outputs and conv5
    flowam = json.loads(Explanations.load(out / "flowam.h5").config)
    assert (flowam["alignment"], flowam["flow_weight"]) == DEMO_FLOWAM["dgcnn"] == ("quantiles", 300.0)
    assert json.loads(Explanations.load(out / "regularized.h5").config)["flow_weight"] == 0.0
    for name in ("flowam.h5", "vanilla.h5", "regularized.h5", "ae-latent.h5", "explanations.png", "baselines.png",
                 "tradeoff.json", "tradeoff.png", "metrics.json", "report.md"):
        assert (out / name).exists(), name
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["model"] == "dgcnn" and summary["tradeoff"] == canned
    assert summary["flowam"] == {"alignment": "quantiles", "flow_weight": 300.0}
    assert [m["method"] for m in summary["methods"]] == ["flowam", "vanilla", "regularized", "ae-latent"]
    # The trade-off runs on the sanity check's grid, reuses the demo's stores, and its points at
    # FlowAM's weight and AE-latent AM are the sanity check's results.
    assert isinstance(seen["model"], DGCNN) and seen["classes"] == [0, 1] and seen["seeds"] == [0, 1]
    assert seen["weights"] == [0.0, 300.0] and "done" not in seen and seen["alignment"] == "quantiles"
    assert seen["sanity"] == [canned["points"][1], canned["references"][1]]
    assert sorted(seen["trained"]) == ["ae-latent", "flowam", "regularized", "vanilla"]
    assert seen["num_points"] == cfg["num_points"] and seen["steps"] == 2
    md = (out / "report.md").read_text()
    assert "Demo dgcnn" in md and "Flow weight trade-off" in md and "tradeoff.png" in md
    assert json.loads((out / "demo.json").read_text()) == {"version": DEMO_VERSION, "model": "dgcnn"}
    # The DGCNN demo's default: the sanity check alone, FlowAM at its weight and AE-latent AM in
    # one queue (the stores are reused).
    seen.clear()
    assert main(["demo", "--model", "dgcnn", "--out", str(out), *TINY]) == 0
    assert seen["weights"] == [300.0] and seen["baselines"] == ("ae-latent",)
    assert seen["sanity"] == [canned["points"][1], canned["references"][1]]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["tradeoff"] is None and "Flow weight trade-off" not in (out / "report.md").read_text()


def test_switching_the_demo_model_redoes_the_classifiers_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    for name in ("model.pt", "flows.h5", "flowam.h5", "evaluator.pt", "autoencoder.pt"):
        (out / name).write_text("x")
    (out / "demo.json").write_text(json.dumps({"version": DEMO_VERSION}))  # the PointNet demo's stamp
    _clear_stale_cache(out, "dgcnn")
    assert "pointnet demo" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["data", "demo.json", "evaluator.pt"]
    assert "model.pt" in CLASSIFIER_CACHED and "data" not in CLASSIFIER_CACHED
    (out / "model.pt").write_text("x")
    _clear_stale_cache(out, "dgcnn")  # the same model: kept
    assert (out / "model.pt").exists() and capsys.readouterr().out == ""
    _clear_stale_cache(out, "pointnet")
    assert not (out / "model.pt").exists()
    assert json.loads((out / "demo.json").read_text()) == {"version": DEMO_VERSION}


def test_demo_model_and_tradeoff_errors(tmp_path, capsys):
    from flowam_fast.pipelines.demo import run_demo

    with pytest.raises(ValueError, match="unknown demo model"):
        run_demo(tmp_path / "x", model="resnet")
    with pytest.raises(ValueError, match="sanity check's classes"):
        run_demo(tmp_path / "x", sanity_classes="none", tradeoff_weights=[0, 1])
    with pytest.raises(ValueError, match="unknown alignment"):
        run_demo(tmp_path / "x", alignment="medians")
    with pytest.raises(ValueError, match="flow_weight must be > 0"):
        run_demo(tmp_path / "x", flow_weight=0)
    assert not (tmp_path / "x").exists()
    assert main(["demo", "--out", str(tmp_path / "y"), "--flow-weights", "1,-2"]) == 1
    assert "weights >= 0" in capsys.readouterr().err


def test_demo_steps_follow_the_alignment(tmp_path, monkeypatch):
    """Every method's steps default to DEMO_STEPS of FlowAM's alignment: 400 with quantiles
    (their step costs more), 600 with moments; --steps overrides them."""
    from flowam_fast.pipelines import demo

    class Stop(Exception):
        pass

    seen = []

    def engine(*args, **kw):
        seen.append(kw)
        raise Stop

    monkeypatch.setattr(demo, "FlowAM", engine)
    tiny = dict(shapes="sphere,cube", epochs=1, ae_epochs=1, train_per_class=3, test_per_class=2, quiet=True)
    for alignment, steps, want in (("quantiles", None, 400), ("moments", None, 600), ("quantiles", 7, 7)):
        with pytest.raises(Stop):
            demo.run_demo(tmp_path / "d", alignment=alignment, steps=steps, **tiny)
        assert seen[-1]["steps"] == want
    assert DEMO_STEPS == {"moments": 600, "quantiles": 400}
