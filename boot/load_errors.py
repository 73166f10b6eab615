"""A server that fails to load, told from its own side: the exception first, then the
frames in the server's own files (as many as it takes), then where it was raised when
that is in a library. Paths are shown relative to the task root and each line is cut
on its own, so a long value costs its line, never the exception behind it.

The same form serves an in-process server (the exception itself) and a stdio command
(the traceback it printed on stderr before it exited).
"""

from __future__ import annotations

import os
import re
import traceback
from typing import Any, NamedTuple

LINE_LIMIT = 300  # characters of one line; a 10 MB repr must not become a 10 MB error
OWN_FRAMES = 40  # the innermost of the server's own frames, for a runaway recursion
RAISED_IN = 2  # library frames shown below the server's own, innermost last
EXCEPTION_LINES = 20
STDERR_LINES = 15  # a command that exited without a traceback: its last words
_FRAME = re.compile(r'^  File "(?P<path>.+)", line (?P<line>\d+), in (?P<name>.+)$')
_RUNTIME_DIRS = ("__metorial__", "__command__")


class Frame(NamedTuple):
    path: str
    line: int
    name: str
    code: str


def cut(line: str, limit: int = LINE_LIMIT) -> str:
    line = line.rstrip()
    return line if len(line) <= limit else line[: limit - 20] + f"… ({len(line)} chars)"


def describe(exc: BaseException, root: str) -> str:
    """What a load failure shows: an exception raised while loading the server."""
    stderr = getattr(exc, "stderr_lines", None)
    if stderr is not None:  # a stdio command that exited: its own traceback, not ours
        return describe_stderr(str(exc), list(stderr), root)
    frames = [
        Frame(f.filename, f.lineno or 0, f.name, (f.line or "").strip())
        for f in traceback.extract_tb(exc.__traceback__)
    ]
    lines = traceback.format_exception_only(type(exc), exc)
    exception = [ln for chunk in lines for ln in chunk.splitlines()]
    return render(exception, frames, root)


def describe_stderr(head: str, stderr: list[str], root: str) -> str:
    parsed = parse_traceback(stderr)
    if parsed is None:
        tail = [cut(_relative(ln, root)) for ln in stderr if ln.strip()][-STDERR_LINES:]
        return "\n".join([cut(head), *tail])
    exception, frames = parsed
    return cut(head) + "\n" + render(exception, frames, root)


def parse_traceback(lines: list[str]) -> tuple[list[str], list[Frame]] | None:
    """The last Python traceback in a process's stderr: its exception lines and frames."""
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call")]
    if not starts:
        return None
    frames: list[Frame] = []
    exception: list[str] = []
    for line in lines[starts[-1] + 1 :]:
        match = _FRAME.match(line)
        if match and not exception:
            frames.append(Frame(match["path"], int(match["line"]), match["name"], ""))
        elif line.startswith("    ") and frames and not exception:
            code = line.strip()
            if frames[-1].code == "" and code.strip("^~ ") != "":
                frames[-1] = frames[-1]._replace(code=code)
        elif line.strip():
            exception.append(line)
    return (exception or ["(the traceback ends without its exception)"]), frames


def render(exception: list[str], frames: list[Frame], root: str) -> str:
    own = own_code_checker(root)
    mine = [f for f in frames if own(f.path)]
    lines = [cut(_relative(ln, root)) for ln in exception[:EXCEPTION_LINES]]
    if len(exception) > EXCEPTION_LINES:
        lines.append(f"  ({len(exception) - EXCEPTION_LINES} more lines)")
    if len(mine) > OWN_FRAMES:
        lines.append(f"  ({len(mine) - OWN_FRAMES} earlier frames of the server's code)")
    lines += [ln for frame in mine[-OWN_FRAMES:] for ln in _frame_lines(frame, root)]
    last_own = max((i for i, f in enumerate(frames) if own(f.path)), default=-1)
    below = frames[last_own + 1 :]  # where it was raised, when not in the server's code
    if below:
        lines.append("  raised in:" if mine else "  in:")
        lines += [ln for frame in below[-RAISED_IN:] for ln in _frame_lines(frame, root)]
    return "\n".join(lines)


def _frame_lines(frame: Frame, root: str) -> list[str]:
    where = f'  File "{_relative(frame.path, root)}", line {frame.line}, in {frame.name}'
    return [cut(where)] + ([cut(f"    {frame.code}")] if frame.code else [])


def _relative(text: str, root: str) -> str:
    prefix = os.path.normpath(root) + os.sep
    return text.replace(prefix, "")


def own_code_checker(root: str) -> Any:
    """Whether a frame's file is the server's own: in the task root, but neither the
    runtime's folders nor a file an installed distribution brought."""
    base = os.path.normpath(root) + os.sep
    installed = _installed_top_levels(root)

    def own(path: str) -> bool:
        path = os.path.normpath(path)
        if not path.startswith(base):
            return False
        top = path[len(base) :].split(os.sep, 1)[0]
        return top not in _RUNTIME_DIRS and top.split(".")[0] not in installed

    return own


def _installed_top_levels(root: str) -> set[str]:
    """Top-level names the root's distributions installed (their RECORD files): read
    only when something failed, so it costs nothing on a good start."""
    names: set[str] = set()
    try:
        listing = os.listdir(root)
    except OSError:
        return names
    for entry in listing:
        if not entry.endswith(".dist-info"):
            continue
        try:
            with open(os.path.join(root, entry, "RECORD"), encoding="utf-8") as fh:
                names.update(row.split("/", 1)[0].split(",", 1)[0].split(".")[0] for row in fh)
        except OSError:
            continue
    names.discard("")
    return names
