"""JSON-RPC pieces both the platform protocol and the engine answer with (no SDK import:
the bootstrap uses them before the engine, and the SDK, are loaded)."""

from __future__ import annotations

import json
from typing import Any


def request_id(body: bytes) -> Any:
    """The id of a JSON-RPC request body, when it has a valid one (else None)."""
    try:
        message = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    id_ = message.get("id") if isinstance(message, dict) else None
    return id_ if isinstance(id_, (str, int)) and not isinstance(id_, bool) else None


def error_body(code: int, message: str, id_: Any = None) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}}
    ).encode()
