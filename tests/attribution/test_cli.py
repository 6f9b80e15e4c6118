"""`flowam-fast attribute` end to end on a tiny model: the outputs and their contents, and resume:
a run killed after a batch, then rerun, computes only what is missing and gives the results of
an uninterrupted run; a finished run reruns without computing anything."""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from flowam_fast.attribution import AttributionStore
from flowam_fast.cli import main
from flowam_fast.data import generate_shapes
from flowam_fast.models import PointNet, save_checkpoint
from flowam_fast.sweep.executors import KILL_HOOK
from tests.helpers import randomize

ROOT = Path(__file__).resolve().parents[2]
METHODS = "saliency,integrated-gradients,grad-cam,critical-points,occlusion"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("attr")
    generate_shapes(d / "data", train_per_class=1, test_per_class=3, num_points=64, classes=["cube", "cone"])
    torch.manual_seed(0)
    save_checkpoint(randomize(PointNet(2, width=0.125), seed=3), d / "model.pt")
    return d


def _args(inputs, out, *extra):
    return ["attribute", "--model", str(inputs / "model.pt"), "--data", str(inputs / "data"), "--out", str(out),
            "--methods", METHODS, "--num-points", "64", "--batch-size", "2", "--steps", "4", "--patches", "4",
            "--randomization-clouds", "2", "--views", "2", "--quiet", *extra]


def _scores(out):
    with h5py.File(out / "attribution.h5") as f:
        return {m: f["scores"][m][()] for m in f["scores"]}


def test_attribute_writes_store_json_report_and_views(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(inputs, out, "--limit", "5")) == 0
    printed = capsys.readouterr().out
    assert "5 clouds, 15 batches run, 0 reused" in printed  # 5 methods x 3 batches of at most 2
    store = AttributionStore.load(out / "attribution.h5")
    assert store.methods == METHODS.split(",") and store.indices.tolist() == [0, 1, 2, 3, 4]
    assert all(store.scores[m].shape == (5, 64) for m in store.methods)
    result = json.loads((out / "attribution.json").read_text())
    for m in store.methods:
        s = result["methods"][m]
        for key in ("deletion_area", "insertion_area", "random_deletion_area", "random_insertion_area"):
            assert 0 <= s[f"{key}_ci"][0] <= s[key] <= s[f"{key}_ci"][1] <= 1
    assert "completeness_error" in result["methods"]["integrated-gradients"]
    assert [st["stage"] for st in result["randomization"]["saliency"]][0] == "fc3"
    report = (out / "report.md").read_text()
    assert report.startswith("# flowam-fast attributions\n\n- Machine: ")
    assert "| integrated-gradients |" in report and "![curves](curves.png)" in report
    html = (out / "attribution.html").read_text()
    assert "<!DOCTYPE html>" in html and "cloud 0" in html
    for png in ("curves.png", "attribution.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_a_killed_run_resumes_without_recomputing(inputs, tmp_path, capsys):
    full, out = tmp_path / "full", tmp_path / "resumed"
    args = ["--methods", "integrated-gradients,occlusion", "--randomization-clouds", "0", "--views", "0"]
    assert main(_args(inputs, full, *args)) == 0
    capsys.readouterr()
    # The process computing batch 3 (of 2 methods x 3 batches) kills itself once it is done.
    env = {**os.environ, KILL_HOOK: f"3:{tmp_path / 'killed'}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "flowam_fast.cli", *_args(inputs, out, *args)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    finished = sorted((out / "shards").glob("*/*.h5"))
    assert len(finished) == 3 and not (out / "attribution.h5").exists()
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    assert main(_args(inputs, out, *args)) == 0
    assert "6 clouds, 3 batches run, 3 reused" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # the finished batches were not redone
    a, b = _scores(full), _scores(out)
    assert list(a) == ["integrated-gradients", "occlusion"] and all(np.array_equal(a[m], b[m]) for m in a)
    ja, jb = (json.loads((d / "attribution.json").read_text()) for d in (full, out))
    assert ja["methods"] == jb["methods"]
    # A finished run computes nothing again.
    assert main(_args(inputs, out, *args)) == 0
    assert "0 batches run, 6 reused" in capsys.readouterr().out


def test_other_settings_do_not_reuse_batches(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(inputs, out, "--limit", "2", "--methods", "saliency")) == 0
    assert main(_args(inputs, out, "--limit", "2", "--methods", "saliency", "--targets", "label")) == 0
    assert "1 batches run, 0 reused" in capsys.readouterr().out.splitlines()[-1]


def test_bad_arguments_are_refused(inputs, tmp_path, capsys):
    assert main(_args(inputs, tmp_path / "x", "--methods", "saliency,lime")) == 1
    assert "methods must be distinct names from saliency" in capsys.readouterr().err
    assert main(_args(inputs, tmp_path / "x", "--methods", "grad-cam", "--layer", "nope")) == 1
    assert "unknown layer names ['nope']" in capsys.readouterr().err
    assert main(_args(inputs, tmp_path / "x", "--methods", "occlusion", "--k", "65")) == 1
    assert "k must be an integer in [1, N=64]" in capsys.readouterr().err
