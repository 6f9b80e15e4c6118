"""The preset runs whose explanations are stored in tests/am/stored/ (by `write`), to hold
today's engine to what an earlier version made: the paper's objective and its baselines on the
built-in PointNet (fused fast path) and DGCNN, moments and quantiles, small enough for a test.

    python -m tests.am.preset_runs tests/am/stored     # rewrite the stores
"""
import sys
from pathlib import Path

import torch

from flowam_fast.am.autoencoder import PointAutoencoder
from flowam_fast.am.engine import FlowAM
from flowam_fast.am.flows import compute_flows
from flowam_fast.models import DGCNN, PointNet

from tests.helpers import random_data, randomize

N = 48
#: name -> (architecture, FlowAM keyword arguments)
RUNS = {
    "pointnet_flowam": ("pointnet", {}),
    "pointnet_regularized": ("pointnet", {"method": "regularized"}),
    "pointnet_vanilla": ("pointnet", {"method": "vanilla"}),
    "pointnet_quantiles": ("pointnet", {"alignment": "quantiles", "flow_weight": 300.0}),
    "pointnet_ae_latent": ("pointnet", {"method": "ae-latent"}),
    "dgcnn_flowam": ("dgcnn", {}),
    "dgcnn_quantiles": ("dgcnn", {"alignment": "quantiles", "flow_weight": 300.0}),
}
MODELS = {
    "pointnet": lambda: PointNet(num_classes=3, width=0.125),
    "dgcnn": lambda: DGCNN(num_classes=3, k=4, emb_dims=32, width=0.125),
}


def model_and_flows(arch: str):
    model = randomize(MODELS[arch]()).eval()
    return model, compute_flows(model, random_data(num=24, n=N), quiet=True, quantile_levels=16)


def autoencoder():
    """A small autoencoder with seeded weights and a latent range to clamp to."""
    ae = randomize(PointAutoencoder(num_points=N, latent_dim=16, width=0.25))
    with torch.no_grad():
        ae.latent_mean.zero_(), ae.latent_std.fill_(1.0), ae.latent_lo.fill_(-2.0), ae.latent_hi.fill_(2.0)
    return ae


def run(name: str):
    """The explanations of run `name` (3 classes x 2 seeds, 20 steps), made now."""
    arch, kw = RUNS[name]
    model, flows = model_and_flows(arch)
    ae = autoencoder() if kw.get("method") == "ae-latent" else None
    return FlowAM(model, flows, steps=20, num_points=N, quiet=True, autoencoder=ae, **kw).run([0, 1, 2], [0, 1])


def write(directory) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in RUNS:
        run(name).save(directory / f"{name}.h5")
    (directory / "cpu.txt").write_text(torch.backends.cpu.get_cpu_capability() + "\n")


if __name__ == "__main__":
    torch.set_num_threads(2)
    write(sys.argv[1])
