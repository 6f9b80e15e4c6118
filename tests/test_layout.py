"""The package's architecture, checked: each layer imports only the layers below it, argparse
lives only in the CLI, and `import flowam_fast` stays cheap (subpackages load on first use)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import flowam_fast as ff

PACKAGE = Path(ff.__file__).parent
#: Layers from the bottom up; a module may import its own layer and those listed before it.
LAYERS = [("atomic", "lazy", "provenance", "identity", "ops"), ("models", "data"), ("training",), ("objectives",), ("am",), ("evaluation", "attribution"),
          ("sweep", "pipelines", "benchmarks"), ("cli",)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _layer(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_layers(path: Path):
    """(line, layer) of every flowam_fast module `path` imports, relative or absolute."""
    here = list(path.relative_to(PACKAGE).with_suffix("").parts)[:-1]  # the module's package
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - node.level + 1]
            mod = base + (node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flowam_fast"):
            mod = node.module.split(".")[1:]
        elif isinstance(node, ast.Import):
            mod = next((a.name.split(".")[1:] for a in node.names if a.name.startswith("flowam_fast.")), [])
        else:
            continue
        # `from flowam_fast import ops` / `from .. import ops` name the layer in the imported names.
        names = [mod[0]] if mod else [a.name for a in node.names]
        yield from ((node.lineno, n) for n in names if n in RANK)


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) in RANK)


def test_every_module_is_in_a_layer():
    top = {_layer(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert top <= set(RANK), f"modules outside the known layers: {sorted(top - set(RANK))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path):
    layer = _layer(path)
    bad = [(line, dep) for line, dep in _imported_layers(path) if RANK[dep] > RANK[layer]]
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer}) imports layers above it: {bad}"


def test_argparse_only_in_the_cli():
    users = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _layer(p) != "cli"
             and any(isinstance(n, (ast.Import, ast.ImportFrom)) and "argparse" in ast.dump(n)
                     for n in ast.walk(ast.parse(p.read_text())))]
    assert not users, f"argparse outside flowam_fast/cli: {users}"


def test_subpackages_are_attributes():
    for name in ("ops", "models", "data", "training", "am", "evaluation", "attribution", "sweep", "pipelines", "benchmarks",
                 "cli"):
        assert getattr(ff, name).__name__ == f"flowam_fast.{name}"
    assert ff.FlowAM is ff.am.FlowAM and ff.Flows is ff.am.Flows and ff.compute_flows is ff.am.compute_flows
    assert ff.Explanations is ff.am.Explanations
    assert ff.data.ModelNet40.__name__ == "ModelNet40"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ff.nope  # noqa: B018


def test_import_is_lazy():
    code = "import sys, flowam_fast; print('torch' in sys.modules, flowam_fast.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", ff.__version__]
