"""Running a built package on this machine as Lambda would, for `serve` and `invoke`.

The zip is extracted to a temporary task root (what /var/task holds). A python
package runs in an isolated interpreter (handler_host.py); a custom-runtime package runs its
`bootstrap` against a local Lambda Runtime API, the way Lambda starts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from pmcp_build.errors import UserError
from pmcp_build.layout.model import Layout
from pmcp_build.layout.python import find_python

LOCAL_FUNCTION_ARN = "arn:aws:lambda:us-east-1:000000000000:function:local"
WORKER = Path(__file__).resolve().parent / "handler_host.py"


class Invoker(Protocol):
    def invoke(self, event: Any, timeout: float | None = None) -> Any: ...
    def close(self) -> None: ...


class FunctionSettings:
    """The function as Lambda would describe it to the handler (the context object), and
    the environment it runs with besides Lambda's own variables (sandbox.lambda_environment):
    the target's declared one and whatever `serve`/`invoke` were told to pass through."""

    def __init__(
        self,
        name: str = "local",
        memory: int = 512,
        timeout: int = 30,
        environment: dict[str, str] | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.name, self.memory, self.timeout = name, memory, timeout
        self.environment = dict(environment or {})
        self.region = region

    def env(self, runtime: str, handler: str, task_root: str) -> dict[str, str]:
        """The whole environment of the function's process: never this machine's."""
        from pmcp_build.sandbox import lambda_environment

        made = lambda_environment(
            runtime, handler, self.name, self.memory, self.region, task_root=task_root
        )
        # The manifest refuses Lambda's reserved names, so what the target sets (TZ, LANG)
        # overrides a default as it would on Lambda.
        return {**made, **self.environment}


def _stream(log: Any) -> Any:
    """Where the handler's own output goes: the given file, else our stderr's fd."""
    if log is not None:
        return log
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None  # stderr is not a real file (captured): inherit the process's fd 2
    return sys.stderr


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Stop `proc` and every process it started: it leads its own session (started with
    start_new_session), so its group goes with it; a sandboxed one is bwrap, whose pid
    namespace dies with it, double forks included."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever ignored SIGTERM, or stayed behind
    proc.wait()


def host_architecture() -> str:
    return "arm64" if platform.machine().lower() in ("arm64", "aarch64") else "x86_64"


def extract(zip_path: Path, dest: Path) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            target.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)


Held = dict[str, list[Any]]  # path -> [sha256, mode, inode, size, mtime_ns, ctime_ns]


