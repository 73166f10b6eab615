"""Custom-runtime artifacts: what a file is (by its bytes, not its name), and whether
Lambda's provided.al2023 runtime can execute it."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from pmcp_build.layout.elf import MACHINES, glibc_problem
from pmcp_build.layout.model import MODE_EXEC, Entry, entry_from_bytes, normal_mode

ArtifactKind = Literal["zip", "elf", "script"]

CUSTOM_RUNTIME = "provided.al2023"


class ArtifactError(ValueError):
    """An artifact Lambda could not run; the message says why and what to do."""


def classify(head: bytes) -> ArtifactKind | None:
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x7fELF"):
        return "elf"
    if head.startswith(b"#!"):
        return "script"
    return None


@dataclass(frozen=True)
class ElfInfo:
    bits: int
    little_endian: bool
    machine: int

    @property
    def architecture(self) -> str | None:
        return MACHINES.get(self.machine)


def elf_info(head: bytes) -> ElfInfo:
    if len(head) < 20 or not head.startswith(b"\x7fELF"):
        raise ArtifactError("not an ELF file")
    bits = {1: 32, 2: 64}.get(head[4], 0)
    little = head[5] == 1
    machine = struct.unpack("<H" if little else ">H", head[18:20])[0]
    return ElfInfo(bits, little, machine)


def check_elf(head: bytes, architecture: str, what: str) -> None:
    info = elf_info(head)
    if info.bits != 64 or not info.little_endian:
        raise ArtifactError(
            f"{what} is a {info.bits}-bit {'little' if info.little_endian else 'big'}-endian "
            "ELF; Lambda runs 64-bit little-endian executables only"
        )
    found = info.architecture
    if found != architecture:
        label = found or f"machine {info.machine}"
        raise ArtifactError(
            f"{what} is built for {label} but [runtime].architecture is {architecture!r}; "
            f"Lambda would fail with 'cannot execute binary file'. Rebuild for {architecture} "
            f"(cargo lambda build --{'arm64' if architecture == 'arm64' else 'x86-64'}) or set "
            f'architecture = "{found or architecture}"'
        )


def raw_artifact_entries(data: bytes, architecture: str, what: str) -> list[Entry]:
    """A raw executable becomes `bootstrap` at the package root, mode 0755."""
    kind = classify(data[:4])
    if kind == "elf":
        check_elf(data[:64], architecture, what)
        problem = glibc_problem(data, CUSTOM_RUNTIME, what)
        if problem:
            raise ArtifactError(problem)
    elif kind != "script":
        raise ArtifactError(
            f"{what} is neither an ELF executable, a '#!' script nor a zip "
            f"(it starts with {data[:4]!r}); point [runtime].artifact at the built bootstrap"
        )
    return [entry_from_bytes("bootstrap", data, "artifact", MODE_EXEC, detail=what)]


def zip_members(
    source: Path | IO[bytes], what: str, detail: str = ""
) -> tuple[list[Entry], list[str]]:
    """Read a zip's files as entries (modes normalised), with what is wrong in it:
    paths escaping the package root and names that appear twice."""
    # Here, not at the top: a raw executable's build needs neither (zipfile and the
    # download code are ~10 ms of a binary build's start-up).
    import zipfile
    import zlib

    from pmcp_build.source.fetch import EXTRACT_LIMIT, MEMBER_LIMIT, RATIO_LIMIT

    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"{what}: not a readable zip ({exc})") from exc
    entries: list[Entry] = []
    problems: list[str] = []
    seen: set[str] = set()
    total = 0
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = info.filename
            # Read whole into memory: bounded by a downloaded source's caps (source/fetch.py),
            # on the sizes the archive declares (zipfile never inflates past them).
            total += info.file_size
            if info.file_size > MEMBER_LIMIT or total > EXTRACT_LIMIT:
                raise ArtifactError(
                    f"{what}: {name!r} makes the archive too large unpacked (Lambda allows "
                    f"{EXTRACT_LIMIT // 2**20} MB in all); it is not a package"
                )
            if info.file_size > 2**20 and info.file_size > RATIO_LIMIT * max(info.compress_size, 1):
                raise ArtifactError(
                    f"{what}: {name!r} inflates {RATIO_LIMIT}:1 or more (a zip bomb?); refused"
                )
            if name in seen:
                problems.append(f"{what}: entry {name!r} appears twice in the archive")
            seen.add(name)
            if name.startswith("/") or ".." in name.split("/"):
                problems.append(f"{what}: entry {name!r} escapes the package root")
            mode = normal_mode((info.external_attr >> 16) & 0o777)
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError,
                    zlib.error) as exc:  # fmt: skip
                # Bad CRC, unknown compression, encryption, truncation.
                raise ArtifactError(f"{what}: {name!r} cannot be read ({exc})") from None
            entries.append(entry_from_bytes(name, data, "artifact", mode, detail=detail))
    return entries, problems


def zip_artifact_entries(data: bytes, architecture: str, what: str) -> list[Entry]:
    """A prebuilt zip is carried over entry for entry; it must have a root bootstrap."""
    entries, problems = zip_members(io.BytesIO(data), what, detail=what)
    problems += bootstrap_problems({e.path: e for e in entries}, architecture, what)
    if problems:
        raise ArtifactError(problems[0])
    return entries


def bootstrap_problems(files: dict[str, Entry], architecture: str | None, what: str) -> list[str]:
    """Why a custom-runtime package would not start (empty when it would)."""
    boot = files.get("bootstrap")
    if boot is None:
        wrapped = sorted(p for p in files if p.count("/") == 1 and p.endswith("/bootstrap"))
        if wrapped:
            folder = wrapped[0].split("/")[0]
            return [
                f"{what}: bootstrap is wrapped in a folder ({wrapped[0]}); Lambda looks for "
                f"it at the zip root. Re-zip from inside {folder}/ "
                f"(cd {folder} && zip -r ../x.zip .)"
            ]
        return [f"{what}: no 'bootstrap' at the zip root; a custom runtime needs one"]
    problems = []
    if boot.mode != MODE_EXEC:
        problems.append(
            f"{what}: bootstrap is not executable (mode {boot.mode:o}); Lambda fails with "
            "'permission denied'. chmod 755 it before zipping"
        )
    data = boot.read()
    head = data[:64]
    kind = classify(head)
    if kind == "elf" and architecture:
        try:
            check_elf(head, architecture, f"{what}: bootstrap")
        except ArtifactError as exc:
            problems.append(str(exc))
    if kind == "elf":
        problem = glibc_problem(data, CUSTOM_RUNTIME, f"{what}: bootstrap")
        if problem:
            problems.append(problem)
    elif kind is None:
        problems.append(f"{what}: bootstrap is neither an ELF executable nor a '#!' script")
    return problems
