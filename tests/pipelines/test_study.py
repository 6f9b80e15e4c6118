"""The faithfulness study (`flowam-fast study`) on a tiny demo-like directory: every check of the
trade-off with its calibration in one report, its AM runs saved one file each, and a study
killed part-way and run again repeats nothing finished and writes the same report."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowam_fast.am.autoencoder import load_or_train_autoencoder
from flowam_fast.cli import main
from flowam_fast.data import generate_shapes
from flowam_fast.evaluation.sanity import randomization_groups
from flowam_fast.models import load_checkpoint
from flowam_fast.pipelines import study
from tests.sweep.conftest import deadline

#: 3 classes x 3 seeds a side, 199 permutations: enough for Holm over a PointNet's 8 stages.
TINY = dict(num_classes=3, seeds=3, steps=2, flow_weights=(0.0, 10.0), variants=("cascading",), n_perm=199,
            workers=1, quiet=True, calibration={"draws": 20, "power_draws": 5, "n_perm": 99})


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    generate_shapes(d / "data", train_per_class=4, test_per_class=3, num_points=96, classes=["sphere", "cube", "cone"])
    for name, seed in (("model.pt", 0), ("evaluator.pt", 1)):
        assert main(["train", "--data", str(d / "data"), "--epochs", "1", "--num-points", "64", "--width", "0.125",
                     "--seed", str(seed), "--out", str(d / name), "--quiet"]) == 0
    assert main(["flows", "--model", str(d / "model.pt"), "--data", str(d / "data"), "--num-points", "64",
                 "--out", str(d / "flows.h5"), "--quiet"]) == 0
    load_or_train_autoencoder(d / "data", None, cache_dir=d, num_points=64, epochs=1, quiet=True)
    return d


@pytest.fixture(scope="module")
def studied(demo_dir, tmp_path_factory):
    """One study from scratch, with the AM runs it made."""
    out = tmp_path_factory.mktemp("study") / "study"
    calls = []
    real = study._run_task
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study, "_run_task", lambda *a: calls.append(a[1:3]) or real(*a))
        res = study.run_study(out, demo_dir=demo_dir, **TINY)
    return out, res, calls


def _counting(monkeypatch):
    calls = []
    real = study._run_task
    monkeypatch.setattr(study, "_run_task", lambda *a: calls.append(a[1:3]) or real(*a))
    return calls


def test_study_report(demo_dir, studied):
    out, res, calls = studied
    # FlowAM at 0 and 10 (0 is regularized AM), AE-latent AM and the random control; each
    # objective's trained explanations and one run per randomization (the PointNet's 8 blocks).
    stages = len(randomization_groups(load_checkpoint(demo_dir / "model.pt")))
    assert [r["label"] for r in res.methods] == ["flowam w=0", "flowam w=10", "ae-latent", "random"]
    assert len(calls) == 4 * (1 + stages) and stages == 8
    assert not any(s["changed"] for s in res.method("random")["stages"])
    assert res.calibration["false_positive"]["tests"] == 4 * 20
    report = json.loads((out / "sanity.json").read_text())
    assert report["tradeoff"]["points"][0]["flow_weight"] == 0.0 and report["calibration"]["detectable"]
    md = (out / "sanity.md").read_text()
    assert md.startswith("# Faithfulness study") and "## Calibration" in md and "## Flow weight trade-off" in md
    assert "- Reproduce: `" in md and "- Machine: " in md  # the provenance header
    assert (out / "tradeoff.png").exists() and (out / "sanity.png").exists()
    assert len(list((out / "runs").glob("*/*.h5"))) == len(calls)


def test_study_inputs_and_errors(demo_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished demo directory"):
        study.demo_inputs(tmp_path)
    with pytest.raises(ValueError, match="missing: evaluator, autoencoder"):
        study.run_study(tmp_path / "s", model=demo_dir / "model.pt", flows=demo_dir / "flows.h5",
                        data=demo_dir / "data")
    with pytest.raises(ValueError, match="use at least 3 seeds per side"):
        study.run_study(tmp_path / "s", demo_dir=demo_dir, **dict(TINY, seeds=2))
    assert not (tmp_path / "s" / "runs").exists()  # refused before any run


def test_study_cli(demo_dir, studied, tmp_path, monkeypatch):
    """The command runs the same study as the library (here on the finished runs of the one
    above: it makes none)."""
    out = tmp_path / "cli"
    shutil.copytree(studied[0] / "runs", out / "runs")
    calls = _counting(monkeypatch)
    assert main(["study", "--demo-dir", str(demo_dir), "--out", str(out), "--num-classes", "3", "--seeds", "3",
                 "--steps", "2", "--flow-weights", "0,10", "--variants", "cascading", "--permutations", "199",
                 "--workers", "1", "--calibration-draws", "10", "--quiet"]) == 0
    assert calls == []
    methods = json.loads((out / "sanity.json").read_text())["methods"]
    assert methods == studied[1].methods
    assert main(["study", "--demo-dir", str(tmp_path / "nothing"), "--out", str(out)]) == 1


def test_a_study_killed_with_sigkill_repeats_nothing_finished(demo_dir, studied, tmp_path, monkeypatch):
    """The command killed with SIGKILL part-way through its runs, then run again: the runs it
    finished are kept (each is saved atomically when it finishes), only the others are made,
    and the report is the uninterrupted study's."""
    out = tmp_path / "killed"
    cli = ["study", "--demo-dir", str(demo_dir), "--out", str(out), "--num-classes", "3", "--seeds", "3",
           "--steps", "2", "--flow-weights", "0,10", "--variants", "cascading", "--permutations", "199",
           "--workers", "1", "--quiet"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "flowam_fast.cli", *cli], env=env)
    try:
        with deadline(240):
            while len(list(out.glob("runs/*/*.h5"))) < 3 and proc.poll() is None:
                time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    finished = len(list(out.glob("runs/*/*.h5")))
    total = len(studied[2])
    assert proc.returncode == -signal.SIGKILL and 3 <= finished < total and not (out / "sanity.json").exists()
    calls = _counting(monkeypatch)
    result = study.run_study(out, demo_dir=demo_dir, **TINY)
    assert len(calls) == total - finished
    assert result.methods == studied[1].methods and result.tradeoff == studied[1].tradeoff
    first = studied[0]
    assert json.loads((out / "sanity.json").read_text()) == json.loads((first / "sanity.json").read_text())
    md, again = (first / "sanity.md").read_text(), (out / "sanity.md").read_text()
    assert again[again.index("| method |"):] == md[md.index("| method |"):]  # all but the provenance header
