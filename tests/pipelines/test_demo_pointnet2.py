"""The demo with PointNet++ (`flowam-fast demo --model pointnet2`, the alias of pointnet2_ssg) on
a tiny configuration: the demo recipe's sizes reach the trained model, the flows align the
model's default layers."""
import json

import pytest

from flowam_fast.am.flows import Flows
from flowam_fast.cli import main
from flowam_fast.models import PointNet2SSG, load_checkpoint
from flowam_fast.pipelines.demo import demo_model_name
from flowam_fast.training import DEMO_CONFIGS, demo_config

TINY = ["--shapes", "sphere,cube", "--epochs", "1", "--ae-epochs", "1", "--evaluator-epochs", "1", "--steps", "2",
        "--train-per-class", "3", "--test-per-class", "2", "--quiet"]


def test_pointnet2_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "pointnet2", "--out", str(out), *TINY]) == 0
    model = load_checkpoint(out / "model.pt")
    cfg = DEMO_CONFIGS["pointnet2_ssg"]
    assert isinstance(model, PointNet2SSG)
    assert {k: model.config[k] for k in ("npoints", "radii", "nsamples")} == \
        {k: cfg[k] for k in ("npoints", "radii", "nsamples")}
    assert Flows.load(out / "flows.h5").layers == list(PointNet2SSG.flow_layers)
    for name in ("flowam.h5", "vanilla.h5", "regularized.h5", "ae-latent.h5", "explanations.png", "report.md"):
        assert (out / name).exists(), name
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["model"] == "pointnet2_ssg"  # the alias is recorded as its architecture
    assert json.loads((out / "demo.json").read_text())["model"] == "pointnet2_ssg"


def test_demo_models_and_aliases():
    assert demo_config(demo_model_name("pointnet2")) is DEMO_CONFIGS["pointnet2_ssg"]
    with pytest.raises(ValueError, match=r"unknown demo model 'pointnet3'; choose one of \['pointnet', 'dgcnn', "
                                         r"'pointnet2_ssg', 'pointnet2_msg', 'pointnet2'\]"):
        demo_model_name("pointnet3")
    with pytest.raises(ValueError, match="unknown demo model 'pointnet2'"):
        demo_config("pointnet2")  # the recipes know architectures; aliases belong to the demo
