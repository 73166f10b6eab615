"""The MCP engine: the author's handlers on an `mcp` SDK server, served statelessly.

Contract (for any bridge that serves MCP to the runtime, e.g. a stdio command):

    async def handle_message(msg: dict, context: Any) -> dict | None

takes one decoded JSON-RPC message (a request or a notification; `context` is the
Lambda context or None) and returns the JSON-RPC response as a dict, or None for a
notification. It never raises for a bad message: a JSON-RPC error is a response.
`Engine.handle_message` is that entry point for any mcp SDK low-level `Server`
(one built here from a MetorialServer, or an SDK / FastMCP server as it is).

One engine per container, made by the first event that needs the SDK (an HTTP event,
`mcp.request`, a foreign server's `discover`): importing this module is most of a cold
start, so a platform event that needs none of it never imports it. The SDK's
StreamableHTTPSessionManager.run() may be entered only once per instance, so it runs
for the container's life on the runtime's one event loop (loop.py), and every
invocation (warm or cold) is handed to that loop.

Two stateless session managers: a client that accepts `text/event-stream` is answered
by the SDK's SSE mode, buffered into one body (the request's own logging and progress
notifications, then its result: no stream outlives the response, so a Function URL
carries it); a body that holds only the result is answered as application/json, as
the SDK's 2026-07-28 path does. A client that accepts only JSON gets the JSON mode.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import traceback
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

from . import results
from .jsonrpc import error_body, request_id
from .loop import LoopThread
from .metorial import MetorialServer
from .transport import (
    REQUEST_LIMIT,
    accepts_sse,
    any_origin,
    collapse_sse,
    origin_settings,
    sse_messages,
)

INTERNAL_ERROR = -32603
REQUEST_TIMEOUT = -32001  # the code the SDK's own client uses for a request timeout
# Methods the endpoint answers at all; any other is a JSON-RPC 405 (not an HTML page).
_METHODS = ("POST", "GET", "DELETE", "OPTIONS")


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _lister(handler: Any, convert: Any) -> Any:
    paginates = results.takes_argument(handler)

    async def on_list(ctx: Any, params: Any) -> Any:
        cursor = getattr(params, "cursor", None) if params is not None else None
        args = (cursor,) if paginates else ()
        return convert(await _call_or_internal_error(handler, *args))

    return on_list


async def _call_or_internal_error(handler: Any, *args: Any) -> Any:
    """A handler that fails is the server's fault (-32603), not the client's: the
    traceback goes to the logs, the client gets no internals. A handler that means
    a client error raises MCPError with its own code, which passes through."""
    try:
        return await results.call(handler, *args)
    except MCPError:
        raise
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        name = getattr(handler, "__name__", "handler")
        raise MCPError(INTERNAL_ERROR, f"Internal error in {name}") from exc


async def _declared_mime_type(h: dict[str, Any], uri: str) -> str | None:
    if "list_resources" not in h or results.takes_argument(h["list_resources"]):
        return None  # a paginated listing is not walked on every read
    try:
        listed = results.resources(await results.call(h["list_resources"]))
    except Exception:
        return None
    for resource in listed.resources:
        if str(resource.uri) == uri:
            return resource.mime_type
    return None


def build_sdk_server(author: MetorialServer) -> Server[Any]:
    h = author.handlers
    kwargs: dict[str, Any] = {
        listing.sdk_handler: _lister(h[kind], listing.convert)
        for kind, listing in results.LISTINGS.items()
        if kind in h
    }

    if "call_tool" in h:

        async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
            try:
                value = await results.call(h["call_tool"], params.name, params.arguments or {})
            except MCPError:
                raise
            except Exception as exc:  # a failing tool is a result the model can read
                return results.tool_error(exc)
            return results.tool_result(value)

        kwargs["on_call_tool"] = on_call_tool

    if "read_resource" in h:

        async def on_read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> Any:
            uri = str(params.uri)
            value = await _call_or_internal_error(h["read_resource"], uri)
            return results.read_result(uri, value, await _declared_mime_type(h, uri))

        kwargs["on_read_resource"] = on_read_resource

    if "get_prompt" in h:

        async def on_get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> Any:
            value = await _call_or_internal_error(
                h["get_prompt"], params.name, params.arguments or {}
            )
            return results.prompt_result(value)

        kwargs["on_get_prompt"] = on_get_prompt

    return Server(author.name, version=author.version, instructions=author.instructions, **kwargs)


class Engine:
    def __init__(
        self, author: MetorialServer | Server[Any], runner: LoopThread | None = None
    ) -> None:
        self.author = author
        # An mcp low-level Server (an SDK, fastmcp or stdio server) is served as it is.
        self.server = author if isinstance(author, Server) else build_sdk_server(author)
        # Host and Origin are checked per request (they depend on the event's own
        # domain), so the managers take none; bodies up to a Function URL's limit.
        self.manager = StreamableHTTPSessionManager(
            app=self.server, json_response=True, stateless=True, max_request_body_size=REQUEST_LIMIT
        )
        self.sse_manager = StreamableHTTPSessionManager(
            app=self.server,
            json_response=False,
            stateless=True,
            max_request_body_size=REQUEST_LIMIT,
        )
        self.runner = runner or LoopThread()
        self.loop = self.runner.loop
        ready = threading.Event()
        self._failure: BaseException | None = None

        async def keep_running() -> None:
            try:
                async with self.manager.run(), self.sse_manager.run():
                    ready.set()
                    await asyncio.Event().wait()
            except BaseException as exc:  # surfaced to the first caller
                self._failure = exc
                ready.set()

        # The managers live for the container's life, as a task on the shared loop.
        self._managers = asyncio.run_coroutine_threadsafe(keep_running(), self.loop)
        ready.wait()
        if self._failure is not None:
            raise RuntimeError(f"MCP engine failed to start: {self._failure}")

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run `coro` on the engine's loop (LoopThread.run)."""
        return self.runner.run(coro, timeout)

    async def handle_message(
        self, msg: dict[str, Any], context: Any = None
    ) -> dict[str, Any] | None:
        """The contract above, through the SDK's stateless Streamable HTTP transport
        so that every message is answered exactly as a native SDK server would."""
        headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        }
        version = _meta_version(msg)
        if version:
            headers["mcp-protocol-version"] = version
        reply = await self._asgi("POST", "/mcp", headers, json.dumps(msg).encode(), "")
        if not reply.body:
            return None
        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            answers = [m for m in sse_messages(reply.body) if "method" not in m]
            return answers[-1] if answers else None
        answer: dict[str, Any] = json.loads(reply.body)
        return answer

    def http(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        query: str = "",
        budget: float | None = None,
        domain: str | None = None,
    ) -> HttpResponse:
        """One HTTP request through the SDK's app. With a `budget` (seconds left before
        Lambda would kill the function), a request that outlives it is cancelled and
        answered with a JSON-RPC error naming the timeout, instead of a killed process.
        With a `domain` (the Function URL's own host), Host and Origin are checked as
        the SDK's DNS-rebinding protection does (421 / 403)."""
        method = method.upper()
        if domain is not None:
            refused: HttpResponse | None = self.run(_refused(domain, method, headers))
            if refused is not None:
                return refused
        if method not in _METHODS:
            return error_response(
                405, -32000, f"Method Not Allowed: {method[:16]}", headers={"allow": "POST"}
            )
        if method in ("GET", "DELETE"):
            # Stateless JSON mode: no standalone SSE stream, no sessions to delete.
            return error_response(405, -32000, "Method Not Allowed", headers={"allow": "POST"})
        if method == "OPTIONS":
            return HttpResponse(204, {"allow": "POST, OPTIONS"})
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if method == "POST" and content_type != "application/json":
            return error_response(
                415, -32600, "Unsupported Media Type: Content-Type must be application/json"
            )
        if method == "POST" and body.lstrip()[:1] == b"[":
            # MCP (2025-06-18 on) has no JSON-RPC batches: an array is an Invalid Request
            # (-32600) by JSON-RPC's own rules, not the SDK's -32602 with pydantic text.
            return error_response(
                400, -32600, "Invalid Request: JSON-RPC batches are not supported"
            )
        try:
            answer: HttpResponse = self.run(self._asgi(method, path, headers, body, query), budget)
            return answer
        except TimeoutError:
            return error_response(
                200,
                REQUEST_TIMEOUT,
                f"request timed out after {budget:.1f} s, the time left before the "
                "function's timeout; raise the lambda target's `timeout` in metorial.toml "
                "(up to 900 s) or make the call faster",
                request_id(body),
            )

    async def _asgi(
        self, method: str, path: str, headers: dict[str, str], body: bytes, query: str
    ) -> HttpResponse:
        raw_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": path or "/",
            "raw_path": (path or "/").encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 0),
            "server": ("lambda", 443),
        }
        delivered = False
        disconnected = asyncio.Event()
        # subscriptions/listen never ends by itself: a buffered endpoint answers its
        # acknowledgement and closes (the client listens again), as if disconnected.
        listening = headers.get("mcp-method") == "subscriptions/listen"

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        response = HttpResponse(500)
        chunks: list[bytes] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response.status = int(message["status"])
                response.headers = {
                    k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if listening and chunks[-1].strip() and not chunks[-1].startswith(b":"):
                    disconnected.set()

        manager = self.sse_manager if accepts_sse(headers) else self.manager
        try:
            await manager.handle_request(scope, receive, send)
        finally:
            disconnected.set()
        response.headers, response.body = collapse_sse(response.headers, b"".join(chunks))
        return response


async def _refused(domain: str, method: str, headers: dict[str, str]) -> HttpResponse | None:
    """The SDK's own Host / Origin check (TransportSecurityMiddleware) for this
    function's domain; its 421 / 403 response, or None when the request may pass."""
    from mcp.server.transport_security import TransportSecurityMiddleware
    from starlette.requests import Request

    checked = {k: v for k, v in headers.items() if not (k == "origin" and any_origin())}
    scope = {
        "type": "http",
        "method": method,
        "path": "/",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in checked.items()],
    }
    guard = TransportSecurityMiddleware(origin_settings(domain))
    refusal = await guard.validate_request(Request(scope), is_post=False)
    if refusal is None:
        return None
    return HttpResponse(
        refusal.status_code,
        {"content-type": "text/plain; charset=utf-8"},
        bytes(refusal.body),
    )


def _meta_version(msg: dict[str, Any]) -> str | None:
    params = msg.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if isinstance(meta, dict):
        for key, value in meta.items():
            if key.endswith("protocolVersion") and isinstance(value, str):
                return value
    return None


def error_response(
    status: int, code: int, message: str, id_: Any = None, headers: dict[str, str] | None = None
) -> HttpResponse:
    """A JSON-RPC error as the HTTP response carrying it."""
    return HttpResponse(
        status,
        {"content-type": "application/json", **(headers or {})},
        error_body(code, message, id_),
    )
