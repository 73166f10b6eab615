"""The load check costs what loading costs, once (issue 26, item 1): the sealed
dependency folders are bound into the sandbox rather than copied, bytecode is compiled
once per file content and shared across dependency sets, and a rebuild whose only
changes are data files the server never opened reuses the last check, saying so."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest

from pmcp_build import sandbox
from pmcp_build.layout.model import Entry
from pmcp_build.package import load_check

from .helpers import SERVER, make_wheel, python_project

# Reads a data file at import: a change to it must be loaded again.
READER = """from boot import metorial

GREETING = open("data/greeting.txt").read().strip()
server = metorial.create_server(GREETING)


@server.list_tools()
def list_tools():
    return [{"name": "echo", "description": "echo", "inputSchema": {"type": "object"}}]
"""
ASSETS = '[[assets]]\nfrom = "notes.md"\nto = "docs/notes.md"\n'
SKIP_NOTE = "not loaded again: only files the server does not load changed since its last check"


def _build(cli: Any, root: Path, *args: str) -> Any:
    result = cli("-C", str(root), "build", *args, env={"PMCP_BUILD_LOAD_CHECK": "1"})
    assert result.exit_code == 0, result.output
    return result


def _server(cli: Any, root: Path) -> dict[str, Any]:
    return dict(json.loads(_build(cli, root, "--json").stdout)["server"])


def test_a_rebuild_of_data_it_never_opened_is_not_loaded_again(cli: Any, tmp_path: Path) -> None:
    root = python_project(tmp_path / "p", server=READER, extra=ASSETS)
    (root / "data").mkdir()
    (root / "data" / "greeting.txt").write_text("hello\n")
    (root / "notes.md").write_text("v1\n")
    first = _server(cli, root)
    assert first["name"] == "hello" and first["tools"] == 1
    assert not [n for n in first["notes"] if SKIP_NOTE in n]

    (root / "notes.md").write_text("v2, an asset edited\n")  # text output, as typed
    text = _build(cli, root)
    assert "server: " in text.stdout and "'hello': 1 tool" in text.stdout
    assert f"note: {SKIP_NOTE} (docs/notes.md)" in text.stderr
    (root / "notes.md").write_text("v3\n")
    again = _server(cli, root)
    assert again["tools"] == 1 and f"{SKIP_NOTE} (docs/notes.md)" in again["notes"]

    # A data file the server opened at import is loaded again, and so is code.
    (root / "data" / "greeting.txt").write_text("bonjour\n")
    read = _server(cli, root)
    assert read["name"] == "bonjour" and not [n for n in read["notes"] if SKIP_NOTE in n]
    two = '{"name": "two", "description": "two", "inputSchema": {"type": "object"}}, {"name"'
    (root / "server.py").write_text(READER.replace('{"name"', two, 1))
    edited = _server(cli, root)
    assert edited["tools"] == 2 and not [n for n in edited["notes"] if SKIP_NOTE in n]


def _entry(path: str, origin: Any = "source", mode: int = 0o644) -> Entry:
    return Entry(path, origin, mode, 1, "0" * 64)


def test_which_files_may_change_without_a_check() -> None:
    inert = load_check.inert
    assert inert(_entry("docs/notes.md", "asset")) and inert(_entry("data/x.json"))
    assert not inert(_entry("server.py")) and not inert(_entry("lib/native.so"))
    assert not inert(_entry("lib/libfoo.so.1")) and not inert(_entry("extra.pth"))
    assert not inert(_entry("mcp/data.json", "dependency"))
    assert not inert(_entry("run.txt", mode=0o755)) and not inert(_entry("Makefile"))
    assert not inert(_entry("index.py", "generated")) and not inert(_entry("boot.txt", "boot"))


SDK_SERVER = """from mcp.server.mcpserver import MCPServer

app = MCPServer("shared")


@app.tool()
def size(text: str) -> int:
    return len(text)
