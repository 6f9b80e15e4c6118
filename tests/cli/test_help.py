"""`--help` of the installed console script and of the commands this part of the package owns.
(test_cli.py checks that every command's --help exits 0.)"""
import importlib.util
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
