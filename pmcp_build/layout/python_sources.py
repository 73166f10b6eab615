"""Where a python server's dependencies are declared, read into requirement lines.

Four sources, detected in this order when [runtime].requirements is not set (the first
found wins; `init` writes the one it found):

1. ``uv.lock`` (with its ``pyproject.toml``): exported with ``uv export --frozen`` so
   the versions uv.lock names are pins, and its wheel hashes are checked against what
   the build locks;
2. ``pylock.toml`` (PEP 751): its versions are pins, its wheel hashes checked likewise;
3. ``requirements.txt``: ranges, resolved once and then held by metorial.lock;
4. ``pyproject.toml``'s ``[project] dependencies`` (plus the optional groups named in
   ``[runtime].extras``).

Setting ``[runtime].requirements`` to any of these file names picks that source. The
output is plain text for ``uv pip compile`` plus, for exact sources, the hashes each
pinned distribution may have: python_lock.py turns it into the lock of what ships.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pmcp_build.errors import UserError
from pmcp_build.text import UNSAFE, one_line

Kind = Literal["uv.lock", "pylock", "requirements", "pyproject"]

DETECTION_ORDER = ("uv.lock", "pylock.toml", "requirements.txt", "pyproject.toml")


@dataclass(frozen=True)
class DependencySource:
    kind: Kind
    path: Path
    extras: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Requirements:
    """What to resolve: requirement lines, and the hashes an exact source allows."""

    source: DependencySource | None
    text: str
    allowed_hashes: dict[str, frozenset[str]] = field(default_factory=dict)
    # Files whose content decides `text` (for the rebuild fast path's inputs).
    inputs: tuple[Path, ...] = ()


def kind_of(path: Path) -> Kind:
    name = path.name
    if name == "uv.lock":
        return "uv.lock"
    if re.fullmatch(r"pylock(\.[^.]+)?\.toml", name):
        return "pylock"
    if name == "pyproject.toml":
        return "pyproject"
    return "requirements"


def detect(
    root: Path, explicit: str | None, extras: tuple[str, ...] = ()
) -> DependencySource | None:
    """The dependency source of a source folder; None when it declares none."""
    if explicit is not None:
        path = root / explicit
        if not path.is_file():
            raise UserError(
                f"[runtime].requirements: {explicit!r} is not in the source ({root}); "
                "fix the path or remove the key"
            )
        return DependencySource(kind_of(path), path, extras)
    for name in DETECTION_ORDER:
        path = root / name
        if not path.is_file():
            continue
        if name == "pyproject.toml" and not _declares_dependencies(path):
            continue
        return DependencySource(kind_of(path), path, extras)
    if extras:
        raise UserError(
            f"[runtime].extras: {', '.join(extras)} named but {root} has no pyproject.toml "
            "or uv.lock to take them from; remove the key"
        )
    return None


def _declares_dependencies(path: Path) -> bool:
    try:
        project = tomllib.loads(path.read_text()).get("project", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return isinstance(project, dict) and bool(
        project.get("dependencies") or project.get("optional-dependencies")
    )


def read(source: DependencySource, checked_requirements: str | None = None) -> Requirements:
    """The requirement lines of a source. `checked_requirements` is a requirements
    file's text after the policy checks (requirements_policy.py)."""
    if source.kind == "requirements":
        text = checked_requirements if checked_requirements is not None else source.path.read_text()
        return Requirements(source, text, inputs=(source.path,))
    if source.kind == "pyproject":
        return Requirements(source, _pyproject_lines(source), inputs=(source.path,))
    if source.kind == "pylock":
        return _pylock(source)
    return _uv_lock(source)


def _load_toml(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc}); fix the file") from None


def _pyproject_lines(source: DependencySource) -> str:
    from packaging.requirements import InvalidRequirement, Requirement

    data = _load_toml(source.path)
    project = data.get("project")
    if not isinstance(project, dict):
        raise UserError(f"{source.path}: no [project] table; add [project] dependencies")
    dynamic = project.get("dynamic") or []
    if not _strings(dynamic) or not _strings(project.get("dependencies") or []):
        raise UserError(
            f"{source.path}: [project].dependencies and dynamic must be lists of strings"
        )
    optional = project.get("optional-dependencies") or {}
    if not isinstance(optional, dict) or not all(_strings(v) for v in optional.values()):
        raise UserError(
            f"{source.path}: [project.optional-dependencies] must map each extra to a list "
            "of strings"
        )
    if "dependencies" in dynamic:
        raise UserError(
            f"{source.path}: [project].dependencies is dynamic (computed by the build "
            "backend); list them statically, or point [runtime].requirements at a "
            "requirements.txt or uv.lock"
        )
    lines = list(project.get("dependencies") or [])
    for extra in source.extras:
        if extra not in optional:
            known = ", ".join(sorted(optional)) or "none are declared"
            raise UserError(
                f"[runtime].extras: {extra!r} is not in {source.path}'s "
                f"[project.optional-dependencies] ({known}); fix the name"
            )
        lines += list(optional[extra])
    for index, line in enumerate(lines):
        try:
            req = Requirement(str(line))
        except InvalidRequirement:
            # Not the parser's message: it quotes the text and draws a caret under it,
            # several lines of the attacker's choosing.
            raise UserError(
                f"{source.path}: dependency {one_line(str(line))[:120]!r} is not a valid "
                "requirement (PEP 508)"
            ) from None
        if req.url:
            raise UserError(
                f"{source.path}: dependency {line!r} is a direct reference; only "
                "index packages are locked and shipped, use a version range"
            )
        lines[index] = str(req)
    return "".join(f"{line}\n" for line in lines)


