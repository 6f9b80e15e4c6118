import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flowam_fast.am.autoencoder import (PointAutoencoder, chamfer_loss, encode_all, load_autoencoder, save_autoencoder,
                                     train_autoencoder)
from flowam_fast.evaluation.metrics import chamfer
from flowam_fast.models import PointNet, save_checkpoint
from flowam_fast.models.checkpoint import CheckpointError

SMALL = {"num_points": 32, "latent_dim": 16, "width": 0.25}


def _clouds(samples_per_class=8, n=64, seed=0):
    """Two classes (spheres and flat disks) with a random scale each: a tiny dataset."""
    rng = np.random.default_rng(seed)
    out = []
    for cls in range(2):
        for _ in range(samples_per_class):
            v = rng.standard_normal((n, 3))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            if cls == 1:
                v[:, 1] = 0.05 * rng.standard_normal(n)
            out.append(v * rng.uniform(0.6, 1.0, size=3))
    return SimpleNamespace(points=np.stack(out).astype(np.float32))


def _train(data, seed=0):
    return train_autoencoder(data, epochs=12, batch_size=5, lr=3e-3, seed=seed, num_points=48, latent_dim=16,
                             width=0.25, quiet=True)


@pytest.fixture(scope="module")
def trained():
    data = _clouds()
    return data, _train(data)


def test_shapes_config_and_initial_buffers():
    torch.manual_seed(0)
    m = PointAutoencoder(**SMALL)
    assert m.config == SMALL and m.arch == "autoencoder"
    x = torch.randn(4, 50, 3)
    assert m.encode(x).shape == (4, 16)
    assert m.encode(torch.randn(2, 7, 3)).shape == (2, 16)  # any number of points
    assert m.decode(torch.randn(3, 16)).shape == (3, 32, 3)
    assert m(x).shape == (4, 32, 3)
    state = m.state_dict()
    assert torch.equal(state["latent_mean"], torch.zeros(16)) and torch.equal(state["latent_std"], torch.ones(16))
    assert torch.isneginf(state["latent_lo"]).all() and torch.isposinf(state["latent_hi"]).all()
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        m.encode(torch.randn(4, 3, 50)[:, :2])
    with pytest.raises(ValueError, match="codes"):
        m.decode(torch.randn(3, 15))


def test_encode_matches_conv1d_layout_and_is_permutation_invariant():
    torch.manual_seed(0)
    m = PointAutoencoder(**SMALL)
    m.train()
    m(torch.randn(8, 40, 3) * 2 + 0.5)  # non-trivial BatchNorm running statistics
    m.eval()
    x = torch.randn(3, 40, 3)
    # The points-last matmuls are the PointNet conv1d encoder, just faster.
    h = x.transpose(1, 2)
    h = torch.relu(m.bn1(m.conv1(h)))
    h = torch.relu(m.bn2(m.conv2(h)))
    torch.testing.assert_close(m.encode(x), m.conv3(h).max(dim=2).values)
    perm = torch.randperm(40)
    torch.testing.assert_close(m.encode(x[:, perm]), m.encode(x))


def test_chamfer_loss_is_the_mean_of_metrics_chamfer():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 20, 3, generator=g), torch.randn(3, 25, 3, generator=g)
    loss = chamfer_loss(a, b)
    assert loss.dim() == 0 and loss > 0
    torch.testing.assert_close(loss, chamfer(a, b).mean())
    torch.testing.assert_close(loss, chamfer_loss(b, a))
    assert chamfer_loss(a, a) == 0
    assert chamfer_loss(a, a[:, torch.randperm(20)]) == 0


def test_gradients_reach_encoder_and_decoder():
    torch.manual_seed(0)
    m = PointAutoencoder(**SMALL).train()
    x = torch.randn(4, 32, 3)
    chamfer_loss(m(x), x).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_lowers_the_loss_deterministically(trained):
    data, model = trained
    losses = model.train_history["losses"]
    # 16 samples in batches of 5: the last batch of one is skipped.
    assert len(losses) == 12 * 3 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert not model.training and model.config == {"num_points": 48, "latent_dim": 16, "width": 0.25}
    again = _train(data)
    assert again.train_history["losses"] == losses
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    other = _train(data, seed=1)
    assert not torch.equal(other.fc3.weight, model.fc3.weight)


def test_latent_stats_are_those_of_the_training_codes(trained):
    data, model = trained
    codes = encode_all(model, data.points[:, :48])
    torch.testing.assert_close(model.latent_mean, codes.mean(0))
    torch.testing.assert_close(model.latent_std, codes.std(0))
    assert torch.equal(model.latent_lo, codes.min(0).values) and torch.equal(model.latent_hi, codes.max(0).values)
    assert (model.latent_lo <= model.latent_mean).all() and (model.latent_mean <= model.latent_hi).all()
    m = PointAutoencoder(**SMALL)
    m.set_latent_stats(torch.ones(1, 16))  # one code: zero spread, not NaN
    assert torch.equal(m.latent_std, torch.zeros(16)) and torch.equal(m.latent_lo, torch.ones(16))
    with pytest.raises(ValueError, match="shape"):
        m.set_latent_stats(torch.zeros(5, 15))


def test_save_load_round_trip(trained, tmp_path):
    data, model = trained
    path = tmp_path / "ae.pt"
    save_autoencoder(model, path, epochs=12, note="tiny")
    assert os.listdir(tmp_path) == ["ae.pt"]  # the temporary file was renamed
    loaded = load_autoencoder(path)
    assert isinstance(loaded, PointAutoencoder) and not loaded.training and loaded.config == model.config
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.from_numpy(data.points[:4, :48])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == "flowam_fast.autoencoder" and blob["meta"] == {"epochs": 12, "note": "tiny"}


def test_load_errors(tmp_path):
    clf = tmp_path / "clf.pt"
    save_checkpoint(PointNet(3, width=0.125), clf)
    with pytest.raises(CheckpointError, match="classifier checkpoint.*load_checkpoint"):
        load_autoencoder(clf)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_autoencoder(junk)
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a flowam_fast.autoencoder file"):
        load_autoencoder(other)
    with pytest.raises(FileNotFoundError):
        load_autoencoder(tmp_path / "missing.pt")
    # A config that does not fit the weights: the mismatch is named.
    ae = tmp_path / "ae.pt"
    save_autoencoder(PointAutoencoder(**SMALL), ae)
    blob = torch.load(ae, weights_only=True)
    blob["config"]["latent_dim"] = 8
    torch.save(blob, ae)
    with pytest.raises(CheckpointError, match=r"does not match PointAutoencoder.*shape mismatches"):
        load_autoencoder(ae)
    blob["config"] = {"num_points": 32, "depth": 3}
    torch.save(blob, ae)
    with pytest.raises(CheckpointError, match="bad autoencoder config"):
        load_autoencoder(ae)


def test_bad_training_arguments():
    data = _clouds(samples_per_class=2, n=16)
    with pytest.raises(ValueError, match="at least 2"):
        train_autoencoder(data, batch_size=1, quiet=True)
    with pytest.raises(ValueError, match="epochs"):
        train_autoencoder(data, epochs=0, quiet=True)
    with pytest.raises(ValueError, match="num_points"):
        train_autoencoder(data, num_points=17, quiet=True)
