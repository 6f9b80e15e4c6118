"""The benchmark suites: each fused op and the end-to-end AM step, fast path against the
reference path, in one process on the same inputs after checking that their outputs agree.

- `common`: timing, peak memory, the comparison of one case and the Markdown table.
- one module per suite (`suites.SUITES`): `knn`, `edge_max`, `linear_max`, `flow`, `am_step`,
  each with `rows(quick, device)` yielding one row per case as it is measured.
- `suites`: runs suites in order, reporting each case and suite as it finishes.
- `flowam_run`: one FlowAM run end to end (classes x seeds jobs in one batch).
- `gpu_report`: the GPU check's Markdown report (benchmarks/gpu_check.sh).

`flowam-fast bench` (pipelines/bench.py) runs the suites into one report.
"""
