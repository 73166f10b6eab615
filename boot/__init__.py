"""The Metorial boot runtime, bundled into every python package as `__metorial__/`.

Authors write `from boot import metorial`; the generated `index.py` calls `alias("boot")`
so that `boot` is this package and `boot.X` is `__metorial__.X`, the same module object
(one server registry), imported only when something asks for it: a cold start loads no
runtime module, and so no part of the mcp SDK, that its first event does not need.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import importlib.abc


class _Alias:
    """Finds `NAME.X` as this package's `X`, importing it (once) under its own name (a
    meta path finder and loader by protocol: importlib.abc would cost a cold start 15 ms)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.name + "."):
            return None
        own = __name__ + fullname[len(self.name) :]
        if (
            own not in sys.modules
            and importlib.machinery.PathFinder.find_spec(own, __path__) is None
        ):
            return None  # no such module: the error names `boot.X`, as the author wrote it
        return importlib.machinery.ModuleSpec(fullname, cast("importlib.abc.Loader", self))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        # The module itself, not a copy: its __name__ and __spec__ stay __metorial__'s.
        return importlib.import_module(__name__ + spec.name[len(self.name) :])

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed by its own import


def alias(name: str) -> None:
    """Make `name` (and `name.X`) another name for this package (and its `X`)."""
    if name == __name__ or sys.modules.get(name) is sys.modules[__name__]:
        return
    sys.modules[name] = sys.modules[__name__]
    sys.meta_path.insert(0, _Alias(name))
