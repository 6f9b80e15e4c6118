"""mkdocs hook: writes the CLI page (cli.md) from `flowam_fast.cli.build_parser()` at build time.

One section per command with its `--help` text, in the order the parser lists them, so the
page follows every new command and help text without an edit here.
"""
from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

PAGE = "cli.md"
#: Help text width: fixed, so the page does not depend on the terminal that builds it.
COLUMNS = "88"


@contextmanager
def _columns(width: str):
    # argparse's HelpFormatter sizes its lines from $COLUMNS (shutil.get_terminal_size).
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = width
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_block(parser: argparse.ArgumentParser) -> str:
    return "```text\n" + parser.format_help().rstrip() + "\n```\n"


def render_cli_page() -> str:
    """The Markdown of the CLI page: the top-level help, then one section per command."""
    from flowam_fast.cli import build_parser

    with _columns(COLUMNS):
        parser = build_parser()
        parts = [
            "# Command line\n",
            "The `flowam-fast` command (installed with the package; also `python -m flowam_fast.cli`). "
            "This page is generated from the argument parser when the documentation is built.\n",
            _help_block(parser),
        ]
        for name, sub in _commands(parser).items():
            parts.append(f"## `{name}`\n")
            if sub.get_default("_missing"):
                parts.append("Not available in this version.\n")
                continue
            parts.append(_help_block(sub))
    return "\n".join(parts)


def on_files(files, config):
    try:
        content = render_cli_page()
    except Exception as exc:  # a broken command module: name it rather than show mkdocs' stack
        raise PluginError(f"{__name__}: cannot build the flowam-fast argument parser: "
                          f"{type(exc).__name__}: {exc}") from exc
    files.append(File.generated(config, PAGE, content=content))
    return files
