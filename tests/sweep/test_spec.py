"""The sweep spec and the checks that run before any long work: bad specs and bad inputs fail
at once, with their reason, and leave no shard behind."""
import json
import re
import time

import pytest
import torch

from flowam_fast.cli import main
from flowam_fast.models import CheckpointError
from flowam_fast.sweep import SpecError, load_spec, parse_spec, run_sweep
from flowam_fast.sweep.inputs import unit_digest
from flowam_fast.sweep.spec import DEFAULT_LOADING, OPTION_TYPES, engine_parameters
from tests.sweep.conftest import OWN, store_jobs, write_own_spec, write_spec

MODEL = [{"name": "m", "checkpoint": "m.pt", "flows": "f.h5"}]


def test_every_engine_option_is_a_flowam_option():
    assert set(OPTION_TYPES) - {"batch_size"} == engine_parameters()


def test_spec_parsing(tmp_path, inputs_dir):
    spec = load_spec(write_spec(tmp_path / "sub" / "spec.toml", inputs_dir, seeds="0-2,7", classes=[0, "c2"],
                                engine_extra="[engine.vanilla]\nsteps = 2"))
    assert spec.seeds == [0, 1, 2, 7] and spec.classes == "0,c2" and spec.shard_size == 2
    assert spec.models[0].checkpoint == (inputs_dir / "pn.pt").resolve()  # relative to the spec's folder
    assert spec.options("flowam")["steps"] == 3 and spec.options("vanilla")["steps"] == 2
    assert parse_spec({"seeds": [3, 1, 3], "methods": ["vanilla"], "models": MODEL}).seeds == [3, 1]
    assert parse_spec({"seeds": "0", "methods": ["vanilla"], "models": MODEL}).shard_size == 16


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown key(s) ['colour'] in the spec"),
    ({"methods": ["flowam", "deepdream"]}, "unknown method(s) ['deepdream']"),
    ({"methods": []}, "methods must be a non-empty list"),
    ({"seeds": 5}, "seeds must be a range string"),
    ({"seeds": "9-3"}, "empty seed range"),
    ({"seeds": [-1]}, "seeds must be in 0.."),
    ({"classes": [True]}, "classes must be"),
    ({"shard_size": 0}, "shard_size must be a positive integer"),
    ({"engine": {"stepz": 3}}, "unknown key(s) ['stepz'] in [engine]"),
    ({"engine": {"steps": "many"}}, "[engine] steps must be int"),
    ({"engine": {"clamp": 1}}, "[engine] clamp must be bool"),
    ({"engine": {"regularized": {"steps": 3}}}, "does not run"),
    ({"models": [{"name": "a/b", "checkpoint": "m.pt", "flows": "f.h5"}]}, "directory names"),
    ({"models": MODEL + MODEL}, "two models are named 'm'"),
    ({"models": [{"name": "m", "flows": "f.h5"}]}, 'needs checkpoint = "..."'),
    ({"models": [{**MODEL[0], "weights": "w.pt"}]}, "unknown key(s) ['weights'] in models[0] ('m')"),
    ({"methods": ["ae-latent"]}, "'ae-latent' needs autoencoder"),
    ({"models": [{**MODEL[0], "factory": "nets.build"}]}, 'factory must name a callable as "package.module:name"'),
    ({"models": [{**MODEL[0], "factory": "nets:build", "arch": "pointnet"}]}, "arch (a built-in architecture) or"),
    ({"models": [{**MODEL[0], "logits": True}]}, "logits must be an index into the output (0)"),
    ({"models": [{**MODEL[0], "logits": 1.5}]}, "logits must be an index"),
    ({"models": [{**MODEL[0], "trusted": "yes"}]}, "trusted must be true or false, got 'yes'"),
])
def test_bad_specs_are_refused_with_the_reason(change, message):
    raw = {"seeds": "0-1", "methods": ["flowam"], "models": MODEL, **change}
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert message in str(e.value)


def _fails_fast(spec, out, exc_type, message):
    t = time.perf_counter()
    with pytest.raises(exc_type) as e:
        run_sweep(spec, out, quiet=True)
    assert message in str(e.value), str(e.value)
    assert not (out / "shards").exists() and time.perf_counter() - t < 30
    return str(e.value)


