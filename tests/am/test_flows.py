import numpy as np
import pytest
import torch

from flowam_fast.am.flows import Flows, compute_flows

from tests.helpers import ArrayData, random_data as _data


def test_flows_match_direct_computation(tiny_net):
    data = _data()
    flows = compute_flows(tiny_net, data, layers=["act1", "act2"], batch_size=5, quiet=True)
    x = torch.from_numpy(data.points).transpose(1, 2)
    with torch.no_grad():
        a1 = tiny_net.act1(tiny_net.conv1(x)).double()
        a2 = tiny_net.act2(tiny_net.conv2(a1.float())).double()
    for name, a in (("act1", a1), ("act2", a2)):
        for c in range(3):
            sel = a[torch.from_numpy(data.labels) == c].transpose(0, 1).reshape(a.shape[1], -1)
            torch.testing.assert_close(flows.mean[name][c].double(), sel.mean(1), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(flows.std[name][c].double(), sel.std(1, unbiased=False), rtol=1e-5, atol=1e-6)
    assert flows.count.tolist() == [4, 4, 4]
    flat = torch.from_numpy(data.points).reshape(-1, 3)
    torch.testing.assert_close(flows.lo, flat.min(0).values)
    torch.testing.assert_close(flows.hi, flat.max(0).values)
    # d2_target: mean squared distance to the 3 nearest other points, by brute force.
    p = torch.from_numpy(data.points).double()
    d2 = torch.cdist(p, p).pow(2)
    d2.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    brute = d2.topk(3, largest=False).values.mean()
    assert flows.d2_target == pytest.approx(float(brute), rel=1e-5)


def test_flows_of_some_classes_equal_those_of_the_whole_pass(tiny_net):
    data = _data(num=15)
    full = compute_flows(tiny_net, data, layers=["act1", "act2"], batch_size=4, quiet=True)
    part = compute_flows(tiny_net, data, layers=["act1", "act2"], batch_size=4, quiet=True, classes=[2, 0])
    assert part.count.tolist() == [5, 0, 5] and part.num_classes == 3
    for layer in ("act1", "act2"):
        for c in (0, 2):
            torch.testing.assert_close(part.mean[layer][c], full.mean[layer][c])
            torch.testing.assert_close(part.std[layer][c], full.std[layer][c])
    keep = np.isin(data.labels, [0, 2])
    torch.testing.assert_close(part.lo, torch.from_numpy(data.points[keep].reshape(-1, 3).min(0)))
    with pytest.raises(ValueError, match="no training samples"):
        part.check_classes([1])


def test_flows_do_not_depend_on_batch_size(tiny_net):
    data = _data()
    a = compute_flows(tiny_net, data, layers=["act1"], batch_size=3, quiet=True)
    b = compute_flows(tiny_net, data, layers=["act1"], batch_size=12, quiet=True)
    torch.testing.assert_close(a.mean["act1"], b.mean["act1"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a.std["act1"], b.std["act1"], rtol=1e-6, atol=1e-7)


def test_flows_save_load_roundtrip(tmp_path, tiny_net):
    flows = compute_flows(tiny_net, _data(), layers=["act1", "act2"], quiet=True)
    flows.save(tmp_path / "f.h5")
    back = Flows.load(tmp_path / "f.h5")
    assert back.layers == flows.layers and back.class_names == flows.class_names
    assert back.model == flows.model and back.d2_target == flows.d2_target
    for layer in flows.layers:
        assert torch.equal(back.mean[layer], flows.mean[layer])
        assert torch.equal(back.std[layer], flows.std[layer])


def test_flows_errors(tmp_path, tiny_net):
    flows = compute_flows(tiny_net, _data(), layers=["act1"], quiet=True)
    with pytest.raises(ValueError, match="layers"):
        flows.check_compatible(["act2"], {"act2": 32})
    flows.check_compatible([], {})  # a subset of the layers is fine
    with pytest.raises(ValueError, match="channel counts"):
        flows.check_compatible(["act1"], {"act1": 8})
    with pytest.raises(ValueError, match="unknown class 7"):
        flows.check_classes([7])
    with pytest.raises(FileNotFoundError):
        Flows.load(tmp_path / "missing.h5")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="cannot read"):
        Flows.load(tmp_path / "bad.h5")


def test_flows_of_older_activation_taps_are_refused():
    """PointNet's act1/act2 moved before the ReLUs (tap_version 2): flows of the old taps have
    the same layer names and channel counts, so only the stored tap version tells them apart."""
    import json

    from flowam_fast import FlowAM
    from flowam_fast.models import PointNet

    model = PointNet(3, width=0.125).eval()
    data = _data(num=6, n=32)
    flows = compute_flows(model, data, quiet=True)
    assert json.loads(flows.model)["tap_version"] == PointNet.tap_version == 2
    FlowAM(model, flows, num_points=32, steps=1)  # current flows are accepted
    old = json.loads(flows.model)
    del old["tap_version"]  # as written before the version existed
    flows.model = json.dumps(old)
    with pytest.raises(ValueError, match="version 1 of PointNet's activation taps"):
        FlowAM(model, flows, num_points=32, steps=1)
    flows.check_taps(torch.nn.Linear(2, 2))  # models without tap versions are not checked
