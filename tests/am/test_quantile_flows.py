"""Class quantiles in the flows and FlowAM's alignment="quantiles"."""
import json

import h5py
import numpy as np
import pytest
import torch

from flowam_fast.am.engine import FlowAM
from flowam_fast.am.flows import Flows, compute_flows

from tests.helpers import random_data as _data


def test_class_quantiles_are_the_mean_of_the_samples_quantile_functions(tiny_net):
    data = _data(num=15)
    flows = compute_flows(tiny_net, data, layers=["act1", "act2"], batch_size=4, quiet=True, quantile_levels=8)
    assert flows.quantile_levels == 8
    x = torch.from_numpy(data.points).transpose(1, 2)
    with torch.no_grad():
        a2 = tiny_net.act2(tiny_net.conv2(tiny_net.act1(tiny_net.conv1(x)))).double().numpy()
    levels = (np.arange(8) + 0.5) / 8
    for c in range(3):
        rows = a2[data.labels == c]  # (S, C, N)
        n = rows.shape[-1]
        per_sample = np.stack([[np.interp(levels, (np.arange(n) + 0.5) / n, np.sort(ch)) for ch in s] for s in rows])
        np.testing.assert_allclose(flows.quantiles["act2"][c].numpy(), per_sample.mean(0), rtol=1e-5, atol=1e-6)
    # The moments are as without quantiles, and a class with no samples gets NaN quantiles.
    plain = compute_flows(tiny_net, data, layers=["act1", "act2"], batch_size=4, quiet=True)
    assert plain.quantiles is None and plain.quantile_levels == 0
    assert torch.equal(plain.mean["act2"], flows.mean["act2"])
    part = compute_flows(tiny_net, data, layers=["act1"], quiet=True, classes=[0], quantile_levels=4)
    assert torch.isnan(part.quantiles["act1"][1]).all() and torch.isfinite(part.quantiles["act1"][0]).all()


def test_quantiles_save_load_and_older_files(tmp_path, tiny_net):
    flows = compute_flows(tiny_net, _data(), layers=["act1", "act2"], quiet=True, quantile_levels=5)
    flows.save(tmp_path / "q.h5")
    back = Flows.load(tmp_path / "q.h5")
    assert all(torch.equal(back.quantiles[k], flows.quantiles[k]) for k in flows.layers)
    # A file without quantiles (all files written before they existed) loads with none.
    plain = compute_flows(tiny_net, _data(), layers=["act1"], quiet=True)
    plain.save(tmp_path / "p.h5")
    assert Flows.load(tmp_path / "p.h5").quantiles is None
    with h5py.File(tmp_path / "q.h5", "r+") as f:
        del f["layer1/quantiles"]
    with pytest.raises(ValueError, match="some layers only"):
        Flows.load(tmp_path / "q.h5")
    with pytest.raises(ValueError, match="quantile_levels"):
        compute_flows(tiny_net, _data(), layers=["act1"], quiet=True, quantile_levels=-1)


def test_quantile_alignment_in_the_engine(tiny_net):
    data = _data(num=24, n=64)
    flows = compute_flows(tiny_net, data, layers=["act1", "act2"], quiet=True, quantile_levels=16)
    kw = dict(steps=6, num_points=48, quiet=True)
    moments = FlowAM(tiny_net, flows, **kw)
    quant = FlowAM(tiny_net, flows, alignment="quantiles", **kw)
    # Old stores' configs have no alignment field: the default leaves it out.
    assert "alignment" not in json.loads(moments.config.to_json())
    assert json.loads(quant.config.to_json())["alignment"] == "quantiles"
    assert "alignment" not in json.loads(FlowAM(tiny_net, flows, method="regularized", alignment="quantiles",
                                                **kw).config.to_json())
    # The flow term is the mean over layers of quantile_align, and differs from the moments'.
    from flowam_fast.ops import quantile_align
    from flowam_fast.models.activations import get_activations

    x = torch.rand(2, 48, 3) - 0.5
    cls = torch.tensor([0, 2])
    _, _, terms = quant.loss(x, cls)
    _, acts = get_activations(tiny_net, x.transpose(1, 2), ["act1", "act2"])
    want = torch.stack([quantile_align(acts[k], cls, flows.quantiles[k], flows.std[k]) for k in ("act1", "act2")]).mean(0)
    torch.testing.assert_close(-terms["flow"], want)  # the term is minus the alignment
    assert not torch.allclose(terms["flow"], moments.loss(x, cls)[2]["flow"])
    quant.run([1], [0])  # runs end to end
    with pytest.raises(ValueError, match="unknown alignment"):
        FlowAM(tiny_net, flows, alignment="medians", **kw)
    with pytest.raises(ValueError, match="no quantiles"):
        FlowAM(tiny_net, compute_flows(tiny_net, data, layers=["act1"], quiet=True), alignment="quantiles", **kw)


def test_quantile_alignment_is_batch_composition_invariant_bit_for_bit():
    """As the moments are on the built-in models: what lets sweeps of any shard size agree."""
    from flowam_fast.models import build_model
    from tests.helpers import randomize

    torch.manual_seed(0)
    model = randomize(build_model("pointnet", num_classes=3, width=0.125, feature_transform=True))
    flows = compute_flows(model, _data(num=24, n=48), quiet=True, quantile_levels=16)
    eng = FlowAM(model, flows, alignment="quantiles", steps=3, num_points=48, quiet=True)
    together = eng.run([0, 1, 2], [0, 1]).sorted()
    alone = eng.run([1], [1])
    assert np.array_equal(together.select([1], [1]).points, alone.points)
    assert np.array_equal(together.select([1], [1]).logits, alone.logits)
