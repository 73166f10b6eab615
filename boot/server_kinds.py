"""Servers not written against `from boot import metorial`: what kind the entrypoint
holds, and the mcp SDK low-level `Server` that serves it.

An entrypoint module may define, at module level, an instance of the SDK's high-level
`MCPServer`, its low-level `Server`, or a standalone `fastmcp.FastMCP`. The module is
imported under its own name (never as `__main__`), so `if __name__ == "__main__":`
blocks do not run. Every kind is served through its low-level `Server`, so the
engine, the HTTP events and the platform actions are the same for all of them.

Classes are recognised by module and name along the instance's MRO, so finding a
server imports neither the SDK nor fastmcp (the author's module already did).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# (module, class) -> (kind, how to reach its low-level mcp Server)
_KNOWN: dict[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {
    ("mcp.server.mcpserver.server", "MCPServer"): ("mcp-server", lambda o: o._lowlevel_server),
    ("fastmcp.server.server", "FastMCP"): ("fastmcp", lambda o: o._mcp_server),
    ("mcp.server.lowlevel.server", "Server"): ("mcp-lowlevel", lambda o: o),
}

KIND_LABELS = {
    "metorial": "metorial.create_server",
    "mcp-server": "mcp MCPServer",
    "mcp-lowlevel": "mcp low-level Server",
    "fastmcp": "fastmcp FastMCP",
    "stdio": "stdio command",
}


class ServerLoadError(Exception):
    """The entrypoint does not hold a server we can serve; the message says what to do."""


class RequestError(RuntimeError):
    """A JSON-RPC error answer to one of discovery's requests."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


METHOD_NOT_FOUND = -32601


@dataclass
class Found:
    kind: str  # a key of KIND_LABELS
    name: str
    version: str
    server: Any = None  # the low-level mcp Server (None for the metorial kind)
    attr: str | None = None
    notes: list[str] = field(default_factory=list)
    stop: Callable[[], None] | None = None  # ends what the server started (a stdio command)


def classify(obj: Any) -> tuple[str, Any] | None:
    """(kind, low-level Server) when obj is a server instance we know, else None."""
    if isinstance(obj, type):
        return None
    for cls in type(obj).__mro__:
        known = _KNOWN.get((cls.__module__, cls.__qualname__))
        if known is not None:
            kind, lowlevel = known
            try:
                return kind, lowlevel(obj)
            except AttributeError:
                return None
    return None


def _found(kind: str, lowlevel: Any, attr: str | None) -> Found:
    return Found(
        kind=kind,
        name=str(getattr(lowlevel, "name", "") or "mcp-server"),
        version=str(getattr(lowlevel, "version", "") or ""),
        server=lowlevel,
        attr=attr,
    )


def find(module: Any, entrypoint: str, attr: str | None = None) -> Found:
    """The server the module defines: `attr` when named, else its one instance."""
    if attr is not None:
        if not hasattr(module, attr.split(".")[0]):
            raise ServerLoadError(
                f"{entrypoint} has no attribute {attr!r}; fix [runtime].entrypoint "
                f'("{entrypoint}:NAME" names the module-level server to serve)'
            )
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
        known = classify(obj)
        if known is None:
            raise ServerLoadError(
                f"{entrypoint}:{attr} is a {type(obj).__name__}, not an MCP server; name an "
                "mcp MCPServer, mcp Server or fastmcp FastMCP instance"
            )
        return _found(known[0], known[1], attr)
    candidates: dict[int, tuple[str, str, Any]] = {}
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        known = classify(value)
        if known is not None and id(known[1]) not in candidates:
            candidates[id(known[1])] = (name, known[0], known[1])
    if not candidates:
        raise ServerLoadError(
            f"{entrypoint} defines no MCP server: expected metorial.create_server() or a "
            "module-level mcp MCPServer, mcp Server or fastmcp FastMCP instance. A server "
            'made inside a function or under `if __name__ == "__main__":` is not seen: move '
            f'it to module level, or run the module as a stdio command (command = ["python", '
            f'"{entrypoint}"])'
        )
    if len(candidates) > 1:
        names = sorted(name for name, _, _ in candidates.values())
        raise ServerLoadError(
            f"{entrypoint} defines {len(names)} MCP servers ({', '.join(names)}); name the one "
            f'to serve in [runtime]: entrypoint = "{entrypoint}:{names[0]}"'
        )
    name, kind, lowlevel = next(iter(candidates.values()))
    return _found(kind, lowlevel, name)


class _EmptyStdin(io.BytesIO):
    """stdin while the entrypoint imports: Lambda has none, so a stdio loop started at
    import reads end-of-file and returns at once instead of waiting forever."""

    touched = False

    def read(self, size: int | None = -1) -> bytes:
        self.touched = True
        return b""

    def read1(self, size: int | None = -1) -> bytes:
        self.touched = True
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        self.touched = True
        return b""

    def readinto(self, buffer: Any) -> int:
        self.touched = True
        return 0

    readinto1 = readinto


