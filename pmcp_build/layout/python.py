"""The python runtime's parts of a package: entrypoint, boot runtime, handler module,
dependencies and, optionally, deterministic bytecode."""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pmcp_build import __version__
from pmcp_build.errors import UserError
from pmcp_build.layout.model import Entry, entry_from_bytes, entry_from_file
from pmcp_build.package import cache as cache_store

if TYPE_CHECKING:
    from pmcp_build.manifest.model import PythonRuntime
    from pmcp_build.source.tree import SourceTree

BOOT_DIR = Path(__file__).resolve().parents[2] / "boot"
BOOT_PREFIX = "__metorial__"
TEMPLATES = Path(__file__).resolve().parent / "templates"


def detect_entrypoint(runtime: PythonRuntime, tree: SourceTree) -> str:
    # Here, not at the top: the load check imports this module for find_python, and the
    # manifest's models (pydantic) would cost every rebuild's check ~0.1 s.
    from pmcp_build.manifest.model import ENTRYPOINT_ORDER

    packaged = {f.path for f in tree.files}
    if runtime.entrypoint is not None:
        path = runtime.entrypoint.partition(":")[0]  # "server.py:app" names an instance
        if path not in packaged:
            why = dict(tree.left_out).get(path) or next(
                (r for p, r in tree.left_out if p.endswith("/") and path.startswith(p)),
                None,
            )
            if why is not None or tree.has(path):
                # Present but left out: the function would fail at its first request.
                raise UserError(
                    f"[runtime].entrypoint: {path!r} is left out of the package "
                    f"({why or 'excluded'}); remove it from what excludes it"
                )
            raise UserError(
                f"[runtime].entrypoint: {path!r} is not in the source "
                f"({tree.root}); fix the path or remove the key to detect it"
            )
        return runtime.entrypoint
    for name in ENTRYPOINT_ORDER:
        if name in packaged:
            return name
    above = next((n for n in ENTRYPOINT_ORDER if (tree.root.parent / n).is_file()), None)
    hint = (
        f"; {above} is in the folder above: a manifest in a subfolder of the server "
        'needs [source] path = ".."'
        if above is not None
        else "; add one or set [runtime].entrypoint"
    )
    raise UserError(f"no entrypoint in {tree.root}: looked for {', '.join(ENTRYPOINT_ORDER)}{hint}")


def handler_module(tree: SourceTree) -> str:
    """`index` unless the source already has an index.py of its own."""
    return "metorial_index" if any(f.path == "index.py" for f in tree.files) else "index"


def boot_entries() -> list[Entry]:
    return [
        entry_from_file(f"{BOOT_PREFIX}/{p.name}", p, "boot", mode=0o644)
        for p in sorted(BOOT_DIR.glob("*.py"))
    ]


def index_entry(
    server_name: str,
    entrypoint: str,
    module: str,
    cache_dir: Path | None = None,
    command: dict[str, object] | None = None,
) -> Entry:
    template = TEMPLATES / "index.py.j2"
    variables = {
        "server_name": server_name,
        "entrypoint": entrypoint,
        "version": __version__,
        "command": command,
    }
    key = hashlib.sha256(template.read_bytes() + json.dumps(variables, sort_keys=True).encode())
    text = _rendered(cache_dir / "index", key.hexdigest()) if cache_dir else None
    if text is None:
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            keep_trailing_newline=True,
            autoescape=False,
            undefined=jinja2.StrictUndefined,
        )
        text = env.get_template(template.name).render(**variables)
        if cache_dir is not None:
            cache_store.write_sealed(cache_dir / "index", key.hexdigest(), text.encode(), ".py")
    return entry_from_bytes(
        f"{module}.py", text.encode(), "generated", 0o644, detail=f"handler for {entrypoint}"
    )


def _rendered(folder: Path, key: str) -> str | None:
    """The cached rendering (rendering is pure; skip importing jinja2 on rebuilds), if
    its bytes are those its name's sha256 says (package/cache.py: sealed files)."""
    for path in cache_store.find_sealed(cache_store.listing(folder), folder, key, ".py"):
        data = cache_store.read_sealed(path, ".py", "handler module")
        if data is not None:
            return data.decode()
    return None