"""

needs_bwrap = pytest.mark.skipif(
    sandbox.unavailable() is not None, reason=f"no sandbox here: {sandbox.unavailable()}"
)


def _sets(cache: Path) -> set[Path]:
    return set(cache.glob("deps/*/bytecode"))


@needs_bwrap
def test_bytecode_is_compiled_once_per_file_content_across_dependency_sets(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two dependency sets sharing the SDK's files (tinypkg 1.0 and 2.0 beside it): the
    second set's check compiles none of them again, and its pycache prefix links the very
    files the first one's does. The server is an SDK one, whose import loads the SDK's
    server (a Metorial-API server's discover loads almost none of it)."""
    from pmcp_build.package import check_view

    cache = Path(load_check.cache_dir())
    compiled: list[str] = []
    compile_into_store = check_view.compile_into_store

    def counting(python: str, jobs: Any, tag: str, workers: int = 2) -> Any:
        jobs = list(jobs)
        compiled.extend(job[0] for job in jobs)
        return compile_into_store(python, jobs, tag, workers)

    monkeypatch.setattr(check_view, "compile_into_store", counting)
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinypkg", "1.0")
    make_wheel(wheels, "tinypkg", "2.0")
    monkeypatch.setenv("UV_FIND_LINKS", f"{os.environ['UV_FIND_LINKS']},{wheels}")
    before = _sets(cache)
    server = SDK_SERVER
    a = python_project(tmp_path / "a", name="set-a", requirements="tinypkg==1.0\n", server=server)
    _build(cli, a)
    first = _sets(cache) - before
    compiled.clear()
    other = python_project(
        tmp_path / "b", name="set-b", requirements="tinypkg==2.0\n", server=server
    )
    _build(cli, other)
    (second,) = _sets(cache) - before - first
    assert not [rel for rel in compiled if "/var/task/mcp/" in rel]
    linked = {p.stat().st_ino for p in second.glob("0/var/task/mcp/**/*.pyc")}
    assert len(linked) > 20
    assert linked <= {p.stat().st_ino for b in first for p in b.glob("*/var/task/mcp/**/*.pyc")}


# Digests what it sees at its task root: every folder, and every file with its mode and
# bytes. Its name is the digest, which the test compares with the zip's.
VIEWER = """import hashlib, os, stat
from boot import metorial

ROOT = os.environ["LAMBDA_TASK_ROOT"]
seen = []
for dirpath, dirnames, filenames in os.walk(ROOT):
    rel = os.path.relpath(dirpath, ROOT)
    for name in dirnames:
        seen.append(os.path.normpath(os.path.join(rel, name)) + "/")
    for name in filenames:
        full = os.path.join(dirpath, name)
        with open(full, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        mode = stat.S_IMODE(os.lstat(full).st_mode)
        seen.append(f"{os.path.normpath(os.path.join(rel, name))} {mode:o} {digest}")
server = metorial.create_server(hashlib.sha256("\\n".join(sorted(seen)).encode()).hexdigest())


@server.list_tools()
def list_tools():
    return []
"""


def _zip_view(path: Path) -> str:
    seen = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            digest = hashlib.sha256(zf.read(info)).hexdigest()
            seen.append(f"{info.filename} {stat.S_IMODE(info.external_attr >> 16):o} {digest}")
            parts = info.filename.split("/")[:-1]
            seen += ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]
    return hashlib.sha256("\n".join(sorted(set(seen))).encode()).hexdigest()


@needs_bwrap
def test_the_check_sees_exactly_the_zip_with_its_dependencies_bound_not_copied(
    cli: Any, tmp_path: Path
) -> None:
    root = python_project(tmp_path / "v", server=VIEWER, extra=ASSETS)
    (root / "notes.md").write_text("an asset\n")
    data = json.loads(_build(cli, root, "--json").stdout)
    assert data["server"]["name"] == _zip_view(Path(data["package"]["path"]))
    cache = Path(load_check.cache_dir())
    slots = [p for p in cache.glob("deps/*/check/*/mcp") if p.is_dir()]
    assert slots and not [f for slot in slots for f in slot.rglob("*")]  # mount points only


@needs_bwrap
def test_a_bound_dependency_file_changed_in_the_cache_loads_the_zip_instead(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site/ file bound into the sandbox is checked against the layout's sha256 (by
    identity once verified): one changed in place, same size, is never what the check
    loads; the check loads the zip, which holds the packed bytes."""
    from pmcp_build.local import runner

    root = python_project(tmp_path / "t", name="bound", server=SERVER)
    _build(cli, root)
    cache = Path(load_check.cache_dir())
    used = json.loads((cache / "uses" / "last-build.json").read_text())["items"]
    (deps,) = [item for item in used if item.startswith("deps/")]
    victim = cache / deps / "site" / "mcp" / "__init__.py"
    original = victim.read_bytes()
    unpacked: list[Path] = []
    extract = runner.extract
    monkeypatch.setattr(runner, "extract", lambda z, d: (unpacked.append(z), extract(z, d)))
    try:
        victim.write_bytes(original.replace(b"mcp", b"MCP", 1))
        (root / "server.py").write_text(SERVER + "\n# edited\n")
        assert _server(cli, root)["status"] == "ok"
        assert len(unpacked) == 1
    finally:
        victim.write_bytes(original)
