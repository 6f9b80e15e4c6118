"""The provenance block of the generated reports: the facts against direct reads of them, the
rendering, and the command line a report names."""
import os
import platform
from datetime import datetime, timezone

import torch

import flowam_fast
from flowam_fast import provenance


def test_machine_facts_are_this_machines():
    before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    f = provenance.machine_facts()
    assert f["cores"] == len(os.sched_getaffinity(0))
    assert (f["torch"], f["torch_cuda"], f["torch_threads"]) == (torch.__version__, torch.version.cuda,
                                                                 torch.get_num_threads())
    assert f["flowam_fast"] == flowam_fast.__version__ and f["python"] == platform.python_version()
    assert f["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    stamp = datetime.strptime(f["date_utc"], "%Y-%m-%d %H:%M UTC").replace(tzinfo=timezone.utc)
    assert before <= stamp <= datetime.now(timezone.utc)
    with open("/proc/cpuinfo") as cpuinfo:
        assert f"model name\t: {f['cpu']}" in cpuinfo.read()


def test_markdown_names_the_machine_and_ends_with_the_command():
    facts = {"cpu": "Some CPU", "cores": 16, "torch": "2.13.0", "torch_cuda": "12.8", "torch_threads": 8,
             "flowam_fast": "9.9", "python": "3.12.1", "date_utc": "2030-01-02 03:04 UTC", "gpu": "Some GPU"}
    assert provenance.markdown("make demo", facts).splitlines() == [
        "- Machine: Some CPU, 16 cores available; GPU: Some GPU",
        "- Software: flowam_fast 9.9, torch 2.13.0 (CUDA 12.8, 8 threads), Python 3.12.1",
        "- Date: 2030-01-02 03:04 UTC",
        "- Reproduce: `make demo`",
    ]
    cpu_only = provenance.markdown("x", dict(facts, torch_cuda=None, gpu=None))
    assert "GPU: none" in cpu_only and "(CPU build, 8 threads)" in cpu_only
    # Gathered now where no facts are given.
    assert f"torch {torch.__version__} " in provenance.markdown("x")


def test_invoked_command_is_the_cli_line_or_the_fallback():
    assert provenance.invoked_command("fb", ["/venv/bin/flowam-fast", "demo", "--out", "my dir"]) \
        == "flowam-fast demo --out 'my dir'"
    assert provenance.invoked_command("fb", ["/src/flowam_fast/cli/__main__.py", "bench", "--quick"]) \
        == "python -m flowam_fast.cli bench --quick"
    assert provenance.invoked_command("fb", ["/venv/bin/pytest", "-q", "tests"]) == "fb"
    assert provenance.invoked_command("fb", []) == "fb"
