import numpy as np
import pytest
import torch

from flowam_fast.data import ModelNet40, generate_shapes
from flowam_fast.models import DGCNN, PointNet, load_checkpoint
from flowam_fast.training import DEMO_CONFIG, augment, train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = generate_shapes(tmp_path_factory.mktemp("shapes"), train_per_class=4, test_per_class=1, num_points=64)
    return ModelNet40(root, "train", num_points=64), ModelNet40(root, "test", num_points=64)


def _run(data, steps=12):
    torch.manual_seed(0)
    model = PointNet(data.num_classes, width=0.25)
    losses = train(model, data, epochs=100, batch_size=48, lr=5e-3, seed=3, quiet=True, max_steps=steps)["losses"]
    return model, losses


def test_a_few_steps_reduce_the_loss_deterministically(tiny):
    model, losses = _run(tiny[0])
    assert len(losses) == 12 and np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    assert not model.training
    again, losses2 = _run(tiny[0])
    assert losses2 == losses  # bit-identical for a seed
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_dgcnn_trains_too(tiny):
    data, test = tiny
    res = train(DGCNN(data.num_classes, k=4, emb_dims=32, width=0.25), data, test, epochs=1, batch_size=12, quiet=True)
    assert 0.0 <= res["test_accuracy"] <= 1.0 and all(np.isfinite(res["losses"]))
    assert len(res["losses"]) == len(data) // 12


def test_augment_is_seeded_and_bounded():
    x = torch.zeros(4, 100, 3)
    a = augment(x + 1, torch.Generator().manual_seed(0))
    b = augment(x + 1, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert (a - 1).abs().max() < 0.25 + 0.1 + 0.05 + 1e-6
    assert not torch.equal(a, augment(x + 1, torch.Generator().manual_seed(1)))


def test_rotation_augmentation_turns_about_the_vertical_axis():
    from flowam_fast.data.shapes import yaw_matrices

    r = torch.from_numpy(yaw_matrices(np.array([0.3, 2.0, -1.0])))
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=r.dtype).expand(3, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(3, dtype=r.dtype))
    torch.testing.assert_close(r[:, 1], torch.tensor([0.0, 1.0, 0.0], dtype=r.dtype).expand(3, 3))
    # A vertical segment stays vertical; a horizontal one turns, by a seeded angle.
    x = torch.zeros(64, 2, 3)
    x[:, 1, 0] = 1.0
    a = augment(x, torch.Generator().manual_seed(0), rotate=True)
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(0), rotate=True))
    d = a[:, 1] - a[:, 0]
    heading = torch.atan2(d[:, 2], d[:, 0])
    assert float(heading.std()) > 1.0  # spread over the circle, not near 0
    x = torch.zeros(64, 2, 3)
    x[:, 1, 1] = 1.0
    d = augment(x, torch.Generator().manual_seed(0), rotate=True)
    d = d[:, 1] - d[:, 0]
    assert float(d[:, [0, 2]].abs().max()) < 0.1 + 1e-6  # only jitter moves it sideways


def test_bad_training_arguments(tiny):
    model = PointNet(tiny[0].num_classes, width=0.125)
    with pytest.raises(ValueError, match="at least 2"):
        train(model, tiny[0], batch_size=1, quiet=True)
    with pytest.raises(ValueError, match="epochs"):
        train(model, tiny[0], epochs=0, quiet=True)


def test_demo_config_is_complete():
    assert {"arch", "width", "num_points", "epochs", "batch_size", "lr", "weight_decay", "seed"} <= set(DEMO_CONFIG)