def test_bad_inputs_fail_before_any_work(tmp_path, inputs_dir):
    out = tmp_path / "out"
    # A checkpoint that is no checkpoint.
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    text = write_spec(tmp_path / "spec.toml", inputs_dir).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(re.sub(r'checkpoint = ".*?/pn.pt"', 'checkpoint = "junk.pt"', text))
    msg = _fails_fast(bad, out, CheckpointError, "cannot read checkpoint")
    assert "model 'pn'" in msg and "junk.pt" in msg
    # A missing flows file.
    bad.write_text(text.replace("pn_flows.h5", "nowhere.h5"))
    _fails_fast(bad, out, FileNotFoundError, "flows file not found")
    # Flows of another model: the DGCNN's flows given to the PointNet.
    bad.write_text(text.replace("pn_flows.h5", "dg_flows.h5"))
    msg = _fails_fast(bad, out, SpecError, "model 'pn': flows")
    assert "do not fit checkpoint" in msg
    # An unknown class, by name and by index.
    _fails_fast(write_spec(bad, inputs_dir, classes=[0, "zebra"]), out, ValueError, "unknown class 'zebra'")
    _fails_fast(write_spec(bad, inputs_dir, classes=[7]), out, ValueError, "unknown class 7")
    # An engine option the engine refuses.
    _fails_fast(write_spec(bad, inputs_dir, engine_extra='init = "gaussian"'), out, SpecError, "unknown init")
    _fails_fast(write_spec(bad, inputs_dir, num_points=3), out, SpecError, "num_points")


def test_cli_reports_bad_input_without_a_traceback(tmp_path, inputs_dir, capsys):
    spec = write_spec(tmp_path / "spec.toml", inputs_dir, classes=["zebra"])
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "flowam-fast sweep: error:" in err and "unknown class 'zebra'" in err
    assert main(["sweep", str(tmp_path / "none.toml"), "--out", str(tmp_path / "out")]) == 1
    assert "sweep spec not found" in capsys.readouterr().err


def test_unknown_executor_and_device(tmp_path, inputs_dir):
    spec = write_spec(tmp_path / "spec.toml", inputs_dir)
    with pytest.raises(ValueError, match="unknown executor 'slurm'"):
        run_sweep(spec, tmp_path / "out", executor="slurm")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        run_sweep(spec, tmp_path / "out", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no GPU"):
            run_sweep(spec, tmp_path / "out", device="cuda")


def test_own_model_entries_parse_with_their_loading():
    own = {**MODEL[0], "factory": "nets:build", "logits": "fc3", "trusted": True}
    spec = parse_spec({"seeds": "0", "methods": ["flowam"], "models": [own, {**MODEL[0], "name": "n"}]})
    assert spec.models[0].loading() == {"factory": "nets:build", "logits": "fc3", "trusted": True}
    assert spec.models[1].loading() == DEFAULT_LOADING
    assert spec.to_dict()["models"][0]["logits"] == "fc3"
    # A built-in model's shard names are those it had before loading settings existed; any
    # other loading names other shards.
    files = {"checkpoint": {"path": "m.pt", "sha256": "ab"}}
    plain = unit_digest("{}", {"steps": 3}, files)
    assert unit_digest("{}", {"steps": 3}, files, DEFAULT_LOADING) == plain
    digests = {unit_digest("{}", {"steps": 3}, files, {**DEFAULT_LOADING, **change})
               for change in ({"logits": 0}, {"logits": "0"}, {"factory": "a:b"}, {"trusted": True})}
    assert len(digests) == 4 and plain not in digests


def test_an_own_model_runs_from_its_factory(own_reference, own_dir):
    record = json.loads((own_reference / "sweep.json").read_text())
    assert record["units"]["own/flowam"]["loading"] == {**DEFAULT_LOADING, **OWN}
    assert record["spec"]["models"][0]["factory"] == OWN["factory"] and record["summary"]["done"] == 1
    assert store_jobs(own_reference / "own" / "flowam.h5") == [(0, 0), (1, 0), (2, 0)]


def test_an_own_model_without_logits_is_told_what_to_set(tmp_path, own_dir):
    spec = write_own_spec(tmp_path / "spec.toml", own_dir, factory=OWN["factory"])
    msg = _fails_fast(spec, tmp_path / "out", SpecError, "set logits = 0 in its [[models]] entry")
    assert "model 'own'" in msg
    # Without the factory the state_dict is no built-in architecture's; the error names the fix.
    spec = write_own_spec(tmp_path / "spec.toml", own_dir, logits=0)
    assert "factory=" in _fails_fast(spec, tmp_path / "out", CheckpointError, "model 'own'")
