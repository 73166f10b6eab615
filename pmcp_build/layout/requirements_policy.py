"""What a requirements file may ask of the build machine, checked before uv sees it.

A source may be hostile (the build image builds `ZIP_URL`s it did not write), and a
requirements file is a small program: pip's format lets it read environment variables
(`${AWS_SECRET_ACCESS_KEY}` inside a URL sends the secret to that host), include any
file (`-r /proc/self/environ`), and point installs at any index or URL. So:

- `${…}` references are refused everywhere: they would read the build machine's
  environment (and uv runs with an allowlisted environment anyway, see python_deps).
- `-r`/`-c` includes must stay inside the source (and are followed, so their content
  is part of the dependency cache key); `-e` is refused (nothing to edit on Lambda).
- For a source fetched from a URL, index options (`-i`, `--extra-index-url`,
  `--find-links`, `--trusted-host`…) and direct references (`pkg @ https://…`,
  `git+…`, `https://…/x.whl`) are refused unless the operator allows them with
  `PMCP_ALLOW_REMOTE_REQUIREMENTS=1` (`image-run --allow-remote-requirements`).
  A local folder is the author's own: it may use them.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from pmcp_build.errors import UserError

ALLOW_ENV = "PMCP_ALLOW_REMOTE_REQUIREMENTS"
_INCLUDE = {
    "-r": "include",
    "--requirement": "include",
    "-c": "constrain",
    "--constraint": "constrain",
}
_EDITABLE = {"-e", "--editable"}
_REMOTE_OPTIONS = {
    "-i",
    "--index-url",
    "--extra-index-url",
    "--index",
    "--default-index",
    "-f",
    "--find-links",
    "--trusted-host",
}
_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*\+)?(?:https?|ftp|file|git|ssh|svn|hg|bzr)://", re.I)
_MAX_DEPTH = 8


def remote_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "") not in ("", "0", "false", "no")


def checked_text(path: Path, root: Path, remote_source: bool) -> str:
    """The requirements with every include inlined, after the checks above; this is
    what the dependency cache is keyed by."""
    allow_remote = not remote_source or remote_allowed()
    return _check(path, root.resolve(), allow_remote, depth=0, shown=path.name)


def _check(path: Path, root: Path, allow_remote: bool, depth: int, shown: str) -> str:
    if depth > _MAX_DEPTH:
        raise UserError(f"{shown}: requirement files include each other too deeply")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{shown}: cannot read it as UTF-8 text ({exc.__class__.__name__})"
        ) from None
    out = [f"# {shown}"]
    for number, line in _logical_lines(text):
        where = f"{shown}:{number}"
        if "${" in line:
            raise UserError(
                f"{where}: environment variable references (${{…}}) are not allowed: they "
                "would read the build machine's environment; write the value in"
            )
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            raise UserError(f"{where}: cannot parse this line (unbalanced quotes)") from None
        if not tokens:
            continue
        option, value = _option(tokens)
        if option in _INCLUDE:
            if not value:
                raise UserError(f"{where}: {option} needs a file name")
            target = _inside(path.parent, value, root, where)
            out.append(f"{option} {value}")
            out.append(_check(target, root, allow_remote, depth + 1, value))
            continue
        if option in _EDITABLE:
            raise UserError(
                f"{where}: editable installs (-e) are not supported for Lambda packages; "
                "list the package by name or as a path to a wheel"
            )
        if option in _REMOTE_OPTIONS:
            if not allow_remote:
                raise UserError(
                    f"{where}: {option} is refused for a source fetched from a URL (it would "
                    f"point the build at another index); set {ALLOW_ENV}=1 to allow it"
                )
            out.append(line.strip())
            continue
        if option is not None:
            raise UserError(f"{where}: option {option} is not supported in requirements here")
        out.append(_requirement(tokens, line, path, root, allow_remote, where))
    return "\n".join(out)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with `\\` continuations joined, numbered by where they start."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append((start, pending + raw))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines


def _option(tokens: list[str]) -> tuple[str | None, str | None]:
    first = tokens[0]
    if not first.startswith("-"):
        return None, None
    if "=" in first and first.startswith("--"):
        name, _, value = first.partition("=")
        return name, value
    for short in ("-r", "-c", "-e", "-i", "-f"):
        if first.startswith(short) and len(first) > 2 and not first.startswith("--"):
            return short, first[2:]
    return first, tokens[1] if len(tokens) > 1 else None


def _inside(base: Path, value: str, root: Path, where: str) -> Path:
    if _URL.match(value):
        raise UserError(f"{where}: includes must be files in the source, not URLs ({value})")
    target = (base / value).resolve()
    if not target.is_relative_to(root):
        raise UserError(
            f"{where}: {value} is outside the source; requirement files may only include "
            "files in the source"
        )
    if not target.is_file():
        raise UserError(f"{where}: {value} does not exist in the source")
    return target


def _requirement(
    tokens: list[str], line: str, path: Path, root: Path, allow_remote: bool, where: str
) -> str:
    spec = " ".join(tokens)
    reference = None
    if " @ " in f" {spec} ":
        reference = spec.split("@", 1)[1].strip().split(";")[0].strip()
    elif (
        _URL.match(tokens[0])
        or tokens[0].startswith((".", "/"))
        or tokens[0].endswith((".whl", ".tar.gz", ".zip"))
    ):
        reference = tokens[0]
    if reference is None:
        return spec
    if _URL.match(reference) and not reference.lower().startswith("file:"):
        if not allow_remote:
            raise UserError(
                f"{where}: direct references ({reference.split('?')[0][:80]}) are refused for "
                f"a source fetched from a URL; pin a version from the index, or set "
                f"{ALLOW_ENV}=1"
            )
        return spec
    local = reference[len("file://") :] if reference.lower().startswith("file://") else reference
    _inside(path.parent, local, root, where)
    return spec


def included_files(path: Path) -> list[Path]:
    """The files a requirements file includes (-r/-c), recursively; best effort, for
    the rebuild fast path's list of inputs (a full build checks them properly)."""
    found: list[Path] = []
    todo = [path]
    while todo and len(found) < 64:
        current = todo.pop()
        try:
            text = current.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for _, line in _logical_lines(text):
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue
            if not tokens:
                continue
            option, value = _option(tokens)
            if option in _INCLUDE and value:
                target = (current.parent / value).resolve()
                if target not in found:
                    found.append(target)
                    todo.append(target)
    return found
