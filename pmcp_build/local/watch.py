"""`serve --watch`, and starting `serve`'s instances so that Ctrl-C stops it cleanly.

Watching is a stdlib poll of the source folder (mtime and size of every file, twice a
second) rather than an OS watcher such as watchfiles: it adds no dependency (a native
wheel per platform) to a build tool, behaves the same on every OS and filesystem
(network mounts and containers, where inotify misses edits), and a source tree is a
few thousand files at most: one pass costs a few milliseconds. Folders that never
ship (VCS data, caches, virtualenvs, `.pmcp/`, where the build writes) are not
walked, so a build does not trigger the next one.

While a change is rebuilt, the old package keeps serving; the new one replaces it
once its instances have started and loaded the server. A build or load that fails is
reported, and the old package goes on serving.

The instances (worker processes) start with SIGINT blocked, which they inherit: a
Ctrl-C at the terminal goes to the whole process group, and each worker would
otherwise die printing its own KeyboardInterrupt traceback. `serve` alone handles it,
waits for instances still starting, closes them all (their task roots under /tmp go
with them) and exits 130.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pmcp_build.local.runner import InstancePool

POLL_SECONDS = 0.5
SKIPPED_DIRS = frozenset(
    {
        ".pmcp",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "__pycache__",
        "node_modules",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".tox",
    }
)

Snapshot = dict[str, tuple[int, int]]


def snapshot(roots: list[Path]) -> Snapshot:
    """Each watched file's (mtime_ns, size), by its path."""
    seen: Snapshot = {}
    for root in roots:
        if root.is_file():
            _stat_into(seen, str(root))
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in files:
                _stat_into(seen, os.path.join(folder, name))
    return seen


def _stat_into(seen: Snapshot, path: str) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return  # removed while walking: the next pass says so
    seen[path] = (st.st_mtime_ns, st.st_size)


def changes(before: Snapshot, after: Snapshot, base: Path) -> list[str]:
    """What changed, as `server.py modified`, `data.db added`, `old.py removed`."""

    def shown(path: str) -> str:
        try:
            return Path(path).relative_to(base).as_posix()
        except ValueError:
            return path

    said = [f"{shown(p)} added" for p in after.keys() - before.keys()]
    said += [f"{shown(p)} removed" for p in before.keys() - after.keys()]
    said += [f"{shown(p)} modified" for p in after.keys() & before.keys() if after[p] != before[p]]
    return sorted(said)


# -- instances that Ctrl-C does not reach ------------------------------------------------


def start_quietly(
    start: Callable[[], InstancePool], say: Callable[[str], None], line: str | None = None
) -> InstancePool:
    """Run `start` (which spawns the workers) in a thread with SIGINT blocked, so the
    workers inherit the block; the main thread stays interruptible. On Ctrl-C the
    instances still starting are waited for and closed before KeyboardInterrupt goes on:
    nothing is left running, nothing is left in /tmp. `line` (the progress line) is said
    once the thread exists, so a Ctrl-C that answers it always finds the thread to wait
    for; one that lands before the thread reached `start` cancels it instead."""
    made: list[InstancePool] = []
    failed: list[BaseException] = []
    # An Event, not Thread.join: a join that Ctrl-C interrupts marks the thread stopped
    # on CPython 3.11, and the next join would return while the workers still start.
    done = threading.Event()
    gate = threading.Lock()  # decides, once, between "cancelled" and "running"
    flags = {"cancelled": False, "running": False}

    def run() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with gate:
                if flags["cancelled"]:
                    return
                flags["running"] = True
            made.append(start())
        except BaseException as exc:  # handed to the main thread below
            failed.append(exc)
        finally:
            done.set()

    try:
        threading.Thread(target=run, name="pmcp-start", daemon=True).start()
        if line is not None:
            say(line)
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        with gate:
            flags["cancelled"] = True
            running = flags["running"]
        if running:
            say("stopping: waiting for the instances that are starting…")
            done.wait()
        for pool in made:
            pool.close()
        raise
    if failed:
        raise failed[0]
    return made[0]


