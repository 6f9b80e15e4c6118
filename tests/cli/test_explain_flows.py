import json
import subprocess
import sys

import numpy as np
import pytest

from flowam_fast.cli import COMMANDS, main
from flowam_fast.data import generate_shapes
from flowam_fast.am.grid import parse_classes, parse_seeds
from flowam_fast.am.explanations import Explanations


def test_help_of_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0, name
        assert "usage: flowam-fast " + name in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "flowam_fast.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "explain" in out.stdout


def test_parsers():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_classes("all", ["a", "b"], 2) == [0, 1]
    assert parse_classes("1,a", ["a", "b"], 2) == [1, 0]
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        parse_classes("zebra", ["a", "b"], 2)
    with pytest.raises(ValueError, match="unknown class 5"):
        parse_classes("5", ["a", "b"], 2)


def test_train_flows_explain_end_to_end(tmp_path, capsys):
    data = generate_shapes(tmp_path / "data", train_per_class=4, test_per_class=2, num_points=96)
    ckpt, flows, out = tmp_path / "m.pt", tmp_path / "f.h5", tmp_path / "e.h5"
    assert main(["train", "--data", str(data), "--epochs", "1", "--num-points", "64", "--width", "0.125",
                 "--out", str(ckpt), "--quiet"]) == 0
    assert main(["flows", "--model", str(ckpt), "--data", str(data), "--num-points", "64", "--out", str(flows),
                 "--quiet"]) == 0
    args = ["explain", "--model", str(ckpt), "--flows", str(flows), "--classes", "0,sphere,2", "--seeds", "0-1",
            "--steps", "3", "--out", str(out), "--png", str(tmp_path / "s.png"), "--ply", str(tmp_path / "ply"),
            "--quiet"]
    assert main(args) == 0
    e = Explanations.load(out)
    assert sorted(set(e.classes.tolist())) == sorted({0, 2, e.class_names.index("sphere")})
    assert len(e) == 4 and e.points.shape[1:] == (64, 3)
    assert len(list((tmp_path / "ply").glob("*.ply"))) == len(e)
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert json.loads(e.config)["steps"] == 3
    # Bad input is reported, not a traceback.
    capsys.readouterr()
    assert main(["explain", "--model", str(ckpt), "--flows", str(flows), "--classes", "99", "--out",
                 str(tmp_path / "x.h5"), "--quiet"]) == 1
    assert "unknown class 99" in capsys.readouterr().err
    assert main(["explain", "--model", str(tmp_path / "missing.pt"), "--flows", str(flows), "--out",
                 str(tmp_path / "x.h5")]) == 1
    assert np.isfinite(e.points).all()
