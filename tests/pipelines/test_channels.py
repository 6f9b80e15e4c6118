"""Channel sheets: which channels are the most class-selective, and their activations."""
import numpy as np
import torch

from flowam_fast.am.flows import compute_flows
from flowam_fast.models.activations import get_activations
from flowam_fast.pipelines.channels import channel_activations, selective_channels

from tests.helpers import random_data


class _Flows:
    """The two things selective_channels reads of flows."""

    def __init__(self, mean, std, count):
        self.mean, self.std, self.count = mean, std, count

    def class_flow(self, layer):
        return self.mean, self.std


def test_the_most_selective_channel_is_the_one_whose_class_means_differ_most():
    mean = torch.zeros(4, 5)
    std = torch.ones(4, 5)
    mean[:, 3] = torch.tensor([0.0, 2.0, -2.0, 0.0])   # far apart in units of the pooled std
    mean[:, 1] = torch.tensor([0.0, 0.5, 0.0, 0.0])
    std[:, 0] = 0.01
    mean[:, 0] = torch.tensor([0.0, 0.05, 0.0, 0.0])   # small means, smaller spread: selective too
    mean[3] = float("nan")                             # a class without samples is left out
    count = torch.tensor([10, 10, 10, 0])
    assert selective_channels(_Flows(mean, std, count), "x", 3) == [0, 3, 1]


def test_channel_activations_are_the_mean_over_the_points(tiny_net):
    data = random_data(num=70, n=32)
    flows = compute_flows(tiny_net, data, layers=["act2"], quiet=True)
    chosen = selective_channels(flows, "act2", 4)
    got = channel_activations(tiny_net, data.points, "act2", chosen)  # 70 clouds: two passes of 64
    with torch.no_grad():
        _, acts = get_activations(tiny_net, torch.from_numpy(data.points).transpose(1, 2), ["act2"])
    np.testing.assert_allclose(got, acts["act2"][:, chosen].mean(2).numpy(), rtol=1e-5, atol=1e-6)
