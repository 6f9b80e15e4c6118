"""Every benchmark suite (the fused ops and the end-to-end AM steps) into the stored report
benchmarks/results/benchmarks.md, headed by the machine and the command that reproduces it:
`flowam-fast bench --out benchmarks/results/benchmarks.md` (flowam_fast/pipelines/bench.py holds
the code). Other options are passed on, e.g. --out elsewhere, --quick, --only knn,am_step.

    python benchmarks/run_all.py [--quick] [--only knn,am_step] [--threads 2] [--out FILE]
"""
import sys
from pathlib import Path

from flowam_fast.cli import main

STORED = Path("benchmarks") / "results" / "benchmarks.md"

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        # Relative to the checkout, so the report's reproduce line reads the same everywhere.
        root = Path(__file__).resolve().parents[1]
        args += ["--out", str(STORED if Path.cwd().resolve() == root else root / STORED)]
    sys.exit(main(["bench", *args]))