@contextlib.contextmanager
def _no_stdin() -> Iterator[_EmptyStdin]:
    raw = _EmptyStdin()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(raw, encoding="utf-8")
    try:
        yield raw
    finally:
        sys.stdin = saved


def import_entrypoint(root: str, entrypoint: str) -> tuple[Any, list[str]]:
    """Import the author's module as Lambda does; notes say what looked wrong."""
    if root not in sys.path:
        sys.path.insert(0, root)
    module_name = entrypoint[:-3].replace("/", ".")
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(root, entrypoint))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {entrypoint}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    notes: list[str] = []
    with _no_stdin() as stdin:
        try:
            spec.loader.exec_module(module)
        except SystemExit as exc:
            raise ServerLoadError(
                f"{entrypoint} called sys.exit({exc.code!r}) while being imported"
                + (
                    " after reading stdin: it runs a stdio loop at import; put that under "
                    '`if __name__ == "__main__":`'
                    if stdin.touched
                    else ""
                )
            ) from exc
    if stdin.touched:
        notes.append(
            f"{entrypoint} read stdin while being imported (a stdio loop at import?); it "
            'ended at once, as on Lambda: put it under `if __name__ == "__main__":`'
        )
    return module, notes


def split_entrypoint(value: str) -> tuple[str, str | None]:
    """'server.py:app' -> ('server.py', 'app'); 'server.py' -> ('server.py', None)."""
    path, sep, attr = value.partition(":")
    return path, (attr if sep else None)


def describe(found: Found | None, load_error: str | None) -> dict[str, Any]:
    """What the build's load check and `serve` show about the loaded server."""
    if found is None:
        return {"kind": None, "load_error": load_error}
    return {
        "kind": found.kind,
        "label": KIND_LABELS.get(found.kind, found.kind),
        "name": found.name,
        "version": found.version,
        "attr": found.attr,
        "notes": found.notes,
        "load_error": load_error,
    }


# -- discovery through the JSON-RPC path, for any kind ----------------------------------

_LISTS = (
    ("tools", "tools/list", "tools", "tools"),
    ("resources", "resources/list", "resources", "resources"),
    ("resourceTemplates", "resources/templates/list", "resources", "resourceTemplates"),
    ("prompts", "prompts/list", "prompts", "prompts"),
)
_MAX_PAGES = 100


def discover_via_requests(
    request: Callable[[str, dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """The platform's discovery document from the server's own answers: `initialize`
    for capabilities and identity, then every list, following cursors."""
    init = request(
        "initialize",
        {
            "protocolVersion": _handshake_version(),
            "capabilities": {},
            "clientInfo": {"name": "metorial-discover", "version": "1"},
        },
    )
    capabilities = init.get("capabilities") or {}
    info = init.get("serverInfo") or {}
    document: dict[str, Any] = {}
    for key, method, capability, field_name in _LISTS:
        items: list[Any] = []
        if capability in capabilities:
            items = _listed(request, method, field_name)
        document[key] = items
    return {
        "tools": document["tools"],
        "resourceTemplates": document["resourceTemplates"],
        "resources": document["resources"],
        "prompts": document["prompts"],
        "capabilities": {
            k: v
            for k, v in capabilities.items()
            if k in ("tools", "resources", "prompts", "completions", "logging")
        },
        "implementation": {"name": info.get("name", ""), "version": info.get("version", "")},
        "instructions": init.get("instructions"),
    }


def _listed(
    request: Callable[[str, dict[str, Any]], dict[str, Any]], method: str, field_name: str
) -> list[Any]:
    """Every page of one list. "Method not found" is an empty list: a capability
    announces a family (`resources`), not each of its lists (servers on mcp<2, such as
    the official mcp-server-sqlite, have no resources/templates/list)."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        try:
            page = request(method, {"cursor": cursor} if cursor else {})
        except RequestError as exc:
            if exc.code == METHOD_NOT_FOUND:
                return items
            raise
        items += page.get(field_name) or []
        cursor = page.get("nextCursor")
        if not cursor:
            break
    return items


def _handshake_version() -> str:
    from mcp_types.version import LATEST_HANDSHAKE_VERSION

    return LATEST_HANDSHAKE_VERSION


def load(root: str, entrypoint: str, command: dict[str, Any] | None = None) -> Found:
    """What index.py serves: a stdio command, the metorial registry, or an instance."""
    if command is not None:
        from . import stdio_bridge

        return stdio_bridge.start(root, command)
    from .metorial import registry

    path, attr = split_entrypoint(entrypoint)
    module, notes = import_entrypoint(root, path)
    if registry.server is not None and attr is None:
        author = registry.server
        return Found("metorial", author.name, author.version, notes=notes)
    found = find(module, path, attr)
    found.notes += notes
    return found
