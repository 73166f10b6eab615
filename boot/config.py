"""Per-request server configuration.

A ContextVar, set for the duration of one request and reset after it, so that one
caller's arguments can never be seen by the next request in a warm container.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_ARGS: ContextVar[dict[str, Any] | None] = ContextVar("metorial_args", default=None)


def get_args() -> dict[str, Any]:
    args = _ARGS.get()
    return dict(args) if args else {}


def parse_args(raw: Any) -> dict[str, Any]:
    """`args` arrives as a JSON string (or already decoded); anything else is empty."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return {}
    return dict(raw) if isinstance(raw, dict) else {}


@contextlib.contextmanager
def request_args(raw: Any) -> Iterator[dict[str, Any]]:
    args = parse_args(raw)
    token = _ARGS.set(args)
    try:
        yield args
    finally:
        _ARGS.reset(token)
