"""`index.handler`: the Metorial platform protocol and MCP over HTTP events.

The author's module is imported once per container (at init, when Lambda gives the
most CPU); an import failure is reported on every invocation rather than crashing
the runtime, so the platform can show the author what went wrong.

What a cold start imports is what its first event needs: this module imports no part
of the mcp SDK. `discover`, `oauth` and `callbacks` for a server written on metorial
need only `mcp_types` (results.py); the SDK's server and its HTTP stack (engine.py:
mcp.server, starlette, sse_starlette, uvicorn) load with the first event that is
served through them (`mcp.request`, an HTTP event, any event of a server the author
built on the SDK, which imported it already). A stdio command is started before any of
that, so it boots while the runtime imports (stdio_bridge.py). Where init is not on
a request's path (SnapStart's snapshot, provisioned concurrency) the engine's modules
are imported at init instead, so a restored environment finds them loaded.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import sys
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from . import callbacks, config, oauth, server_kinds, transport
from .jsonrpc import error_body, request_id
from .metorial import MetorialServer, registry
from .oauth import ActionError
from .transport import REQUEST_LIMIT, RESPONSE_LIMIT

if TYPE_CHECKING:  # loop.py (asyncio) loads with the first event that runs a coroutine
    from .loop import LoopThread

# Lambda's AWS_LAMBDA_INITIALIZATION_TYPE values whose init runs before any request
# (SnapStart's snapshot, provisioned concurrency): there the engine loads at init.
_INIT_AHEAD = frozenset({"snap-start", "provisioned-concurrency"})

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message}}


class Runtime:
    def __init__(
        self, entrypoint: str, root: str = ROOT, command: dict[str, Any] | None = None
    ) -> None:
        self.entrypoint = entrypoint
        self.root = root
        self.command = command  # a stdio server (server_kinds / stdio_bridge)
        self.found: server_kinds.Found | None = None
        self.load_error: str | None = None
        self._engine: Any = None
        self._runner: LoopThread | None = None
        self._load_failures = 0
        self._retry_at = 0.0  # when a stdio command that failed to start is tried again
        try:
            self._import_entrypoint()
        except BaseException as exc:  # its own frames first, not ours (load_errors)
            self._load_failed(exc)
        if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") in _INIT_AHEAD:
            from . import engine, results  # noqa: F401 (into the snapshot, off the request path)

    def _load_failed(self, exc: BaseException) -> None:
        from . import load_errors

        self.load_error = load_errors.describe(exc, self.root)
        self._load_failures += 1
        if self.command is not None:
            from .stdio_bridge import backoff

            self._retry_at = time.monotonic() + backoff(self._load_failures)

    def _retry_command(self) -> None:
        """A stdio command that failed or timed out at `initialize` (a cold start that
        was too slow, a database not up yet) is started again on a later request, with
        a back-off, instead of failing every request for the container's life. An
        import of the author's module is not retried: it fails the same way again."""
        if self.load_error is None or self.command is None or time.monotonic() < self._retry_at:
            return
        try:
            self._import_entrypoint()
        except BaseException as exc:
            self._load_failed(exc)
            return
        self.load_error, self._load_failures = None, 0

    def _import_entrypoint(self) -> None:
        # Any kind of server: metorial.create_server, an mcp / fastmcp instance, a command.
        self.found = server_kinds.load(self.root, self.entrypoint, self.command)

    @property
    def foreign(self) -> Any:
        """The low-level mcp Server of a server not written on metorial, else None."""
        return None if self.found is None else self.found.server

    @property
    def author(self) -> MetorialServer:
        if registry.server is None:
            raise RuntimeError("no metorial server is registered")
        return registry.server

    @property
    def runner(self) -> LoopThread:
        """The container's event loop, for the author's coroutines (loop.py)."""
        if self._runner is None:
            from .loop import LoopThread

            self._runner = LoopThread()
        return self._runner

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from .engine import Engine  # the SDK loads here, once per container

            self._engine = Engine(self.foreign or self.author, self.runner)
        return self._engine

    def run(self, coro: Any) -> Any:
        """An author's coroutine on the container's loop, without loading the SDK."""
        return self.runner.run(coro)

    def _call(self, func: Any, *args: Any) -> Any:
        """A coroutine calling one of the author's handlers (sync or async), as loop.py does."""
        from .loop import call

        return call(func, *args)

    # -- dispatch -------------------------------------------------------------------

    def close(self) -> None:
        """Stop what the server started (a stdio command's process), for a host that
        ends the runtime before its own exit (tests, a reload)."""
        if self.found is not None and self.found.stop is not None:
            self.found.stop()

    def handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        return _within_response_limit(self._handle(event, context), event)

    def _handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        if isinstance(event, (bytes, str)):
            try:
                event = json.loads(event)
            except json.JSONDecodeError:
                return _failure("invalid_event", "the event is not JSON")
        if not isinstance(event, dict):
            return _failure("invalid_event", "the event must be a JSON object")
        self._retry_command()
        budget = _budget(context)
        if _is_http(event):
            return self._http_event(event, budget)
        if self.load_error is not None:
            return _failure("server_load_failed", self.load_error)
        action = event.get("action")
        try:
            if action == "discover":
                return {"success": True, "discovery": self.discover()}
            if action in ("mcp.request", "mcp.batch"):
                return self.mcp_messages(event, budget)
            if action == "oauth":
                result = self.run(
                    oauth.handle(
                        str(event.get("oauthAction", "")), event.get("oauthInput"), self._call
                    )
                )
                return {"success": True, "oauth": result}
            if action == "callbacks":
                result = self.run(
                    callbacks.handle(
                        str(event.get("callbackAction", "")),
                        event.get("callbackInput"),
                        self._call,
                    )
                )
                return {"success": True, "callbacks": result}
        except ActionError as exc:
            return _failure(exc.code, exc.message)
        except Exception as exc:  # a handler failure is data, never a crash
            return _failure("handler_error", f"{type(exc).__name__}: {exc}")
        return _failure(
            "unknown_action",
            f"unknown action {action!r}; one of discover, mcp.request, mcp.batch, oauth, callbacks",
        )

    # -- platform protocol ----------------------------------------------------------

    def discover(self) -> dict[str, Any]:
        if self.foreign is not None:
            return {
                **server_kinds.discover_via_requests(self._request),
                "oauth": oauth.status(),
                "callbacks": callbacks.status(),
            }
        from . import results  # mcp_types only: no SDK server, no HTTP stack

        author = self.author
        h = author.handlers

        def listed(kind: str) -> list[Any]:
            if kind not in h:
                return []
            listing = results.LISTINGS[kind]
            result = listing.convert(self.run(results.call(h[kind])))
            return [
                item.model_dump(by_alias=True, exclude_none=True, mode="json")
                for item in getattr(result, listing.field)
            ]

        return {
            "tools": listed("list_tools"),
            "resourceTemplates": listed("list_resource_templates"),
            "resources": listed("list_resources"),
            "prompts": listed("list_prompts"),
            "capabilities": results.capabilities(h),
            "implementation": {"name": author.name, "version": author.version},
            "instructions": author.instructions,
            "oauth": oauth.status(),
            "callbacks": callbacks.status(),
        }

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One JSON-RPC request through the engine's HTTP path; its result or an error."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "mcp-protocol-version": _latest_handshake(),
        }
        reply = json.loads(self.engine.http("POST", "/mcp", headers, body.encode()).body or b"{}")
        if "error" in reply or "result" not in reply:
            error = reply.get("error") or {}
            raise server_kinds.RequestError(
                int(error.get("code") or -32603), f"{method} failed: {error.get('message', reply)}"
            )
        result: dict[str, Any] = reply["result"]
        return result

    def mcp_messages(self, event: dict[str, Any], budget: float | None = None) -> dict[str, Any]:
        participant = _json_field(event.get("participantJson"))
        if participant is _UNPARSABLE or not isinstance(participant, (dict, type(None))):
            return _failure("invalid_event", "participantJson is not a JSON object")
        participant = participant or {}
        version = participant.get("protocolVersion") or _latest_handshake()
        supported = _supported_versions()
        if version not in supported:
            return _failure(
                "unsupported_protocol_version",
                f"participantJson.protocolVersion {version!r} is not one of "
                + ", ".join(supported),
            )
        if "messages" not in event:
            hint = " (the key is `messages`, plural)" if "message" in event else ""
            return _failure("invalid_event", f"{event.get('action')} needs `messages`{hint}")
        messages = event["messages"]
        if isinstance(messages, (str, dict)):
            messages = [messages]
        if not isinstance(messages, list) or not messages:
            return _failure("invalid_event", "`messages` must be a non-empty list")
        responses: list[str] = []
        notes: list[dict[str, Any]] = []  # the requests' logging / progress notifications
        refused = False
        started = time.monotonic()
        out, errs = io.StringIO(), io.StringIO()
        with (
            config.request_args(event.get("args")),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(errs),
            _captured_logging(out, errs),
        ):
            for raw in messages:
                body = raw if isinstance(raw, str) else json.dumps(raw)
                invalid = _oversized(body) or _invalid_message(raw)
                if invalid is not None:
                    refused = refused or invalid["error"]["message"].startswith("Payload")
                    responses.append(json.dumps(invalid))
                    continue
                headers = {
                    "content-type": "application/json",
                    "accept": "application/json, text/event-stream",
                }
                if _is_initialize(body):
                    # A handshake-era client, whatever participantJson says: the SDK
                    # negotiates from the request's own protocolVersion (MCP: the server
                    # answers with a version it supports), as it would natively.
                    pass
                else:
                    body, routing = _with_envelope(body, version, participant)
                    headers |= {"mcp-protocol-version": version, **routing}
                response = self.engine.http(
                    "POST", "/mcp", headers, body.encode(), budget=_left(budget, started)
                )
                if response.headers.get("content-type", "").startswith("text/event-stream"):
                    # The request's notifications go to the logs, its answer to responses.
                    for message in transport.sse_messages(response.body):
                        if "method" in message:
                            notes.append(message)
                        else:
                            responses.append(json.dumps(message))
                elif response.body:
                    responses.append(response.body.decode())
        info, errors = transport.notification_logs(notes)
        logs = []
        if out.getvalue() or info:
            logs.append({"type": "info", "lines": out.getvalue().splitlines() + info})
        if errs.getvalue() or errors:
            logs.append({"type": "error", "lines": errs.getvalue().splitlines() + errors})
        return {"success": not refused, "responses": responses, "logs": logs}

    # -- HTTP events (Function URL, API Gateway v1 / v2) ------------------------------

    def _http_event(self, event: dict[str, Any], budget: float | None = None) -> dict[str, Any]:
        # Query strings and cookies as Mangum (the ASGI adapter for Lambda events)
        # rebuilds them: payload 2.0 (Function URL, HTTP API) gives the raw query and a
        # `cookies` list; payload 1.0 (REST API) gives decoded parameters, re-encoded here.
        v2 = "requestContext" in event and "http" in (event.get("requestContext") or {})
        if v2:
            method = event["requestContext"]["http"].get("method", "POST")
            path = event.get("rawPath") or "/"
            query = event.get("rawQueryString") or ""
        else:
            method = event.get("httpMethod", "POST")
            path = event.get("path") or "/"
            multi = event.get("multiValueQueryStringParameters")
            if multi:
                query = urllib.parse.urlencode(multi, doseq=True)
            else:
                query = urllib.parse.urlencode(event.get("queryStringParameters") or {})
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        for key, values in (event.get("multiValueHeaders") or {}).items():
            if key.lower() not in headers and values:
                headers[key.lower()] = ",".join(values)
        if v2 and event.get("cookies"):
            headers["cookie"] = "; ".join(str(c) for c in event["cookies"])
        from . import auth

        refused = auth.refusal(method, path, headers)  # OAuth, when the url asks for it
        if refused is not None:
            return _http_reply(*refused)
        body = event.get("body") or ""
        raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
        if len(raw) > REQUEST_LIMIT:
            # What the Function URL itself answers, before the function runs.
            message = f"Request must be smaller than {REQUEST_LIMIT} bytes"
            return _http_reply(
                413, {"content-type": "application/json"}, json.dumps({"message": message}).encode()
            )
        if self.load_error is not None:
            return _http_reply(
                500,
                {"content-type": "application/json"},
                error_body(-32603, "server failed to load", request_id(raw)),
            )
        context = event.get("requestContext") or {}
        domain = context.get("domainName") or headers.get("host")
        response = self.engine.http(method, path, headers, raw, query, budget, domain)
        reply = _http_reply(response.status, response.headers, response.body)
        if v2:  # payload 2.0 answers cookies in their own list, not as a header
            cookies = [v for k, v in reply["headers"].items() if k.lower() == "set-cookie"]
            if cookies:
                reply["headers"] = {
                    k: v for k, v in reply["headers"].items() if k.lower() != "set-cookie"
                }
                reply["cookies"] = cookies
        return reply


