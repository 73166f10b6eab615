"""The MCP engine: the author's handlers on an `mcp` SDK server, served statelessly.

One engine per container. The SDK's StreamableHTTPSessionManager.run() may be entered
only once per instance, so it runs for the container's life in an event loop on a
background thread, and every invocation (warm or cold) is handed to that loop. Lambda
freezes the process between invocations, which suspends the idle thread harmlessly.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

from . import adapt
from .metorial import MetorialServer

INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _lister(handler: Any, convert: Any) -> Any:
    async def on_list(ctx: Any, params: Any) -> Any:
        return convert(await adapt.call(handler))

    return on_list


async def _call_or_invalid_params(handler: Any, *args: Any) -> Any:
    """A failing read or prompt is the client's JSON-RPC error, not a crash."""
    try:
        return await adapt.call(handler, *args)
    except MCPError:
        raise
    except Exception as exc:
        raise MCPError(INVALID_PARAMS, f"{type(exc).__name__}: {exc}") from exc


def build_sdk_server(author: MetorialServer) -> Server[Any]:
    h = author.handlers
    kwargs: dict[str, Any] = {
        listing.sdk_handler: _lister(h[kind], listing.convert)
        for kind, listing in adapt.LISTINGS.items()
        if kind in h
    }

    if "call_tool" in h:

        async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
            try:
                value = await adapt.call(h["call_tool"], params.name, params.arguments or {})
            except MCPError:
                raise
            except Exception as exc:  # a failing tool is a result the model can read
                return adapt.tool_error(exc)
            return adapt.tool_result(value)

        kwargs["on_call_tool"] = on_call_tool

    if "read_resource" in h:

        async def on_read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> Any:
            uri = str(params.uri)
            return adapt.read_result(uri, await _call_or_invalid_params(h["read_resource"], uri))

        kwargs["on_read_resource"] = on_read_resource

    if "get_prompt" in h:

        async def on_get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> Any:
            value = await _call_or_invalid_params(
                h["get_prompt"], params.name, params.arguments or {}
            )
            return adapt.prompt_result(value)

        kwargs["on_get_prompt"] = on_get_prompt

    return Server(author.name, version=author.version, instructions=author.instructions, **kwargs)


class Engine:
    def __init__(self, author: MetorialServer | Server[Any]) -> None:
        self.author = author
        # An mcp low-level Server (an SDK, fastmcp or stdio server) is served as it is.
        self.server = author if isinstance(author, Server) else build_sdk_server(author)
        self.manager = StreamableHTTPSessionManager(
            app=self.server, json_response=True, stateless=True
        )
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._failure: BaseException | None = None

        async def keep_running() -> None:
            try:
                async with self.manager.run():
                    ready.set()
                    await asyncio.Event().wait()
            except BaseException as exc:  # surfaced to the first caller
                self._failure = exc
                ready.set()

        self.thread = threading.Thread(
            target=self.loop.run_until_complete,
            args=(keep_running(),),
            name="metorial-mcp",
            daemon=True,
        )
        self.thread.start()
        ready.wait()
        if self._failure is not None:
            raise RuntimeError(f"MCP engine failed to start: {self._failure}")

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def http(
        self, method: str, path: str, headers: dict[str, str], body: bytes, query: str = ""
    ) -> HttpResponse:
        method = method.upper()
        if method in ("GET", "DELETE"):
            # Stateless JSON mode: no standalone SSE stream, no sessions to delete.
            return HttpResponse(
                405,
                {"allow": "POST", "content-type": "application/json"},
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": -32000, "message": "Method Not Allowed"},
                    }
                ).encode(),
            )
        if method == "OPTIONS":
            return HttpResponse(204, {"allow": "POST, OPTIONS"})
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if method == "POST" and content_type != "application/json":
            return HttpResponse(
                415,
                {"content-type": "application/json"},
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {
                            "code": -32600,
                            "message": "Unsupported Media Type: "
                            "Content-Type must be application/json",
                        },
                    }
                ).encode(),
            )
        return self.run(self._asgi(method, path, headers, body, query))

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

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        response = HttpResponse(500)
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response.status = int(message["status"])
                response.headers = {
                    k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.manager.handle_request(scope, receive, send)
        finally:
            disconnected.set()
        response.body = b"".join(chunks)
        return response
