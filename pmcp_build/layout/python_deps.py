"""Installing python dependencies for the Lambda platform with uv, cached by content.

The cache key is the hash of everything that decides what gets installed: the
requirements text, the boot runtime's requirements, the python version, the
architecture and the platform tag. An unchanged requirements file never reinstalls.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pmcp_build.errors import UserError

CACHE_FORMAT = "deps-v2"
BOOT_REQUIREMENTS = Path(__file__).resolve().parents[2] / "boot" / "requirements.txt"

# Files that differ from install to install or name the build machine.
_CHURN = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def platform_tag(python: str, architecture: str) -> str:
    """uv's --python-platform for a Lambda runtime.

    python3.11 and older run on Amazon Linux 2 (glibc 2.26): manylinux2014 at most.
    python3.12 and newer run on Amazon Linux 2023 (glibc 2.34).
    """
    machine = "aarch64" if architecture == "arm64" else "x86_64"
    minor = int(python.split(".")[1])
    return f"{machine}-manylinux2014" if minor <= 11 else f"{machine}-manylinux_2_34"


@dataclass(frozen=True)
class InstalledDeps:
    root: Path
    origins: dict[str, str]  # package-relative path -> "name version"


def boot_requirements() -> str:
    return BOOT_REQUIREMENTS.read_text()


def cache_key(requirements: str, python: str, architecture: str, with_boot: bool = True) -> str:
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "requirements": requirements,
            "boot": boot_requirements() if with_boot else None,
            "python": python,
            "architecture": architecture,
            "platform": platform_tag(python, architecture),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def install(
    requirements: Path | None,
    python: str,
    architecture: str,
    cache_dir: Path,
    quiet: bool = True,
    with_boot: bool = True,  # False: a stdio command's own site, apart from the runtime's
) -> InstalledDeps:
    req_text = requirements.read_text() if requirements else ""
    key = cache_key(req_text, python, architecture, with_boot)
    dest = cache_dir / "deps" / key
    if (dest / "origins.json").exists():
        return InstalledDeps(dest / "site", json.loads((dest / "origins.json").read_text()))

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        _run_uv(requirements, python, architecture, tmp / "site", quiet, with_boot)
        origins = _scrub(tmp / "site")
        (tmp / "origins.json").write_text(json.dumps(origins, sort_keys=True))
        # Atomic publish; if a concurrent build filled the same key first, theirs is
        # identical and ours is dropped below.
        with contextlib.suppress(OSError):
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return InstalledDeps(dest / "site", json.loads((dest / "origins.json").read_text()))


def _uv() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise UserError("uv is not installed; `pip install uv` (pmcp-build needs it)") from None
        return found


def _run_uv(
    requirements: Path | None,
    python: str,
    architecture: str,
    target: Path,
    quiet: bool,
    with_boot: bool = True,
) -> None:
    tag = platform_tag(python, architecture)
    cmd = [
        _uv(),
        "pip",
        "install",
        "--target",
        str(target),
        "--python",
        sys.executable,
        "--python-platform",
        tag,
        "--python-version",
        python,
        "--only-binary",
        ":all:",
        "--link-mode",
        "copy",
        "--no-config",
    ]
    if with_boot:
        cmd += ["-r", str(BOOT_REQUIREMENTS)]
    if requirements is not None:
        cmd += ["-r", str(requirements)]
    if quiet:
        cmd.append("--quiet")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(_explain_uv_failure(proc.stderr, requirements, tag, python))


def _explain_uv_failure(stderr: str, requirements: Path | None, tag: str, python: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", stderr)
    where = str(requirements) if requirements else "the boot runtime's requirements"
    wheel = re.search(
        r"(?:Because |and )?([A-Za-z0-9_.\-]+)(?:==([^ ]+))? (?:has no wheels with a matching "
        r"(?:platform|Python ABI|Python implementation) tag|has no usable wheels)",
        text,
    )
    if wheel:
        name = wheel.group(1)
        return (
            f"{where}: {name} has no wheel for python{python} on {tag}; "
            "pin a version that publishes one, or change [runtime].architecture"
        )
    conflict = re.search(r"Because you require (.+?) and (.+?), we can conclude", text)
    if conflict:
        return (
            f"{where}: conflicting requirements: {conflict.group(1)} and {conflict.group(2)} "
            "cannot both hold (the boot runtime needs mcp from boot/requirements.txt); "
            "relax one of them"
        )
    if "offline" in text.lower() or ("network" in text.lower() and "failed" in text.lower()):
        detail = _first_line(text)
        return f"{where}: could not fetch dependencies ({detail})"
    return f"{where}: dependency install failed for python{python} {tag}: {_first_line(text)}"


def _first_line(text: str) -> str:
    lines = [ln.strip(" ×╰─▶│") for ln in text.splitlines() if ln.strip(" ×╰─▶│")]
    useful = [ln for ln in lines if not ln.startswith(("Using ", "Resolved ", "hint:"))]
    return " ".join(useful[:3])[:400] or "uv gave no reason"


def _scrub(site: Path) -> dict[str, str]:
    """Map every file to its distribution, then drop what the runtime does not need."""
    origins: dict[str, str] = {}
    for dist in sorted(site.glob("*.dist-info")):
        label = _dist_label(dist)
        record = dist / "RECORD"
        if record.exists():
            with open(record, newline="", encoding="utf-8") as fh:
                for row in csv.reader(fh):
                    if row:
                        origins[row[0]] = label
        for name in os.listdir(dist):
            if name in _CHURN:
                (dist / name).unlink()
        for path in dist.rglob("*"):
            if path.is_file():
                origins[path.relative_to(site).as_posix()] = label
    (site / ".lock").unlink(missing_ok=True)  # uv's install lock
    # Console scripts carry the build machine's interpreter path and are never run.
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)
    for pyc in site.rglob("*.pyc"):
        pyc.unlink()
    present = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    return {path: origins.get(path, "unknown") for path in sorted(present)}


def _dist_label(dist: Path) -> str:
    name, version = dist.name[: -len(".dist-info")], ""
    metadata = dist / "METADATA"
    if metadata.exists():
        for line in metadata.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Name:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("Version:"):
                version = line.split(":", 1)[1].strip()
            elif not line.strip():
                break
    return f"{name} {version}".strip()
