"""`pmcp-build serve`: an HTTP front door that turns requests into Function URL events."""

from __future__ import annotations

import base64
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from pmcp_build.local.runner import Invoker

FUNCTION_URL_LIMIT = 6 * 1024 * 1024  # bytes of request payload a Function URL accepts


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


def _is_text(content_type: str) -> bool:
    return content_type.startswith(("application/json", "text/"))


def make_server(invoker: Invoker, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes; with Nagle on, the client's delayed ACK
        # adds ~40 ms to every keep-alive request.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > FUNCTION_URL_LIMIT:
                # What a Function URL answers for a request over its 6 MB payload limit.
                self._send(
                    413,
                    {"content-type": "application/json"},
                    json.dumps({"message": "Request must be smaller than 6291456 bytes"}).encode(),
                )
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            event = function_url_event(self.command, self.path, dict(self.headers.items()), body)
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

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = do_PUT = do_OPTIONS = _handle

    class Server(ThreadingHTTPServer):
        # The listen backlog: socketserver's default of 5 drops connections in a burst
        # (50 clients lost 4-24 requests); a Function URL queues them.
        request_queue_size = 1024
        daemon_threads = True

    return Server(("127.0.0.1", port), Handler)
