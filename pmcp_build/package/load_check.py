"""Load the built server at build time, in the isolated worker `serve` uses.

A server that does not load is found by `build` and `plan`, not by the first
request after a deploy. The check runs the package's own handler (a fresh
interpreter on the task root, as Lambda imports it) and asks it to `discover`; it
is skipped with a note when this machine cannot run the package (another
architecture, no python3.X here). A package that loaded once is not loaded again:
the result is cached by the layout's fingerprint (the zip is a pure function of it).
PMCP_BUILD_LOAD_CHECK=0 skips it.

It needs the layout, not the zip, so a full build starts it (`begin`) as soon as the
layout is resolved and writes the zip meanwhile: laying out the task root and the
worker's import run beside the deflating (only a source edited after it was hashed
makes the check wait for the zip and unpack it).

What it loads is exactly the zip's files and modes, laid out from the Layout rather
than extracted from the zip just written (runner.task_root_from_layout: copied, never
hard-linked, so a server writing to its root cannot reach the cache). The task root
sits at a fixed path inside the dependency set's cache folder and is kept between
checks, so the next check writes only the files that changed (and removes whatever else
is there), and the worker keeps bytecode for it outside the root (`-X pycache_prefix`,
which `-I` does not ignore): a rebuild with the same dependency set imports the SDK
from bytecode instead of compiling it. The prefix's bytecode for every file written
anew is removed before each load, so an edit within the same second and of the same
size cannot load stale code. `serve` and `invoke` never use the prefix: they run what
Lambda runs, bytecode only where the zip has it.

The source's code is hostile until proven otherwise, so the worker runs in the sandbox
(pmcp_build/sandbox.py: bwrap, the task root at /var/task read-only, no network, no home,
no cache, Lambda's environment only). Nothing of the cache is writable from inside: the
bytecode prefix is mounted read-only and the worker runs with -B; the tool compiles the
bytecode of the modules the check imported itself, outside, from the files it wrote
(_compile_loaded), so what the next check reuses was written by the tool alone. Where no
sandbox can be had, a downloaded source's code never runs (the check is skipped with a
note saying why) and a local source's check runs with the same scrubbed environment and
a note that it was not isolated. Every process the check starts is stopped when it ends
or times out (PMCP_BUILD_LOAD_CHECK_TIMEOUT seconds, default 60).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pmcp_build.errors import UserError
from pmcp_build.frozen import Frozen
from pmcp_build.package import cache as cache_store
from pmcp_build.package.cache import cache_dir
from pmcp_build.package.write import dependency_set, layout_fingerprint
from pmcp_build.text import one_line

if TYPE_CHECKING:
    from pmcp_build.layout.model import Layout
    from pmcp_build.package.write import Package

FORMAT = "load-v2"
TRACEBACK_LINES = 8
SLOTS = 4  # task roots per dependency set: builds running side by side each take one
DEADLINE = 60.0  # seconds for the server to load, and again to answer discover
# Bytecode the check lacks is compiled by the tool once this many imported files have
# none: a one-file edit compiles its file in the worker (in memory, ~1 ms) rather than
# paying a second interpreter's start (~20 ms) to keep it.
COMPILE_AT = 8
# Runs in the target python, outside the sandbox, on files the tool wrote: compiling
# executes nothing. Each line of stdin: [source, cfile, name shown in tracebacks].
COMPILER = (
    "import json, py_compile, sys\n"
    "mode = py_compile.PycInvalidationMode.TIMESTAMP\n"
    "for src, cfile, shown in json.load(sys.stdin):\n"
    "    py_compile.compile(src, cfile, shown, doraise=False, quiet=2, invalidation_mode=mode)\n"
)


class LoadReport(Frozen):
    """What the check found: the server's kind, name and counts, or why it was skipped."""

    __slots__ = ("kind", "name", "notes", "prompts", "resources", "status", "tools")
    status: str  # "ok" | "skipped"
    kind: str
    name: str
    tools: int
    resources: int
    prompts: int
    notes: tuple[str, ...]

    def __init__(
        self,
        status: str,
        kind: str = "",
        name: str = "",
        tools: int = 0,
        resources: int = 0,
        prompts: int = 0,
        notes: tuple[str, ...] = (),
    ) -> None:
        self._init(
            status=status, kind=kind, name=name, tools=tools, resources=resources,
            prompts=prompts, notes=notes,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"LoadReport({self.to_json()!r})"

    def line(self) -> str:
        if self.status == "skipped":
            return f"server: not loaded here ({'; '.join(self.notes)})"
        counts = ", ".join(
            _plural(n, word)
            for n, word in (
                (self.tools, "tool"),
                (self.resources, "resource"),
                (self.prompts, "prompt"),
            )
        )
        return f"server: {self.kind} {self.name!r}: {counts}"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "kind": self.kind,
            "name": self.name,
            "tools": self.tools,
            "resources": self.resources,
            "prompts": self.prompts,
            "notes": list(self.notes),
        }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def last_lines(text: str, count: int = TRACEBACK_LINES) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-count:])