class Swappable:
    """The invoker `serve`'s HTTP server calls: the current pool, replaced on reload.
    A pool being replaced finishes the requests it holds before it is closed."""

    def __init__(self, pool: InstancePool) -> None:
        self.pool = pool
        self.lock = threading.Lock()
        self.busy: dict[int, int] = {}
        self.idle = threading.Condition(self.lock)

    @property
    def server_info(self) -> Any:
        return getattr(self.pool, "server_info", None)

    def invoke(self, event: Any, timeout: float | None = None) -> Any:
        with self.lock:
            pool = self.pool
            self.busy[id(pool)] = self.busy.get(id(pool), 0) + 1
        try:
            return pool.invoke(event, timeout)
        finally:
            with self.lock:
                self.busy[id(pool)] -= 1
                self.idle.notify_all()

    def swap(self, new: InstancePool, drain_seconds: float = 60) -> InstancePool:
        """Serve `new` from now on; the old pool, once its requests are done."""
        with self.lock:
            old, self.pool = self.pool, new
            self.idle.wait_for(lambda: self.busy.get(id(old), 0) == 0, drain_seconds)
            self.busy.pop(id(old), None)
        return old

    def close(self) -> None:
        self.pool.close()


def watch_loop(
    roots: list[Path],
    base: Path,
    rebuild: Callable[[list[str]], None],
    stop: threading.Event | None = None,
) -> Iterator[None]:
    """Poll `roots`; call `rebuild(what changed)` after a change settles (a save that
    writes in several steps is one change). Yields after each pass (tests step it)."""
    before = snapshot(roots)
    while stop is None or not stop.is_set():
        time.sleep(POLL_SECONDS)
        after = snapshot(roots)
        if after == before:
            yield
            continue
        time.sleep(POLL_SECONDS / 2)  # let an editor finish writing
        settled = snapshot(roots)
        rebuild(changes(before, settled, base))
        before = snapshot(roots)  # what the build itself wrote outside .pmcp/ counts once
        yield


class Reloader:
    """What a change does: rebuild, start the new package's instances, swap them in.
    `build` loads the manifest again and builds (raising UserError for a bad edit),
    `start` starts a package's instances; `say` prints one line to stderr."""

    def __init__(
        self,
        serving: Swappable,
        package: Any,
        build: Callable[[], Any],
        start: Callable[[Any], InstancePool],
        say: Callable[[str], None],
    ) -> None:
        self.serving = serving
        self.package = package
        self.build = build
        self.start = start
        self.say = say

    def __call__(self, changed: list[str]) -> None:
        from pmcp_build.errors import UserError

        shown = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        self.say(f"changed: {shown}; rebuilding (still serving {self.package.path.name})")
        started = time.monotonic()
        try:
            package = self.build()
        except UserError as exc:
            self._failed(str(exc))
            return
        if package.sha256 == self.package.sha256:
            self.say(f"the package is unchanged ({package.path.name}); still serving it")
            return
        try:
            pool = start_quietly(lambda: self.start(package), self.say)
        except UserError as exc:
            self._failed(str(exc))
            return
        load_error = (getattr(pool, "server_info", None) or {}).get("load_error")
        if load_error:
            pool.close()
            self._failed(f"the server failed to load:\n{load_error.rstrip()}")
            return
        self.serving.swap(pool).close()
        self.package = package
        self.say(f"reloaded in {time.monotonic() - started:.1f} s: serving {package.path.name}")

    def _failed(self, why: str) -> None:
        for line in why.splitlines():
            self.say(f"error: {line}")
        self.say(f"still serving {self.package.path.name}")


def watched_roots(loaded: Any) -> list[Path]:
    """The manifest, and the source folder when the source is one (a URL source only
    changes with the manifest)."""
    roots = [loaded.path.resolve()]
    source = loaded.manifest.source
    if source.url is None:
        roots.append((loaded.root / (source.path or ".")).resolve())
    return roots


def serve_watching(server: Any, reloader: Reloader, roots: list[Path], base: Path) -> None:
    """Serve in a thread while the main thread polls; returns (raising) on Ctrl-C."""
    thread = threading.Thread(target=server.serve_forever, name="pmcp-serve", daemon=True)
    thread.start()
    try:
        for _ in watch_loop(roots, base, reloader):
            pass
    finally:
        server.shutdown()
        thread.join(5)
