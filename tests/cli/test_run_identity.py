"""The command line and Python make the same run from the same inputs: one cloud-size rule
(the flows' count, else the checkpoint's, else 1024), targets by name, the same validation."""
import numpy as np

from flowam_fast.am.engine import FlowAM
from flowam_fast.am.explanations import Explanations
from flowam_fast.am.flows import Flows
from flowam_fast.cli import main
from flowam_fast.data import generate_shapes
from flowam_fast.models import checkpoint_meta, load_checkpoint


def test_python_and_cli_make_the_same_explanations(tmp_path, capsys):
    data = generate_shapes(tmp_path / "data", train_per_class=3, test_per_class=1, num_points=96,
                           classes=["cube", "sphere", "torus"])
    ckpt, flows_path, out = tmp_path / "m.pt", tmp_path / "f.h5", tmp_path / "cli.h5"
    assert main(["train", "--data", str(data), "--epochs", "1", "--num-points", "64", "--width", "0.125",
                 "--out", str(ckpt), "--quiet"]) == 0
    assert checkpoint_meta(ckpt)["num_points"] == 64
    # No --num-points: the flows are computed at the checkpoint's count (they were at 1024).
    assert main(["flows", "--model", str(ckpt), "--data", str(data), "--out", str(flows_path), "--quiet"]) == 0
    flows = Flows.load(flows_path)
    assert flows.num_points == 64
    assert main(["explain", "--model", str(ckpt), "--flows", str(flows_path), "--classes", "sphere,0",
                 "--seeds", "0", "--steps", "3", "--out", str(out), "--quiet"]) == 0
    cli = Explanations.load(out)
    # Python, from the same files and without num_points: clouds of the flows' count, targets by name.
    py = FlowAM(load_checkpoint(ckpt), flows, steps=3, quiet=True).run(["sphere", "cube"], [0])
    assert cli.points.shape == py.points.shape == (2, 64, 3)
    assert cli.classes.tolist() == py.classes.tolist() == [flows.class_names.index("sphere"), 0]
    assert np.array_equal(cli.points, py.points) and np.array_equal(cli.logits, py.logits)
    assert py.same_run(cli)

    # The command line refuses what the config refuses, naming the field.
    capsys.readouterr()
    assert main(["explain", "--model", str(ckpt), "--flows", str(flows_path), "--flow-weight", "-1",
                 "--out", str(tmp_path / "x.h5"), "--quiet"]) == 1
    assert "flow_weight must be a finite number >= 0, got -1.0" in capsys.readouterr().err
    assert main(["explain", "--model", str(ckpt), "--flows", str(flows_path), "--classes", "cone",
                 "--out", str(tmp_path / "x.h5"), "--quiet"]) == 1
    assert "unknown class 'cone'; known classes: " + ", ".join(flows.class_names) in capsys.readouterr().err
