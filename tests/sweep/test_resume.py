"""Nothing lost, nothing duplicated: a driver killed with SIGKILL and rerun gives the stores of an
uninterrupted run; a changed spec is refused; added seeds and classes reuse the finished shards."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowam_fast.sweep import SpecError, run_sweep
from flowam_fast.sweep.executors import KILL_HOOK
from tests.sweep.conftest import (BASE_UNITS, OWN, assert_same_stores, copy_of, deadline, store_jobs, write_own_spec,
                                  write_spec)

ROOT = Path(__file__).resolve().parents[2]


def _driver(spec, out, **env):
    return subprocess.Popen([sys.executable, "-m", "flowam_fast.cli", "sweep", str(spec), "--out", str(out), "--quiet"],
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _shard_files(out):
    return [p for p in (out / "shards").glob("*/*/*.h5")] if (out / "shards").exists() else []


def test_driver_killed_with_sigkill_then_rerun(tmp_path, inputs_dir, reference):
    spec, out = write_spec(tmp_path / "spec.toml", inputs_dir), tmp_path / "out"
    with deadline(100):
        # 1: killed from outside the moment its first shard file appears.
        proc = _driver(spec, out)
        while not _shard_files(out) and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, proc.stdout.read()
        first = len(_shard_files(out))
        assert 1 <= first < 12
        # 2: kills itself in the middle of a later shard (computed, not yet written).
        marker = tmp_path / "killed"
        proc = _driver(spec, out, **{KILL_HOOK: f"{min(first + 2, 11)}:{marker}"})
        assert proc.wait() == -signal.SIGKILL, proc.stdout.read()
        assert marker.exists() and first < len(_shard_files(out)) < 12
        record = json.loads((out / "sweep.json").read_text())
        assert record["summary"]["reused"] == first
        # 3: finishes, reusing what the killed runs finished.
        summary = run_sweep(spec, out, quiet=True)
    assert first < summary["reused"] and summary["reused"] + summary["ran"] == 12 and len(_shard_files(out)) == 12
    assert_same_stores(reference, out)
    assert not list(out.glob("**/.*.tmp"))
    record = json.loads((out / "sweep.json").read_text())
    assert {s["state"] for s in record["shards"]} == {"done", "reused"} and record["summary"]["pending"] == 0


def test_rerun_of_a_finished_sweep_does_nothing(tmp_path, reference, inputs_dir):
    out = copy_of(reference, tmp_path)
    summary = run_sweep(write_spec(tmp_path / "spec.toml", inputs_dir), out, quiet=True)
    assert summary["ran"] == 0 and summary["reused"] == 12
    assert_same_stores(reference, out)


def test_changed_spec_is_refused_and_added_seeds_reuse_shards(tmp_path, inputs_dir, reference):
    out = copy_of(reference, tmp_path)
    spec = tmp_path / "spec.toml"
    for change, said in [({"steps": 4}, "pn/flowam: steps 3 -> 4"), ({"seeds": "0"}, "pn/flowam: seeds removed: [1]"),
                         ({"methods": ["flowam"]}, "pn/vanilla: no longer in the spec")]:
        with pytest.raises(SpecError) as e:
            run_sweep(write_spec(spec, inputs_dir, **change), out, quiet=True)
        assert said in str(e.value) and "--fresh" in str(e.value)
    # Another file under the same name is a change too.
    inputs = copy_of(inputs_dir, tmp_path / "other")
    (inputs / "dg_flows.h5").write_bytes((inputs / "dg_flows.h5").read_bytes() + b"\0")
    with pytest.raises(SpecError, match="dg/vanilla: the flows .* is not the file the sweep ran with"):
        run_sweep(write_spec(spec, inputs), out, quiet=True)
    assert_same_stores(reference, out)  # refused runs touch nothing

    # Seeds added: the 12 finished shards are kept, only the new jobs run.
    grown = write_spec(spec, inputs_dir, seeds="0-2")
    summary = run_sweep(grown, out, quiet=True)
    assert summary["reused"] == 12 and summary["jobs"] == 36 and summary["ran"] == 4 * 2  # 3 new jobs: 2 shards
    scratch = run_sweep(write_spec(tmp_path / "scratch.toml", inputs_dir, seeds="0-2"), tmp_path / "scratch",
                        quiet=True)
    assert scratch["ran"] == 4 * 5  # 9 jobs per unit in shards of 2
    assert_same_stores(tmp_path / "scratch", out)
    for unit in BASE_UNITS:
        assert store_jobs(out / f"{unit}.h5") == [(c, s) for c in range(3) for s in range(3)]

    # --fresh starts over with the changed spec.
    summary = run_sweep(write_spec(spec, inputs_dir, steps=4, methods=["vanilla"]), out, fresh=True, quiet=True)
    assert summary["reused"] == 0 and summary["ran"] == 2 * 3
    assert not (out / "pn" / "flowam.h5").exists() and (out / "pn" / "vanilla.h5").exists()


def test_added_classes_and_other_shard_size_reuse_shards(tmp_path, inputs_dir, reference):
    # The reference ran classes 0-2; a run of classes [0, 1] first, then all three, with
    # another shard size for the new part, matches it bit for bit.
    out = tmp_path / "out"
    first = run_sweep(write_spec(tmp_path / "a.toml", inputs_dir, classes=[0, "c1"]), out, quiet=True)
    assert first["ran"] == 8
    summary = run_sweep(write_spec(tmp_path / "a.toml", inputs_dir, shard_size=3), out, quiet=True)
    assert summary["reused"] == 8 and summary["ran"] == 4
    assert_same_stores(reference, out)


def test_changed_model_loading_is_refused(tmp_path, own_dir, own_reference):
    out = copy_of(own_reference, tmp_path)
    spec = tmp_path / "spec.toml"
    # The same file, the same logits even, loaded another way: the sweep cannot tell, so it refuses.
    for change, said in [({"logits": "net"}, "own/flowam: logits 0 -> 'net'"),
                         ({"trusted": True}, "own/flowam: trusted False -> True")]:
        with pytest.raises(SpecError) as e:
            run_sweep(write_own_spec(spec, own_dir, **{**OWN, **change}), out, quiet=True)
        assert said in str(e.value) and "--fresh" in str(e.value)
    summary = run_sweep(write_own_spec(spec, own_dir, **OWN), out, quiet=True)
    assert summary["ran"] == 0 and summary["reused"] == 1
    assert_same_stores(own_reference, out, units=["own/flowam"])
