"""A lambda target's CloudWatch logs: `--since` parsing and event formatting (pure),
and reading the function's log group through FilterLogEvents (paged, and polled for
`--follow`, both bounded).

Lambda writes to /aws/lambda/<function>, one stream per execution environment, named
`YYYY/MM/DD/[VERSION]id`: the version in the brackets says which published version (or
$LATEST) logged the line, which matters once an alias moves.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions

from pmcp_build.errors import UserError
from pmcp_build.text import escaped

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_STREAM_VERSION = re.compile(r"\[([^\]]+)\]")
# Bounds: a read stops after this many pages (FilterLogEvents answers up to 10,000
# events or 1 MB a page); --follow stops after this many polls (12 hours at 2 s).
MAX_PAGES = 1000
POLL_SECONDS = 2.0
MAX_POLLS = 21600


def log_group(function: str) -> str:
    return f"/aws/lambda/{function}"


def parse_since(text: str, now_ms: int) -> int:
    """`--since`: a duration back from now (30s, 10m, 2h, 1d, 1w, 1h30m) or an ISO 8601
    time (2026-11-25T07:00:00Z; no zone means UTC). Milliseconds since the epoch."""
    value = text.strip().lower()
    if _DURATION.fullmatch(value):
        seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", value))
        return max(now_ms - seconds * 1000, 0)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--since {text[:60]!r}: use a duration (30s, 10m, 2h, 1d, 1h30m) or an ISO 8601 "
            "time (2026-11-25T07:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    start = int(when.timestamp() * 1000)
    if start > now_ms:
        raise UserError(f"--since {text[:60]!r} is in the future; logs start before now")
    return start


def stream_version(stream: str) -> str | None:
    found = _STREAM_VERSION.search(stream)
    return found.group(1) if found else None


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_event(event: dict[str, Any]) -> str:
    """One line: time, the version that logged it, the message (Lambda's own trailing
    newline dropped; a message's inner newlines and tabs kept, as the function wrote
    them). Other control characters are shown escaped (`\\x1b`): a log line must not
    drive the terminal that reads it."""
    version = stream_version(str(event.get("logStreamName", "")))
    where = f" [{version}]" if version else ""
    message = str(event.get("message", "")).rstrip("\r\n")
    message = escaped(message, keep="\n\t")
    return f"{iso(int(event.get('timestamp', 0)))}{where} {message}"


def event_json(event: dict[str, Any]) -> dict[str, Any]:
    stream = str(event.get("logStreamName", ""))
    ts = int(event.get("timestamp", 0))
    return {
        "timestamp": ts,
        "time": iso(ts),
        "stream": stream,
        "version": stream_version(stream),
        "message": str(event.get("message", "")).rstrip("\r\n"),
    }


class LogGroupMissing(UserError):
    def __init__(self, group: str) -> None:
        super().__init__(
            f"log group {group} does not exist: the function has not logged yet (it is "
            "created on the first invocation) or is not deployed"
        )


def read_events(
    client: Any, group: str, start_ms: int, page_limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Every event of the group from start_ms on, page by page (at most MAX_PAGES)."""
    token = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"logGroupName": group, "startTime": start_ms}
        if token:
            params["nextToken"] = token
        if page_limit:
            params["limit"] = page_limit
        try:
            page = client.filter_log_events(**params)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise LogGroupMissing(group) from exc
            raise
        yield from page.get("events") or []
        token = page.get("nextToken")
        if not token:
            return


def follow(
    client: Any,
    group: str,
    start_ms: int,
    emit: Callable[[dict[str, Any]], None],
    *,
    waiting: Callable[[str], None] = lambda _: None,
    page_limit: int | None = None,
) -> None:
    """Emit events as they arrive, oldest first, each once. Each poll reads from the
    newest timestamp seen (events of that same millisecond are told apart by id). A
    group that does not exist yet is waited for (said once through `waiting`)."""
    newest = start_ms
    seen: set[str] = set()
    told = False
    max_polls = MAX_POLLS
    for poll in range(max_polls):
        try:
            batch = list(read_events(client, group, newest, page_limit))
        except LogGroupMissing as exc:
            if not told:
                waiting(f"{exc}; waiting for it (Ctrl-C stops)")
                told = True
            batch = []
        for event in sorted(batch, key=lambda e: int(e.get("timestamp", 0))):
            ident = str(event.get("eventId", ""))
            if ident in seen:
                continue
            ts = int(event.get("timestamp", 0))
            if ts > newest:
                newest, seen = ts, set()
            seen.add(ident)
            emit(event)
        if poll + 1 < max_polls:
            _sleep(POLL_SECONDS)


_sleep = time.sleep  # the pause between polls (tests replace it)