def requirements_file(runtime: PythonRuntime, tree: SourceTree) -> Path | None:
    if runtime.requirements is not None:
        path = tree.root / runtime.requirements
        if not path.is_file():
            raise UserError(
                f"[runtime].requirements: {runtime.requirements!r} is not in the source "
                f"({tree.root}); fix the path or remove the key"
            )
        return path
    default = tree.root / "requirements.txt"
    return default if default.is_file() else None


def dependency_entries(site: Path, origins: dict[str, str]) -> list[Entry]:
    """The installed dependency tree is immutable once cached, so its sizes and hashes
    are recorded once (entries.json) instead of re-read on every build; the zip writer
    still verifies the content of anything it has to compress."""
    index = site.parent / "entries.json"
    if index.exists():
        known = json.loads(index.read_text())
        return [
            Entry(
                path=path,
                origin="dependency",
                mode=known[path][0],
                size=known[path][1],
                sha256=known[path][2],
                src=site / path,
                detail=label,
            )
            for path, label in sorted(origins.items())
        ]
    entries = _hash_in_threads(site, sorted(origins.items()))
    tmp = index.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({e.path: [e.mode, e.size, e.sha256] for e in entries}))
    os.replace(tmp, index)
    return entries


def _hash_in_threads(site: Path, files: list[tuple[str, str]]) -> list[Entry]:
    """Read and hash a fresh dependency set (~1,000 files, ~30 MB) on every core: reads
    and sha256 release the GIL. Once per dependency set, on its first build."""
    from concurrent.futures import ThreadPoolExecutor

    def part(rows: list[tuple[str, str]]) -> list[Entry]:
        return [entry_from_file(p, site / p, "dependency", detail=label) for p, label in rows]

    workers = max(1, min(4, os.cpu_count() or 1))
    size = max(64, -(-len(files) // (workers * 4)))
    parts = [files[i : i + size] for i in range(0, len(files), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [entry for done in pool.map(part, parts) for entry in done]


# -- bytecode ----------------------------------------------------------------------------

_COMPILER = r"""
import importlib.util, py_compile, sys, os
src_root, out_root = sys.argv[1], sys.argv[2]
for rel in sys.stdin.read().split("\0"):
    if not rel:
        continue
    cfile = os.path.join(out_root, importlib.util.cache_from_source(rel))
    try:
        py_compile.compile(os.path.join(src_root, rel), cfile=cfile,
                           dfile="/var/task/" + rel, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError:
        pass  # a file that does not compile ships as source; Python reports it at import
"""


@functools.cache
def find_python(version: str) -> str | None:
    """An interpreter for python`version` on this machine that really runs: this one, the
    one on PATH, one uv installed (`uv python install`), or one pyenv built. A candidate
    is asked its version first: a pyenv shim for a version that is not active exits 127,
    which would otherwise surface as "the handler process exited (code 127)"."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    for candidate in _python_candidates(version):
        if _runs_as(candidate, version):
            return candidate
    return None


def _python_candidates(version: str) -> list[str]:
    found = [shutil.which(f"python{version}")]
    try:
        from pmcp_build.layout.python_deps import _uv, uv_environment

        managed = subprocess.run(
            [_uv(), "python", "find", "--python-preference", "only-managed", version],
            capture_output=True,
            text=True,
            timeout=20,
            env=uv_environment(Path.home()),
        )
        found.append(managed.stdout.strip() if managed.returncode == 0 else None)
    except (UserError, OSError, subprocess.TimeoutExpired):
        pass
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    found += [f"/usr/local/bin/python{version}", f"/usr/bin/python{version}"]
    return [c for c in dict.fromkeys(found) if c and os.path.isfile(c)]


def _runs_as(python: str, version: str) -> bool:
    try:
        probe = subprocess.run(
            [python, "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and probe.stdout.strip() == version


def bytecode_entries(entries: list[Entry], version: str, cache_dir: Path) -> list[Entry]:
    """`.pyc` files checked by hash, never by timestamp, so fixed zip times don't stale them.

    Compiled by the target Python (bytecode is version specific) with /var/task paths,
    and cached by the source's content so rebuilds compile only what changed.
    """
    python = find_python(version)
    if python is None:
        raise UserError(
            f"[runtime].bytecode = true needs python{version} on this machine to compile "
            f"for the python{version} runtime; install it (uv python install {version}) "
            "or set bytecode = false"
        )
    tag = f"cpython-{version.replace('.', '')}"
    store = cache_dir / "pyc" / tag
    # The pyc embeds its /var/task path, so the same source at two paths differs.
    keys = {e.path: f"{e.sha256}-{_path_key(e.path)}" for e in entries if e.path.endswith(".py")}
    found = _cached_bytecode([e for e in entries if e.path in keys], keys, store, tag)
    todo = [e for e in entries if e.path in keys and e.path not in found]
    if todo:
        (cache_dir / "pyc").mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".stage-{tag}-", dir=cache_dir / "pyc"))
        try:
            src_root, out_root = stage / "src", stage / "out"
            for entry in todo:
                dest = src_root / entry.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(entry.read())
            subprocess.run(
                [python, "-c", _COMPILER, str(src_root), str(out_root)],
                input="\0".join(e.path for e in todo),
                text=True,
                check=True,
                capture_output=True,
            )
            for entry in todo:
                built = out_root / _cache_path(entry.path, tag)
                if built.exists():  # sources that do not compile: none
                    shard = store / entry.sha256[:2]
                    sealed = cache_store.write_sealed(
                        shard, keys[entry.path], built.read_bytes(), ".pyc"
                    )
                    found[entry.path] = _pyc_entry(entry, sealed, tag)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return [found[e.path] for e in entries if e.path in found]


def _cached_bytecode(
    entries: list[Entry], keys: dict[str, str], store: Path, tag: str
) -> dict[str, Entry]:
    """The .pyc entries the cache holds for `entries`, each read and hashed once and
    checked against the sha256 in its name (package/cache.py: sealed files); one that
    fails is a warning, removed, and compiled again."""
    shards: dict[str, list[str]] = {}
    found: dict[str, Entry] = {}
    for entry in entries:
        shard = store / entry.sha256[:2]
        if shard.name not in shards:
            shards[shard.name] = cache_store.listing(shard)
        for path in cache_store.find_sealed(shards[shard.name], shard, keys[entry.path], ".pyc"):
            pyc = _pyc_entry(entry, path, tag)
            if pyc.sha256 == cache_store.sealed_digest(path, ".pyc"):
                found[entry.path] = pyc
                break
            cache_store.warn(
                path, f"{path}: this cached bytecode does not match its sha256; compiling it again"
            )
            path.unlink(missing_ok=True)
    return found


def _pyc_entry(source: Entry, pyc: Path, tag: str) -> Entry:
    return entry_from_file(
        _cache_path(source.path, tag), pyc, source.origin, mode=0o644, detail=source.detail
    )


def _cache_path(path: str, tag: str) -> str:
    parent, _, name = path.rpartition("/")
    pyc = f"__pycache__/{name[:-3]}.{tag}.pyc"
    return f"{parent}/{pyc}" if parent else pyc


def _path_key(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:16]


# -- stdio commands --------------------------------------------------------------------

COMMAND_PREFIX = "__command__"  # the command's requirements, apart from the runtime's
_PYTHONS = ("python", "python3")


def command_entries(own: list[Entry], runtime: list[Entry]) -> list[Entry]:
    """A command's dependency entries under `__command__/`, less what the runtime ships
    anyway: a top-level package (or module, or .dist-info) whose every file the runtime
    has at the same path with the same bytes ships once, at the root, where the command
    imports it from (the root is last on its path). Anything that differs in one file
    keeps the whole top-level name apart, so a package is never split between the two.
    What stays is labelled `(command)`, so the layout shows both copies of what differs
    (`mcp 1.30.0 (command)` beside the runtime's `mcp 2.3.0`)."""
    shipped = {(e.path, e.sha256) for e in runtime}
    by_top: dict[str, list[Entry]] = {}
    for entry in own:
        by_top.setdefault(entry.path.split("/", 1)[0], []).append(entry)
    kept = [
        entry
        for members in by_top.values()
        if not all((e.path, e.sha256) in shipped for e in members)
        for entry in members
    ]
    return [
        e.replace(path=f"{COMMAND_PREFIX}/{e.path}", detail=f"{e.detail} (command)")
        for e in sorted(kept, key=lambda e: e.path)
    ]


def console_scripts(site: Path) -> dict[str, str]:
    """Console scripts of the installed distributions: name -> 'module:attr'."""
    import configparser

    scripts: dict[str, str] = {}
    for path in sorted(site.glob("*.dist-info/entry_points.txt")):
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(path.read_text(encoding="utf-8"))
        except configparser.Error:
            continue
        if parser.has_section("console_scripts"):
            for name, target in parser.items("console_scripts"):
                scripts[name] = target.split("[")[0].strip()
    return scripts


def command_spec(argv: tuple[str, ...], tree: SourceTree, site: Path) -> dict[str, object]:
    """What the runtime's stdio bridge runs for `[runtime].command`, checked now."""
    head = argv[0]
    is_python = head in _PYTHONS or (head.startswith("python3.") and head[8:].isdigit())
    if is_python and len(argv) >= 3 and argv[1] == "-m":
        module = argv[2]
        top = module.split(".")[0]
        found = (
            (site / top).is_dir()
            or (site / f"{top}.py").is_file()
            or tree.has(f"{top}/__init__.py")
            or tree.has(f"{top}.py")
            or any(f.path.startswith(f"{top}/") for f in tree.files)
        )
        if not found:
            raise UserError(
                f"[runtime].command: module {module!r} is neither in the source nor in the "
                "requirements; add its package to the requirements or fix the name"
            )
        return {"kind": "module", "target": module, "argv0": module, "args": list(argv[3:])}
    if (is_python and len(argv) >= 2 and argv[1].endswith(".py")) or head.endswith(".py"):
        rest = argv[1:] if head.endswith(".py") else argv[2:]
        path = head if head.endswith(".py") else argv[1]
        if not tree.has(path):
            above = (tree.root.parent / path).is_file()
            raise UserError(
                f"[runtime].command: {path!r} is not in the source ({tree.root}); "
                + (
                    'it is in the folder above: set [source] path = ".."'
                    if above
                    else "fix the path"
                )
            )
        return {"kind": "file", "target": path, "argv0": path, "args": list(rest)}
    if is_python:
        raise UserError(
            "[runtime].command: after 'python' comes '-m MODULE' or a FILE.py from the source"
        )
    scripts = console_scripts(site)
    if head not in scripts:
        known = ", ".join(sorted(scripts)) or "none"
        raise UserError(
            f"[runtime].command: {head!r} is not a console script of the requirements "
            f"(they provide: {known}); add the package that provides it to the requirements, "
            "or use ['python', '-m', 'package'] / ['python', 'file.py']"
        )
    return {"kind": "script", "target": scripts[head], "argv0": head, "args": list(argv[1:])}


# -- the runtime's mcp -----------------------------------------------------------------

_MCP_2 = ("2.3.0", "2.4.0", "2.6.0", "2.9.0", "2.20.0", "2.99.0")


def check_mcp_pin(requirements: Path) -> None:
    """An `mcp` pin that excludes 2.x cannot share the package with the runtime; say what
    to do before uv reports a bare conflict."""
    text = requirements.read_text()
    if not re.search(r"(?im)^\s*mcp\s*(?:[\[=<>!~;@(,]|$)", text):
        return  # no line names mcp: spare the import of packaging (~20 ms)
    from packaging.requirements import InvalidRequirement, Requirement

    for number, line in enumerate(text.splitlines(), 1):
        spec = line.split("#", 1)[0].strip()
        if not spec or spec.startswith("-"):
            continue
        try:
            requirement = Requirement(spec)
        except InvalidRequirement:
            continue  # uv reports it
        if requirement.name.lower() != "mcp" or not requirement.specifier:
            continue
        if not any(requirement.specifier.contains(v, prereleases=True) for v in _MCP_2):
            raise UserError(
                f"{requirements.name}:{number}: conflicting requirements: mcp>=2.3,<3 and "
                f"{spec} cannot both hold: the bundled runtime needs mcp 2.x. Port the "
                "server to mcp 2 (FastMCP is "
                "now mcp.server.mcpserver.MCPServer; see the SDK's v2 migration guide), or run "
                'it unchanged as a stdio command: [runtime] command = ["python", "server.py"] '
                "(a command's requirements install apart from the runtime's)"
            )
