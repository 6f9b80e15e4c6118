"""Shared pieces of the sweep tests: two tiny models with their flows (a PointNet and a DGCNN at
width 0.125, random weights, three classes), spec files over them, one reference run of the
base spec, and a bitwise comparison of sweep outputs."""
import contextlib
import os
import shutil
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from flowam_fast.am import compute_flows
from flowam_fast.models import as_classifier, build_model, save_checkpoint
from flowam_fast.sweep import run_sweep
from tests.helpers import one_thread, random_data, randomize  # noqa: F401 (one_thread: an autouse fixture)
from tests.sweep import own_model

MODELS = {"pn": ("pointnet", {"width": 0.125}), "dg": ("dgcnn", {"width": 0.125, "k": 4, "emb_dims": 32})}
BASE = {"seeds": "0-1", "classes": "all", "methods": ["flowam", "vanilla"], "shard_size": 2, "steps": 3,
        "num_points": 32}
#: The base spec: 2 models x 2 methods x 3 classes x 2 seeds = 24 jobs in 12 shards.
BASE_UNITS = [f"{m}/{meth}" for m in MODELS for meth in BASE["methods"]]


@pytest.fixture(scope="session")
def inputs_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    data = random_data(num=24, n=64, k=3)
    for name, (arch, kw) in MODELS.items():
        torch.manual_seed(0)
        model = randomize(build_model(arch, num_classes=3, **kw))
        save_checkpoint(model, d / f"{name}.pt")
        compute_flows(model, data, quiet=True).save(d / f"{name}_flows.h5")
    return d


@pytest.fixture(scope="session")
def own_dir(tmp_path_factory) -> Path:
    """An own model's state_dict (own.pt, built by own_model.build) and its flows."""
    d = tmp_path_factory.mktemp("own")
    net = randomize(own_model.build())
    torch.save(net.state_dict(), d / "own.pt")
    compute_flows(as_classifier(net, 0), random_data(num=24, n=64, k=3), quiet=True).save(d / "own_flows.h5")
    return d


def write_own_spec(path: Path, own_dir: Path, **entry) -> Path:
    """A spec at `path` over the own model alone (flowam, seed 0, the three classes), with the
    [[models]] entry's extra keys `entry` (factory, logits, trusted)."""
    lines = ['classes = "all"', 'seeds = "0"', 'methods = ["flowam"]', "shard_size = 3", "[engine]", "steps = 3",
             "num_points = 32", "[[models]]", 'name = "own"', f'checkpoint = "{own_dir / "own.pt"}"',
             f'flows = "{own_dir / "own_flows.h5"}"', *(f"{k} = {_toml(v)}" for k, v in entry.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


OWN = {"factory": "tests.sweep.own_model:build", "logits": 0}


@pytest.fixture(scope="session")
def own_reference(own_dir, tmp_path_factory) -> Path:
    """A local run of the own model's spec (do not write into it)."""
    root = tmp_path_factory.mktemp("own_reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(write_own_spec(root / "spec.toml", own_dir, **OWN), root / "out", quiet=True)
    finally:
        torch.set_num_threads(threads)
    return root / "out"


def _toml(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_spec(path: Path, inputs_dir: Path, models=tuple(MODELS), engine_extra: str = "", **kw) -> Path:
    """A spec at `path` over the tiny models, with paths relative to the spec's folder."""
    o = {**BASE, **kw}
    rel = os.path.relpath(inputs_dir, path.parent)
    lines = [f"classes = {_toml(o['classes'])}", f"seeds = {_toml(o['seeds'])}", f"methods = {_toml(o['methods'])}",
             f"shard_size = {o['shard_size']}", "[engine]", f"steps = {o['steps']}",
             f"num_points = {o['num_points']}", engine_extra]
    for name in models:
        lines += ["[[models]]", f'name = "{name}"', f'checkpoint = "{rel}/{name}.pt"',
                  f'flows = "{rel}/{name}_flows.h5"']
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def reference(inputs_dir, tmp_path_factory) -> Path:
    """An uninterrupted local run of the base spec (do not write into it)."""
    root = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(write_spec(root / "spec.toml", inputs_dir), root / "out", quiet=True)
    finally:
        torch.set_num_threads(threads)
    return root / "out"


def copy_of(directory: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(directory, tmp_path / "copy"))


def store_jobs(path) -> list:
    with h5py.File(path, "r") as f:
        return list(zip(f["classes"][()].tolist(), f["seeds"][()].tolist()))


def assert_same_stores(a: Path, b: Path, units=BASE_UNITS) -> None:
    """Every dataset and attribute of each unit's store equal, bit for bit."""
    for unit in units:
        with h5py.File(a / f"{unit}.h5", "r") as fa, h5py.File(b / f"{unit}.h5", "r") as fb:
            assert set(fa) == set(fb), unit
            for name in fa:
                assert fa[name].dtype == fb[name].dtype and np.array_equal(fa[name][()], fb[name][()]), (unit, name)
            assert dict(fa.attrs) == dict(fb.attrs), unit
        jobs = store_jobs(b / f"{unit}.h5")
        assert jobs == sorted(set(jobs)), f"{unit}: duplicated or unordered (class, seed) jobs"


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail a test that runs past `seconds` instead of letting it hang the suite."""
    def expire(*_):
        raise TimeoutError(f"test ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
