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
from pmcp_build.layout.requirements_policy import checked_text

CACHE_FORMAT = "deps-v3"  # v3: uv_cache.json dropped
BOOT_REQUIREMENTS = Path(__file__).resolve().parents[2] / "boot" / "requirements.txt"

# Files that differ from install to install or name the build machine. uv_cache.json
# holds the mtime of the wheel uv installed from (a find-links folder, a local path):
# two machines with the same wheels downloaded at different times would otherwise
# build packages with different sha256s.
_CHURN = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json"}


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
    *,
    source_root: Path | None = None,
    remote_source: bool = False,
    locked: str | None = None,
    with_boot: bool = True,  # False: a stdio command's own site, apart from the runtime's
) -> InstalledDeps:
    # The requirements (with their includes inlined) after the policy checks in
    # requirements_policy.py: nothing reaches uv that could read the build machine.
    req_text = (
        checked_text(requirements, source_root or requirements.parent, remote_source)
        if requirements
        else ""
    )
    # `locked`: metorial.lock's pins and wheel hashes (python_lock.py); the set is then
    # keyed by exactly what it holds, never by a range a cold cache would resolve anew.
    key = cache_key(
        req_text if locked is None else f"locked\n{locked}", python, architecture, with_boot
    )
    dest = cache_dir / "deps" / key
    if (dest / "origins.json").exists():
        return InstalledDeps(dest / "site", json.loads((dest / "origins.json").read_text()))

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        _run_uv(requirements, python, architecture, tmp / "site", quiet, locked, with_boot)
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
    locked: str | None = None,
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
        # Hardlinks into uv's cache (copies across filesystems): ~30% off a cold
        # install. Safe because nothing writes through them: uv never changes a cache
        # entry in place, and _scrub only unlinks.
        "--link-mode",
        "hardlink",
        "--no-config",
    ]
    if locked is not None:
        # Exactly the lock: no resolution, one wheel per distribution, hash-checked.
        pinned = target.parent / "locked.txt"
        pinned.write_text(locked)
        cmd += ["--require-hashes", "--no-deps", "-r", str(pinned)]
    else:
        if with_boot:
            cmd += ["-r", str(BOOT_REQUIREMENTS)]
        if requirements is not None:
            cmd += ["-r", str(requirements)]
    if quiet:
        cmd.append("--quiet")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env=uv_environment(target.parent)
    )
    if proc.returncode != 0:
        raise UserError(_explain_uv_failure(proc.stderr, requirements, tag, python))


# What uv may see of the build machine's environment: where to find itself and the
# index, its own settings, proxies and certificates. Never credentials or anything else
# (AWS_*, tokens, the platform's secrets): a requirement could send them anywhere.
_ENV_ALLOWED = {
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "SYSTEMROOT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "XDG_CACHE_HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
}
_UV_ALLOWED = {
    "UV_CACHE_DIR",
    "UV_OFFLINE",
    "UV_NO_INDEX",
    "UV_FIND_LINKS",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_INDEX_STRATEGY",
    "UV_NATIVE_TLS",
    "UV_HTTP_TIMEOUT",
    "UV_CONCURRENT_DOWNLOADS",
    "UV_CONCURRENT_INSTALLS",
    "UV_PYTHON_INSTALL_DIR",
    "UV_PYTHON_DOWNLOADS",
    "UV_NO_PROGRESS",
}


def uv_environment(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _ENV_ALLOWED or k in _UV_ALLOWED}
    env.setdefault("PATH", os.defpath)
    env.setdefault("HOME", str(workdir))
    env["UV_NO_PROGRESS"] = "1"
    return env


def _explain_uv_failure(stderr: str, requirements: Path | None, tag: str, python: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", stderr)
    where = str(requirements) if requirements else "the boot runtime's requirements"
    # uv names the package with a specifier (`nativepkg==0.5.2`, `nativepkg>=0.5.2,<1`) or
    # as "all versions of nativepkg"; a name starts with a letter, so a version that
    # follows `>=` is never taken for one.
    wheel = re.search(
        r"([A-Za-z][A-Za-z0-9_.\-]*)(?:(?:[=<>!~]=?|===)[^ ,]+(?:,(?:[=<>!~]=?)[^ ,]+)*)? "
        r"(?:has|have) no (?:wheels with a matching (?:platform|Python ABI|Python "
        r"implementation) tag|usable wheels)",
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
    # One walk drops bytecode and lists what is left (wheels hold no symlinks).
    present: list[str] = []
    for dirpath, dirnames, filenames in os.walk(site):
        if "__pycache__" in dirnames:
            dirnames.remove("__pycache__")
            shutil.rmtree(os.path.join(dirpath, "__pycache__"), ignore_errors=True)
        rel = os.path.relpath(dirpath, site).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for name in filenames:
            if name.endswith(".pyc"):
                os.unlink(os.path.join(dirpath, name))
            else:
                present.append(prefix + name)
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
