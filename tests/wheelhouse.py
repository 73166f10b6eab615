"""Fill .wheelhouse/ with the wheels the tests install into packages, for this machine.

Run once before the suite (the README's test command does): it is the only step that
talks to the package registry. The tests then run uv with --no-index against it.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / ".wheelhouse"


def main() -> int:
    machine = {"arm64": "aarch64", "aarch64": "aarch64"}.get(platform.machine(), "x86_64")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stamp = DEST / f".done-{version}-{machine}"
    runtime, commands = _requirement_groups()
    # The examples commit their metorial.lock: builds of them install exactly its
    # wheels, offline, so those exact versions must be here too (whatever is newest).
    locks = sorted((ROOT / "examples").glob("*/metorial.lock"))
    key = "".join(p.read_text() for p in runtime + commands + locks)
    if stamp.exists() and stamp.read_text() == key:
        return 0
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--python-version",
        version,
        "--implementation",
        "cp",
        "-d",
        str(DEST),
    ]
    # manylinux2014 (glibc 2.17): what Lambda's python3.11 and older accept.
    for tag in ("manylinux2014", "manylinux_2_17", "manylinux_2_5", "manylinux1"):
        cmd += ["--platform", f"{tag}_{machine}"]
    subprocess.run([*cmd, *(f"-r{req}" for req in runtime)], check=True)
    # A stdio command's requirements install apart from the runtime's (they may pin
    # mcp 1.x), so each is resolved on its own.
    for req in commands:
        subprocess.run([*cmd, f"-r{req}"], check=True)
    for lock in locks:
        pins = _locked_pins(lock, version, machine)
        if pins:
            subprocess.run([*cmd, "--no-deps", *pins], check=True)
    stamp.write_text(key)
    return 0


def _requirement_groups() -> tuple[list[Path], list[Path]]:
    """The runtime's requirements with the in-process examples', and each stdio command
    example's own."""
    runtime, commands = [ROOT / "boot" / "requirements.txt"], []
    for manifest in sorted((ROOT / "examples").glob("*/metorial.toml")):
        requirements = manifest.with_name("requirements.txt")
        if requirements.is_file():
            data = tomllib.loads(manifest.read_text())
            is_command = "command" in data.get("runtime", {})
            (commands if is_command else runtime).append(requirements)
    return runtime, commands


def _locked_pins(lock: Path, version: str, machine: str) -> list[str]:
    data = tomllib.loads(lock.read_text())
    if data.get("python") != version or not str(data.get("platform", "")).startswith(machine):
        return []  # locked for another machine: its builds re-resolve, from the above
    return [f"{p['name']}=={p['version']}" for p in data.get("package", [])]


if __name__ == "__main__":
    sys.exit(main())