def _oversized(body: str) -> dict[str, Any] | None:
    size = len(body.encode())
    if size <= REQUEST_LIMIT:
        return None
    text = transport.too_large(REQUEST_LIMIT, size, "Payload Too Large: the message")
    return _rpc_error(transport.PAYLOAD_TOO_LARGE, text, request_id(body.encode()))


def _within_response_limit(reply: dict[str, Any], event: Any) -> dict[str, Any]:
    """Lambda refuses a response over RESPONSE_LIMIT bytes (the caller gets an error,
    not the answer): replace it by a JSON-RPC error naming the limit, and log it, so a
    local run fails where the deployed function would."""
    size = len(json.dumps(reply).encode())
    if size <= RESPONSE_LIMIT:
        return reply
    text = transport.too_large(RESPONSE_LIMIT, size, "the response")
    print(f"metorial: {text}; it was replaced by a JSON-RPC error", file=sys.stderr, flush=True)
    text += ": return less (page the results, or link to the data)"
    if "statusCode" in reply:
        raw = event.get("body") if isinstance(event, dict) else None
        plain = isinstance(raw, str) and not event.get("isBase64Encoded")
        id_ = request_id(raw.encode()) if plain and isinstance(raw, str) else None
        body = error_body(transport.RESPONSE_TOO_LARGE, text, id_)
        return _http_reply(200, {"content-type": "application/json"}, body)
    responses = [
        json.dumps(
            _rpc_error(
                transport.RESPONSE_TOO_LARGE,
                text,
                request_id(item.encode()) if isinstance(item, str) else None,
            )
        )
        for item in reply.get("responses") or []
    ]
    shrunk = {"success": False, "responses": responses, "logs": reply.get("logs") or []}
    if len(json.dumps(shrunk).encode()) > RESPONSE_LIMIT:
        shrunk["logs"] = [{"type": "error", "lines": [text]}]
    return shrunk


