"""A stdio MCP server run as a command, kept warm for the container's life.

The command starts once per container (at init), the bridge does the `initialize`
handshake with it, and an mcp low-level `Server` built from the capabilities it
announced forwards each request to it as JSON-RPC over its stdin/stdout. The engine
serves that `Server` like any other, so HTTP events and platform actions (and both
protocol eras of the client) behave as for an in-process server.

Its stderr goes to the logs. When it exits, pending requests fail with an error that
says so (with its last stderr lines), and the next request starts it again. Each
request has a timeout (METORIAL_STDIO_TIMEOUT seconds, default 30).

The command runs with the package's own python, isolated (-I -S): its requirements
live in `__command__/` apart from the runtime's, so it may pin any mcp it likes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

from .server_kinds import Found

COMMAND_SITE = "__command__"
BRIDGE_NAME = "metorial-stdio-bridge"
STDERR_TAIL = 200  # lines kept: a start-up failure shows the command's whole traceback
BACKOFF_MAX = 60.0  # seconds between attempts to start a command that keeps failing


def backoff(failures: int) -> float:
    """Seconds to wait before the next start after `failures` failed ones: 1, 2, 4... 60."""
    return float(min(2 ** max(failures - 1, 0), BACKOFF_MAX))


# Runs in the child: its argv and sys.path as the command expects, then the command.
# The command's own site comes before the package root whatever it runs: the root holds
# the runtime's dependencies (mcp 2.x), which must not hide the command's (mcp 1.x).
# The root stays on the path, last, for the files of the source and for what the two
# share (a distribution both install at the same version ships once, at the root).
LAUNCHER = r"""
import json, os, runpy, site, sys
spec = json.loads(sys.argv[1])
args = sys.argv[2:]
root = os.path.normpath(spec["root"])
sys.path.insert(0, spec["site"])
site.addsitedir(spec["site"])
sys.path.append(root)
kind, target = spec["kind"], spec["target"]
if kind == "script":
    import importlib
    module, _, attr = target.partition(":")
    sys.argv = [spec["argv0"], *args]
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    sys.exit(obj())
elif kind == "module":
    sys.argv = [spec["argv0"], *args]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    path = os.path.join(root, target)
    sys.argv = [path, *args]
    here = os.path.dirname(path)
    if here != root:  # python puts a script's folder first; the root's place is last
        sys.path.insert(0, here)
    runpy.run_path(path, run_name="__main__")
"""

# What each announced capability lets the bridge forward: (Server keyword, method,
# result type). Results are typed so the SDK stamps what the client's era needs.
_FORWARDS = {
    "tools": (
        ("on_list_tools", "tools/list", "ListToolsResult"),
        ("on_call_tool", "tools/call", "CallToolResult"),
    ),
    "resources": (
        ("on_list_resources", "resources/list", "ListResourcesResult"),
        ("on_list_resource_templates", "resources/templates/list", "ListResourceTemplatesResult"),
        ("on_read_resource", "resources/read", "ReadResourceResult"),
    ),
    "prompts": (
        ("on_list_prompts", "prompts/list", "ListPromptsResult"),
        ("on_get_prompt", "prompts/get", "GetPromptResult"),
    ),
    "completions": (("on_completion", "completion/complete", "CompleteResult"),),
    "logging": (("on_set_logging_level", "logging/setLevel", "EmptyResult"),),
}


class BridgeError(Exception):
    pass


class StartError(BridgeError):
    """The command exited while starting; `stderr_lines` carry its own traceback, which
    load_errors shows ahead of the bridge's frames."""

    def __init__(self, message: str, stderr_lines: list[str]) -> None:
        super().__init__(message)
        self.stderr_lines = stderr_lines


def _timeout() -> float:
    try:
        return float(os.environ.get("METORIAL_STDIO_TIMEOUT", "30"))
    except ValueError:
        return 30.0


