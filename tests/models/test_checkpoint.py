import pytest
import torch

from flowam_fast.models import DGCNN, PointNet, load_checkpoint, save_checkpoint
from flowam_fast.models.checkpoint import CheckpointError

from tests.helpers import randomize


def _same(a, b, x):
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b(x))


# Small widths keep this fast; the full-width layouts are covered by the key-set test in
# test_models and by test_reference_checkpoint_config_is_read_off_the_weights.
KW = {"pointnet": {"width": 0.25}, "dgcnn": {"k": 8, "width": 0.25, "emb_dims": 64}}


@pytest.mark.parametrize("arch, make", [("pointnet", lambda: PointNet(10, **KW["pointnet"])),
                                        ("dgcnn", lambda: DGCNN(10, **KW["dgcnn"]))])
@pytest.mark.parametrize("layout", ["raw", "dataparallel", "model_state_dict", "model", "state_dict"])
def test_reference_layouts_load(tmp_path, arch, make, layout):
    model = randomize(make())
    sd = model.state_dict()
    blob = {"raw": sd, "dataparallel": {f"module.{k}": v for k, v in sd.items()},
            "model_state_dict": {"epoch": 3, "model_state_dict": sd}, "model": {"model": sd, "acc": 0.9},
            "state_dict": {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1}}[layout]
    torch.save(blob, tmp_path / "ckpt.pth")
    loaded = load_checkpoint(tmp_path / "ckpt.pth", arch=arch, **KW[arch])
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


def test_mismatched_dgcnn_checkpoint_lists_the_problems(tmp_path):
    sd = DGCNN(10, emb_dims=64).state_dict()
    del sd["bn6.running_var"], sd["conv1.1.weight"]  # the BN is also under bn1: both keys are required
    sd["linear4.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "dg.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "dg.pth", emb_dims=128)
    msg = str(err.value)
    assert "missing keys (2): bn6.running_var, conv1.1.weight" in msg
    assert "unexpected keys (1): linear4.weight" in msg
    assert "conv5.0.weight: checkpoint (64, 512, 1) vs model (128, 512, 1)" in msg
    assert "linear1.weight: checkpoint (512, 128) vs model (512, 256)" in msg


def test_reference_checkpoint_config_is_read_off_the_weights(tmp_path):
    """A bare reference state_dict: arch from the keys, classes, feature transform, emb_dims from shapes."""
    for model in (PointNet(7, feature_transform=False, width=1.0), DGCNN(9, emb_dims=256)):
        torch.save({f"module.{k}": v for k, v in randomize(model).state_dict().items()}, tmp_path / "r.pth")
        loaded = load_checkpoint(tmp_path / "r.pth")
        assert type(loaded) is type(model) and loaded.config == model.config
        _same(model, loaded, torch.randn(2, 3, 48))


def test_old_checkpoints_without_batchnorm_counters_load(tmp_path):
    model = randomize(PointNet(4, width=0.25))
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pth")
    _same(model, load_checkpoint(tmp_path / "old.pth", width=0.25), torch.randn(2, 3, 32))


def test_pickled_objects_need_trust(tmp_path):
    import argparse

    model = randomize(PointNet(4, width=0.25))
    torch.save({"args": argparse.Namespace(lr=0.1), "model_state_dict": model.state_dict()}, tmp_path / "ns.pth")
    with pytest.raises(CheckpointError, match=r"argparse.Namespace.*trusted=True"):
        load_checkpoint(tmp_path / "ns.pth", width=0.25)
    _same(model, load_checkpoint(tmp_path / "ns.pth", width=0.25, trusted=True), torch.randn(2, 3, 32))


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


def test_checkpoint_meta_reads_what_was_saved(tmp_path):
    from flowam_fast.models import checkpoint_meta

    model = PointNet(num_classes=3, width=0.125)
    save_checkpoint(model, tmp_path / "own.pt", test_accuracy=0.75, epochs=2)
    assert checkpoint_meta(tmp_path / "own.pt") == {"test_accuracy": 0.75, "epochs": 2}
    torch.save(model.state_dict(), tmp_path / "raw.pt")  # a reference layout keeps nothing else
    assert checkpoint_meta(tmp_path / "raw.pt") == {}
    with pytest.raises(FileNotFoundError):
        checkpoint_meta(tmp_path / "missing.pt")
