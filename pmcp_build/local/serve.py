"""`pmcp-build serve`: an HTTP front door that turns requests into Function URL events.

It refuses what a local MCP server must refuse and a Function URL never sees: a `Host`
other than the loopback name and port it serves (421), an `Origin` other than those
(and the `--allow-origin` ones) (403): DNS-rebinding protection as the mcp SDK does it,
so a web page the user visits cannot drive the local server. The runtime behind it
checks the `Origin` again as it does on Lambda, against the same list (handed over in
METORIAL_ALLOWED_ORIGINS).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from pmcp_build.local.runner import Invoker

FUNCTION_URL_LIMIT = 6 * 1024 * 1024  # bytes of request payload a Function URL accepts
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
ALLOWED_ORIGINS_ENV = "METORIAL_ALLOWED_ORIGINS"  # read by boot/transport.py
_TOO_LARGE = json.dumps({"message": f"Request must be smaller than {FUNCTION_URL_LIMIT} bytes"})


def loopback_hosts(port: int) -> list[str]:
    return [f"{name}:{port}" for name in LOOPBACK_NAMES]


def allowed_origins(port: int, extra: Sequence[str] = ()) -> list[str]:
    """The origins a local client may come from: the loopback names on this port."""
    own = [f"{scheme}://{host}" for host in loopback_hosts(port) for scheme in ("http", "https")]
    return [*own, *(origin.rstrip("/") for origin in extra)]


def refusal(headers: dict[str, str], port: int, origins: Sequence[str]) -> tuple[int, bytes] | None:
    """The SDK's answer (status, text) to a request whose Host or Origin is not ours."""
    host = headers.get("host", "")
    if host not in loopback_hosts(port):
        return 421, b"Invalid Host header"
    origin = headers.get("origin")
    if origin and "*" not in origins and origin.rstrip("/") not in origins:
        return 403, b"Invalid Origin header"
    return None


def function_url_event(
    method: str, target: str, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    """The payload-format-2.0 event a Lambda Function URL sends for this request."""
    url = urlsplit(target)
    text_like = not body or _is_text(headers.get("content-type", ""))
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": url.path or "/",
        "rawQueryString": url.query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "domainName": headers.get("host") or headers.get("Host") or "127.0.0.1",
            "http": {
                "method": method,
                "path": url.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": f"local-{time.time_ns()}",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": body.decode() if text_like else base64.b64encode(body).decode(),
        "isBase64Encoded": not text_like,
    }


def _event_headers(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Header fields as a Function URL hands them on: names lower-cased, values without
    the optional whitespace around them (RFC 9110 5.5), repeated fields joined by commas."""
    headers: dict[str, str] = {}
    for key, value in items:
        name = key.lower()
        headers[name] = f"{headers[name]},{value.strip()}" if name in headers else value.strip()
    return headers


def runtime_origins(extra: Sequence[str] = ()) -> str:
    """METORIAL_ALLOWED_ORIGINS for the runtime behind `serve`: the loopback origins on
    any port (the front door has checked the port) and the --allow-origin ones."""
    own = [f"{scheme}://{name}:*" for name in LOOPBACK_NAMES for scheme in ("http", "https")]
    return ",".join([*own, *(origin.rstrip("/") for origin in extra)])


def _is_text(content_type: str) -> bool:
    return content_type.startswith(("application/json", "text/"))


def make_server(
    invoker: Invoker, port: int, allow_origins: Sequence[str] = ()
) -> ThreadingHTTPServer:
    """The front door on 127.0.0.1:`port` (0 picks one; the Host check follows the
    port actually bound)."""
    extra = tuple(allow_origins)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes; with Nagle on, the client's delayed ACK
        # adds ~40 ms to every keep-alive request.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            headers = _event_headers(self.headers.items())
            body = self._body()
            if body is None:
                # What a Function URL answers for a request over its 6 MB payload limit.
                self._send(413, {"content-type": "application/json"}, _TOO_LARGE.encode())
                self.close_connection = True
                return
            address = self.server.server_address
            bound = int(address[1]) if isinstance(address, tuple) else port
            refused = refusal(headers, bound, allowed_origins(bound, extra))
            if refused is not None:
                self._send(refused[0], {"content-type": "text/plain; charset=utf-8"}, refused[1])
                return
            event = function_url_event(self.command, self.path, headers, body)
            try:
                reply = invoker.invoke(event)
            except Exception as exc:  # the local runtime failed, not the request
                self._send(
                    502,
                    {"content-type": "application/json"},
                    json.dumps({"message": str(exc)}).encode(),
                )
                return
            if not isinstance(reply, dict) or "statusCode" not in reply:
                # Function URLs return a bare JSON result as 200 application/json.
                self._send(200, {"content-type": "application/json"}, json.dumps(reply).encode())
                return
            raw = reply.get("body") or ""
            data = base64.b64decode(raw) if reply.get("isBase64Encoded") else raw.encode()
            self._send(int(reply["statusCode"]), reply.get("headers") or {}, data)

        def _body(self) -> bytes | None:
            """The request body, chunked or not; None when it is over the limit."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._chunked()
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > FUNCTION_URL_LIMIT:
                return None
            return self.rfile.read(length) if length else b""

        def _chunked(self) -> bytes | None:
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    length = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    return None
                if length == 0:
                    while self.rfile.readline(1024).strip():
                        pass  # trailer fields, then the blank line that ends the body
                    return b"".join(chunks)
                size += length
                if size > FUNCTION_URL_LIMIT:
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline(8)  # the CRLF after each chunk

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        # Every method reaches the runtime, which answers what the endpoint does not
        # serve with a JSON-RPC 405 (not http.server's HTML 501).
        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = _handle

    class Server(ThreadingHTTPServer):
        # The listen backlog: socketserver's default of 5 drops connections in a burst
        # (50 clients lost 4-24 requests); a Function URL queues them.
        request_queue_size = 1024
        daemon_threads = True

    return Server(("127.0.0.1", port), Handler)
