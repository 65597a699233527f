"""Names a package exports from its modules, loaded on first use (PEP 562).

A package's ``__init__`` lists them by module; importing the package then costs nothing until
a name is read, so ``shelfcast --help`` does not load torch, river or pandas:

>>> getattr_, names = lazy_exports("json", {"json.decoder": ("JSONDecodeError",)})
>>> names, getattr_("JSONDecodeError").__name__
(['JSONDecodeError'], 'JSONDecodeError')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, by_module: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], list[str]]:
    """The package's ``__getattr__`` and ``__all__`` for the names of ``by_module``."""
    where = {name: module for module, names in by_module.items() for name in names}

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return getattr_, sorted(where)
