"""Text from hostile inputs, made safe to print on one line.

A file name, a dependency's metadata or a server's class name can hold a newline, a
terminal escape or a bidirectional override: printed as is, it could add a line to a
plan that a person reviews ("+ lambda ...  # up to date") or rewrite what the terminal
shows. Everything of that kind is shown escaped instead.

And a secret resolved from `${env:}` must never be printed, in whatever spelling a
string carries it (`masked`, `mask_known`).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "(sensitive)"

# C0 and C1 controls, DEL, the line and paragraph separators, and the bidirectional
# embeddings, overrides and isolates ("Trojan Source").
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def one_line(text: str) -> str:
    """`text` with every unsafe character escaped (`\\n`, `\\x1b`, `\\u202e`)."""
    return UNSAFE.sub(_escape, text)


def escaped(text: str, keep: str) -> str:
    """`text` with every unsafe character but those in `keep` escaped: a log message
    keeps its own newlines and tabs, and still drives no terminal."""
    return UNSAFE.sub(
        lambda found: found.group() if found.group() in keep else _escape(found), text
    )


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


# -- secrets ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def spellings(value: str) -> frozenset[str]:
    """Every form a secret can take in text we print: as is, JSON-escaped (once, and
    twice: an AWS error quoting the JSON it was sent, printed inside our own JSON),
    `repr`, our one-line escaping, URL-encoded, HTML-escaped and base64."""
    forms = {value, one_line(value), html.escape(value), html.escape(value, quote=False)}
    for ascii_only in (True, False):
        once = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        forms |= {once, json.dumps(once, ensure_ascii=ascii_only)[1:-1]}
    forms |= {repr(value)[1:-1], ascii(value)[1:-1], repr(value.encode())[2:-1]}
    forms |= {quote(value, safe=""), quote(value), quote_plus(value)}
    raw = value.encode()
    forms |= {base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode()}
    forms |= {f.rstrip("=") for f in forms}
    return frozenset(f for f in forms if f)


def masked(text: str, secrets: Iterable[str]) -> str:
    """`text` with every spelling of every secret replaced by (sensitive), longest
    first so that a longer form is never left half-masked by a shorter one."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= spellings(secret)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


# Every value resolved from `${env:}` in this process: whatever path a string took (an
# AWS error quoting the request, a traceback under --debug), the CLI masks these in all
# it prints. The CLI forgets them when a command ends.
_KNOWN: set[str] = set()
_KNOWN_LOCK = threading.Lock()


def remember(secrets: Iterable[str]) -> None:
    with _KNOWN_LOCK:
        _KNOWN.update(s for s in secrets if s)


def forget() -> None:
    with _KNOWN_LOCK:
        _KNOWN.clear()
    spellings.cache_clear()


def mask_known(text: str) -> str:
    with _KNOWN_LOCK:
        known = list(_KNOWN)
    return masked(text, known) if known else text