def _http_reply(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    return {"statusCode": status, "headers": headers, "body": text, "isBase64Encoded": encoded}


def _is_http(event: dict[str, Any]) -> bool:
    return "httpMethod" in event or (
        isinstance(event.get("requestContext"), dict) and "http" in event["requestContext"]
    )


_UNPARSABLE = object()


def _json_field(raw: Any) -> Any:
    if isinstance(raw, str) and raw:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return _UNPARSABLE
    return raw or None


def _rpc_error(code: int, message: str, id_: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}}


def _invalid_message(raw: Any) -> dict[str, Any] | None:
    """The JSON-RPC error for a message the SDK must never see, else None."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return _rpc_error(-32700, "Parse error")
    if not isinstance(raw, dict):
        return _rpc_error(-32600, "Invalid Request: a message is a JSON object")
    id_ = raw.get("id")
    if "id" in raw and (isinstance(id_, bool) or not isinstance(id_, (str, int))):
        # JSON-RPC 2.0: an id is a string or a number; MCP also forbids null.
        return _rpc_error(-32600, "Invalid Request: id must be a string or an integer")
    return None


_RUNTIME_LOGGERS = frozenset(
    {
        "mcp",
        "mcp_types",
        "httpx",
        "httpcore",
        "anyio",
        "asyncio",
        "starlette",
        "uvicorn",
        "sse_starlette",
    }
)


class _StreamHandler(logging.Handler):
    def __init__(self, out: io.StringIO, errs: io.StringIO) -> None:
        super().__init__(logging.DEBUG)
        self.out, self.errs = out, errs
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in _RUNTIME_LOGGERS:
            return  # the SDK's own chatter is not the author's output
        stream = self.errs if record.levelno >= logging.WARNING else self.out
        stream.write(self.format(record) + "\n")


@contextlib.contextmanager
def _captured_logging(out: io.StringIO, errs: io.StringIO) -> Any:
    """The `logging` module's records during one request go to that request's logs
    (an author's root level, if set, still filters them)."""
    root = logging.getLogger()
    handler = _StreamHandler(out, errs)
    previous = root.level
    if root.level == logging.WARNING and not root.handlers:
        root.setLevel(logging.INFO)  # logging's default would drop an author's info()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def _supported_versions() -> list[str]:
    from mcp_types.version import SUPPORTED_PROTOCOL_VERSIONS

    return list(SUPPORTED_PROTOCOL_VERSIONS)


def _latest_handshake() -> str:
    from mcp_types.version import LATEST_HANDSHAKE_VERSION

    return LATEST_HANDSHAKE_VERSION


# Seconds kept back from Lambda's remaining time to send the answer after a timeout.
_MARGIN = 0.5


def _budget(context: Any) -> float | None:
    """Seconds a request may take before Lambda would kill the function (None: no
    context, as in a bare local call)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    try:
        left = float(remaining()) / 1000.0
    except Exception:  # a context that cannot say: no budget rather than a failure
        return None
    return max(left - min(_MARGIN, left / 10), 0.0)


def _left(budget: float | None, started: float) -> float | None:
    return None if budget is None else budget - (time.monotonic() - started)


def _is_initialize(body: str) -> bool:
    try:
        message = json.loads(body)
    except json.JSONDecodeError:
        return False
    return isinstance(message, dict) and message.get("method") == "initialize"


def _with_envelope(
    body: str, version: str, participant: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """Per-request protocol versions carry the client's context in params._meta and
    route on Mcp-Method / Mcp-Name headers; the platform gives the context once in
    participantJson, so stamp it onto each request as a client would."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    if version not in MODERN_PROTOCOL_VERSIONS:
        return body, {}
    try:
        message = json.loads(body)
    except json.JSONDecodeError:
        return body, {}
    if not isinstance(message, dict) or "method" not in message:
        return body, {}
    from mcp.shared.inbound import NAME_BEARING_METHODS, encode_header_value

    method = str(message["method"])
    routing = {"mcp-method": method}
    if "id" not in message:
        return body, routing
    from mcp_types import (
        CLIENT_CAPABILITIES_META_KEY,
        CLIENT_INFO_META_KEY,
        PROTOCOL_VERSION_META_KEY,
    )

    params = message.setdefault("params", {}) or {}
    meta = params.setdefault("_meta", {})
    meta.setdefault(PROTOCOL_VERSION_META_KEY, version)
    meta.setdefault(CLIENT_CAPABILITIES_META_KEY, participant.get("capabilities") or {})
    if participant.get("clientInfo"):
        meta.setdefault(CLIENT_INFO_META_KEY, participant["clientInfo"])
    message["params"] = params
    name_key = NAME_BEARING_METHODS.get(method)
    if name_key and isinstance(params.get(name_key), str):
        routing["mcp-name"] = encode_header_value(params[name_key])
    return json.dumps(message), routing