def task_root_from_layout(
    layout: Layout, dest: Path, held: Held | None = None
) -> tuple[Held, list[str]] | None:
    """Make `dest` hold exactly the files and modes the zip of `layout` holds, without
    reading the zip back (the build-time load check; `serve` extracts the zip itself).

    Every entry is copied or written, never hard-linked (a server that writes to its
    task root, an SQLite asset opened read-write, must not reach the source or the
    dependency cache through a link); a file that is not a generated entry is checked
    against the layout's sha256 as it is read.

    `held` is what an earlier call returned for the same `dest`: a file still carrying
    the inode, size, mtime and ctime recorded then is the file written then (a write or
    chmod through the root changes its ctime) and stays; anything else in `dest`
    (changed, extra, a symlink, a folder no entry needs) is removed and laid out again.
    So a one-file rebuild writes one file, not 11,000 (creating files is what costs
    here: 0.1-0.6 ms each on this project's machines). Returns the new record and the
    paths written this time (whose bytecode is stale); None when a file changed on disk
    since the layout hashed it: `dest` is then not the zip's, and the caller extracts
    the zip.
    """
    import hashlib

    wanted = {entry.path: entry for entry in layout.entries}
    folders: set[str] = set()
    for path in wanted:
        cut = path.rfind("/")
        while cut > 0 and path[:cut] not in folders:
            folders.add(path[:cut])
            cut = path.rfind("/", 0, cut)
    held = held or {}
    kept: Held = {}
    for dirpath, dirnames, filenames in os.walk(dest):
        base = Path(dirpath)
        rel = base.relative_to(dest).as_posix()
        prefix = "" if rel == "." else rel + "/"
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            path = prefix + name
            entry, record = wanted.get(path), held.get(path)
            st = os.lstat(base / name)
            if entry is not None and record is not None and stat.S_ISREG(st.st_mode):
                now = [entry.sha256, entry.mode, st.st_ino, st.st_size, st.st_mtime_ns]
                now.append(st.st_ctime_ns)  # a write or chmod through the root changes it
                if record == now and stat.S_IMODE(st.st_mode) == entry.mode:
                    kept[path] = record
                    continue
            os.unlink(base / name)
        for name in list(dirnames):
            if (base / name).is_symlink():
                dirnames.remove(name)
            elif prefix + name not in folders:  # left by an earlier layout, or the server
                shutil.rmtree(base / name)
                dirnames.remove(name)
    written: list[str] = []
    made: set[Path] = set()
    for entry in layout.entries:
        if entry.path in kept:
            continue
        target = dest / entry.path
        parent = target.parent
        if parent not in made:
            parent.mkdir(parents=True, exist_ok=True)
            made.add(parent)
        data = entry.read()
        if entry.data is None and hashlib.sha256(data).hexdigest() != entry.sha256:
            return None
        with open(target, "xb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), entry.mode)  # not the umask's: the zip's mode
        written.append(entry.path)
        st = os.lstat(target)
        kept[entry.path] = [
            entry.sha256,
            entry.mode,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ]
    return kept, written


def open_pool(
    zip_path: Path,
    layout: Layout,
    concurrency: int,
    log: Any = None,
    settings: FunctionSettings | None = None,
) -> InstancePool:
    """`concurrency` warm instances, started side by side, as Lambda would scale out."""
    made: list[Invoker] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            made.append(open_invoker(zip_path, layout, log, settings))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, daemon=True) for _ in range(max(1, concurrency))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for invoker in made:
            invoker.close()
        raise errors[0]
    return InstancePool(made)


