"""The benchmark report: every suite of flowam_fast.benchmarks (the fused ops and the
end-to-end AM steps) in one Markdown table, under the provenance block that names the machine
and the command that reproduces it. What `flowam-fast bench` and `benchmarks/run_all.py` run.
"""
from __future__ import annotations

from ..atomic import atomic_path
from ..benchmarks.common import table
from ..benchmarks.suites import run_suites
from ..provenance import machine_facts, markdown

TITLE = "# flowam-fast benchmarks"
METHOD = ("Times are medians; speed-up = reference / fast, both in one process on the same inputs after "
          "checking that the outputs agree. Peak memory is the resident memory above the starting level "
          "(peak allocated GPU memory on a GPU).")


def report(rows, failures=(), command: str = "flowam-fast bench", facts: dict | None = None, pending=()) -> str:
    """The Markdown report of a benchmark run, finished or not.

    Args:
        rows: the measured rows (`common.compare`'s dicts).
        failures: one line per failed suite (`suites.run_suites`).
        command: the command that reproduces the report.
        facts: `provenance.machine_facts()`, gathered now where None.
        pending: suites not measured yet; a report with some says it is incomplete.

    Returns:
        The report's text, ending with a newline.
    """
    text = f"{TITLE}\n\n{markdown(command, facts)}\n\n{METHOD}\n\n{table(rows)}\n"
    if pending:
        text += f"\nIncomplete: not yet measured: {', '.join(pending)}.\n"
    if failures:
        text += "\nFailed:\n" + "".join(f"- {f}\n" for f in failures)
    return text


def run_bench(suites, quick: bool = False, device="cpu", out=None, command: str = "flowam-fast bench", log=None,
              tracebacks: bool = False):
    """Run the suites and build their report, rewriting `out` after every case.

    Args:
        suites: suite names (`suites.parse_suites`).
        quick: small sizes (a smoke run), every suite and output check still exercised.
        device: "cpu" or a CUDA device.
        out: the Markdown file to write, atomically after each case and suite, so a run that is
            stopped keeps what it measured (and says what it had not); None writes nothing.
        command: the command that reproduces the report, for its provenance block.
        log: called with a one-line message as each case and suite finishes (progress).
        tracebacks: print a failed suite's traceback to stderr too.

    Returns:
        (text, failures): the final report and the failed suites' lines (empty when all passed).
    """
    facts = machine_facts()
    rows, failures, pending = [], [], list(suites)

    def write():
        if out is not None:
            with atomic_path(out) as tmp:
                tmp.write_text(report(rows, failures, command, facts, pending))

    def on_row(suite, row):
        rows.append(row)
        if log:
            log(f"[bench] {suite}: {row['name']}: fast {row['fast_ms']:.2f} ms, reference {row['ref_ms']:.2f} ms, "
                f"{row['speedup']:.1f}x")
        write()

    def on_suite(suite, part, seconds, failure):
        pending.remove(suite)
        if failure:
            failures.append(failure)
        if log:
            done = f"FAILED {failure}" if failure else f"{len(part)} cases in {seconds:.0f} s"
            log(f"[bench] {suite}: {done}")
        write()

    write()
    run_suites(suites, quick=quick, device=device, on_row=on_row, on_suite=on_suite, tracebacks=tracebacks)
    return report(rows, failures, command, facts), failures
