"""`--help` of the installed console script and of the commands this part of the package owns.
(test_explain_flows.py checks that every command's --help exits 0.)"""
import argparse
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flowam_fast.cli import COMMANDS, main


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_train_help_lists_its_options(capsys):
    out = _help(capsys, "train")
    for opt in ("--model", "--data", "--data-dir", "--epochs", "--out", "--width", "--num-points", "--batch-size",
                "--lr", "--seed", "--quiet", "pointnet", "dgcnn", "synthetic"):
        assert opt in out, opt


def test_demo_help(capsys):
    out = _help(capsys, "demo")
    assert "usage: flowam-fast demo" in out and "--out" in out


def test_missing_commands_say_not_available(capsys):
    missing = [n for n, (mod, _) in COMMANDS.items() if importlib.util.find_spec(mod) is None]
    for name in missing:
        assert "usage: flowam-fast " + name in _help(capsys, name)
        with pytest.raises(SystemExit) as e:
            main([name])
        assert e.value.code == 2 and "not available" in capsys.readouterr().err


def test_installed_console_script():
    script = Path(sys.executable).with_name("flowam-fast")
    assert script.exists(), "install the package (pip install -e .) to get the flowam-fast script"
    out = subprocess.run([str(script), "train", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage: flowam-fast train" in out.stdout, out.stderr


def test_no_command_prints_help(capsys):
    assert main([]) == 2 and "train" in capsys.readouterr().out


def test_help_does_not_import_torch():
    """`--help` answers from the argparse code alone: each run in a fresh interpreter, so that
    sys.modules shows what the help itself imported."""
    code = ("import sys\nfrom flowam_fast.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nprint('torch' in sys.modules, code)")
    for argv in [["--help"], *[[name, "--help"] for name in COMMANDS]]:
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-2:] == ["False", "0"], f"flowam-fast {' '.join(argv)} imported torch"


def _subcommands():
    from flowam_fast.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_has_help_naming_modules_that_exist():
    for name, parser in _subcommands().items():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            where = f"flowam-fast {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{where} has no help"
            for dotted in re.findall(r"flowam_fast(?:\.\w+)+", action.help):
                assert _resolves(dotted.rstrip(".")), f"{where}: its help names {dotted}, which does not exist"


def _resolves(dotted: str) -> bool:
    """A module, or an attribute of one (flowam_fast.training.DEMO_CONFIG)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_help_shows_defaults_but_not_none(capsys):
    out = " ".join(_help(capsys, "explain").split())
    assert "(default: 600)" in out and "(default: flowam)" in out and "(default: moments)" in out
    assert "(default: None)" not in out and "(default: False)" not in out
    # The presets shown are the ones the engine applies.
    from flowam_fast.am.engine import FlowAM
    from tests.helpers import TinyNet

    cfg = FlowAM(TinyNet(), method="vanilla").config
    assert f"vanilla {cfg.flow_weight:g}" in out and f"vanilla {cfg.continuity_weight:g}" in out
    assert "flowam 100" in out  # FlowAM's default flow weight (docs/design.md)


def test_choices_are_the_library_tables(capsys):
    from flowam_fast.am.names import ALIGNMENTS, METHODS

    out = _help(capsys, "explain")
    assert "{" + ",".join(METHODS) + "}" in out and "{" + ",".join(ALIGNMENTS) + "}" in out
    sub = _subcommands()
    assert next(a for a in sub["sanity"]._actions if a.dest == "alignment").choices is ALIGNMENTS


def test_architecture_names_are_the_models():
    """The CLI's torch-free list of architectures is the models' table, and the demo has a recipe for each."""
    from flowam_fast.am.names import ARCHITECTURES
    from flowam_fast.models.checkpoint import ARCHS
    from flowam_fast.training import DEMO_CONFIGS

    assert ARCHITECTURES == tuple(ARCHS) and set(DEMO_CONFIGS) == set(ARCHITECTURES)