class InstancePool:
    """Each request borrows an idle instance, so one never sees another's args, logs or
    globals mid-request; a request waits when all are busy, as Lambda queues nothing but
    would start another instance."""

    def __init__(self, invokers: list[Invoker]) -> None:
        self.invokers = invokers
        self.idle: queue.Queue[Invoker] = queue.Queue()
        for invoker in invokers:
            self.idle.put(invoker)
        self.server_info = getattr(invokers[0], "server_info", None)

    def invoke(self, event: Any, timeout: float | None = None) -> Any:
        invoker = self.idle.get()
        try:
            return invoker.invoke(event, timeout)
        finally:
            self.idle.put(invoker)

    def close(self) -> None:
        # Side by side: N workers each given up to 5 s to stop would otherwise add up.
        threads = [threading.Thread(target=i.close, daemon=True) for i in self.invokers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def open_invoker(
    zip_path: Path,
    layout: Layout,
    log: Any = None,
    settings: FunctionSettings | None = None,
) -> Invoker:
    if layout.architecture != host_architecture():
        raise UserError(
            f"the package is built for {layout.architecture}, this machine is "
            f"{host_architecture()}; to run it locally set [runtime].architecture = "
            f'"{host_architecture()}" (or run on a {layout.architecture} machine)'
        )
    root = Path(tempfile.mkdtemp(prefix="pmcp-task-"))
    try:
        extract(zip_path, root)
        if layout.handler == "bootstrap":
            return BinaryInvoker(root, log, settings)
        version = layout.runtime.removeprefix("python")
        python = find_python(version)
        if python is None:
            raise UserError(
                f"running a {layout.runtime} package needs python{version}: "
                f"`uv python install {version}`"
            )
        module = layout.handler.split(".")[0]
        return PythonInvoker(root, module, python, log, settings, runtime=layout.runtime)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


class Sandboxed:
    """How the load check runs a worker: in bwrap (pmcp_build.sandbox), the task root at
    /var/task, with `read_only` (host path, path inside) mounted besides, or, where no
    sandbox can be had, as a plain process with the same scrubbed environment."""

    def __init__(self, isolated: bool, read_only: tuple[tuple[Path, str], ...] = ()) -> None:
        self.isolated, self.read_only = isolated, read_only


class PythonInvoker:
    def __init__(
        self,
        root: Path,
        module: str,
        python: str,
        log: Any = None,
        settings: FunctionSettings | None = None,
        python_options: tuple[str, ...] = (),
        keep_root: bool = False,
        sandboxed: Sandboxed | None = None,
        start_timeout: float = 60,
        runtime: str = "python3",
    ) -> None:
        self.root = root
        self.keep_root = keep_root  # the load check lays out its root again next time
        self.settings = settings or FunctionSettings()
        self.lock = threading.Lock()  # one invocation at a time, as in a Lambda instance
        worker = _WorkerSpec(root, module, python, python_options, runtime)
        argv, env, cwd = _python_command(worker, self.settings, sandboxed)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=_stream(log),
            text=True,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own group: close() stops all it started
        )
        try:
            first = self._read(timeout=start_timeout)
        except BaseException:
            self.close()  # a server hanging at import is not left running
            raise
        # What the runtime loaded: kind, name, load error (see handler_host._describe).
        self.server_info: dict[str, Any] | None = first.get("server")
        if "init_error" in first:
            self.close()
            raise UserError(f"the package's handler failed to import:\n{first['init_error']}")

    def _read(self, timeout: float) -> Any:
        assert self.proc.stdout is not None
        result: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(
            target=lambda: result.put(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        try:
            line = result.get(timeout=timeout)
        except queue.Empty:
            raise UserError(f"the handler did not answer within {timeout:.0f} s") from None
        if not line:
            raise UserError(f"the handler process exited (code {self.proc.poll()})")
        return json.loads(line)

    def invoke(self, event: Any, timeout: float | None = None) -> Any:
        timeout = timeout or float(self.settings.timeout)
        context = {
            "function_name": self.settings.name,
            "memory_limit_in_mb": self.settings.memory,
            "invoked_function_arn": LOCAL_FUNCTION_ARN.replace(":local", f":{self.settings.name}"),
            "aws_request_id": str(uuid.uuid4()),
            "deadline_ms": int((time.time() + timeout) * 1000),
        }
        with self.lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"event": event, "context": context}) + "\n")
            self.proc.stdin.flush()
            # A little past the deadline: the runtime answers a clear timeout error itself.
            reply = self._read(timeout + 5)
        if "error" in reply:
            return {"errorType": "Runtime.HandlerError", "errorMessage": reply["error"]}
        return reply["result"]

    def loaded_files(self) -> list[str]:
        """The files of the modules the worker has imported (as it reports them: only a
        hint of what to compile, never trusted for more)."""
        with self.lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"loaded_files": True}) + "\n")
            self.proc.stdin.flush()
            reply = self._read(10)
        files = reply.get("loaded_files") if isinstance(reply, dict) else None
        opened = reply.get("opened") if isinstance(reply, dict) else None
        # The files it opened besides (the load check's asset rule): its word, too.
        self.opened_files = (
            [f for f in opened if isinstance(f, str)] if isinstance(opened, list) else []
        )
        return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []

    def close(self) -> None:
        _stop(self.proc)
        if not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)


class _WorkerSpec:
    """What a python worker runs: the task root, the handler's module, which python."""

    def __init__(
        self, root: Path, module: str, python: str, options: tuple[str, ...], runtime: str
    ) -> None:
        self.root, self.module, self.python = root, module, python
        self.options, self.runtime = options, runtime