def check(package: Package, environment: dict[str, str] | None = None) -> LoadReport | None:
    """None for a binary package (nothing to load); raises UserError when it fails."""
    return begin(package.layout, environment).result(package)


def begin(layout: Layout, environment: dict[str, str] | None = None) -> PendingCheck:
    """Start checking `layout` now, in a thread; `result(package)` once the zip is written.
    `environment`: the targets' declared variables (declared_environment)."""
    return PendingCheck(layout, environment or {})


def declared_environment(targets: Any) -> dict[str, str]:
    """What the check's server sees besides Lambda's own variables: every lambda target's
    declared environment, `${env:NAME}` left as written (never this machine's value, which
    may be a secret the source must not read); a key the targets set differently is
    given as the first one declares it."""
    found: dict[str, str] = {}
    for target in targets:
        for key, value in (getattr(target, "environment", None) or {}).items():
            if isinstance(value, str):
                found.setdefault(key, value)  # as written: a reference is never resolved
    return found


def _deadline() -> float:
    """Seconds the server has to load, and again to answer discover."""
    raw = os.environ.get("PMCP_BUILD_LOAD_CHECK_TIMEOUT", "")
    if not raw:
        return DEADLINE
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0
    if not 0 < seconds <= 3600:
        raise UserError(
            f"PMCP_BUILD_LOAD_CHECK_TIMEOUT={one_line(raw)[:40]}: not a number of seconds "
            "between 0 and 3600; unset it for the default (60)"
        )
    return seconds


class _LoadFailed(Exception):
    """The server did not load or answer; the message is told with the zip's name."""


class _NeedsZip(Exception):
    """A source changed after it was hashed: only the zip says what was packaged."""


class PendingCheck:
    """A load check under way beside the writing of the zip (or already decided: a
    binary, a cached result, PMCP_BUILD_LOAD_CHECK=0)."""

    def __init__(self, layout: Layout, environment: dict[str, str]) -> None:
        self.layout, self.environment = layout, environment
        self.report: LoadReport | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        key = layout_fingerprint(layout)
        if environment:  # what the server saw is part of what it answered
            seen = json.dumps(environment, sort_keys=True).encode()
            key += "-" + hashlib.sha256(seen).hexdigest()[:16]
        self.cached = cache_dir() / "loadcheck" / f"{key}.json"
        if layout.handler == "bootstrap":
            return
        if os.environ.get("PMCP_BUILD_LOAD_CHECK", "1") == "0":
            self.report = LoadReport("skipped", notes=("PMCP_BUILD_LOAD_CHECK=0",))
            return
        if self.cached.exists():
            data = json.loads(self.cached.read_text())
            if data.get("format") == FORMAT:
                cache_store.touch(self.cached)  # a use, for `cache prune`'s least recently used
                found = data["report"]
                self.report = LoadReport(**{**found, "notes": tuple(found["notes"])})
                return
        # Daemon: an interrupted build does not wait for it; its worker exits when our
        # end of its pipe closes.
        self.thread = threading.Thread(target=self._run, daemon=True, name="load-check")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.report = _load(self.layout, None, self.environment)
        except BaseException as exc:  # handed to result(), in the caller's thread
            self.error = exc

    def result(self, package: Package) -> LoadReport | None:
        """The report for `package` (written from this layout); UserError if it failed."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
            if isinstance(self.error, _NeedsZip):
                self.error = None
                try:
                    self.report = _load(self.layout, package.path, self.environment)
                except BaseException as exc:
                    self.error = exc
            if self.error is None and self.report is not None and self.report.status == "ok":
                self.cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.cached.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps({"format": FORMAT, "report": self.report.to_json()}))
                os.replace(tmp, self.cached)
        if isinstance(self.error, _LoadFailed):
            raise UserError(f"{package.path.name}: {self.error}") from None
        if self.error is not None:
            raise self.error
        return self.report


def _load(layout: Layout, zip_path: Path | None, environment: dict[str, str]) -> LoadReport:
    """Load the server in a fresh worker and ask it to discover. `zip_path` None: lay
    the task root out from the layout (_NeedsZip if a source changed since it was
    hashed); else unpack that zip."""
    # Imported only now: a cached or skipped check keeps the rebuild fast path light.
    from pmcp_build.layout.python import find_python
    from pmcp_build.local.runner import host_architecture

    if layout.architecture != host_architecture():
        return LoadReport(
            "skipped",
            notes=(f"built for {layout.architecture}, this machine is {host_architecture()}",),
        )
    version = layout.runtime.removeprefix("python")
    python = find_python(version)
    if python is None:
        return LoadReport("skipped", notes=(f"no python{version} on this machine",))
    isolated, why = _isolation(layout)
    if why is not None and not isolated and _downloaded(layout):
        # The floor: code from a URL never runs outside a sandbox.
        return LoadReport("skipped", notes=(f"not run without a sandbox: {why}",))
    invoker = _start_worker(layout, python, zip_path, _Run(isolated, environment))
    try:
        info: dict[str, Any] = getattr(invoker, "server_info", None) or {}
        if info.get("load_error"):
            raise _LoadFailed(f"the server failed to load:\n{info['load_error'].rstrip()}")
        reply = invoker.invoke({"action": "discover"}, timeout=_deadline())
        invoker.keep_bytecode(python)
    finally:
        invoker.close()
    notes = tuple(one_line(str(n)) for n in info.get("notes") or ())
    if why is not None:
        notes += (f"the check ran without a sandbox ({why}): not isolated from this machine",)
    if not isinstance(reply, dict) or not reply.get("success"):
        error = (reply or {}).get("error") if isinstance(reply, dict) else reply
        message = error.get("message", error) if isinstance(error, dict) else error
        raise _LoadFailed(f"the server loaded but discover failed:\n{last_lines(str(message))}")
    discovery = reply["discovery"]
    return LoadReport(
        "ok",
        # The server's own code names its kind and notes: shown on one line each.
        kind=one_line(str(info.get("label") or info.get("kind") or "server")),
        name=str(discovery.get("implementation", {}).get("name", "")),
        tools=len(discovery.get("tools") or []),
        resources=len(discovery.get("resources") or [])
        + len(discovery.get("resourceTemplates") or []),
        prompts=len(discovery.get("prompts") or []),
        notes=notes,
    )


def _isolation(layout: Layout) -> tuple[bool, str | None]:
    """Whether the check runs in the sandbox, and why not when it does not."""
    from pmcp_build import sandbox

    why = sandbox.unavailable()
    return why is None, why


def _downloaded(layout: Layout) -> bool:
    """The source's files were read from the download cache (a [source].url, a
    --source-url): code nobody on this machine wrote."""
    cache = cache_dir().resolve()
    for entry in layout.entries:
        if entry.origin == "source" and entry.src is not None:
            return entry.src.resolve().is_relative_to(cache)
    return False


class _Run:
    """How a check's worker runs: sandboxed or not, and the declared environment."""

    def __init__(self, isolated: bool, environment: dict[str, str]) -> None:
        self.isolated, self.environment = isolated, environment


