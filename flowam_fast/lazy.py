"""Names of a package that load on first use, so that importing the package stays cheap (no
torch until a name that needs it is used)."""
from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, api: dict, names):
    """The `__getattr__` and `__dir__` of a package whose names load on first use.

    Args:
        package: The package's `__name__`.
        api: {name: the submodule of the package that defines it}.
        names: The package's public names (its `__all__`), for `dir()`.

    Returns:
        (__getattr__, __dir__) to assign in the package's `__init__`.
    """

    def __getattr__(name: str):
        if name not in api:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{api[name]}"), name)
        vars(sys.modules[package])[name] = value  # later lookups skip __getattr__
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
