import torch

import flowam_fast.data
from flowam_fast.cli import main
from flowam_fast.data import SHAPE_CLASSES, generate_shapes
from flowam_fast.models import PointNet, load_checkpoint


def test_cli_trains_on_synthetic_data_and_cleans_up(tmp_path, monkeypatch, capsys):
    """`--data synthetic` writes the shapes to a temporary directory it removes afterwards (the
    generator is swapped for a tiny one), and the checkpoint loads with no other argument."""
    made = []

    def tiny_shapes(out):
        made.append(out)
        return generate_shapes(out, train_per_class=3, test_per_class=1, num_points=64)

    monkeypatch.setattr(flowam_fast.data, "generate_shapes", tiny_shapes)
    ckpt = tmp_path / "m.pt"
    assert main(["train", "--data", "synthetic", "--epochs", "1", "--num-points", "48", "--width", "0.125",
                 "--batch-size", "12", "--out", str(ckpt), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert len(made) == 1 and not made[0].exists()
    model = load_checkpoint(ckpt)
    assert isinstance(model, PointNet) and model.config["width"] == 0.125 and model.num_classes == 12
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert meta["num_points"] == 48 and meta["class_names"] == list(SHAPE_CLASSES)
    keep = tmp_path / "kept"
    assert main(["train", "--data", "synthetic", "--data-dir", str(keep), "--epochs", "1", "--num-points", "48",
                 "--width", "0.125", "--batch-size", "12", "--out", str(ckpt), "--quiet"]) == 0
    assert (keep / "shape_names.txt").exists()