def _claim_root(layout: Layout) -> tuple[Path, IO[bytes] | None, Path | None]:
    """A task root at a fixed path (so bytecode kept under the prefix matches it, and
    the next check rewrites only what changed), one of SLOTS per dependency set, held
    with a lock while the worker runs, with its own bytecode prefix (a file's bytecode
    records its mtime, which differs between slots); a temporary root, without a prefix,
    when all are taken or locks are not available here."""
    folder = dependency_set(layout)
    if folder is not None:
        try:
            import fcntl
        except ImportError:  # not on this platform: a temporary root still checks
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            (folder / "check").mkdir(exist_ok=True)
            for slot in range(SLOTS):
                held = open(folder / "check" / f"{slot}.lock", "ab")  # noqa: SIM115
                try:
                    fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    held.close()
                    continue
                root = folder / "check" / str(slot)
                root.mkdir(exist_ok=True)
                prefix = folder / "bytecode" / str(slot)
                prefix.mkdir(parents=True, exist_ok=True)
                return root, held, prefix
    import tempfile

    return Path(tempfile.mkdtemp(prefix="pmcp-task-")), None, None


def _bytecode_base(prefix: Path, inside_root: str) -> Path:
    """Where the prefix keeps the bytecode of the task root's files, as python maps a
    source path under -X pycache_prefix (the path the worker sees it at)."""
    return prefix / inside_root.lstrip("/")


def _forget_bytecode(base: Path, written: list[str]) -> None:
    """Remove the prefix's bytecode for the .py files just written: a .pyc is checked
    by mtime (whole seconds) and size only, so an edit of the same size within the same
    second would otherwise load the old code. Files kept from the last check are the
    same files (same inode, mtime and ctime), so their bytecode stays valid: with the
    same dependency set, only what changed compiles."""
    for rel in written:
        if rel.endswith(".py"):
            path = base / rel
            folder = path.parent
            if folder.is_dir():
                stem = path.name[:-3] + "."
                for name in os.listdir(folder):
                    if name.startswith(stem) and name.endswith(".pyc"):
                        (folder / name).unlink(missing_ok=True)


