"""Every benchmark (the fused ops and the end-to-end AM steps) in one Markdown table, with the
machine it ran on; the same as `flowam-fast bench` (flowam_fast/pipelines/bench.py holds the code).

    python benchmarks/run_all.py [--quick] [--only knn,am_step] [--threads 2] [--out table.md]
"""
import sys

from flowam_fast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
