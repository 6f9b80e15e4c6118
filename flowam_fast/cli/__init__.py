"""The `flowam-fast` command line: one module per command (cli/<command>.py, each with
`add_arguments(parser)` and `run(args)`), the only place with argparse code. A command parses
its arguments and calls library functions; this file only wires the commands up. A command
module imports the library (torch and the rest) inside `run`, not at module level, so that
`flowam-fast --help` and every command's `--help` answer without importing torch."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("flowam_fast.cli.demo", "generate data, train, compute flows, explain and report, end to end"),
    "train": ("flowam_fast.cli.train", "train a PointNet or DGCNN classifier"),
    "flows": ("flowam_fast.cli.flows", "compute per-class activation flows of a model on a dataset"),
    "explain": ("flowam_fast.cli.explain", "run FlowAM, a baseline or any objective (classes, channels) over a "
                "(target x seed) grid"),
    "view": ("flowam_fast.cli.view", "summarize a stored set of explanations; write its HTML viewer or PNG sheet"),
    "evaluate": ("flowam_fast.cli.evaluate", "metrics of stored explanations against real data"),
    "sanity": ("flowam_fast.cli.sanity", "the model-parameter randomization check, a permutation test per stage"),
    "study": ("flowam_fast.cli.study", "the faithfulness study of one model, resumable, local or on Ray"),
    "bench": ("flowam_fast.cli.bench", "benchmark the fused kernels against the reference path"),
    "attribute": ("flowam_fast.cli.attribute", "local explanations (attributions) of every cloud of a split, with "
                  "faithfulness curves"),
    "sweep": ("flowam_fast.cli.sweep", "a sharded (model x method x class x seed) sweep from a TOML spec, local or on Ray"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends an option's default to its help where it has one worth showing: not for flags
    (False), options without a default (None), or help that already says what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="flowam-fast", description="FlowAM global explanations of point-cloud classifiers, on fused kernels.")
    parser.add_argument("--version", action="version", version=f"flowam-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=module)
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        parser.exit(2, f"flowam-fast {args.command}: not available in this version\n")
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        # Users get the message, not a traceback; FLOWAM_DEBUG=1 keeps the traceback.
        import os

        if os.environ.get("FLOWAM_DEBUG"):
            raise
        print(f"flowam-fast {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