def _start_worker(layout: Layout, python: str, zip_path: Path | None, run: _Run) -> _Worker:
    """The worker `serve` uses, on a task root holding exactly the zip's files, in the
    sandbox when `run.isolated`."""
    import shutil
    import subprocess

    from pmcp_build import sandbox
    from pmcp_build.local.runner import (
        FunctionSettings,
        PythonInvoker,
        Sandboxed,
        extract,
        task_root_from_layout,
    )

    root, held, prefix = _claim_root(layout)
    inside = sandbox.TASK_ROOT if run.isolated else str(root)
    record = root.with_suffix(".json")
    try:
        before = None
        if held is not None and record.exists():
            before = json.loads(record.read_text())
            record.unlink()  # written again once the root is whole
        done = None if zip_path is not None else task_root_from_layout(layout, root, before)
        if done is None:
            if zip_path is None:
                raise _NeedsZip()
            # A source changed after it was hashed: load what the zip holds.
            shutil.rmtree(root)
            root.mkdir()
            extract(zip_path, root)
            prefix = None  # fresh mtimes everywhere: nothing to reuse or to keep
        elif held is not None and prefix is not None:
            _forget_bytecode(_bytecode_base(prefix, inside), done[1])
            tmp = record.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(done[0]))
            os.replace(tmp, record)
        # -B: the worker writes no bytecode anywhere; it reads the tool's, read-only.
        options: tuple[str, ...] = ("-B",)
        mounts: tuple[tuple[Path, str], ...] = ()
        if prefix is not None:
            shown = sandbox.BYTECODE_DIR if run.isolated else str(prefix)
            options += ("-X", f"pycache_prefix={shown}")
            mounts = ((prefix, sandbox.BYTECODE_DIR),)
        invoker = PythonInvoker(
            root,
            layout.handler.split(".")[0],
            python,
            subprocess.DEVNULL,
            settings=FunctionSettings(environment=run.environment),
            python_options=options,
            keep_root=held is not None and prefix is not None,
            sandboxed=Sandboxed(run.isolated, mounts),
            start_timeout=_deadline(),
            runtime=layout.runtime,
        )
    except BaseException:
        record.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        if held is not None:
            held.close()
        raise
    return _Worker(invoker, held, _Bytecode(root, inside, prefix, layout.runtime))


class _Bytecode:
    """Where a check's task root is, as the worker sees it, and its bytecode prefix."""

    def __init__(self, root: Path, inside: str, prefix: Path | None, runtime: str) -> None:
        self.root, self.inside, self.prefix = root, inside, prefix
        self.tag = "cpython-" + runtime.removeprefix("python").replace(".", "")


class _Worker:
    """The worker and the slot it holds: closing stops it, removes its root, frees the slot."""

    def __init__(self, invoker: Any, held: IO[bytes] | None, bytecode: _Bytecode) -> None:
        self.invoker, self.held, self.bytecode = invoker, held, bytecode
        self.server_info = invoker.server_info

    def invoke(self, event: Any, timeout: float | None = None) -> Any:
        return self.invoker.invoke(event, timeout)

    def keep_bytecode(self, python: str) -> None:
        """Compile, outside the sandbox, the bytecode of the files the worker imported and
        found none for (see COMPILE_AT): the next check imports them from it. The prefix
        stands for every source, so the standard library's bytecode is kept there too.
        Only files of the task root the tool laid out, or of the python's own prefix, are
        compiled, so the worker's list (its own word) can cost a compile, never put a byte
        of its choosing in the cache."""
        from pmcp_build.sandbox import python_prefix

        code = self.bytecode
        if code.prefix is None:
            return
        inside, system = code.inside + "/", str(python_prefix(python)) + "/"
        jobs = []
        for path in dict.fromkeys(self.invoker.loaded_files()):
            if "/../" in path or "/./" in path or "//" in path:
                continue
            if path.startswith(inside):
                host = code.root / path[len(inside) :]
            elif path.startswith((system, "/usr/lib/")):
                host = Path(path)
            else:
                continue
            cfile = code.prefix / path[1 : -len(".py")]
            cfile = cfile.with_name(f"{cfile.name}.{code.tag}.pyc")
            if not cfile.exists() and host.is_file() and not host.is_symlink():
                jobs.append([str(host), str(cfile), path])
        if len(jobs) >= COMPILE_AT:
            _compile(python, jobs)

    def close(self) -> None:
        try:
            self.invoker.close()
        finally:
            if self.held is not None:
                self.held.close()


def _compile(python: str, jobs: list[list[str]]) -> None:
    """py_compile in the target python (its bytecode format), with no environment of
    ours; a failure only costs the next check the compile."""
    import subprocess

    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [python, "-I", "-S", "-c", COMPILER],
            input=json.dumps(jobs),
            text=True,
            capture_output=True,
            env={"PATH": "/usr/bin:/bin"},
            timeout=120,
        )
