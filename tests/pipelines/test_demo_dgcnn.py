"""The demo with the DGCNN (`flowam-fast demo --model dgcnn`), stage by stage on a tiny
configuration; switching a directory between demo models."""
import json

import pytest

from flowam_fast.cli import main
from flowam_fast.am.flows import Flows
from flowam_fast.models import DGCNN, checkpoint_meta, load_checkpoint
from flowam_fast.am.explanations import Explanations
from flowam_fast.pipelines.demo import CLASSIFIER_CACHED, DEMO_FLOWAM, DEMO_RECIPE, DEMO_STEPS, _clear_stale_cache
from flowam_fast.training import DEMO_CONFIGS

TINY = ["--shapes", "sphere,cube", "--epochs", "1", "--ae-epochs", "1", "--evaluator-epochs", "1", "--steps", "2",
        "--train-per-class", "3", "--test-per-class", "2", "--quiet"]


def test_dgcnn_demo(tmp_path):
    """Every stage of the demo runs on the DGCNN; the demo is the main job only (no
    randomization check: `flowam-fast study` runs it on these outputs)."""
    out = tmp_path / "demo"
    assert main(["demo", "--model", "dgcnn", "--out", str(out), *TINY]) == 0
    model = load_checkpoint(out / "model.pt")
    cfg = DEMO_CONFIGS["dgcnn"]
    assert isinstance(model, DGCNN) and model.k == cfg["k"] and model.emb_dims == cfg["emb_dims"]
    flows = Flows.load(out / "flows.h5")
    assert flows.layers == list(DGCNN.flow_layers) and flows.quantiles  # the EdgeConv outputs and conv5
    flowam = json.loads(Explanations.load(out / "flowam.h5").config)
    assert (flowam["alignment"], flowam["flow_weight"]) == DEMO_FLOWAM["dgcnn"] == ("quantiles", 300.0)
    assert json.loads(Explanations.load(out / "regularized.h5").config)["flow_weight"] == 0.0
    for name in ("flowam.h5", "vanilla.h5", "regularized.h5", "ae-latent.h5", "explanations.png", "baselines.png",
                 "metrics.json", "report.md"):
        assert (out / name).exists(), name
    assert not (out / "sanity.json").exists() and not (out / "tradeoff.json").exists()
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["model"] == "dgcnn" and "sanity" not in summary and "tradeoff" not in summary
    assert summary["flowam"] == {"alignment": "quantiles", "flow_weight": 300.0}
    assert [m["method"] for m in summary["methods"]] == ["flowam", "vanilla", "regularized", "ae-latent"]
    md = (out / "report.md").read_text()
    assert "Demo dgcnn" in md and "sanity" not in md.lower()
    # The classifier's accuracy and the real-vs-real floor beside the methods; local explanations.
    assert f"Classifier test accuracy: {checkpoint_meta(out / 'model.pt')['test_accuracy']:.1%}." in md
    assert summary["real_chamfer"] > 0 and f"{summary['real_chamfer']:.4f}" in md
    assert "## Local explanations" in md and (out / "attribution" / "attribution.json").exists()
    # The channel sheet: the last flow layer's channels, with the flows as prior.
    units = Explanations.load(out / "channels.h5")
    assert units.target_layer == DGCNN.flow_layers[-1] and "## Channels" in md and (out / "channels.png").exists()
    assert json.loads((out / "demo.json").read_text()) == {"recipe": DEMO_RECIPE, "model": "dgcnn"}


def test_switching_the_demo_model_redoes_the_classifiers_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    for name in ("model.pt", "flows.h5", "flowam.h5", "evaluator.pt", "autoencoder.pt"):
        (out / name).write_text("x")
    (out / "demo.json").write_text(json.dumps({"version": DEMO_RECIPE}))  # the PointNet demo's stamp, stored form 2
    _clear_stale_cache(out, "dgcnn")
    assert "pointnet demo" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["data", "demo.json", "evaluator.pt"]
    assert "model.pt" in CLASSIFIER_CACHED and "data" not in CLASSIFIER_CACHED
    (out / "model.pt").write_text("x")
    _clear_stale_cache(out, "dgcnn")  # the same model: kept
    assert (out / "model.pt").exists() and capsys.readouterr().out == ""
    _clear_stale_cache(out, "pointnet")
    assert not (out / "model.pt").exists()
    assert json.loads((out / "demo.json").read_text()) == {"recipe": DEMO_RECIPE}


def test_demo_model_errors(tmp_path, capsys):
    from flowam_fast.pipelines.demo import run_demo

    with pytest.raises(ValueError, match="unknown demo model"):
        run_demo(tmp_path / "x", model="resnet")
    with pytest.raises(ValueError, match="unknown alignment"):
        run_demo(tmp_path / "x", alignment="medians")
    with pytest.raises(ValueError, match="flow_weight must be > 0"):
        run_demo(tmp_path / "x", flow_weight=0)
    assert not (tmp_path / "x").exists()
    assert main(["demo", "--out", str(tmp_path / "y"), "--model", "dgcnn", "--flow-weight", "0"]) == 1
    assert "flow_weight must be > 0" in capsys.readouterr().err


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
