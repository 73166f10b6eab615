"""What a native file in a package needs from the machine that loads it: its CPU
architecture and the newest glibc symbol version it links against.

Read from the ELF header and the `.gnu.version_r` section (the "version needs" the
dynamic linker checks at load time) with `struct` alone: a few dozen bytes of format,
not worth a dependency. Anything that does not parse is simply not an ELF we can judge,
never an error of its own: inspect must not crash on a hostile zip.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

EM_X86_64 = 62
EM_AARCH64 = 183
MACHINES = {EM_X86_64: "x86_64", EM_AARCH64: "arm64"}
SHT_GNU_VERNEED = 0x6FFFFFFE
_GLIBC = re.compile(rb"^GLIBC_(\d+)\.(\d+)(?:\.\d+)?$")

# The glibc of the OS each Lambda runtime runs on (AWS: python3.12+ and provided.al2023
# run on Amazon Linux 2023, glibc 2.34; python3.10/3.11 and provided.al2 on Amazon
# Linux 2, glibc 2.26).
AL2023_GLIBC = (2, 34)
AL2_GLIBC = (2, 26)


def lambda_glibc(runtime: str) -> tuple[int, int]:
    """The glibc a Lambda runtime offers ("python3.11", "provided.al2023"...)."""
    if runtime == "provided.al2":
        return AL2_GLIBC
    if runtime.startswith("python3."):
        minor = int(runtime.removeprefix("python3.") or 0)
        return AL2023_GLIBC if minor >= 12 else AL2_GLIBC
    return AL2023_GLIBC


@dataclass(frozen=True)
class ElfFacts:
    architecture: str | None  # "x86_64" | "arm64" | None for another machine
    machine: int
    glibc: tuple[int, int] | None  # the newest GLIBC_x.y it needs; None: none / static


def read_elf(data: bytes) -> ElfFacts | None:
    """None when `data` is not an ELF file this can read."""
    try:
        return _read(data)
    except (struct.error, IndexError, ValueError):
        return None


def _read(data: bytes) -> ElfFacts | None:
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    wide, end = data[4] == 2, "<" if data[5] == 1 else ">"
    machine = struct.unpack_from(end + "H", data, 18)[0]
    if wide:
        shoff = struct.unpack_from(end + "Q", data, 0x28)[0]
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
    else:
        shoff = struct.unpack_from(end + "I", data, 0x20)[0]
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
    sections = []
    for i in range(min(shnum, 4096)):  # bounded: a hostile header may claim 65535
        base = shoff + i * shentsize
        if wide:
            _, kind, _, _, offset, size, link = struct.unpack_from(end + "IIQQQQI", data, base)
        else:
            _, kind, _, _, offset, size, link = struct.unpack_from(end + "IIIIIII", data, base)
        sections.append((kind, offset, size, link))
    glibc: tuple[int, int] | None = None
    for kind, offset, size, link in sections:
        if kind != SHT_GNU_VERNEED or link >= len(sections):
            continue
        strtab = sections[link][1]
        for name in _needed_names(data, end, offset, size, strtab):
            match = _GLIBC.match(name)
            if match:
                version = (int(match[1]), int(match[2]))
                glibc = version if glibc is None or version > glibc else glibc
    return ElfFacts(MACHINES.get(machine), machine, glibc)


_VER_FLG_WEAK = 0x2  # Vernaux.vna_flags (elf.h)


def _needed_names(data: bytes, end: str, offset: int, size: int, strtab: int) -> list[bytes]:
    """The version names of every Vernaux record under every Verneed record, but weak
    ones (VER_FLG_WEAK): the dynamic linker loads an object whose weak version is
    missing, so those are no requirement of the OS."""
    names: list[bytes] = []
    need, stop = offset, offset + size
    for _ in range(1024):
        if need >= stop:
            break
        _, count, _, aux, following = struct.unpack_from(end + "HHIII", data, need)
        entry = need + aux
        for _ in range(min(count, 1024)):
            _, flags, _, name, nxt = struct.unpack_from(end + "IHHII", data, entry)
            if not flags & _VER_FLG_WEAK:
                start = strtab + name
                names.append(data[start : data.index(b"\0", start)])
            if not nxt:
                break
            entry += nxt
        if not following:
            break
        need += following
    return names


def glibc_text(version: tuple[int, int]) -> str:
    return f"GLIBC_{version[0]}.{version[1]}"


_BINARY_FIX = (
    "Build against an older glibc (cargo lambda build, which links with zig for Lambda's "
    "glibc) or for musl (--target x86_64-unknown-linux-musl)"
)


def glibc_problem(data: bytes, runtime: str, what: str, fix: str = _BINARY_FIX) -> str | None:
    """Why the loader on `runtime`'s OS would refuse this ELF, or None."""
    facts = read_elf(data)
    if facts is None or facts.glibc is None:
        return None
    have = lambda_glibc(runtime)
    if facts.glibc <= have:
        return None
    return (
        f"{what} needs {glibc_text(facts.glibc)} but Lambda's {runtime} has glibc "
        f"{have[0]}.{have[1]}; it would fail with 'version `{glibc_text(facts.glibc)}' not "
        f"found'. {fix}"
    )
