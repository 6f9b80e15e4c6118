"""`flowam-fast bench`: the plumbing from the CLI to the benchmark scripts and the report, on
the smallest real suite (linear_max, --quick: a few seconds)."""
import pytest

from flowam_fast.pipelines import bench
from flowam_fast.cli import main
from flowam_fast.ops import backend

needs_kernels = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")


@needs_kernels
def test_bench_quick_prints_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert main(["bench", "--quick", "--only", "linear_max", "--threads", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    lines = printed.splitlines()
    assert lines[0].startswith("Machine: ") and "2 torch threads" in lines[0] and "torch " in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("| case |"))
    # linear_max rows add a GFLOP/s column, which the report picks up from the rows.
    assert "| speed-up |" in lines[header] and lines[header].endswith("| GFLOP/s |")
    body = [line for line in lines[header + 2:] if line.startswith("|")]
    assert len(body) == 4 and all("linear_max" in line and line.count("|") == lines[header].count("|") for line in body)
    speedups = [float(line.split("|")[4].strip().rstrip("x")) for line in body]
    assert all(s > 0 for s in speedups)


def test_bench_rejects_unknown_suites(capsys):
    assert main(["bench", "--only", "knn,nope", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "unknown benchmark suite(s) ['nope']" in err and "am_step" in err
    assert bench.parse_suites(None) == list(bench.SUITES) == bench.parse_suites("all")
    assert bench.parse_suites(" flow , knn") == ["flow", "knn"]


def test_every_suite_exists_with_rows():
    for name in bench.SUITES:
        assert (bench.benchmarks_dir() / f"bench_{name}.py").is_file(), name
        assert callable(bench._import(f"bench_{name}").rows), name


def test_table_collects_extra_columns():
    base = {"fast_ms": 1.0, "ref_ms": 3.0, "speedup": 3.0, "fast_mib": 0.0, "ref_mib": 2.0}
    rows = [{"name": "a", **base, "GB/s": "7"}, {"name": "b", **base, "GFLOP/s": "9"}]
    lines = bench.table(rows).splitlines()
    assert lines[0].endswith("| GB/s | GFLOP/s |")
    assert lines[2].endswith("| 7 |  |") and lines[3].endswith("|  | 9 |")


def test_a_failing_suite_is_reported_and_fails_the_run(monkeypatch, capsys):
    class Broken:
        @staticmethod
        def rows(quick=False):
            raise AssertionError("fast and reference disagree")

    real = bench._import
    monkeypatch.setattr(bench, "_import", lambda name: Broken if name == "bench_knn" else real(name))
    assert main(["bench", "--only", "knn", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "Failed:\n- bench_knn: AssertionError: fast and reference disagree" in out