def _python_command(
    spec: _WorkerSpec, settings: FunctionSettings, sandboxed: Sandboxed | None
) -> tuple[list[str], dict[str, str], Path]:
    """argv, environment and cwd of a worker: in bwrap when `sandboxed` is isolated."""
    from pmcp_build import sandbox

    handler = f"{spec.module}.handler"
    if sandboxed is None or not sandboxed.isolated:
        env = settings.env(spec.runtime, handler, str(spec.root))
        argv = [spec.python, "-I", "-S", *spec.options, str(WORKER), str(spec.root), spec.module]
        return argv, env, spec.root
    worker = f"{sandbox.RUNTIME_DIR}/handler_host.py"
    mounts: list[tuple[Path | str, str]] = [(spec.root, sandbox.TASK_ROOT), (WORKER, worker)]
    mounts += sandboxed.read_only
    prefix = sandbox.python_prefix(spec.python)
    if not str(prefix).startswith("/usr/"):  # /usr is the system's, mounted already
        mounts.append((prefix, str(prefix)))
    env = settings.env(spec.runtime, handler, sandbox.TASK_ROOT)
    python = os.path.realpath(spec.python)  # a venv's link points outside the sandbox
    inner = [python, "-I", "-S", *spec.options, worker, sandbox.TASK_ROOT, spec.module]
    return sandbox.wrap(inner, env, mounts), env, spec.root


class _RuntimeApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeApiHandler)
        self.events: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.results: dict[str, queue.Queue[tuple[str, bytes]]] = {}
        self.init_error: bytes | None = None


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    server: _RuntimeApi
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # see serve.py: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(
        self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/2018-06-01/runtime/invocation/next":
            self._reply(404)
            return
        request_id, body = self.server.events.get()
        self._reply(
            200,
            body,
            {
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(int((time.time() + 30) * 1000)),
                "Lambda-Runtime-Invoked-Function-Arn": LOCAL_FUNCTION_ARN,
                "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
            },
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = self.path.split("/")
        if self.path == "/2018-06-01/runtime/init/error":
            self.server.init_error = body
            self._reply(202)
            return
        if len(parts) == 6 and parts[3] == "invocation" and parts[5] in ("response", "error"):
            waiter = self.server.results.get(parts[4])
            if waiter is None:
                self._reply(400, b'{"errorMessage":"unknown request id"}')
                return
            waiter.put((parts[5], body))
            self._reply(202)
            return
        self._reply(404)


class BinaryInvoker:
    def __init__(
        self, root: Path, log: Any = None, settings: FunctionSettings | None = None
    ) -> None:
        self.root = root
        self.api = _RuntimeApi()
        self.lock = threading.Lock()
        threading.Thread(target=self.api.serve_forever, daemon=True).start()
        port = self.api.server_address[1]
        env = (settings or FunctionSettings()).env("provided.al2023", "bootstrap", str(root))
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [str(root / "bootstrap")],
            cwd=root,
            env=env,
            stdout=_stream(log),
            stderr=_stream(log),
            start_new_session=True,  # its own group: close() stops all it started
        )

    def invoke(self, event: Any, timeout: float | None = None) -> Any:
        timeout = timeout or 30.0
        with self.lock:
            request_id = str(uuid.uuid4())
            waiter: queue.Queue[tuple[str, bytes]] = queue.Queue()
            self.api.results[request_id] = waiter
            self.api.events.put((request_id, json.dumps(event).encode()))
            deadline = time.time() + timeout
            while True:
                try:
                    kind, body = waiter.get(timeout=0.1)
                    break
                except queue.Empty:
                    if self.api.init_error is not None:
                        raise UserError(
                            f"bootstrap reported an init error: "
                            f"{self.api.init_error.decode(errors='replace')}"
                        ) from None
                    if self.proc.poll() is not None:
                        raise UserError(
                            f"bootstrap exited with code {self.proc.returncode} before answering"
                        ) from None
                    if time.time() > deadline:
                        raise UserError(
                            f"bootstrap did not answer within {timeout:.0f} s"
                        ) from None
            del self.api.results[request_id]
        try:
            payload = json.loads(body) if body else None
        except json.JSONDecodeError:
            payload = body.decode(errors="replace")
        if kind == "error":
            return payload if isinstance(payload, dict) else {"errorMessage": payload}
        return payload

    def close(self) -> None:
        _stop(self.proc)
        self.api.shutdown()
        self.api.server_close()
        shutil.rmtree(self.root, ignore_errors=True)
