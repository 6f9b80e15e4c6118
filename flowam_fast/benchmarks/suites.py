"""The benchmark suites by name, and the loop that runs them and reports as it goes."""
from __future__ import annotations

import importlib
import time
import traceback

#: Suites in the order of the reports; each is the module flowam_fast.benchmarks.<name>.
SUITES = ("knn", "edge_max", "linear_max", "pointnet2", "flow", "am_step", "attribution")


def parse_suites(spec: str | None) -> list:
    """Suite names from a comma-separated list.

    Args:
        spec: e.g. "knn,am_step"; None or "all" for every suite.

    Returns:
        The names, in the order given.

    Raises:
        ValueError: a name is not a suite, or the list is empty.
    """
    if spec is None or spec.strip() == "all":
        return list(SUITES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise ValueError(f"unknown benchmark suite(s) {unknown or [spec]}; choose from {', '.join(SUITES)} or all")
    return names


def load(name: str):
    """The module of suite `name` (it has `rows(quick, device)`)."""
    if name not in SUITES:
        raise ValueError(f"unknown benchmark suite {name!r}; choose from {', '.join(SUITES)}")
    return importlib.import_module(f"{__package__}.{name}")


def run_suites(suites, quick: bool = False, device="cpu", on_row=None, on_suite=None, tracebacks: bool = False):
    """Run the named suites in order.

    A suite that raises (an output check that fails, memory running out) is recorded as a
    failure; the rows it measured before are kept and the other suites still run.

    Args:
        suites: suite names (`parse_suites`).
        quick: small sizes, every suite and its output checks still exercised (a smoke run).
        device: "cpu" (the C++ kernels) or a CUDA device (the CUDA and Triton kernels).
        on_row: called as on_row(suite, row) after each case, so a long run shows and keeps
            its results as they come.
        on_suite: called as on_suite(suite, rows, seconds, failure) after each suite, with its
            rows and failure None, or the failure's one-line description.
        tracebacks: print a failed suite's traceback to stderr too.

    Returns:
        (rows, failures): every row measured, in order, and one line per failed suite,
        "<suite>: <error type>: <message>".
    """
    rows, failures = [], []
    for name in suites:
        t0, part, failure = time.perf_counter(), [], None
        try:
            for row in load(name).rows(quick=quick, device=device):
                part.append(row)
                rows.append(row)
                if on_row:
                    on_row(name, row)
        except Exception as exc:  # noqa: BLE001 - reported; the caller fails the run at the end
            failure = f"{name}: {type(exc).__name__}: {exc}".splitlines()[0]
            failures.append(failure)
            if tracebacks:
                traceback.print_exc()
        if on_suite:
            on_suite(name, part, time.perf_counter() - t0, failure)
    return rows, failures
