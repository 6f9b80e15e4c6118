"""Attributions on the ray executor (a local two-CPU Ray cluster, loopback only): the same
scores and curves as the local executor, bit for bit, with batches of another size."""
import numpy as np
import pytest
import torch

from flowam_fast.attribution import AttributionStore
from flowam_fast.models import PointNet
from flowam_fast.pipelines.attribute import run_attribution
from tests.helpers import randomize
from tests.sweep.conftest import deadline

ray = pytest.importorskip("ray")


def test_ray_matches_local_bitwise(tmp_path):
    torch.manual_seed(0)
    model = randomize(PointNet(3, width=0.125), seed=4)
    points = (torch.rand(5, 48, 3, generator=torch.Generator().manual_seed(1)) - 0.5).numpy()
    labels = np.array([0, 1, 2, 0, 1])
    common = dict(methods=["saliency", "occlusion"], options={"occlusion": {"patches": 4}}, randomization_clouds=0,
                  views=0, quiet=True)
    local = run_attribution(model, points, labels, tmp_path / "local", batch_size=2, **common)
    with deadline(90):
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        with deadline(120):
            remote = run_attribution(model, points, labels, tmp_path / "ray", executor="ray", batch_size=3, **common)
    finally:
        ray.shutdown()
    assert local["ran"] == 6 and remote["ran"] == 4
    a, b = (AttributionStore.load(tmp_path / d / "attribution.h5") for d in ("local", "ray"))
    for m in a.methods:
        assert np.array_equal(a.scores[m], b.scores[m])
        assert all(np.array_equal(a.curves[m][k], b.curves[m][k]) for k in a.curves[m])
    assert local["methods"] == remote["methods"]
