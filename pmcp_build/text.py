"""Text from hostile inputs, made safe to print on one line.

A file name, a dependency's metadata or a server's class name can hold a newline, a
terminal escape or a bidirectional override: printed as is, it could add a line to a
plan that a person reviews ("+ lambda ...  # up to date") or rewrite what the terminal
shows. Everything of that kind is shown escaped instead.
"""

from __future__ import annotations

import re

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
