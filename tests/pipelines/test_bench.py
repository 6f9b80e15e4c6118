"""`flowam-fast bench`: the CLI, the suites as package modules, the report and its provenance,
progress and the report written as the run goes; the real suite run is linear_max --quick
(a few seconds)."""
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flowam_fast
from flowam_fast.benchmarks import suites
from flowam_fast.benchmarks.common import table
from flowam_fast.cli import main
from flowam_fast.ops import backend
from flowam_fast.pipelines.bench import run_bench

needs_kernels = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")
BASE = {"fast_ms": 1.0, "ref_ms": 3.0, "speedup": 3.0, "fast_mib": 0.0, "ref_mib": 2.0}


@needs_kernels
def test_bench_quick_prints_writes_and_shows_progress(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert main(["bench", "--quick", "--only", "linear_max", "--threads", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert printed == out.read_text()
    lines = printed.splitlines()
    assert lines[0] == "# flowam-fast benchmarks"
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    assert f"- Software: flowam_fast {flowam_fast.__version__}, torch {torch.__version__} ({build}, 2 threads), " in printed
    # Run from a test, not the flowam-fast script: the report names the equivalent command.
    assert f"- Reproduce: `flowam-fast bench --quick --only linear_max --threads 2 --out {out}`" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("| case |"))
    # linear_max rows add a GFLOP/s column, which the report picks up from the rows.
    assert "| speed-up |" in lines[header] and lines[header].endswith("| GFLOP/s |")
    body = [line for line in lines[header + 2:] if line.startswith("|")]
    assert len(body) == 4 and all("linear_max" in line and line.count("|") == lines[header].count("|") for line in body)
    assert all(float(line.split("|")[4].strip().rstrip("x")) > 0 for line in body)
    assert "Incomplete" not in printed and "Failed" not in printed
    # Progress: one line per case as it finishes, then the suite's.
    progress = captured.err.splitlines()
    assert len(progress) == 5 and all(p.startswith("[bench] linear_max: linear_max ") for p in progress[:4])
    assert progress[4].startswith("[bench] linear_max: 4 cases in ")


def test_bench_rejects_unknown_suites(capsys):
    assert main(["bench", "--only", "knn,nope", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "unknown benchmark suite(s) ['nope']" in err and "am_step" in err
    assert suites.parse_suites(None) == list(suites.SUITES) == suites.parse_suites("all")
    assert suites.parse_suites(" flow , knn") == ["flow", "knn"]
    with pytest.raises(ValueError, match="unknown benchmark suite 'nope'"):
        suites.load("nope")


def test_every_suite_is_a_package_module_yielding_rows():
    package = Path(flowam_fast.__file__).parent / "benchmarks"
    for name in suites.SUITES:
        module = suites.load(name)
        assert module.__name__ == f"flowam_fast.benchmarks.{name}"
        assert Path(module.__file__).parent == package, name
        assert inspect.isgeneratorfunction(module.rows), name


def test_the_command_module_does_not_import_torch():
    code = "import sys, flowam_fast.cli.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_table_collects_extra_columns():
    rows = [{"name": "a", **BASE, "GB/s": "7"}, {"name": "b", **BASE, "GFLOP/s": "9"}]
    lines = table(rows).splitlines()
    assert lines[0].endswith("| GB/s | GFLOP/s |")
    assert lines[2].endswith("| 7 |  |") and lines[3].endswith("|  | 9 |")


class _FakeSuites:
    """Stand-in suites: "two" yields rows a and b, checking the report on disk in between;
    "broken" yields c, then fails as an output check would."""

    def __init__(self, out):
        self.out, self.seen = out, []

    def load(self, name):
        fake = self

        class Module:
            @staticmethod
            def rows(quick=False, device="cpu"):
                if name == "two":
                    yield {"name": "a", **BASE}
                    fake.seen.append(fake.out.read_text())
                    yield {"name": "b", **BASE}
                else:
                    yield {"name": "c", **BASE}
                    fake.seen.append(fake.out.read_text())
                    raise AssertionError("fast and reference disagree\n(details)")

        return Module


def test_the_report_is_rewritten_after_each_case_and_a_failure_keeps_its_rows(tmp_path, monkeypatch):
    out = tmp_path / "r.md"
    fake = _FakeSuites(out)
    monkeypatch.setattr(suites, "load", fake.load)
    messages = []
    text, failures = run_bench(["two", "broken"], out=out, command="flowam-fast bench --only two,broken",
                               log=messages.append)
    # After a's row the file holds it and says what is still to come.
    assert "| a |" in fake.seen[0] and "| b |" not in fake.seen[0]
    assert "Incomplete: not yet measured: two, broken." in fake.seen[0]
    assert "| b |" in fake.seen[1] and "| c |" in fake.seen[1] and "not yet measured: broken." in fake.seen[1]
    assert failures == ["broken: AssertionError: fast and reference disagree"]
    assert out.read_text() == text and "Incomplete" not in text
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "case" not in line] \
        == ["a", "b", "c"]
    assert text.endswith("Failed:\n- broken: AssertionError: fast and reference disagree\n")
    assert text.splitlines()[5] == "- Reproduce: `flowam-fast bench --only two,broken`"
    assert messages[-1] == "[bench] broken: FAILED broken: AssertionError: fast and reference disagree"
    assert sum(m.startswith("[bench] two: ") for m in messages) == 3


def test_a_stopped_run_keeps_what_it_measured(tmp_path, monkeypatch):
    out = tmp_path / "r.md"

    def load(name):
        class Module:
            @staticmethod
            def rows(quick=False, device="cpu"):
                yield {"name": "a", **BASE}
                raise KeyboardInterrupt

        return Module

    monkeypatch.setattr(suites, "load", load)
    with pytest.raises(KeyboardInterrupt):
        run_bench(["knn", "flow"], out=out)
    text = out.read_text()
    assert "| a |" in text and "Incomplete: not yet measured: knn, flow." in text
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_a_failing_suite_fails_the_command(monkeypatch, capsys):
    class Broken:
        @staticmethod
        def rows(quick=False, device="cpu"):
            raise AssertionError("fast and reference disagree")
            yield  # a generator, as the suites are

    monkeypatch.setattr(suites, "load", lambda name: Broken)
    assert main(["bench", "--only", "knn", "--quiet"]) == 1
    assert "Failed:\n- knn: AssertionError: fast and reference disagree" in capsys.readouterr().out


@needs_kernels
def test_am_step_quick_rows_cover_pointnet2_and_agree(monkeypatch):
    from flowam_fast.benchmarks import am_step

    pointnet2 = [case for case in am_step.QUICK_CASES if case[0].startswith("pointnet2")]
    assert [arch for arch, _, _ in pointnet2] == ["pointnet2_ssg_demo", "pointnet2_msg_demo"]
    monkeypatch.setattr(am_step, "QUICK_CASES", pointnet2)
    checked = []
    check_float64 = am_step.check_float64

    def spy(problem, objective, clouds, min_cosine):
        check_float64(problem, objective, clouds, min_cosine)
        checked.append((type(problem.model).__name__, objective, clouds, min_cosine))

    monkeypatch.setattr(am_step, "check_float64", spy)
    assert list(am_step.rows(quick=True)) == []  # the pointnet2 suite runs these
    rows = list(am_step.rows(quick=True, family=("pointnet2",)))
    assert [r["name"].split(" [")[0] for r in rows] == [
        f"AM step {objective}, PointNet++ {kind} (demo sizes) (B={B} N={N})"
        for (_, B, N), kind in zip(pointnet2, ("SSG", "MSG")) for objective in am_step.OBJECTIVES]
    # Every row passed the float64 check on all its clouds at PointNet++'s cosine first.
    models = ("PointNet2SSG", "PointNet2MSG")
    assert checked == [(model, objective, B, 0.9999) for (_, B, _), model in zip(pointnet2, models)
                       for objective in am_step.OBJECTIVES]
    for row in rows:
        assert float(row["float32 min grad cosine"]) >= am_step.GRAD_MIN_COSINE and row["speedup"] > 0


def test_am_step_agreement_holds_pointnet2_gradients_to_its_cosine():
    from flowam_fast.benchmarks import am_step

    torch.manual_seed(0)
    logits, loss, grad = torch.randn(2, 40), torch.randn(2), torch.randn(2, 64, 3)
    tilted = grad.clone()
    noise = torch.randn(64, 3)
    tilted[1] += 0.02 * grad[1].norm() * noise / noise.norm()  # cosine about 1 - 2e-4 on cloud 1
    cosine = am_step.grad_cosine(tilted, grad)
    assert cosine[0] > 1 - 1e-12 and 0.999 < cosine[1] < 0.9999
    fast, ref = (logits, loss, tilted), (logits, loss, grad)
    assert am_step.agreement(fast, ref).tolist() == [True, True]
    assert am_step.agreement(fast, ref, min_cosine=am_step.required_cosine("pointnet2_msg")).tolist() == [True, False]
    assert am_step.required_cosine("pointnet2_ssg") == 0.9999
    assert am_step.required_cosine("dgcnn") == am_step.GRAD_MIN_COSINE


def test_pointnet2_quick_rows_check_every_op_against_its_reference(monkeypatch):
    from flowam_fast.benchmarks import am_step, pointnet2 as suite

    monkeypatch.setattr(am_step, "QUICK_CASES", [])  # the AM steps: the test above
    # `compare` asserts each fused output against the reference before timing it.
    rows = list(suite.rows(quick=True))
    names = [r["name"] for r in rows]
    for op in ("farthest_point_sample", "ball_query", "group_gather fwd+bwd", "group_linear_max fwd+bwd"):
        assert any(n.startswith(op) for n in names), op
    assert len(rows) == 2 * len(suite.BALLS) + 2 * len(suite.GATHER) + 2 * len(suite.GROUP_MAX)


def test_pointnet2_checks_refuse_wrong_indices():
    from flowam_fast.benchmarks import pointnet2 as suite

    idx = torch.arange(6).view(1, 2, 3)
    suite._equal(idx, idx.clone())
    with pytest.raises(AssertionError, match="indices differ"):
        suite._equal(idx, idx.flip(-1))
