"""The GPU check's report (flowam_fast/benchmarks/gpu_report.py), on the CPU: the report's
layout and provenance with stand-in suites, the targets table, and the script's answer on a
machine without a GPU."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowam_fast.benchmarks import gpu_report, suites

ROOT = Path(__file__).resolve().parents[2]
BASE = {"fast_ms": 1.0, "ref_ms": 6.0, "speedup": 6.0, "fast_mib": 10.0, "ref_mib": 100.0}


def test_the_report_carries_provenance_sections_and_failures(tmp_path, monkeypatch):
    def load(name):
        class Module:
            @staticmethod
            def rows(quick=False, device="cpu"):
                yield {"name": f"{name} case", **BASE}
                if name == "flow":
                    raise RuntimeError("out of memory")

        return Module

    monkeypatch.setattr(suites, "load", load)
    monkeypatch.setattr(gpu_report, "check_device", lambda device: "cpu")
    monkeypatch.setattr(gpu_report, "gpu_line", lambda: "GPU: stand-in")
    tests_log = tmp_path / "pytest.log"
    tests_log.write_text("...\n===== 12 passed in 3.0s =====\n\n")
    out = tmp_path / "gpu.md"
    messages = []
    rc = gpu_report.write_gpu_report(out, ["knn", "flow"], flowam=False, tests_log=tests_log,
                                     command="benchmarks/gpu_check.sh /tmp/x", log=messages.append)
    text = out.read_text()
    assert rc == 1 and text.startswith("# GPU check\n\n- Machine: ")
    assert "- Reproduce: `benchmarks/gpu_check.sh /tmp/x`\n\nGPU: stand-in\n\n" in text
    assert "GPU tests (`pytest -m cuda tests`): 12 passed in 3.0s" in text
    assert "## knn (" in text and "| knn case |" in text and "| flow case |" in text  # rows before the failure kept
    assert text.endswith("## Failed\n\n- flow: RuntimeError: out of memory\n")
    assert "(running)" not in text and messages[-1].startswith("flow: 1 rows in ")


def test_targets_table():
    name = "AM step logit, DGCNN (k=20, emb 1024) (B=32 N=1024)"
    rows = [{"name": f"{name} [cuda]", **BASE}, {"name": f"{name} [triton]", **BASE, "speedup": 4.0}]
    lines = gpu_report.targets(rows).splitlines()
    assert len(lines) == 2 + len(gpu_report.TARGETS) + 1  # this target has two rows, one per kernel backend
    met = [line for line in lines if line.startswith("| DGCNN AM step (logit), B=32 N=1024")]
    assert met == ["| DGCNN AM step (logit), B=32 N=1024: >= 5x plain, <= 1/5 its peak memory | cuda | 6.0x | "
                   "10 / 100 MiB (0.10) | yes |",
                   "| DGCNN AM step (logit), B=32 N=1024: >= 5x plain, <= 1/5 its peak memory | triton | 4.0x | "
                   "10 / 100 MiB (0.10) | NO |"]
    assert sum(line.endswith("| not measured | - | no |") for line in lines) == len(gpu_report.TARGETS) - 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without a GPU")
def test_the_script_says_no_gpu(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), "--out", str(tmp_path / "g.md")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "gpu_report: no CUDA device" in out.stderr
    assert not (tmp_path / "g.md").exists()
