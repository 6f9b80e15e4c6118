"""Where a generated report comes from: the machine and software it was made with, and the
command that makes it again. Every report that carries figures (the benchmark table, the GPU
check, the demo report) starts with `markdown(command)`, so its numbers can be read against
the hardware that produced them and reproduced.
"""
from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; what `platform` knows elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores_available() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_facts() -> dict:
    """The facts a report names, gathered now.

    Returns:
        A dict with "cpu" (model name), "cores" (available to this process), "torch" (version),
        "torch_cuda" (the CUDA version torch was built with, None for a CPU build),
        "torch_threads", "flowam_fast" (version), "python" (version), "date_utc"
        ("YYYY-MM-DD HH:MM UTC") and "gpu" (the name of CUDA device 0, None where torch sees
        no GPU).
    """
    import torch

    from . import __version__

    return {
        "cpu": cpu_model(),
        "cores": cores_available(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "flowam_fast": __version__,
        "python": platform.python_version(),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def markdown(command: str, facts: dict | None = None) -> str:
    """The provenance block of a report: a Markdown list naming the machine, the software and
    the date, ending with the command that reproduces the report.

    Args:
        command: the shell command that makes the report again, e.g. "flowam-fast bench --quick".
        facts: `machine_facts()`'s dict; gathered now where None.

    Returns:
        Four Markdown list items, without a trailing newline.
    """
    f = machine_facts() if facts is None else facts
    cuda = f"CUDA {f['torch_cuda']}" if f["torch_cuda"] else "CPU build"
    return "\n".join([
        f"- Machine: {f['cpu']}, {f['cores']} cores available; GPU: {f['gpu'] or 'none'}",
        f"- Software: flowam_fast {f['flowam_fast']}, torch {f['torch']} ({cuda}, {f['torch_threads']} threads), "
        f"Python {f['python']}",
        f"- Date: {f['date_utc']}",
        f"- Reproduce: `{command}`",
    ])


def invoked_command(fallback: str, argv: list | None = None) -> str:
    """The `flowam-fast` command line this process was started with, as a user would type it;
    `fallback` where the process is not the `flowam-fast` command (a library call, a test).

    Args:
        fallback: the command that reproduces the work when it was not started from the CLI.
        argv: the process's arguments (default: sys.argv).

    Returns:
        A shell-quoted command line.
    """
    argv = sys.argv if argv is None else argv
    if not argv:
        return fallback
    prog = Path(argv[0])
    if prog.name == "flowam-fast":
        head = ["flowam-fast"]
    elif prog.name == "__main__.py" and prog.parent.name == "cli" and prog.parent.parent.name == "flowam_fast":
        head = ["python", "-m", "flowam_fast.cli"]
    else:
        return fallback
    return shlex.join([*head, *argv[1:]])
