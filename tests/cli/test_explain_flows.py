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


def _tiny_model_and_flows(tmp_path):
    """(data dir, checkpoint, flows file) of a tiny PointNet trained for one epoch, through the CLI."""
    data = generate_shapes(tmp_path / "data", train_per_class=4, test_per_class=2, num_points=96)
    ckpt, flows = tmp_path / "m.pt", tmp_path / "f.h5"
    assert main(["train", "--data", str(data), "--epochs", "1", "--num-points", "64", "--width", "0.125",
                 "--out", str(ckpt), "--quiet"]) == 0
    assert main(["flows", "--model", str(ckpt), "--data", str(data), "--num-points", "64", "--out", str(flows),
                 "--quiet"]) == 0
    return data, ckpt, flows


def test_train_flows_explain_end_to_end(tmp_path, capsys):
    data, ckpt, flows = _tiny_model_and_flows(tmp_path)
    out = tmp_path / "e.h5"
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

    # A rerun with every job stored says so in one line, without empty progress bars.
    capsys.readouterr()
    rerun = [a for a in args if a not in ("--quiet",)]
    assert main(rerun) == 0
    captured = capsys.readouterr()
    assert "flowam: all 4 jobs were already in" in captured.err and "step/s" not in captured.err
    assert captured.err.count("\n") == 1 and "4 explanations (flowam)" in captured.out
    # Another config over the same store: the message names the changed field and the way out.
    changed = [*args, "--steps", "4", "--lr", "0.02"]
    assert main(changed) == 1
    err = capsys.readouterr().err
    assert "lr 0.01 -> 0.02" in err and "steps 3 -> 4" in err and "--fresh" in err and "{" not in err
    assert main([*changed, "--fresh"]) == 0
    assert json.loads(Explanations.load(out).config)["steps"] == 4 and len(Explanations.load(out)) == 4


def test_view_and_explain_write_the_viewer(tmp_path, capsys):
    data, ckpt, flows = _tiny_model_and_flows(tmp_path)
    out = tmp_path / "e.h5"
    assert main(["explain", "--model", str(ckpt), "--flows", str(flows), "--classes", "cube,sphere", "--seeds", "0-2",
                 "--steps", "2", "--out", str(out), "--html", str(tmp_path / "e.html"), "--data", str(data),
                 "--quiet"]) == 0
    assert "<html" in (tmp_path / "e.html").read_text().lower()
    e = Explanations.load(out)
    capsys.readouterr()
    assert main(["view", str(out), "--png", str(tmp_path / "v.png"), "--html", str(tmp_path / "v.html"),
                 "--data", str(data)]) == 0
    text = capsys.readouterr().out
    for fact in ("method:   flowam", "PointNet", f"jobs:     6, success {e.success.mean():.1%}",
                 f"2: {e.class_names.index('sphere')} sphere", "seeds:    0-2", "points:   64 per cloud",
                 "steps 2", "lr 0.01", f"wrote {tmp_path / 'v.png'}", f"wrote {tmp_path / 'v.html'}"):
        assert fact in text, fact
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "v.html").read_text()
    assert "sphere" in html and "cube" in html
    # A summary alone writes nothing; a missing or corrupt store is a message.
    assert main(["view", str(out)]) == 0 and "wrote" not in capsys.readouterr().out
    assert main(["view", str(tmp_path / "none.h5")]) == 1
    assert "explanations file not found" in capsys.readouterr().err
    (tmp_path / "bad.h5").write_text("not hdf5")
    assert main(["view", str(tmp_path / "bad.h5")]) == 1
    assert "cannot read explanations file" in capsys.readouterr().err
    # Data of another dataset is refused before anything is drawn.
    other = generate_shapes(tmp_path / "other", train_per_class=1, test_per_class=1, num_points=96,
                            classes=("torus", "cone", "sphere"))
    assert main(["view", str(out), "--png", str(tmp_path / "o.png"), "--data", str(other)]) == 1
    assert "another dataset" in capsys.readouterr().err and not (tmp_path / "o.png").exists()
