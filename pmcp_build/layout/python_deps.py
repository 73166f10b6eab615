"""Installing python dependencies for the Lambda platform with uv, cached by content.

The cache key is the hash of everything that decides what gets installed: the
requirements text, the boot runtime's requirements, the python version, the
architecture and the platform tag. An unchanged requirements file never reinstalls.

A dependency set (deps/<key>/) is made whole in a temporary folder and renamed into
place: `site/` (copies of the wheels' files, never hard links into uv's cache),
`origins.json` (file -> distribution), `entries.json` (file -> mode, size, sha256) and
`seal.json` (the key and the sha256 of those two). Before a set is used its seal is
checked, and its member pack (written by its first build) is hashed; when there is no
sound pack, the files the package would be compressed from are hashed instead. A set
that fails is one warning line, and installed again.
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
from pmcp_build.layout.model import normal_mode
from pmcp_build.layout.requirements_policy import checked_text

# v4: copies instead of hard links into uv's cache, entries.json and seal.json written
# with the set (v3: uv_cache.json dropped)
CACHE_FORMAT = "deps-v4"
SEAL = "seal.json"
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
    if not dest.exists():
        from pmcp_build.package import remote_steps

        remote_steps.restore_set(key, dest)  # a shared cache's copy, checked below
    if dest.exists():
        found = checked_set(dest)
        if found is not None:
            return found
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        _run_uv(requirements, python, architecture, tmp / "site", quiet, locked, with_boot)
        origins = _scrub(tmp / "site")
        _seal(tmp, origins, key)
        # Atomic publish; if a concurrent build filled the same key first, theirs is
        # identical and ours is dropped below.
        with contextlib.suppress(OSError):
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return InstalledDeps(dest / "site", json.loads((dest / "origins.json").read_text()))


def _seal(folder: Path, origins: dict[str, str], key: str) -> None:
    """Write a fresh set's origins, entries (every file hashed, on every core) and the
    seal binding both to the set's key (its folder's name once published)."""
    origins_text = json.dumps(origins, sort_keys=True).encode()
    entries_text = json.dumps(_hash_files(folder / "site", sorted(origins))).encode()
    (folder / "origins.json").write_bytes(origins_text)
    (folder / "entries.json").write_bytes(entries_text)
    seal = {
        "format": CACHE_FORMAT,
        "key": key,
        "origins": hashlib.sha256(origins_text).hexdigest(),
        "entries": hashlib.sha256(entries_text).hexdigest(),
    }
    (folder / SEAL).write_text(json.dumps(seal, sort_keys=True))


def checked_set(dest: Path) -> InstalledDeps | None:
    """The dependency set at `dest` if it passes its checks; else it is warned about,
    evicted, and None (the caller installs it again)."""
    problem, origins = _set_problem(dest)
    if problem is None:
        return InstalledDeps(dest / "site", origins)
    from pmcp_build.package import cache as cache_store

    cache_store.warn(dest, f"{dest}: {problem}; installing it again")
    cache_store.evict(dest)
    return None


def _set_problem(dest: Path) -> tuple[str | None, dict[str, str]]:
    """What is wrong with a cached set, if anything, and its origins. The seal binds
    origins.json and entries.json to the key; the member pack, when there is one, is
    hashed (once per process: the zip writer reuses the result) and is then what the
    package's dependency files come from; without a sound pack, they come from site/,
    so those files are hashed against entries.json."""
    from pmcp_build.package.zipwriter import DEPENDENCY_PACK, MemberPack

    try:
        seal = json.loads((dest / SEAL).read_text())
        origins_text = (dest / "origins.json").read_bytes()
        entries_text = (dest / "entries.json").read_bytes()
    except (OSError, ValueError):
        return "is incomplete (its seal, origins.json or entries.json is missing)", {}
    if not isinstance(seal, dict) or seal.get("key") != dest.name:
        return "its seal is another set's", {}
    digests = [hashlib.sha256(text).hexdigest() for text in (origins_text, entries_text)]
    if digests != [seal.get("origins"), seal.get("entries")]:
        return "origins.json or entries.json does not match its seal", {}
    origins: dict[str, str] = json.loads(origins_text)
    if len(MemberPack(dest / "members.json", DEPENDENCY_PACK)) > 0:
        return None, origins
    entries: dict[str, list[object]] = json.loads(entries_text)
    found = _hash_files(dest / "site", sorted(entries))
    for path, want in entries.items():
        if found[path] != want:
            return f"site/{path} does not match the sha256 it was installed with", {}
    return None, origins


def _hash_files(site: Path, paths: list[str]) -> dict[str, list[object]]:
    """path -> [mode, size, sha256] (modes as the package holds them), on every core:
    reads and sha256 release the GIL. A missing or unreadable file maps to []."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: str) -> list[object]:
        try:
            with open(site / path, "rb") as fh:
                data = fh.read()
                st_mode = os.fstat(fh.fileno()).st_mode
        except OSError:
            return []
        return [normal_mode(st_mode), len(data), hashlib.sha256(data).hexdigest()]

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(paths, pool.map(one, paths, chunksize=64), strict=True))


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
        # Copies, never hard links into uv's cache (~30% slower cold): a write to a
        # linked file (by a server loaded at build time, a person, another tool) would
        # change what uv installs everywhere on the machine, and what every set using
        # that wheel holds. Not `clone`: uv falls back from it to hard links.
        "--link-mode",
        "copy",
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
