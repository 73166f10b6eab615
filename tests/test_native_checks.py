"""Native code a Lambda OS cannot load: extensions for another CPU or python, and ELF
files needing a newer glibc than Amazon Linux offers (2.26 on AL2 for python3.11 and
older, 2.34 on AL2023 for python3.12+ and provided.al2023). Each test failed before:
`inspect --architecture x86_64` said ok to an arm64 extension, and no glibc was read."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest

from pmcp_build.layout.elf import lambda_glibc, read_elf

from .conftest import WHEELHOUSE
from .helpers import (
    HOST_ARCH,
    HOST_EM,
    HOST_PY,
    OTHER_EM,
    binary_project,
    make_wheel,
    python_project,
)

OTHER_ARCH = "x86_64" if HOST_ARCH == "arm64" else "arm64"


def elf_needing(machine: int, *versions: str, weak: tuple[str, ...] = ()) -> bytes:
    """A minimal ELF64 shared object whose .gnu.version_r needs `versions` of libc.so.6:
    what the dynamic linker checks at load time (crafted here, no compiler needed).
    Those also in `weak` are marked VER_FLG_WEAK."""
    names = b"\0libc.so.6\0" + b"".join(v.encode() + b"\0" for v in versions)
    offsets, at = [], len(b"\0libc.so.6\0")
    for v in versions:
        offsets.append(at)
        at += len(v) + 1
    strtab_off = 64
    verneed_off = (strtab_off + len(names) + 7) // 8 * 8
    verneed = struct.pack("<HHIII", 1, len(versions), 1, 16, 0)
    for i, name in enumerate(offsets):
        last = i == len(offsets) - 1
        flags = 0x2 if versions[i] in weak else 0
        verneed += struct.pack("<IHHII", 0, flags, 2 + i, name, 0 if last else 16)
    shoff = (verneed_off + len(verneed) + 7) // 8 * 8
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 3, machine, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 0)
    body = bytearray(header.ljust(strtab_off, b"\0") + names)
    body = bytearray(body.ljust(verneed_off, b"\0") + verneed)
    body = body.ljust(shoff, b"\0")

    def section(kind: int, offset: int, size: int, link: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", 0, kind, 0, 0, offset, size, link, 0, 1, 0)

    body += section(0, 0, 0, 0)
    body += section(3, strtab_off, len(names), 0)
    body += section(0x6FFFFFFE, verneed_off, len(verneed), 1)
    return bytes(body)


def _python_zip(path: Path, natives: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("index.py", "def handler(event, context):\n    return {}\n")
        for name, data in natives.items():
            zf.writestr(name, data)
    return path


def test_elf_reader_finds_the_newest_glibc_and_the_machine() -> None:
    facts = read_elf(elf_needing(HOST_EM, "GLIBC_2.17", "GLIBC_2.38", "GLIBC_2.2.5"))
    assert facts is not None
    assert facts.glibc == (2, 38) and facts.architecture == HOST_ARCH
    assert read_elf(b"\x7fELF" + bytes(10)) is None  # truncated: not judged, no crash
    # A weak version need does not stop the loader: not a requirement.
    weak = read_elf(elf_needing(HOST_EM, "GLIBC_2.17", "GLIBC_2.38", weak=("GLIBC_2.38",)))
    assert weak is not None and weak.glibc == (2, 17)
    assert lambda_glibc("python3.11") == (2, 26)
    assert lambda_glibc("python3.12") == (2, 34)
    assert lambda_glibc("provided.al2023") == (2, 34)


def test_inspect_names_extensions_built_for_another_architecture(cli, tmp_path: Path) -> None:
    package = _python_zip(
        tmp_path / "p.zip",
        {
            f"fast/_speed.cpython-311-{OTHER_ARCH}-linux-gnu.so": elf_needing(OTHER_EM),
            "fast/__init__.py": "",
        },
    )
    result = cli("inspect", str(package), "--architecture", HOST_ARCH)
    assert result.exit_code == 1, result.output
    assert f"fast/_speed.cpython-311-{OTHER_ARCH}-linux-gnu.so is built for {OTHER_ARCH}" in (
        result.stdout + result.stderr
    )


def test_inspect_refuses_a_mix_of_pythons(cli, tmp_path: Path) -> None:
    package = _python_zip(
        tmp_path / "p.zip",
        {
            "a/_a.cpython-311-x86_64-linux-gnu.so": elf_needing(HOST_EM),
            "b/_b.cpython-312-x86_64-linux-gnu.so": elf_needing(HOST_EM),
        },
    )
    result = cli("inspect", str(package))
    assert result.exit_code == 1
    assert "several pythons (3.11, 3.12)" in result.stdout + result.stderr


def test_inspect_checks_glibc_against_the_runtimes_os(cli, tmp_path: Path) -> None:
    natives = {"lib/_new.cpython-311-x86_64-linux-gnu.so": elf_needing(HOST_EM, "GLIBC_2.28")}
    result = cli("inspect", str(_python_zip(tmp_path / "new.zip", natives)))
    assert result.exit_code == 1
    output = result.stdout + result.stderr
    assert "needs GLIBC_2.28" in output and "python3.11 has glibc 2.26" in output
    fine = {"lib/_old.cpython-311-x86_64-linux-gnu.so": elf_needing(HOST_EM, "GLIBC_2.17")}
    assert cli("inspect", str(_python_zip(tmp_path / "old.zip", fine))).exit_code == 0


def test_a_bootstrap_needing_a_newer_glibc_fails_build_and_inspect(cli, tmp_path: Path) -> None:
    binary = elf_needing(HOST_EM, "GLIBC_2.17", "GLIBC_2.38")
    project = binary_project(tmp_path / "rust", binary)
    built = cli("-C", str(project), "build")
    assert built.exit_code == 1
    assert "needs GLIBC_2.38 but Lambda's provided.al2023 has glibc 2.34" in built.stderr
    assert len(built.stderr.strip().splitlines()) == 1
    package = tmp_path / "b.zip"
    with zipfile.ZipFile(package, "w") as zf:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, binary)
    result = cli("inspect", str(package))
    assert result.exit_code == 1
    assert "GLIBC_2.38" in result.stdout + result.stderr
    ok = binary_project(tmp_path / "ok", elf_needing(HOST_EM, "GLIBC_2.34"))
    assert cli("-C", str(ok), "build").exit_code == 0


def test_invoke_without_the_target_python_says_how_to_get_it(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pyenv shim for an inactive python3.X exits 127; before, `invoke` ran it and
    ended in "the handler process exited (code 127)". The package is really built for
    the other python (its native wheels are stand-ins: they are never imported)."""
    from pmcp_build.layout.python import find_python

    other = "3.13" if HOST_PY != "3.13" else "3.12"
    host_tag, other_tag = "cp" + HOST_PY.replace(".", ""), "cp" + other.replace(".", "")
    wheels = tmp_path / "wheels"
    for wheel in sorted(WHEELHOUSE.glob(f"*-{host_tag}-{host_tag}-*.whl")):
        name, version = wheel.name.split("-")[:2]
        make_wheel(wheels, name, version, tag=f"{other_tag}-{other_tag}-manylinux2014_x86_64")
    monkeypatch.setenv("UV_FIND_LINKS", f"{os.environ['UV_FIND_LINKS']},{wheels}")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))  # no registry metadata
    monkeypatch.setenv("PMCP_BUILD_CACHE_DIR", str(tmp_path / "cache"))  # stand-ins stay here
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / f"python{other}"
    shim.write_text(f"#!/bin/sh\necho 'pyenv: python{other}: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "no-uv-pythons"))
    project = python_project(tmp_path / "p", python=other, arch="x86_64")
    event = tmp_path / "event.json"
    event.write_text('{"action": "discover"}')
    find_python.cache_clear()
    try:
        result = cli("-C", str(project), "invoke", "-e", str(event))
    finally:
        find_python.cache_clear()
    if HOST_ARCH != "x86_64":
        assert "built for x86_64" in result.stderr
        return
    assert result.exit_code == 1, result.output
    if "needs python" in result.stderr:  # else a real python3.X elsewhere ran it
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: running a python{other} package needs python{other}: "
            f"`uv python install {other}`"
        )
    assert "code 127" not in result.output


def test_wrong_architecture_is_one_line_per_file_then_counted(cli, tmp_path: Path) -> None:
    natives = {f"m{i}/_m.cpython-311-x-linux-gnu.so": elf_needing(OTHER_EM) for i in range(7)}
    result = cli(
        "inspect", str(_python_zip(tmp_path / "p.zip", natives)), "--architecture", HOST_ARCH
    )
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if "built for" in ln]
    assert len(lines) == 6, result.stderr
    assert lines[0].startswith(f"error: m0/_m.cpython-311-x-linux-gnu.so is built for {OTHER_ARCH}")
    assert lines[-1] == "error: and 2 more built for another architecture"
