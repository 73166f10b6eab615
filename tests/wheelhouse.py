"""Fill .wheelhouse/ with the wheels the tests install into packages, for this machine.

Run once before the suite (the README's test command does): it is the only step that
talks to the package registry. The tests then run uv with --no-index against it.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / ".wheelhouse"


def main() -> int:
    machine = {"arm64": "aarch64", "aarch64": "aarch64"}.get(platform.machine(), "x86_64")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stamp = DEST / f".done-{version}-{machine}"
    requirements = [
        ROOT / "boot" / "requirements.txt",
        ROOT / "examples" / "python-server" / "requirements.txt",
        ROOT / "examples" / "sdk-server" / "requirements.txt",
        ROOT / "examples" / "stdio-time" / "requirements.txt",
        ROOT / "examples" / "fastmcp-server" / "requirements.txt",
    ]
    key = "".join(p.read_text() for p in requirements)
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
    for req in requirements:
        cmd += ["-r", str(req)]
    subprocess.run(cmd, check=True)
    stamp.write_text(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
