import numpy as np
import torch

from flowam_fast.data import ModelNet40, generate_shapes
from flowam_fast.models import DGCNN, PointNet
from flowam_fast.train import augment, train


def test_a_few_steps_reduce_the_loss(tmp_path):
    root = generate_shapes(tmp_path / "d", train_per_class=6, test_per_class=2, num_points=128)
    data = ModelNet40(root, "train", num_points=128)
    torch.manual_seed(0)
    model = PointNet(data.num_classes, width=0.25)
    first = train(model, data, epochs=1, batch_size=72, lr=5e-3, quiet=True, max_steps=1)["losses"][0]
    torch.manual_seed(0)
    model = PointNet(data.num_classes, width=0.25)
    losses = train(model, data, epochs=30, batch_size=72, lr=5e-3, quiet=True, max_steps=30)["losses"]
    assert losses[0] == first  # deterministic for a seed
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert not model.training


def test_dgcnn_trains_too(tmp_path):
    root = generate_shapes(tmp_path / "d", train_per_class=2, test_per_class=1, num_points=64)
    data = ModelNet40(root, "train", num_points=64)
    test = ModelNet40(root, "test", num_points=64)
    res = train(DGCNN(data.num_classes, k=4, emb_dims=32, width=0.25), data, test, epochs=1, batch_size=12, quiet=True)
    assert 0.0 <= res["test_accuracy"] <= 1.0 and all(np.isfinite(res["losses"]))


def test_augment_is_seeded_and_bounded():
    x = torch.zeros(4, 100, 3)
    a = augment(x + 1, torch.Generator().manual_seed(0))
    b = augment(x + 1, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert (a - 1).abs().max() < 0.25 + 0.1 + 0.05 + 1e-6