# What a pinned distribution's name and version may hold once it becomes a requirement
# line (pylock.toml here, metorial.lock in python_lock.py): nothing that could end the
# line or start an option.
PACKAGE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")  # PEP 508
EXACT_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")  # PEP 440 public and local


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _pylock(source: DependencySource) -> Requirements:
    data = _load_toml(source.path)
    packages = data.get("packages")
    if not isinstance(packages, list):
        raise UserError(f"{source.path}: no [[packages]]; is it a PEP 751 pylock.toml?")
    lines, hashes = [], {}
    for index, package in enumerate(packages):
        where = f"{source.path}: packages[{index}]"
        if not isinstance(package, dict) or "name" not in package or "version" not in package:
            raise UserError(f"{where}: needs name and version (exact pins are locked)")
        name, version, marker = package["name"], package["version"], package.get("marker")
        # Each becomes a line of the requirements uv resolves: a newline would add
        # options of its own (`-r /etc/passwd`, `--find-links`).
        if not isinstance(name, str) or not PACKAGE_NAME.fullmatch(name):
            raise UserError(f"{where}: name {one_line(str(name))[:80]!r} is not a package name")
        if not isinstance(version, str) or not EXACT_VERSION.fullmatch(version):
            raise UserError(
                f"{where} ({name}): version {one_line(str(version))[:80]!r} is not an exact version"
            )
        if marker is not None and (not isinstance(marker, str) or UNSAFE.search(marker)):
            raise UserError(f"{where} ({name}): marker must be one line of text")
        wheels = package.get("wheels") or []
        if not isinstance(wheels, list) or not all(
            isinstance(w, dict) and isinstance(w.get("hashes", {}), dict) for w in wheels
        ):
            raise UserError(f"{where} ({name}): wheels must be tables with a hashes table")
        if not wheels:
            raise UserError(
                f"{where} ({name}): has no wheels; Lambda packages install wheels only "
                "(a vcs, directory or sdist-only package cannot ship)"
            )
        lines.append(f"{name}=={version}" + (f" ; {marker}" if marker else ""))
        hashes[_normal(name)] = frozenset(str(w.get("hashes", {}).get("sha256")) for w in wheels)
    return Requirements(source, "".join(f"{x}\n" for x in lines), hashes, (source.path,))


def _uv_lock(source: DependencySource) -> Requirements:
    from pmcp_build.layout.python_deps import _uv, uv_environment

    project = source.path.parent / "pyproject.toml"
    if not project.is_file():
        raise UserError(f"{source.path}: uv.lock needs its pyproject.toml beside it")
    cmd = [
        _uv(),
        "export",
        "--frozen",  # the lock as it is: never re-resolved, never checked online
        "--no-emit-project",
        "--no-dev",
        "--no-header",
        "--no-annotate",
        "--format",
        "requirements-txt",
        "--directory",
        str(source.path.parent),
    ]
    for extra in source.extras:
        cmd += ["--extra", extra]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        env=uv_environment(source.path.parent),
    )
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[:300]
        raise UserError(f"{source.path}: uv export failed: {detail}")
    lines, hashes = [], {}
    name = ""
    for raw in proc.stdout.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-e", "./", "../", "/")) or " @ " in line.split(";")[0]:
            raise UserError(
                f"{source.path}: {line.split()[0]} is a path or URL dependency; only index "
                "packages are locked and shipped"
            )
        parts = line.split("--hash=sha256:")
        requirement = parts[0].strip()
        name = _normal(re.split(r"[=<>!~; \[]", requirement, maxsplit=1)[0])
        lines.append(requirement)
        if len(parts) > 1:
            hashes[name] = frozenset(p.strip() for p in parts[1:])
    return Requirements(source, "".join(f"{x}\n" for x in lines), hashes, (source.path, project))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
