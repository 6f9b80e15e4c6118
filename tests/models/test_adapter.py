"""as_classifier: each kind of `logits`, what the adapted module passes through, names resolved
against the wrapped module, and the errors for outputs that are not logits.

`TinyPointNetCls` is written in the style of the public PointNet implementations (a T-Net,
functional ReLUs, forward returning (log_softmax, trans, trans_feat)), at toy widths; the
other test modules of own models use it too."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowam_fast.am.flows import describe_model
from flowam_fast.models import (ActivationRecorder, AdaptedClassifier, ClassifierOutputError, as_classifier, classify,
                                get_activations, layer_root)
from flowam_fast.models.adapter import check_logits

from tests.helpers import randomize


class TinySTN(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.conv1 = nn.Conv1d(3, w, 1)
        self.bn1 = nn.BatchNorm1d(w)
        self.fc = nn.Linear(w, 9)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x))).max(dim=2).values
        return (self.fc(h) + torch.eye(3, device=x.device).flatten()).view(-1, 3, 3)


class TinyFeat(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.stn = TinySTN(w)
        self.conv1, self.bn1 = nn.Conv1d(3, w, 1), nn.BatchNorm1d(w)
        self.conv2, self.bn2 = nn.Conv1d(w, 2 * w, 1), nn.BatchNorm1d(2 * w)
        self.conv3, self.bn3 = nn.Conv1d(2 * w, 4 * w, 1), nn.BatchNorm1d(4 * w)

    def forward(self, x):
        trans = self.stn(x)
        x = torch.bmm(x.transpose(2, 1), trans).transpose(2, 1)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return x.max(dim=2).values, trans, None


class TinyPointNetCls(nn.Module):
    """(B, 3, N) -> (log_softmax (B, k), trans (B, 3, 3), trans_feat None)."""

    def __init__(self, k=4, w=8):
        super().__init__()
        self.feat = TinyFeat(w)
        self.fc1, self.bn1 = nn.Linear(4 * w, 2 * w), nn.BatchNorm1d(2 * w)
        self.fc2, self.bn2 = nn.Linear(2 * w, w), nn.BatchNorm1d(w)
        self.dropout = nn.Dropout(p=0.3)
        self.fc3 = nn.Linear(w, k)

    def forward(self, x):
        x, trans, trans_feat = self.feat(x)
        x = F.relu(self.bn1(self.fc1(x)))
        x = F.relu(self.bn2(self.dropout(self.fc2(x))))
        return F.log_softmax(self.fc3(x), dim=1), trans, trans_feat


LAYERS = ["feat.bn1", "feat.bn2", "feat.bn3"]


def build(k=4):
    """A seeded TinyPointNetCls in eval mode (the CLI tests' --factory)."""
    torch.manual_seed(0)
    return randomize(TinyPointNetCls(k=k), seed=3)


class DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv1d(3, 5, 1)

    def forward(self, x):
        h = self.body(x)
        return {"features": h, "scores": h.mean(2)}


def _x(b=3, n=20):
    return torch.randn(b, 3, n, generator=torch.Generator().manual_seed(1))


def test_index_key_submodule_and_callable_pick_the_logits():
    net, x = build(), _x()
    with torch.no_grad():
        log_p = net(x)[0]
        fc3 = {}
        handle = net.fc3.register_forward_hook(lambda m, i, out: fc3.setdefault("out", out))
        net(x)
        handle.remove()
        assert torch.equal(as_classifier(net, 0)(x), log_p)
        assert torch.equal(as_classifier(net, -3)(x), log_p)
        by_name = as_classifier(net, "fc3")(x)
        assert torch.equal(by_name, fc3["out"])
        torch.testing.assert_close(F.log_softmax(by_name, 1), log_p)
        assert torch.equal(as_classifier(net, lambda out: out[0].exp())(x), log_p.exp())
        d = DictNet()
        assert torch.equal(as_classifier(d, "scores")(x), d(x)["scores"])
    # The hook that reads a submodule lives for one forward pass only.
    assert not net.fc3._forward_hooks


def test_a_dict_key_comes_before_a_submodule_of_the_same_name():
    class Both(DictNet):
        def __init__(self):
            super().__init__()
            self.scores = nn.Linear(5, 2)

        def forward(self, x):
            h = self.body(x)
            return {"scores": h.mean(2), "other": self.scores(h.mean(2))}

    m, x = Both(), _x()
    with torch.no_grad():
        assert torch.equal(as_classifier(m, "scores")(x), m(x)["scores"])


def test_the_adapter_passes_parameters_mode_device_and_flow_layers_through():
    net = build()
    model = as_classifier(net, "fc3")
    assert isinstance(model, AdaptedClassifier) and model.wrapped is net and layer_root(model) is net
    assert layer_root(net) is net
    assert [p.data_ptr() for p in model.parameters()] == [p.data_ptr() for p in net.parameters()]
    assert not model.training  # as the wrapped module was
    model.train()
    assert net.training and net.fc3.training
    model.eval()
    assert not net.training
    assert as_classifier(TinyPointNetCls().train(), 0).training
    model.to(torch.float64)
    assert net.fc3.weight.dtype == torch.float64
    model.to(torch.float32)
    assert getattr(model, "flow_layers", None) is None
    net.flow_layers = LAYERS
    assert model.flow_layers == LAYERS
    # Copies and pickles carry no hook bound to the original (the sanity check copies, sweeps pickle).
    x = _x()
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.no_grad():
            twin.wrapped.fc3.weight.add_(1.0)
            assert not torch.equal(twin(x), model(x))
    assert json_class(model) == "TinyPointNetCls"


def json_class(model):
    import json

    desc = json.loads(describe_model(model))
    assert desc["logits"] == model.logits
    return desc["class"]


def test_layer_names_are_the_wrapped_modules_own():
    net = build()
    model = as_classifier(net, 0)
    x = _x()
    logits, acts = get_activations(model, x, LAYERS)
    assert set(acts) == set(LAYERS) and acts["feat.bn2"].shape == (3, 16, 20)
    assert logits.shape == (3, 4)
    with pytest.raises(ValueError, match=r"unknown layer names \['wrapped.feat.bn1'\] in TinyPointNetCls; "
                                         r"module names look like: feat, feat.stn"):
        ActivationRecorder(model, ["wrapped.feat.bn1"])


def test_bad_logits_specs_are_refused_with_what_the_output_holds():
    net, x = build(), _x()
    with pytest.raises(TypeError, match="logits must be an int"):
        as_classifier(net, 1.5)
    with pytest.raises(TypeError, match="takes an nn.Module"):
        as_classifier(lambda x: x, 0)
    with pytest.raises(ClassifierOutputError, match=r"logits=5 is out of range: TinyPointNetCls returned a tuple of 3 "
                                                    r"\(\(3, 4\), \(3, 3, 3\), NoneType\).*logits=0\)"):
        as_classifier(net, 5)(x)
    with pytest.raises(ValueError, match=r"logits='fc9' is neither a key of the output .*tuple of 3.* nor a submodule "
                                         r"of TinyPointNetCls \(names look like: feat, feat.stn"):
        as_classifier(net, "fc9")(x)
    with pytest.raises(ClassifierOutputError, match=r"logits=0 indexes a tuple output, but DictNet returned a dict "
                                                    r"with keys \['features', 'scores'\].*logits='scores'"):
        as_classifier(DictNet(), 0)(x)


def test_outputs_that_are_not_logits_say_how_to_wrap_the_model():
    x = _x()
    with torch.no_grad():
        with pytest.raises(ClassifierOutputError, match=r"the model returned a tuple of 3 \(\(3, 4\), \(3, 3, 3\), "
                                                        r"NoneType\) for 3 clouds; a classifier must return logits "
                                                        r"\(B, K\): wrap it: as_classifier\(model, logits=0\)") as err:
            classify(build(), x)
        assert err.value.fix == 0
        with pytest.raises(ClassifierOutputError, match=r"dict with keys \['features', 'scores'\].*"
                                                        r"as_classifier\(model, logits='scores'\)"):
            classify(DictNet(), x)
        with pytest.raises(ClassifierOutputError, match=r"tensor of shape \(3, 5, 20\) for 3 clouds, per-point "
                                                        r"scores.*logits=\.\.\.\) with an index"):
            classify(DictNet().body, x)
    with pytest.raises(ClassifierOutputError, match=r"returned a str for 2 clouds"):
        check_logits("logits", 2)
    with pytest.raises(ClassifierOutputError, match=r"tensor of shape \(4,\)"):
        check_logits(torch.zeros(4), 4)
    good = torch.zeros(2, 7)
    assert check_logits(good, 2) is good


def test_load_checkpoint_with_a_factory_or_a_whole_module(tmp_path):
    from flowam_fast.models import CheckpointError, load_checkpoint

    net, x = build(k=5), _x()
    torch.save({"epoch": 2, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "s.pt")
    torch.save(net, tmp_path / "whole.pt")
    with torch.no_grad():
        want = net(x)[0]
        for factory in (TinyPointNetCls, "tests.models.test_adapter:TinyPointNetCls"):
            loaded = load_checkpoint(tmp_path / "s.pt", factory=factory, k=5)
            assert type(loaded) is TinyPointNetCls and not loaded.training
            assert torch.equal(loaded(x)[0], want)
        assert torch.equal(load_checkpoint(tmp_path / "whole.pt", trusted=True)(x)[0], want)
    # Python's words: arguments, not options.
    with pytest.raises(CheckpointError, match=r"does not match TinyPointNetCls.*fc3.weight: checkpoint \(5, 8\) vs "
                                              r"model \(4, 8\)$"):
        load_checkpoint(tmp_path / "s.pt", factory=TinyPointNetCls)
    with pytest.raises(CheckpointError, match=r"does not match PointNet.*; pass arch= \(one of 'pointnet', 'dgcnn'.*"
                                              r"or factory= \(a callable that builds your module"):
        load_checkpoint(tmp_path / "s.pt")
    with pytest.raises(CheckpointError, match=r"pickles objects other than tensors \(tests.models.test_adapter."
                                              r"TinyPointNetCls\); pass trusted=True if you trust the file"):
        load_checkpoint(tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="pass arch= .* or factory= .*, not both"):
        load_checkpoint(tmp_path / "s.pt", arch="pointnet", factory=TinyPointNetCls)
    with pytest.raises(ValueError, match=r"holds a whole TinyPointNetCls, returned as it is: arch=, num_classes="):
        load_checkpoint(tmp_path / "whole.pt", trusted=True, num_classes=5)
    with pytest.raises(ValueError, match=r"factory 'tests.models.test_adapter:LAYERS' is a list, not a callable"):
        load_checkpoint(tmp_path / "s.pt", factory="tests.models.test_adapter:LAYERS")
    with pytest.raises(ValueError, match=r"factory 'tests.models.test_adapter:nothing': tests.models.test_adapter "
                                         r"has no attribute 'nothing'"):
        load_checkpoint(tmp_path / "s.pt", factory="tests.models.test_adapter:nothing")
    with pytest.raises(ValueError, match=r"factory test_load.*<locals>.<lambda> returned a dict, not an nn.Module"):
        load_checkpoint(tmp_path / "s.pt", factory=lambda: {})
