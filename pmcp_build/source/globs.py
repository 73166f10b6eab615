"""Gitignore-flavoured glob matching for `exclude` and asset `from` patterns.

`*` and `?` stay within one path segment, `**` spans segments, a pattern without a
'/' matches a name at any depth, and a pattern that matches a folder matches
everything under it. (PurePath.full_match only arrives in Python 3.13.)
"""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=512)
def compile_glob(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip().removeprefix("./")
    anchored = "/" in pattern.rstrip("/")
    pattern = pattern.rstrip("/")
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    body = "".join(out)
    prefix = "" if anchored else "(?:.*/)?"
    # Matching a folder matches its contents.
    return re.compile(f"^{prefix}{body}(?:/.*)?$")


def matches(path: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(compile_glob(p).match(path) for p in patterns)


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")
