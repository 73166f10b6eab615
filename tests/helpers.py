"""Builders for test inputs: manifests, tiny wheels, ELF headers, hostile zips."""

from __future__ import annotations

import base64
import hashlib
import platform
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

HOST_PY = f"{sys.version_info.major}.{sys.version_info.minor}"
HOST_ARCH = "arm64" if platform.machine().lower() in ("arm64", "aarch64") else "x86_64"

SERVER = """from boot import metorial

server = metorial.create_server("tiny")


@server.list_tools()
def list_tools():
    return [{"name": "echo", "description": "echo", "inputSchema": {"type": "object"}}]


@server.call_tool()
def call_tool(name, arguments):
    return {"echo": arguments}
"""


def python_project(
    root: Path,
    *,
    name: str = "tiny",
    requirements: str | None = None,
    extra: str = "",
    arch: str = HOST_ARCH,
    python: str = HOST_PY,
    server: str = SERVER,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "server.py").write_text(server)
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    (root / "metorial.toml").write_text(
        f'[server]\nname = "{name}"\n\n[runtime]\nkind = "python"\npython = "{python}"\n'
        f'architecture = "{arch}"\n\n{extra}\n[targets.dev]\nkind = "local"\n'
    )
    return root


def binary_project(
    root: Path,
    artifact: bytes,
    *,
    name: str = "bin",
    arch: str = HOST_ARCH,
    artifact_name: str = "bootstrap",
    extra: str = "",
    mode: int = 0o755,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "build" / artifact_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(artifact)
    path.chmod(mode)
    (root / "metorial.toml").write_text(
        f'[server]\nname = "{name}"\n\n[runtime]\nkind = "binary"\narchitecture = "{arch}"\n'
        f'artifact = "build/{artifact_name}"\n\n{extra}\n[targets.dev]\nkind = "local"\n'
    )
    return root


def elf(machine: int, bits: int = 64) -> bytes:
    """Just enough of an ELF header for classification (not runnable)."""
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHI", 2, machine, 1) + bytes(64)


EM_X86_64, EM_AARCH64 = 62, 183
HOST_EM = EM_AARCH64 if HOST_ARCH == "arm64" else EM_X86_64
OTHER_EM = EM_X86_64 if HOST_ARCH == "arm64" else EM_AARCH64


def make_wheel(
    dest: Path,
    name: str,
    version: str,
    tag: str = "py3-none-any",
    files: dict[str, str] | None = None,
) -> Path:
    files = files or {f"{name}/__init__.py": f"VERSION = {version!r}\n"}
    dist = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{dist}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: "
        f"{'true' if tag.endswith('any') else 'false'}\nTag: {tag}\n"
    )
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    contents[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


def zip_with(path: Path, members: list[tuple[str, bytes, int]]) -> Path:
    """A zip whose members are (name, data, unix mode); mode 0o120777 makes a symlink."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.external_attr = (mode if mode > 0o7777 else (0o100000 | mode)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def start_serve(project: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """`pmcp-build serve` on a free port, as a user runs it (read its URL with served_url)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def served_url(proc: subprocess.Popen[str], label: str = "serve") -> str:
    """The URL `serve` prints once listening; the test fails with its stderr if it exits."""
    import pytest

    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        pytest.fail(f"{label} did not start: {proc.stderr.read() if proc.stderr else ''}")
    return line.split(" at ")[1].split(" ")[0]


def cli_commands() -> list[tuple[str, ...]]:
    """Every command path of the CLI (() for the top level), sorted."""
    from typer.main import get_command

    from pmcp_build.cli import app

    found: list[tuple[str, ...]] = [()]
    stack: list[tuple[tuple[str, ...], Any]] = [((), get_command(app))]
    while stack:
        path, command = stack.pop()
        for name, sub in getattr(command, "commands", {}).items():
            found.append((*path, name))
            stack.append(((*path, name), sub))
    return sorted(found)
