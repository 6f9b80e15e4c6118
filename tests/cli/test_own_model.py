"""The command line with your own model: --factory (an importable builder) with --logits and
--layers, --trusted for a pickled whole module, and errors worded as options, not arguments."""
import json

import pytest
import torch

from flowam_fast.am.explanations import Explanations
from flowam_fast.am.flows import Flows
from flowam_fast.cli import main
from flowam_fast.data import generate_shapes
from flowam_fast.data.shapes import CLASSES
from flowam_fast.models import as_classifier

from tests.helpers import TinyNet
from tests.models.test_adapter import build

FACTORY = "tests.models.test_adapter:build"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    data = generate_shapes(tmp / "data", train_per_class=3, test_per_class=1, num_points=64, classes=CLASSES[:4])
    torch.save({"model_state_dict": build(k=4).state_dict(), "epoch": 3}, tmp / "tiny.pt")
    torch.save(build(k=4), tmp / "whole.pt")
    torch.save(TinyNet(num_classes=4).state_dict(), tmp / "other.pt")
    return tmp, str(data)


def _run(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_flows_and_explain_with_a_factory_end_to_end(files, capsys):
    tmp, data = files
    own = ["--model", tmp / "tiny.pt", "--factory", FACTORY, "--logits", "fc3"]
    code, err = _run(capsys, "flows", *own, "--layers", "feat.bn1, feat.bn2", "--data", data, "--num-points", 48,
                     "--out", tmp / "f.h5", "--quiet")
    assert code == 0, err
    flows = Flows.load(tmp / "f.h5")
    assert flows.layers == ["feat.bn1", "feat.bn2"] and flows.num_classes == 4 and flows.num_points == 48
    desc = json.loads(flows.model)
    assert desc["class"] == "TinyPointNetCls" and desc["logits"] == "fc3"
    code, err = _run(capsys, "explain", *own, "--flows", tmp / "f.h5", "--classes", "0,1", "--seeds", "0-1",
                     "--steps", 2, "--out", tmp / "e.h5", "--quiet")
    assert code == 0, err
    result = Explanations.load(tmp / "e.h5")
    assert len(result) == 4 and result.points.shape[1:] == (48, 3)
    # The checkpoint's weights were loaded into the factory's module: its logits are stored.
    with torch.no_grad():
        logits = as_classifier(build(k=4), "fc3")(torch.from_numpy(result.points).transpose(1, 2))
    torch.testing.assert_close(torch.from_numpy(result.logits), logits, rtol=1e-4, atol=1e-4)


def test_a_pickled_whole_module_loads_with_trusted(files, capsys):
    tmp, data = files
    args = ["flows", "--model", tmp / "whole.pt", "--logits", "0", "--layers", "feat.bn3", "--data", data,
            "--num-points", 48, "--out", tmp / "w.h5", "--quiet"]
    code, err = _run(capsys, *args)
    assert code == 1 and "pickles objects other than tensors" in err
    assert "pass --trusted if you trust the file" in err and "trusted=True" not in err
    code, err = _run(capsys, *args, "--trusted")
    assert code == 0, err
    assert Flows.load(tmp / "w.h5").layers == ["feat.bn3"]


def test_errors_name_the_options_to_pass(files, capsys):
    tmp, data = files
    common = ["--data", data, "--num-points", 48, "--out", tmp / "x.h5", "--quiet"]
    code, err = _run(capsys, "flows", "--model", tmp / "other.pt", "--layers", "act1", *common)
    assert code == 1 and "cannot tell the architecture from the checkpoint's keys (conv1.weight, " in err
    assert "pass --arch pointnet|dgcnn" in err and "or --factory pkg.module:build" in err and "arch=" not in err
    # Keys like the reference PointNet's: read as one, and the mismatch says what else to pass.
    code, err = _run(capsys, "flows", "--model", tmp / "tiny.pt", "--layers", "feat.bn1", *common)
    assert code == 1 and "does not match PointNet" in err and "or --factory pkg.module:build" in err
    code, err = _run(capsys, "flows", "--model", tmp / "tiny.pt", "--factory", FACTORY, "--layers", "feat.bn1", *common)
    assert code == 1, err
    assert "returned a tuple of 3" in err and "pass --logits 0" in err and "as_classifier" not in err
    code, err = _run(capsys, "flows", "--model", tmp / "tiny.pt", "--factory", FACTORY, "--arch", "pointnet", *common)
    assert code == 1 and "pass --arch (a built-in architecture) or --factory (your own module), not both" in err
    code, err = _run(capsys, "flows", "--model", tmp / "tiny.pt", "--factory", "tests.nowhere:build", *common)
    assert code == 1 and "cannot import module 'tests.nowhere' of factory 'tests.nowhere:build'" in err
    code, err = _run(capsys, "flows", "--model", tmp / "tiny.pt", "--factory", "tests.models.test_adapter", *common)
    assert code == 1 and "must name a callable as 'package.module:name'" in err


def test_every_command_that_takes_a_model_takes_an_own_model(capsys):
    for command in ("flows", "explain", "sanity"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        for option in ("--factory", "--logits", "--trusted", "--arch"):
            assert option in out, (command, option)