class StdioServer:
    """One child process speaking MCP over stdio, restarted after a crash."""

    def __init__(self, root: str, command: dict[str, Any]) -> None:
        self.root = root
        self.command = command
        self.label = " ".join([command["argv0"], *command.get("args", [])])
        self.timeout = _timeout()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pending: dict[int, concurrent.futures.Future[dict[str, Any]]] = {}
        self.next_id = 0
        self.lock = threading.Lock()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self.init_result: dict[str, Any] = {}
        self.stderr_reader: threading.Thread | None = None
        self.failures = 0  # failed starts in a row (reset by one that succeeds)
        self.retry_at = 0.0  # time.monotonic() before which no start is tried
        self.last_failure: str | None = None

    # -- process -------------------------------------------------------------------

    def argv(self) -> list[str]:
        spec = {
            "site": os.path.join(self.root, COMMAND_SITE),
            "root": self.root,
            "kind": self.command["kind"],
            "target": self.command["target"],
            "argv0": self.command["argv0"],
        }
        return [sys.executable, "-I", "-S", "-c", LAUNCHER, json.dumps(spec), *self.command["args"]]

    def start(self) -> dict[str, Any]:
        """Start the command and do the handshake; the server's initialize result."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONUNBUFFERED"] = "1"
        self.stderr_tail.clear()
        self.proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.root,
            env=env,
            bufsize=0,
        )
        proc = self.proc
        self.stderr_reader = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True)
        self.stderr_reader.start()
        threading.Thread(target=self._read_stdout, args=(proc,), daemon=True).start()
        # The command boots from here on, while the runtime imports what it needs (the
        # types, then the SDK the engine serves it with): the two overlap instead of
        # adding up (cold start). A command that exits meanwhile is reported with its
        # own stderr, whichever step notices it (the handshake's send or its wait).
        from mcp_types.version import LATEST_HANDSHAKE_VERSION

        try:
            future = self._request(
                "initialize",
                {
                    "protocolVersion": LATEST_HANDSHAKE_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": BRIDGE_NAME, "version": "1"},
                },
            )
            import mcp.server.lowlevel.server
            import mcp.server.streamable_http_manager  # noqa: F401

            result = self._wait_for_initialize(future)
        except BridgeError as exc:
            raise self._start_error(proc) or exc from None
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.init_result = result
        return result

    def _start_error(self, proc: subprocess.Popen[bytes]) -> StartError | None:
        """A command that exited before its handshake, with all it printed on stderr."""
        try:
            code = proc.wait(2)
        except subprocess.TimeoutExpired:
            return None  # still running: it refused or did not answer (said as it is)
        if self.stderr_reader is not None:
            self.stderr_reader.join(2)
        return StartError(
            f"the stdio server `{self.label}` exited (code {code}) while starting:",
            list(self.stderr_tail),
        )

    def _wait_for_initialize(self, future: concurrent.futures.Future[Any]) -> dict[str, Any]:
        """The handshake's answer; a command that exits first fails at once with its
        last stderr (one that exits before the request is registered would otherwise
        leave it waiting out the whole timeout)."""
        deadline = time.monotonic() + self.timeout
        proc = self.proc
        while not future.done() and proc is not None and proc.poll() is None:
            if time.monotonic() >= deadline:
                break
            with contextlib.suppress(concurrent.futures.TimeoutError):
                future.result(0.1)
        if not future.done() and proc is not None and proc.poll() is not None:
            if self.stderr_reader is not None:
                self.stderr_reader.join(1)
            raise BridgeError(self._exited(proc))
        return self._wait("initialize", future, max(deadline - time.monotonic(), 0.0))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _send(self, message: dict[str, Any]) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise BridgeError(f"the stdio server `{self.label}` is not running")
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            with self.lock:
                proc.stdin.write(data)
                proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise BridgeError(self._exited(proc)) from exc

    def _wait(
        self, method: str, future: concurrent.futures.Future[Any], timeout: float
    ) -> dict[str, Any]:
        try:
            reply = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise BridgeError(
                f"the stdio server `{self.label}` did not answer {method} within {timeout:.0f} s"
            ) from None
        if "error" in reply:
            raise BridgeError(f"the stdio server `{self.label}` refused {method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result") or {}
        return result

    def _request(self, method: str, params: dict[str, Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        with self.lock:
            self.next_id += 1
            request_id = self.next_id
            self.pending[request_id] = future
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return future

    def _exited(self, proc: subprocess.Popen[bytes]) -> str:
        code = proc.poll()
        tail = " | ".join(list(self.stderr_tail)[-5:])
        return (
            f"the stdio server `{self.label}` exited (code {code}); it restarts on the next "
            f"request" + (f". Its last stderr: {tail}" if tail else "")
        )

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                # A stray print on stdout: it is not protocol, so it is a log line.
                self._log(line.decode(errors="replace"))
                continue
            if isinstance(message, dict):
                self._dispatch(message)
        proc.wait()
        if self.stderr_reader is not None:
            self.stderr_reader.join(1)  # its last words belong in the error
        note = self._exited(proc)
        with self.lock:
            pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(BridgeError(note))
        self._log(note)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message:
            method = message["method"]
            if "id" in message:  # a request from the server: ping, sampling, roots...
                if method == "ping":
                    reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"], "result": {}}
                else:
                    reply = {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "error": {
                            "code": -32601,
                            "message": f"{method} is not available: the client is stateless",
                        },
                    }
                with contextlib.suppress(BridgeError):
                    self._send(reply)
            elif method == "notifications/message":
                params = message.get("params") or {}
                self._log(f"[{params.get('level', 'info')}] {json.dumps(params.get('data'))}")
            return
        with self.lock:
            future = self.pending.pop(message.get("id"), None)  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result(message)

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.stderr_tail.append(line)
            self._log(line)

    def _log(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(line, file=sys.stderr, flush=True)

    # -- forwarding ------------------------------------------------------------------

    def ensure_started(self) -> None:
        if not self.alive():
            self.restart()

    def restart(self) -> None:
        """Start the command again, unless the last failed start is too recent: a
        command that fails at every start is tried after 1, 2, 4... 60 s, not on every
        request."""
        wait = self.retry_at - time.monotonic()
        if wait > 0:
            raise BridgeError(f"{self.last_failure} (next attempt in {wait:.0f} s)")
        try:
            self.start()
        except BaseException as exc:
            self.stop()
            self.note_failure(exc)
            raise BridgeError(self.last_failure or str(exc)) from None
        self.failures, self.retry_at = 0, 0.0

    def note_failure(self, exc: BaseException) -> None:
        """Record and log a failed start, with the command's last stderr lines."""
        self.failures += 1
        self.retry_at = time.monotonic() + backoff(self.failures)
        if self.stderr_reader is not None:
            self.stderr_reader.join(1)  # its last words belong in the note
        text = str(exc) or type(exc).__name__
        tail = " | ".join(list(self.stderr_tail)[-5:])
        if tail and "last stderr" not in text:
            text += f". Its last stderr: {tail}"
        self.last_failure = text
        self._log(
            f"metorial: {text}; it starts again on the next request after "
            f"{backoff(self.failures):.0f} s"
        )

    async def forward(self, method: str, params: Any) -> dict[str, Any]:
        import asyncio  # loaded by the loop this runs on; not before the command starts

        from mcp.shared.exceptions import MCPError

        body = _params(params)
        try:
            await asyncio.to_thread(self.ensure_started)
            future = self._request(method, body)
        except BridgeError as exc:
            raise MCPError(-32603, str(exc)) from None
        try:
            reply = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except TimeoutError:
            request_id = next((k for k, v in self.pending.items() if v is future), None)
            if request_id is not None:
                self.pending.pop(request_id, None)
                with contextlib.suppress(BridgeError):
                    self._send(
                        {
                            "jsonrpc": "2.0",
                            "method": "notifications/cancelled",
                            "params": {"requestId": request_id, "reason": "timeout"},
                        }
                    )
            raise MCPError(
                -32603,
                f"the stdio server `{self.label}` did not answer {method} within "
                f"{self.timeout:.0f} s (METORIAL_STDIO_TIMEOUT)",
            ) from None
        except BridgeError as exc:
            raise MCPError(-32603, str(exc)) from None
        if "error" in reply:
            error = reply["error"] or {}
            raise MCPError(
                int(error.get("code", -32603)), str(error.get("message", "")), error.get("data")
            )
        result: dict[str, Any] = reply.get("result") or {}
        return result


