"""The GPU half of benchmarks/gpu_check.sh: the benchmark suites on the GPU, one FlowAM run and
whether the targets are met, as one Markdown report (flowam_fast/benchmarks/gpu_report.py holds
the code). The report is rewritten after every case, so a run cut short still leaves what it
measured.

    python benchmarks/gpu_report.py --out gpu.md [--tests-log pytest.log] [--only knn,am_step] [--quick]
"""
import argparse
import sys

from flowam_fast.benchmarks.gpu_report import COMMAND, write_gpu_report
from flowam_fast.benchmarks.suites import SUITES, parse_suites


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the Markdown report to write")
    p.add_argument("--tests-log", default=None, help="the GPU tests' pytest output, summarized in the report")
    p.add_argument("--only", default="all", help=f"suites, from {', '.join(SUITES)} (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--no-flowam-run", action="store_true", help="skip the 40 x 8 x 600-step FlowAM run")
    p.add_argument("--command", default=COMMAND,
                   help=f"the command the report names as the one that reproduces it (default: {COMMAND})")
    args = p.parse_args(argv)
    try:
        suites = parse_suites(args.only)
        return write_gpu_report(args.out, suites, quick=args.quick, flowam=not args.no_flowam_run,
                                tests_log=args.tests_log, command=args.command,
                                log=lambda msg: print(msg, flush=True))
    except (RuntimeError, ValueError) as exc:
        print(f"gpu_report: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
