"""What a Lambda Function URL can carry, shared by the engine and the bootstrap (no SDK
import at module level: the bootstrap uses these before the engine is loaded).

- Sizes: a Function URL accepts a request payload up to 6 MB and Lambda returns a
  synchronous response only up to 6,291,556 bytes; anything larger fails there, so it
  fails here too, with an error that names the limit.
- Buffered SSE: a response carries the request's own notifications and then its
  result in one `text/event-stream` body; no stream outlives the response.
- Host / Origin: the SDK's DNS-rebinding protection, for the function's own domain and
  the origins METORIAL_ALLOWED_ORIGINS lists (comma-separated; `*` allows any).
"""

from __future__ import annotations

import json
import os
from typing import Any

REQUEST_LIMIT = 6 * 1024 * 1024  # bytes of request body a Function URL accepts
RESPONSE_LIMIT = 6_291_556  # bytes of synchronous invocation response Lambda returns
ALLOWED_ORIGINS_ENV = "METORIAL_ALLOWED_ORIGINS"
PAYLOAD_TOO_LARGE = -32600  # an Invalid Request: the message cannot be taken at all
RESPONSE_TOO_LARGE = -32603  # the server's answer, not the client's request, is at fault


def accepts_sse(headers: dict[str, str]) -> bool:
    """Whether the Accept header takes text/event-stream (wildcards as the SDK reads them)."""
    accept = headers.get("accept", "")
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(types & {"text/event-stream", "text/*", "*/*"})


def sse_messages(body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a buffered SSE body, in order (pings and ids dropped)."""
    messages: list[dict[str, Any]] = []
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(
            line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if not data.strip():
            continue
        try:
            message = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(message, dict):
            messages.append(message)
    return messages


def collapse_sse(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    """An SSE body holding nothing but the result is answered as application/json (as
    the SDK's 2026-07-28 path does when a handler emits no notification); one with
    notifications stays a stream, whole."""
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if not content_type.startswith("text/event-stream"):
        return headers, body
    messages = sse_messages(body)
    if len(messages) != 1 or "method" in messages[0]:
        return headers, body
    kept = {k: v for k, v in headers.items() if k.lower() not in _STREAM_HEADERS}
    return {**kept, "content-type": "application/json"}, json.dumps(messages[0]).encode()


_STREAM_HEADERS = frozenset({"content-type", "cache-control", "connection", "x-accel-buffering"})


def notification_logs(messages: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The request's logging and progress notifications as log lines: (info, error)."""
    info: list[str] = []
    errors: list[str] = []
    for message in messages:
        params = message.get("params") or {}
        if message.get("method") == "notifications/message":
            level = str(params.get("level", "info"))
            data = params.get("data")
            text = data if isinstance(data, str) else json.dumps(data)
            logger = f"{params['logger']}: " if params.get("logger") else ""
            line = f"[{level}] {logger}{text}"
            (errors if level in _ERROR_LEVELS else info).append(line)
        elif message.get("method") == "notifications/progress":
            total = params.get("total")
            done = f"{params.get('progress')}" + (f"/{total}" if total is not None else "")
            note = f" {params['message']}" if params.get("message") else ""
            info.append(f"[progress] {done}{note}")
    return info, errors


_ERROR_LEVELS = frozenset({"warning", "error", "critical", "alert", "emergency"})


def allowed_origins() -> list[str]:
    raw = os.environ.get(ALLOWED_ORIGINS_ENV, "")
    return [part.strip().rstrip("/") for part in raw.split(",") if part.strip()]


def origin_settings(domain: str) -> Any:
    """The SDK's TransportSecuritySettings for a function served at `domain`: its own
    host, and its own origin plus the configured ones."""
    from mcp.server.transport_security import TransportSecuritySettings

    extra = allowed_origins()
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[domain],
        allowed_origins=[f"https://{domain}", f"http://{domain}", *extra],
    )


def any_origin() -> bool:
    return "*" in allowed_origins()


def too_large(limit: int, size: int, what: str) -> str:
    """What exceeded which of Lambda's limits, in words the author can act on."""
    if limit == RESPONSE_LIMIT:
        return f"{what} is {size} bytes; Lambda returns at most {limit} bytes from a call"
    return f"{what} is {size} bytes; a Lambda Function URL takes at most {limit} bytes"
