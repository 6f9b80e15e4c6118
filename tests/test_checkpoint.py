import pytest
import torch

from flowam_fast.models import DGCNN, PointNet, load_checkpoint, save_checkpoint
from flowam_fast.models.checkpoint import CheckpointError

from .test_models import randomize


def _same(a, b, x):
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b(x))


@pytest.mark.parametrize("arch, make", [("pointnet", lambda: PointNet(10)),
                                        ("dgcnn", lambda: DGCNN(10, k=8))])
@pytest.mark.parametrize("layout", ["raw", "dataparallel", "model_state_dict", "model"])
def test_reference_layouts_load(tmp_path, arch, make, layout):
    model = randomize(make())
    sd = model.state_dict()
    blob = {"raw": sd, "dataparallel": {f"module.{k}": v for k, v in sd.items()},
            "model_state_dict": {"epoch": 3, "model_state_dict": sd}, "model": {"model": sd, "acc": 0.9}}[layout]
    torch.save(blob, tmp_path / "ckpt.pth")
    loaded = load_checkpoint(tmp_path / "ckpt.pth", arch=arch, k=8) if arch == "dgcnn" else \
        load_checkpoint(tmp_path / "ckpt.pth", arch=arch)
    assert not loaded.training and loaded.num_classes == 10  # read off the last layer
    _same(model, loaded, torch.randn(2, 3, 64))


def test_own_checkpoint_needs_no_arguments(tmp_path):
    model = randomize(DGCNN(5, k=6, emb_dims=64, width=0.5))
    save_checkpoint(model, tmp_path / "m.pt", note="x")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert isinstance(loaded, DGCNN) and loaded.k == 6 and loaded.emb_dims == 64
    _same(model, loaded, torch.randn(2, 3, 32))


def test_mismatched_checkpoint_lists_the_problems(tmp_path):
    sd = PointNet(10).state_dict()
    sd.pop("fc3.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["feat.conv1.weight"] = torch.zeros(32, 3, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.pth", arch="pointnet")
    msg = str(err.value)
    assert "missing keys (1): fc3.bias" in msg and "unexpected keys (1): extra.weight" in msg
    assert "feat.conv1.weight: checkpoint (32, 3, 1) vs model (64, 3, 1)" in msg
    torch.save(DGCNN(10).state_dict(), tmp_path / "dg.pth")
    with pytest.raises(CheckpointError, match="does not match PointNet"):
        load_checkpoint(tmp_path / "dg.pth", arch="pointnet", num_classes=10)


def test_unreadable_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"epoch": 1}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no state_dict"):
        load_checkpoint(tmp_path / "empty.pt", arch="pointnet")
    with pytest.raises(ValueError, match="unknown architecture"):
        torch.save(PointNet(3).state_dict(), tmp_path / "p.pt")
        load_checkpoint(tmp_path / "p.pt", arch="resnet")
