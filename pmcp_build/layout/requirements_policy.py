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
from pmcp_build.text import one_line

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
# Any scheme (`https:`, `git+ssh:`, `s3:`…), with or without `//`: a direct reference
# is remote unless it is a file.
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x85\u2028\u2029]")  # not \t \n \r
_COMMENT = re.compile(r"(?:^|\s)#.*$")  # pip's rule: `#` at the start or after a space


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
    control = _CONTROL.search(text)
    if control:
        # A form feed or vertical tab ends a line for Python, not for uv: the two would
        # read different requirements. Nothing legitimate needs them.
        number = text.count("\n", 0, control.start()) + 1
        raise UserError(f"{one_line(shown)}:{number}: holds a control character; remove it")
    out = [f"# {one_line(shown)}"]  # a name with a newline must not add a line for uv
    for number, line in _logical_lines(text):
        where = f"{one_line(shown)}:{number}"
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
            if _INCLUDE[option] == "constrain":
                raise UserError(
                    f"{where}: constraints files ({option}) are not supported yet; pin the "
                    "versions in the requirements (metorial.lock pins every version anyway)"
                )
            # Inlined: uv reads a copy of this text from another folder, where a
            # relative include would not point at the file.
            out.append(f"# {option} {one_line(value)}")
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
        # The line as written, comment dropped: shlex's tokens lose a marker's quotes
        # (`; python_version >= "3.8"`), which uv needs. Checked as tokens and as
        # written, since that is what uv reads.
        raw = _COMMENT.sub("", line).strip()
        _requirement(tokens, path, root, allow_remote, where)
        if raw:
            _requirement(raw.split(), path, root, allow_remote, where)
        out.append(raw)
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


def _requirement(tokens: list[str], path: Path, root: Path, allow_remote: bool, where: str) -> None:
    """Refuse what a requirement may not reference: any `@` before the marker makes it
    a direct reference (`name@https://…` as well as `name @ https://…`)."""
    spec = " ".join(tokens)
    reference = None
    head = spec.split(";", 1)[0]
    if "@" in head:
        reference = head.split("@", 1)[1].strip()
    elif (
        _URL.match(tokens[0])
        or tokens[0].startswith((".", "/"))
        or tokens[0].endswith((".whl", ".tar.gz", ".zip"))
    ):
        reference = tokens[0]
    if reference is None:
        return
    if _SCHEME.match(reference) and not reference.lower().startswith("file:"):
        if not allow_remote:
            raise UserError(
                f"{where}: direct references ({one_line(reference.split('?')[0][:80])}) are "
                f"refused for a source fetched from a URL; pin a version from the index, or "
                f"set {ALLOW_ENV}=1"
            )
        return
    local = reference[len("file://") :] if reference.lower().startswith("file://") else reference
    _inside(path.parent, local, root, where)


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