def _params(params: Any) -> dict[str, Any]:
    """The request's params as the command expects them: the modern protocol's
    per-request envelope (_meta io.modelcontextprotocol/*) stays with the bridge."""
    if params is None:
        return {}
    data: dict[str, Any] = (
        params.model_dump(by_alias=True, exclude_none=True, mode="json")
        if hasattr(params, "model_dump")
        else dict(params)
    )
    meta = data.get("_meta")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if not k.startswith("io.modelcontextprotocol/")}
        if meta:
            data["_meta"] = meta
        else:
            data.pop("_meta")
    return data


def proxy_server(stdio: StdioServer) -> Any:
    """An mcp low-level Server offering what the command announced, forwarding to it."""
    import mcp_types
    from mcp.server.lowlevel.server import Server

    init = stdio.init_result
    capabilities = init.get("capabilities") or {}
    info = init.get("serverInfo") or {}
    handlers: dict[str, Any] = {}
    for capability, forwards in _FORWARDS.items():
        if capability not in capabilities:
            continue
        for keyword, method, result_type in forwards:

            async def handler(
                ctx: Any,
                params: Any,
                _method: str = method,
                _type: Any = getattr(mcp_types, result_type),
            ) -> Any:
                return _type.model_validate(await stdio.forward(_method, params))

            handlers[keyword] = handler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # logging/setLevel is deprecated, still forwarded
        return Server(
            str(info.get("name") or stdio.command["argv0"]),
            version=str(info.get("version") or ""),
            instructions=init.get("instructions"),
            **handlers,
        )


def start(root: str, command: dict[str, Any]) -> Found:
    stdio = StdioServer(root, command)
    try:
        stdio.start()
    except BaseException as exc:
        stdio.stop()
        stdio.note_failure(exc)  # the runtime starts it again on a later request
        raise
    server = proxy_server(stdio)
    return Found(
        "stdio", server.name, server.version, server=server, attr=stdio.label, stop=stdio.stop
    )
