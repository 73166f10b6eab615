"""metorial.lock: the exact distributions a python package ships, and their wheels.

Like Cargo.lock: the first build resolves the dependency source (python_sources.py)
plus the boot runtime's requirements with uv for the Lambda platform and writes the
result beside the manifest; later builds install exactly that (one wheel per
distribution, hash-checked, no resolution), whatever the index serves since. When the
inputs change (a requirement added, another python or architecture) the build
re-resolves with the locked versions preferred, so only what had to move moves, and
says what changed. `pmcp-build lock --upgrade` re-resolves on purpose; PMCP_LOCKED=1
(or `lock --check`) refuses any change, for CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pmcp_build.errors import UserError
from pmcp_build.layout.python_sources import (
    EXACT_VERSION,
    PACKAGE_NAME,
    DependencySource,
    Requirements,
    _normal,
    read,
)
from pmcp_build.text import one_line

LOCK_NAME = "metorial.lock"
LOCK_VERSION = 1


@dataclass(frozen=True, order=True)
class Locked:
    name: str  # normalised (PEP 503)
    version: str
    wheel: str
    sha256: str
    boot: bool  # needed by the boot runtime (bundled as __metorial__/)


@dataclass(frozen=True)
class Lock:
    python: str
    platform: str
    inputs: str  # digest of what was resolved; a change means the lock is stale
    packages: tuple[Locked, ...]


@dataclass(frozen=True)
class Change:
    name: str
    old: str | None
    new: str | None

    @property
    def symbol(self) -> str:
        return "+" if self.old is None else "-" if self.new is None else "~"

    def line(self) -> str:
        if self.old is None:
            return f"+ {self.name} {self.new}"
        if self.new is None:
            return f"- {self.name} {self.old}"
        return f"~ {self.name} {self.old} -> {self.new}"


Status = Literal["locked", "written", "updated", "unlocked"]


@dataclass(frozen=True)
class Outcome:
    """What a build did with the lock: the plan prints it."""

    path: Path
    status: Status
    lock: Lock
    changes: tuple[Change, ...]
    reason: str = ""

    def lines(self) -> list[str]:
        n = len(self.lock.packages)
        name = self.path.name
        if self.status == "locked":
            return [f"dependencies: {n} locked in {name}, unchanged"]
        head = {
            "written": f"dependencies: {name} written ({n} packages; commit it)",
            "updated": f"dependencies: {name} updated ({self.reason}; commit it)",
            "unlocked": f"dependencies: not locked ({self.reason}); resolved {n} packages",
        }[self.status]
        return [head] + [f"  {c.line()}" for c in self.changes]


# -- the file ----------------------------------------------------------------------------


def render(lock: Lock) -> str:
    lines = [
        "# metorial.lock: the exact dependencies pmcp-build ships. Written by",
        "# `pmcp-build build`/`lock`; commit it. Re-resolve with `pmcp-build lock --upgrade`.",
        f"version = {LOCK_VERSION}",
        f'python = "{lock.python}"',
        f'platform = "{lock.platform}"',
        f'inputs = "{lock.inputs}"',
    ]
    for p in sorted(lock.packages):
        lines += [
            "",
            "[[package]]",
            f'name = "{p.name}"',
            f'version = "{p.version}"',
            f'wheel = "{p.wheel}"',
            f'sha256 = "{p.sha256}"',
        ]
        if p.boot:
            lines.append("boot = true")
    return "\n".join(lines) + "\n"


def read_lock(path: Path) -> Lock | None:
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text())
        if data.get("version") != LOCK_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {LOCK_VERSION}")
        packages = tuple(
            Locked(
                _checked("name", p["name"], PACKAGE_NAME),
                _checked("version", p["version"], EXACT_VERSION),
                _checked("wheel", p["wheel"], _WHEEL),
                _checked("sha256", p["sha256"], _SHA256),
                bool(p.get("boot", False)),
            )
            for p in data.get("package", [])
        )
        return Lock(
            _checked("python", data["python"], _PYTHON),
            _checked("platform", data["platform"], _PLATFORM),
            _checked("inputs", data["inputs"], _INPUTS),
            packages,
        )
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"{path}: unreadable lock ({e}); delete it and run `pmcp-build lock`"
        ) from None


# Each value of a lock ends up in the requirements file uv reads (install_text): a
# lock in a downloaded source is the attacker's, and a name holding a newline would add
# options of its own (`--index-url`, `-r /etc/...`) past the requirements policy.
_WHEEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*\.whl")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_INPUTS = re.compile(r"sha256:[0-9a-f]{64}")
_PYTHON = re.compile(r"3\.[0-9]{1,2}")
_PLATFORM = re.compile(r"[a-z0-9_.-]+")  # x86_64-manylinux2014


def _checked(key: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or len(value) > 200:
        raise ValueError(f"{key} {one_line(str(value))[:80]!r} is not a valid {key}")
    return value


def write_lock(path: Path, lock: Lock) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(render(lock))
    os.replace(tmp, path)


def install_text(lock: Lock) -> str:
    """The requirements uv installs: every distribution pinned to its one wheel."""
    return "".join(f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n" for p in lock.packages)


def diff(old: Lock | None, new: Lock) -> tuple[Change, ...]:
    before = {p.name: p.version for p in old.packages} if old else {}
    after = {p.name: p.version for p in new.packages}
    return tuple(
        Change(name, before.get(name), after.get(name))
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    )


def inputs_digest(requirements: Requirements, boot: str, python: str, platform: str) -> str:
    blob = json.dumps(
        {
            "requirements": requirements.text,
            "hashes": {k: sorted(v) for k, v in sorted(requirements.allowed_hashes.items())},
            "boot": boot,
            "python": python,
            "platform": platform,
        },
        sort_keys=True,
    )
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


# -- resolving ---------------------------------------------------------------------------


def ensure(
    lock_path: Path,
    requirements: Requirements,
    boot: str,
    python: str,
    platform: str,
    *,
    writable: bool = True,
    upgrade: bool = False,
    check_only: bool = False,
) -> Outcome:
    """The lock to install: the file as it is when it matches the inputs, otherwise a new
    resolution (written when `writable`)."""
    digest = inputs_digest(requirements, boot, python, platform)
    current = read_lock(lock_path)
    if current is not None and current.inputs == digest and not upgrade:
        return Outcome(lock_path, "locked", current, ())
    reason = (
        "no lock yet"
        if current is None
        else "--upgrade"
        if upgrade
        else _why_stale(current, requirements, python, platform)
    )
    locked_env = bool(os.environ.get("PMCP_LOCKED"))
    if check_only or (locked_env and writable):
        raise UserError(
            f"{lock_path}: out of date ({reason}); run `pmcp-build lock` and commit it"
            + (" (PMCP_LOCKED is set)" if locked_env and not check_only else "")
        )
    preferred = None if upgrade else current
    lock = resolve(requirements, boot, python, platform, digest, preferred)
    changes = diff(current, lock)
    if writable:
        write_lock(lock_path, lock)
        status: Status = "written" if current is None else "updated"
    else:
        status = "unlocked"
        reason = f"no {lock_path.name} in a downloaded source" if current is None else reason
    return Outcome(lock_path, status, lock, changes, reason)


def _why_stale(current: Lock, requirements: Requirements, python: str, platform: str) -> str:
    if current.python != python:
        return f"python {current.python} -> {python}"
    if current.platform != platform:
        return f"platform {current.platform} -> {platform}"
    label = one_line(requirements.source.label) if requirements.source else "the boot runtime"
    return f"{label} changed"


def resolve(
    requirements: Requirements,
    boot: str,
    python: str,
    platform: str,
    digest: str,
    preferred: Lock | None,
) -> Lock:
    from pmcp_build.layout.python_deps import _explain_uv_failure, _uv, uv_environment

    with tempfile.TemporaryDirectory(prefix="pmcp-lock-") as tmp:
        work = Path(tmp)
        (work / "boot.txt").write_text(boot)
        (work / "requirements.txt").write_text(requirements.text)
        out = work / "pylock.toml"
        if preferred is not None:
            # uv keeps the versions an existing output file names unless told to upgrade.
            out.write_text(_as_pylock(preferred))
        cmd = [
            _uv(),
            "pip",
            "compile",
            "--no-config",
            "--quiet",
            "--format",
            "pylock.toml",
            "--python-platform",
            platform,
            "--python-version",
            python,
            "--only-binary",
            ":all:",
            "--no-header",
            "-o",
            str(out),
            str(work / "boot.txt"),
            str(work / "requirements.txt"),
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, env=uv_environment(work)
        )
        if proc.returncode != 0:
            where = requirements.source.path if requirements.source else None
            raise UserError(_explain_uv_failure(proc.stderr, where, platform, python))
        resolved = tomllib.loads(out.read_text())
        boot_names = _boot_closure(boot, python, platform, work) if requirements.text else None
    packages = []
    for entry in resolved.get("packages", []):
        name = _normal(str(entry["name"]))
        wheel = choose_wheel(entry.get("wheels", []), python, platform)
        if wheel is None:
            raise UserError(
                f"{name} {entry['version']}: no wheel for python{python} on {platform}; "
                "pin a version that publishes one, or change [runtime].architecture"
            )
        filename, sha = wheel
        allowed = requirements.allowed_hashes.get(name)
        if allowed is not None and sha not in allowed:
            label = requirements.source.label if requirements.source else "the lock"
            raise UserError(
                f"{name} {entry['version']}: the wheel for {platform} ({filename}, sha256 "
                f"{sha[:12]}…) is not one {label} names; re-lock it for this platform"
            )
        is_boot = boot_names is None or name in boot_names
        packages.append(Locked(name, str(entry["version"]), filename, sha, is_boot))
    return Lock(python, platform, digest, tuple(sorted(packages)))


def _boot_closure(boot: str, python: str, platform: str, work: Path) -> set[str] | None:
    """Names the boot runtime alone needs (marked boot = true in the lock)."""
    from pmcp_build.layout.python_deps import _uv, uv_environment

    proc = subprocess.run(
        [
            _uv(),
            "pip",
            "compile",
            "--no-config",
            "--quiet",
            "--no-header",
            "--no-annotate",
            "--python-platform",
            platform,
            "--python-version",
            python,
            "--only-binary",
            ":all:",
            "-o",
            str(work / "pylock.toml"),  # the full resolution as preferences
            "--format",
            "pylock.toml",
            str(work / "boot.txt"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=uv_environment(work),
    )
    if proc.returncode != 0:
        return None
    data = tomllib.loads((work / "pylock.toml").read_text())
    return {_normal(str(p["name"])) for p in data.get("packages", [])}


def _as_pylock(lock: Lock) -> str:
    lines = ['lock-version = "1.0"', 'created-by = "pmcp-build"']
    for p in lock.packages:
        lines += [
            "",
            "[[packages]]",
            f'name = "{p.name}"',
            f'version = "{p.version}"',
            f'wheels = [{{ name = "{p.wheel}", hashes = {{ sha256 = "{p.sha256}" }} }}]',
        ]
    return "\n".join(lines) + "\n"


def choose_wheel(
    wheels: list[dict[str, object]], python: str, platform: str
) -> tuple[str, str] | None:
    """The wheel uv installs for the target: the most specific compatible tag wins
    (packaging's tag order, the one installers use)."""
    from packaging.tags import Tag, compatible_tags, cpython_tags
    from packaging.utils import parse_wheel_filename

    machine, _, flavour = platform.partition("-")
    glibc_minor = 17 if flavour == "manylinux2014" else int(flavour.rsplit("_", 1)[-1])
    platforms = [f"manylinux_2_{m}_{machine}" for m in range(glibc_minor, 4, -1)]
    platforms += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    version = tuple(int(x) for x in python.split("."))
    order: list[Tag] = list(cpython_tags(version, platforms=platforms))
    order += list(compatible_tags(version, platforms=platforms))
    rank = {tag: i for i, tag in enumerate(order)}
    best: tuple[int, str, str] | None = None
    for wheel in wheels:
        name = wheel.get("name") or str(wheel.get("url") or wheel.get("path") or "")
        filename = str(name).rsplit("/", 1)[-1]
        hashes = wheel.get("hashes")
        sha = hashes.get("sha256") if isinstance(hashes, dict) else None
        if not filename.endswith(".whl") or not isinstance(sha, str):
            continue
        try:
            _, _, _, tags = parse_wheel_filename(filename)
        except ValueError:
            continue
        score = min((rank[t] for t in tags if t in rank), default=None)
        if score is not None and (best is None or score < best[0]):
            best = (score, filename, sha)
    return None if best is None else (best[1], best[2])


# -- the build's entry point -------------------------------------------------------------


def platform_of(python: str, architecture: str) -> str:
    from pmcp_build.layout.python_deps import platform_tag

    return platform_tag(python, architecture)


def lock_dependencies(
    source: DependencySource | None,
    python: str,
    architecture: str,
    lock_path: Path,
    *,
    source_root: Path,
    remote_source: bool = False,
    writable: bool = True,
    upgrade: bool = False,
    check_only: bool = False,
) -> Outcome:
    """Read the dependency source, and hold it to the lock (resolving when stale)."""
    from pmcp_build.layout.python_deps import boot_requirements
    from pmcp_build.layout.requirements_policy import checked_text

    checked = None
    if source is not None and source.kind == "requirements":
        checked = checked_text(source.path, source_root, remote_source)
    requirements = read(source, checked) if source is not None else Requirements(None, "")
    return ensure(
        lock_path,
        requirements,
        boot_requirements(),
        python,
        platform_of(python, architecture),
        writable=writable,
        upgrade=upgrade,
        check_only=check_only,
    )
