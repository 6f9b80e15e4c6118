"""The documentation site: a strict mkdocs build, the generated CLI page, and API pages that
cover every public name of the layers they document."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Subpackage -> its API page.
API_PAGES = {pkg: DOCS / "api" / f"{pkg}.md" for pkg in ("am", "objectives", "models", "data", "ops", "evaluation",
                                                                   "attribution", "sweep")}

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed")


def _cli_page_module():
    spec = importlib.util.spec_from_file_location("cli_page", DOCS / "cli_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exports(pkg: str) -> list:
    """The `__all__` of flowam_fast.<pkg>, read from its source (no import, no torch)."""
    tree = ast.parse((ROOT / "flowam_fast" / pkg / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"flowam_fast.{pkg} has no __all__")


def test_strict_build_has_no_warning(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log, log
    for page in ("index.html", "design/index.html", "cli/index.html", "api/index.html",
                 *(f"api/{pkg}/index.html" for pkg in API_PAGES)):
        assert (tmp_path / "site" / page).is_file(), page


def test_cli_page_has_every_command_with_its_help():
    from flowam_fast.cli import COMMANDS, build_parser

    module = _cli_page_module()
    page = module.render_cli_page()
    commands = module._commands(build_parser())
    assert list(commands) == list(COMMANDS)
    for name, sub in commands.items():
        assert f"## `{name}`\n" in page
        # Each section holds that command's own usage line and every option it takes.
        assert f"usage: flowam-fast {name} " in page
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in page, (name, flag)


def test_api_pages_cover_every_public_name():
    missing = {}
    for pkg, page in API_PAGES.items():
        text = page.read_text()
        gone = [name for name in _exports(pkg) if name not in text]
        if gone:
            missing[pkg] = gone
    assert not missing, f"public names without documentation on their API page: {missing}"
