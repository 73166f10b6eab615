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

What it loads is exactly the zip's files and modes. Each dependency set has SLOTS task
roots kept between checks (package/check_view.py says how they are made): in the
sandbox, each top-level folder of the sealed `site/` that holds exactly the layout's
files there is bound read-only into /var/task rather than copied; the rest (the
source, the runtime, the handler, assets) is laid out from the Layout
(runner.task_root_from_layout: copied, never hard-linked, and only what changed since
the slot's last check). Bytecode is compiled once per file content into a shared store
of hash-checked .pyc files (valid for any source with those bytes, so an edit within the
same second and of the same size can never load stale code), on both cores, for the
files the check imported without any; the worker reads it through a pycache prefix
(`-X pycache_prefix`, which `-I` does not ignore) of links to it. The standard
library's bytecode is the python installation's own. `serve` and `invoke` never use
the prefix: they run what Lambda runs, bytecode only where the zip has it.

A rebuild whose only changes are data files the server did not open when it was last
checked (inert(): a source or asset file that is not code, by suffix and mode; the
worker records what it opens with an audit hook), with the same paths and modes, is not
loaded again: the last check's report is given with a note saying so.

The source's code is hostile until proven otherwise, so the worker runs in the sandbox
(pmcp_build/sandbox.py: bwrap, the task root at /var/task read-only, no network, no home,
no cache, Lambda's environment only). Nothing of the cache is writable from inside: the
bytecode prefix is mounted read-only and the worker runs with -B; the tool compiles all
bytecode itself, outside, from files it verified, so what the next check reuses was
written by the tool alone. Where no
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
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pmcp_build.errors import UserError
from pmcp_build.frozen import Frozen
from pmcp_build.package import cache as cache_store
from pmcp_build.package import check_view
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
# Bytecode the store lacks is compiled by the tool once this many files need it: a
# one-file edit compiles its file in the worker (in memory, ~1 ms) rather than paying a
# compiler's start (~20 ms).
COMPILE_AT = 8
# Bytecode the store lacks is compiled after the check, on both cores, for what the
# worker imported (it compiled those in memory), rather than all of the package's
# files before it, while the zip is written: bench/load_check_floor.py --both measured
# the first check of a fresh set at 2.51x the build without a check, against 2.82x
# (9 runs, load 4-7), as the second compiles twice the files (what is never imported)
# before the load can start. PMCP_BUILD_CHECK_COMPILE=first chooses the other.
COMPILE_FIRST = os.environ.get("PMCP_BUILD_CHECK_COMPILE", "after") == "first"


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
        self.opened: list[str] = []
        if layout.handler == "bootstrap":
            return
        if os.environ.get("PMCP_BUILD_LOAD_CHECK", "1") == "0":
            self.report = LoadReport("skipped", notes=("PMCP_BUILD_LOAD_CHECK=0",))
            return
        # Keyed only now: a binary or a build with the check off hashes no layout for it.
        key = layout_fingerprint(layout)
        if environment:  # what the server saw is part of what it answered
            seen = json.dumps(environment, sort_keys=True).encode()
            key += "-" + hashlib.sha256(seen).hexdigest()[:16]
        self.cached = cache_dir() / "loadcheck" / f"{key}.json"
        if self.cached.exists():
            data = json.loads(self.cached.read_text())
            if data.get("format") == FORMAT:
                cache_store.touch(self.cached)  # a use, for `cache prune`'s least recently used
                found = data["report"]
                self.report = LoadReport(**{**found, "notes": tuple(found["notes"])})
                return
        self.unchanged = _LoadKey(layout, environment)
        self.report = self.unchanged.earlier()
        if self.report is not None:
            return
        # Daemon: an interrupted build does not wait for it; its worker exits when our
        # end of its pipe closes.
        self.thread = threading.Thread(target=self._run, daemon=True, name="load-check")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.report, self.opened = _load(self.layout, None, self.environment)
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
                    self.report, self.opened = _load(self.layout, package.path, self.environment)
                except BaseException as exc:
                    self.error = exc
            if self.error is None and self.report is not None and self.report.status == "ok":
                self.cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.cached.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps({"format": FORMAT, "report": self.report.to_json()}))
                os.replace(tmp, self.cached)
                self.unchanged.remember(self.report, self.opened)
        if isinstance(self.error, _LoadFailed):
            raise UserError(f"{package.path.name}: {self.error}") from None
        if self.error is not None:
            raise self.error
        return self.report


# What a rebuild may change without being loaded again: a file the server never opened
# while it loaded and discovered (the worker's audit hook, handler_host._watch_opens),
# that is data, not code. Code is whatever an import can run: any file of a dependency,
# the runtime or the handler, an executable, a file without a suffix (a script), and
# these suffixes. The set of paths and modes must be the same: an added or removed file
# can change what a listing or an existence test finds.
CODE_SUFFIXES = frozenset(
    (".py", ".pyc", ".pyo", ".pyd", ".pyi", ".pth", ".so", ".dylib", ".dll", ".zip",
     ".egg", ".whl", ".pyz", ".sh", ".bash", ".exe")
)  # fmt: skip
_UNCHANGED_LIMIT = 3  # changed files named in the note


def inert(entry: Any) -> bool:
    """Whether `entry` may change without the server being loaded again, provided the
    last check of the same code did not open it (a pure rule on the entry)."""
    from pmcp_build.layout.model import MODE_FILE

    if entry.origin not in ("source", "asset") or entry.mode != MODE_FILE:
        return False
    name = entry.path.rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return bool(dot and stem) and f".{suffix.lower()}" not in CODE_SUFFIXES and ".so." not in name


class _LoadKey:
    """The layout with its inert files' bytes left out (their paths and modes kept), and
    the record of the last check with that key: loadcheck/load-<key>.json (its report,
    the inert files' sha256 then, and the files the server opened)."""

    def __init__(self, layout: Layout, environment: dict[str, str]) -> None:
        h = hashlib.sha256(f"{FORMAT}\n{layout.runtime}\n{layout.handler}\n".encode())
        h.update(f"{layout.architecture}\n{json.dumps(environment, sort_keys=True)}\n".encode())
        self.inert: dict[str, str] = {}
        for e in layout.entries:
            if inert(e):
                self.inert[e.path] = e.sha256
                h.update(f"{e.path}\0{e.mode:o}\0-\n".encode())
            else:
                h.update(f"{e.path}\0{e.mode:o}\0{e.sha256}\n".encode())
        self.path = cache_dir() / "loadcheck" / f"load-{h.hexdigest()}.json"

    def earlier(self) -> LoadReport | None:
        """The last check's report, with a note, when the only files changed since are
        inert ones it did not open; else None (the check runs)."""
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") != FORMAT:
                return None
            then, opened, found = data["inert"], set(data["opened"]), data["report"]
            changed = [p for p, sha in self.inert.items() if then.get(p) != sha]
            report = LoadReport(**{**found, "notes": tuple(found["notes"])})
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not changed or opened.intersection(changed):
            return None
        cache_store.touch(self.path)
        shown = ", ".join(one_line(p) for p in changed[:_UNCHANGED_LIMIT])
        if len(changed) > _UNCHANGED_LIMIT:
            shown += f" and {len(changed) - _UNCHANGED_LIMIT} more"
        note = (
            f"not loaded again: only files the server does not load changed since its "
            f"last check ({shown})"
        )
        return LoadReport(**{**report.to_json(), "notes": (*report.notes, note)})

    def remember(self, report: LoadReport, opened: list[str]) -> None:
        data = {"format": FORMAT, "report": report.to_json(), "inert": self.inert}
        seen = set(opened)
        data["opened"] = [p for p in self.inert if "*" in seen or p in seen]
        with contextlib.suppress(OSError):
            cache_store.write_atomic(self.path, json.dumps(data).encode())


def _load(
    layout: Layout, zip_path: Path | None, environment: dict[str, str]
) -> tuple[LoadReport, list[str]]:
    """Load the server in a fresh worker and ask it to discover; the report, and the
    task root's files it opened. `zip_path` None: lay the task root out from the layout
    (_NeedsZip if a source changed since it was hashed); else unpack that zip."""
    # Imported only now: a cached or skipped check keeps the rebuild fast path light.
    from pmcp_build.layout.python import find_python
    from pmcp_build.local.runner import host_architecture

    if layout.architecture != host_architecture():
        other = f"built for {layout.architecture}, this machine is {host_architecture()}"
        return LoadReport("skipped", notes=(other,)), []
    version = layout.runtime.removeprefix("python")
    python = find_python(version)
    if python is None:
        return LoadReport("skipped", notes=(f"no python{version} on this machine",)), []
    isolated, why = _isolation(layout)
    if why is not None and not isolated and _downloaded(layout):
        # The floor: code from a URL never runs outside a sandbox.
        return LoadReport("skipped", notes=(f"not run without a sandbox: {why}",)), []
    invoker = _start_worker(layout, python, zip_path, _Run(isolated, environment))
    try:
        info: dict[str, Any] = getattr(invoker, "server_info", None) or {}
        if info.get("load_error"):
            if not invoker.bytecode.confirm.result():
                raise _NeedsZip()
            raise _LoadFailed(f"the server failed to load:\n{info['load_error'].rstrip()}")
        reply = invoker.invoke({"action": "discover"}, timeout=_deadline())
        invoker.keep_bytecode(python)
    finally:
        invoker.close()
    inside = invoker.bytecode.inside + "/"
    opened = sorted({p[len(inside) :] for p in invoker.opened if p.startswith(inside)})
    if "*" in invoker.opened:
        opened.append("*")  # more than the worker keeps: any file may have been read
    notes = tuple(one_line(str(n)) for n in info.get("notes") or ())
    if why is not None:
        notes += (f"the check ran without a sandbox ({why}): not isolated from this machine",)
    if not isinstance(reply, dict) or not reply.get("success"):
        error = (reply or {}).get("error") if isinstance(reply, dict) else reply
        message = error.get("message", error) if isinstance(error, dict) else error
        raise _LoadFailed(f"the server loaded but discover failed:\n{last_lines(str(message))}")
    discovery = reply["discovery"]
    report = LoadReport(
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
    return report, opened


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


def _start_worker(layout: Layout, python: str, zip_path: Path | None, run: _Run) -> _Worker:
    """The worker `serve` uses, on a task root holding exactly the zip's files, in the
    sandbox when `run.isolated`: the sealed dependency folders bound read-only, the rest
    laid out in the slot's root (package/check_view.py)."""
    from pmcp_build import sandbox
    from pmcp_build.local.runner import extract, task_root_from_layout

    root, held, prefix = _claim_root(layout)
    inside = sandbox.TASK_ROOT if run.isolated else str(root)
    record = root.with_suffix(".json")
    code: _Bytecode | None = None
    confirm = _Confirm(None)
    try:
        before = None
        if held is not None and record.exists():
            before = json.loads(record.read_text())
            record.unlink()  # written again once the root is whole
        folder = dependency_set(layout)
        bound: dict[str, Path] = {}
        if run.isolated and held is not None and folder is not None and zip_path is None:
            bound, check_bytes = check_view.bindable(layout, folder)
            confirm = _Confirm(check_bytes)  # hashing beside the worker's import
        laid = _without(layout, bound)
        done = None if zip_path is not None else task_root_from_layout(laid, root, before)
        if done is None:
            if zip_path is None:
                raise _NeedsZip()
            # A source changed after it was hashed: load what the zip holds.
            shutil.rmtree(root)
            root.mkdir()
            extract(zip_path, root)
            prefix, bound = None, {}  # nothing laid out from the layout to compile from
        else:
            check_view.place_mountpoints(root, bound)
            if held is not None:
                tmp = record.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(done[0]))
                os.replace(tmp, record)
        code = _Bytecode(layout, root, inside, prefix, bound, confirm)
        mounts = code.prepare(python, run.isolated)
        mounts += tuple((host, f"{inside}/{top}") for top, host in sorted(bound.items()))
        invoker = _invoker(layout, root, python, run, code, mounts, held)
    except BaseException:
        if code is not None:
            code.join()
        record.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        if held is not None:
            held.close()
        if not confirm.result():
            raise _NeedsZip() from None  # what failed was not the layout's bytes
        raise
    return _Worker(invoker, held, code)


def _without(layout: Layout, bound: dict[str, Path]) -> Layout:
    """`layout` less the entries under the bound top-level names (what is laid out)."""
    if not bound:
        return layout
    from pmcp_build.layout.model import Layout

    kept = tuple(e for e in layout.entries if e.path.split("/", 1)[0] not in bound)
    return Layout(kept, layout.runtime, layout.handler, layout.architecture)


def _invoker(
    layout: Layout,
    root: Path,
    python: str,
    run: _Run,
    code: _Bytecode,
    mounts: tuple[tuple[Path, str], ...],
    held: IO[bytes] | None,
) -> Any:
    import subprocess

    from pmcp_build.local.runner import FunctionSettings, PythonInvoker, Sandboxed

    # -B: the worker writes no bytecode anywhere; it reads the tool's, read-only.
    options: tuple[str, ...] = ("-B",)
    if code.use_prefix:
        options += ("-X", f"pycache_prefix={code.shown_prefix(run.isolated)}")
    return PythonInvoker(
        root,
        layout.handler.split(".")[0],
        python,
        subprocess.DEVNULL,
        settings=FunctionSettings(environment=run.environment),
        python_options=options,
        keep_root=held is not None,
        sandboxed=Sandboxed(run.isolated, mounts),
        start_timeout=_deadline(),
        runtime=layout.runtime,
    )


class _Confirm:
    """check_view.bindable's confirmation of the bound files' bytes, run in a thread from
    now; `result()` waits for it (True when there is nothing to confirm)."""

    def __init__(self, confirm: Callable[[], bool] | None) -> None:
        self.answer: bool | None = True if confirm is None else None
        self.thread: threading.Thread | None = None
        if confirm is not None:
            self.thread = threading.Thread(target=self._run, args=(confirm,), daemon=True)
            self.thread.start()

    def _run(self, confirm: Callable[[], bool]) -> None:
        try:
            self.answer = confirm()
        except OSError:
            self.answer = False

    def result(self) -> bool:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        return bool(self.answer)


class _Bytecode:
    """A check's bytecode: the slot's pycache prefix of links into the content store
    (check_view.Prefix), the standard library's mirror, and where the task root's files
    are, as the worker sees them and on this machine."""

    def __init__(
        self,
        layout: Layout,
        root: Path,
        inside: str,
        prefix: Path | None,
        bound: dict[str, Path],
        confirm: _Confirm,
    ) -> None:
        self.layout, self.root, self.inside, self.prefix, self.bound = (
            layout, root, inside, prefix, bound,
        )  # fmt: skip
        self.confirm = confirm
        self.tag = "cpython-" + layout.runtime.removeprefix("python").replace(".", "")
        self.links: check_view.Prefix | None = None
        self.missing: dict[str, str] = {}
        self.use_prefix = prefix is not None
        self.mirror: threading.Thread | None = None

    def shown_prefix(self, isolated: bool) -> str:
        from pmcp_build import sandbox

        return sandbox.BYTECODE_DIR if isolated else str(self.prefix)

    def host_file(self, path: str) -> Path:
        """Where the tool reads the task root's `path` from (a verified copy or site file)."""
        top = path.split("/", 1)[0]
        if top in self.bound:
            return self.bound[top].parent / path
        return self.root / path

    def prepare(self, python: str, isolated: bool) -> tuple[tuple[Path, str], ...]:
        """Link the store's bytecode for every .py file the check may import (with
        COMPILE_FIRST, compiling what the store lacks first, on both cores, when that is
        worth a compiler's start) and the standard library's mirror; returns the
        read-only mounts it needs."""
        from pmcp_build import sandbox

        if self.prefix is None:
            return ()
        self.links = check_view.Prefix(self.prefix, self.tag, linked=isolated)
        jobs: dict[str, tuple[str, str]] = {}  # prefix path -> (task root path, sha256)
        for entry in self.layout.entries:
            if entry.path.endswith(".py") and self._wanted(entry):
                rel = check_view.pyc_name(f"{self.inside}/{entry.path}", self.tag)
                jobs[rel] = (entry.path, entry.sha256)
        self.missing = self.links.link({rel: sha for rel, (_, sha) in jobs.items()})
        if COMPILE_FIRST and len(self.missing) >= COMPILE_AT:
            self._compile(python, {rel: jobs[rel][0] for rel in self.missing})
        self.links.save()  # before the worker starts: what is linked is always recorded
        if not COMPILE_FIRST and not self.links.record:
            # Files the store has no bytecode for at all (a fresh cache, or only new
            # contents): the worker compiles them in memory anyway, and without a prefix
            # it reads the standard library's bytecode where it is; the mirror for the
            # next check is made meanwhile (joined before the check ends).
            self.use_prefix = False
            self.mirror = threading.Thread(target=self._stdlib, args=(python, isolated))
            self.mirror.start()
            return ()
        mounts: tuple[tuple[Path, str], ...] = ((self.prefix, sandbox.BYTECODE_DIR),)
        return mounts + self._stdlib(python, isolated)

    def join(self) -> None:
        self.confirm.result()
        if self.mirror is not None:
            self.mirror.join()
            self.mirror = None

    def _wanted(self, entry: Any) -> bool:
        """A source file's bytecode is kept once a check imported it (a 10,000-module
        source compiles only what its server loads); everything else's always."""
        if entry.origin != "source":
            return True
        assert self.links is not None
        rel = check_view.pyc_name(f"{self.inside}/{entry.path}", self.tag)
        return rel in self.links.record

    def _compile(self, python: str, paths: dict[str, str]) -> None:
        """Compile (prefix path -> task root path) into the store and link it."""
        assert self.links is not None
        shas = {e.path: e.sha256 for e in self.layout.entries}
        jobs = [
            (rel, shas[path], self.host_file(path), f"{self.inside}/{path}")
            for rel, path in paths.items()
        ]
        done = check_view.compile_into_store(python, jobs, self.tag)
        self.links.add(done)
        for rel in done:
            self.missing.pop(rel, None)
        self.links.save()

    def _stdlib(self, python: str, isolated: bool) -> tuple[tuple[Path, str], ...]:
        """The installation's own standard-library bytecode where the prefix looks for
        it: mounted over it in the sandbox, a symlink to the mirror outside."""
        from pmcp_build import sandbox

        assert self.prefix is not None
        version = self.layout.runtime.removeprefix("python")
        stdlib = check_view.stdlib_dir(sandbox.python_prefix(python), version)
        mirror = check_view.stdlib_mirror(stdlib, python, self.tag) if stdlib else None
        if stdlib is None or mirror is None:
            return ()
        spot = self.prefix / str(stdlib).lstrip("/")
        if isolated != (spot.is_dir() and not spot.is_symlink()):
            if spot.is_symlink() or spot.is_file():
                spot.unlink()
            else:
                shutil.rmtree(spot, ignore_errors=True)
        if not isolated:
            if not spot.is_symlink():
                spot.parent.mkdir(parents=True, exist_ok=True)
                spot.symlink_to(mirror, target_is_directory=True)
            elif spot.readlink() != mirror:
                spot.unlink()
                spot.symlink_to(mirror, target_is_directory=True)
            return ()
        spot.mkdir(parents=True, exist_ok=True)
        return ((mirror, f"{sandbox.BYTECODE_DIR}{stdlib}"),)


class _Worker:
    """The worker and the slot it holds: closing stops it, frees the slot."""

    def __init__(self, invoker: Any, held: IO[bytes] | None, bytecode: _Bytecode) -> None:
        self.invoker, self.held, self.bytecode = invoker, held, bytecode
        self.server_info = invoker.server_info
        self.opened: list[str] = []

    def invoke(self, event: Any, timeout: float | None = None) -> Any:
        return self.invoker.invoke(event, timeout)

    def keep_bytecode(self, python: str) -> None:
        """Ask the worker what it imported and opened; compile, outside the sandbox, on
        both cores, the bytecode of the task root's files it imported without any, once
        there are COMPILE_AT of them (a
        one-file edit compiles its file in the worker, ~1 ms, rather than paying a
        compiler's start, ~20 ms). The worker's list is its own word: it can cost a
        compile of a file the tool laid out, never put a byte of its choosing in the
        cache."""
        code = self.bytecode
        loaded = self.invoker.loaded_files()
        self.opened = list(getattr(self.invoker, "opened_files", []) or [])
        if not code.confirm.result():
            raise _NeedsZip()  # a bound file is not what the layout hashed: load the zip
        if code.prefix is None or code.links is None:
            return
        inside = code.inside + "/"
        entries = {e.path for e in code.layout.entries}
        todo: dict[str, str] = {}
        for path in dict.fromkeys(loaded):
            rel_path = path[len(inside) :] if path.startswith(inside) else None
            if rel_path is None or rel_path not in entries or "/../" in path:
                continue
            rel = check_view.pyc_name(path, code.tag)
            if rel not in code.links.record:
                todo[rel] = rel_path
        if len(todo) >= COMPILE_AT:
            code._compile(python, todo)
        else:
            code.links.save()

    def close(self) -> None:
        try:
            self.invoker.close()
        finally:
            self.bytecode.join()
            if self.held is not None:
                self.held.close()
