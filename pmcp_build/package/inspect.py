"""`pmcp-build inspect`: read any Lambda zip back into a layout and say what is wrong."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pmcp_build.errors import UserError
from pmcp_build.layout.binary import (
    ArtifactError,
    bootstrap_problems,
    classify,
    elf_info,
    zip_members,
)
from pmcp_build.layout.model import (
    DIRECT_UPLOAD_LIMIT,
    UNZIPPED_LIMIT,
    Entry,
    Layout,
    file_count_warning,
    megabytes,
)

PYTHON_HANDLERS = ("index.py", "metorial_index.py", "lambda_function.py", "handler.py", "app.py")


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    message: str


@dataclass(frozen=True)
class Inspection:
    layout: Layout
    zipped: int
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)


def inspect_zip(path: Path, architecture: str | None = None) -> Inspection:
    try:
        entries, problems = zip_members(path, path.name)
    except ArtifactError as exc:
        raise UserError(str(exc)) from exc
    findings = [Finding("error", p) for p in problems]
    files = {e.path: e for e in entries}
    is_custom = "bootstrap" in files or any(p.endswith("/bootstrap") for p in files)
    if is_custom:
        arch = architecture or _bootstrap_arch(files)
        findings += [Finding("error", p) for p in bootstrap_problems(files, arch, path.name)]
        runtime, handler = "provided.al2023", "bootstrap"
    else:
        handler_file = next((h for h in PYTHON_HANDLERS if h in files), None)
        if handler_file is None:
            wrapped = sorted(p for p in files if p.count("/") == 1 and p.endswith("/index.py"))
            hint = (
                f" (found {wrapped[0]}: the package is wrapped in a folder; zip its contents)"
                if wrapped
                else ""
            )
            findings.append(
                Finding(
                    "error",
                    f"{path.name}: no handler module at the zip root (looked for "
                    f"{', '.join(PYTHON_HANDLERS)}) and no bootstrap{hint}",
                )
            )
            handler = "?"
        else:
            handler = handler_file[:-3] + ".handler"
            findings += _missing_entrypoint(files, handler_file, path.name)
        runtime = "python3"
        findings += _native_findings(entries, architecture)
        for e in entries:
            if e.path.endswith(".pyc") and "__pycache__" in e.path:
                data = e.read()
                # Flags word: bit 0 set = hash-based. Timestamp pycs go stale in a zip
                # whose times are fixed, so Lambda recompiles them on every cold start.
                if len(data) >= 8 and int.from_bytes(data[4:8], "little") & 1 == 0:
                    findings.append(
                        Finding(
                            "warning",
                            f"{e.path}: timestamp-based .pyc; it is stale in a fixed-time zip and "
                            "recompiled at each cold start (use bytecode = true)",
                        )
                    )
                    break
    layout = Layout(
        entries=tuple(sorted(entries, key=lambda e: e.path)),
        runtime=runtime,
        handler=handler,
        architecture=architecture or _bootstrap_arch(files) or "?",
    )
    zipped = path.stat().st_size
    if layout.unzipped_size > UNZIPPED_LIMIT:
        findings.append(
            Finding(
                "error",
                f"{megabytes(layout.unzipped_size)} unzipped is over "
                f"Lambda's {megabytes(UNZIPPED_LIMIT)} limit",
            )
        )
    if zipped > DIRECT_UPLOAD_LIMIT:
        findings.append(
            Finding(
                "warning",
                f"{megabytes(zipped)} zipped is over the {megabytes(DIRECT_UPLOAD_LIMIT)} "
                "direct-upload limit; deploy it through S3",
            )
        )
    many = file_count_warning([e.path for e in entries])
    if many is not None:
        findings.append(Finding("warning", many))
    return Inspection(layout, zipped, tuple(findings))


_CPYTHON_TAG = re.compile(r"\.cpython-3(\d+)[a-z]*-")
_SHOWN = 5  # lines per kind of native problem; the rest are counted


def _is_native(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".so") or ".so." in name


def _native_findings(entries: list[Entry], architecture: str | None) -> list[Finding]:
    """Python packages: native extensions and libraries built for another CPU, another
    python, or a newer glibc than the Lambda OS offers (each fails at import on Lambda,
    not before)."""
    from pmcp_build.layout.elf import glibc_problem, read_elf

    natives = [e for e in entries if _is_native(e.path)]
    minors = {int(m[1]) for e in natives if (m := _CPYTHON_TAG.search(e.path))}
    # The python the extensions were built for names the OS (and so the glibc) to
    # check against; several pythons are a problem of their own, said below.
    runtime = f"python3.{min(minors)}" if minors else "python3.12"
    by_arch: dict[str, list[str]] = {}
    glibc: list[str] = []
    for entry in natives:
        data = entry.read()
        facts = read_elf(data)
        if facts is None:
            continue
        by_arch.setdefault(facts.architecture or f"machine {facts.machine}", []).append(entry.path)
        problem = glibc_problem(
            data,
            runtime,
            entry.path,
            "Install the wheels Lambda's OS can load (manylinux2014 for python3.11 and "
            "older, up to manylinux_2_34 from python3.12; pmcp-build builds do)",
        )
        if problem:
            glibc.append(problem)
    findings: list[Finding] = []
    expected = architecture or (max(by_arch, key=lambda a: len(by_arch[a])) if by_arch else None)
    wrong = sorted(p for arch, paths in by_arch.items() if arch != expected for p in paths)
    if wrong:
        arch_of = {p: arch for arch, paths in by_arch.items() for p in paths}
        # One line per file (grep-able, as the glibc ones), the rest counted.
        for p in wrong[:_SHOWN]:
            findings.append(
                Finding(
                    "error",
                    f"{p} is built for {arch_of[p]}, the package is {expected}: Lambda "
                    "cannot load it; reinstall the dependencies for the Lambda architecture "
                    "(pmcp-build builds do: uv --python-platform)",
                )
            )
        if len(wrong) > _SHOWN:
            findings.append(
                Finding("error", f"and {len(wrong) - _SHOWN} more built for another architecture")
            )
    if len(minors) > 1:
        versions = ", ".join(f"3.{m}" for m in sorted(minors))
        findings.append(
            Finding(
                "error",
                f"native extensions for several pythons ({versions}): only one can import "
                "on a Lambda runtime; reinstall the dependencies for the runtime's python",
            )
        )
    for problem in glibc[:_SHOWN]:
        findings.append(Finding("error", problem))
    if len(glibc) > _SHOWN:
        findings.append(Finding("error", f"(and {len(glibc) - _SHOWN} more needing a newer glibc)"))
    return findings


_ENTRYPOINT = re.compile(r"Runtime\(entrypoint=(\"[^\"]*\")")


def _missing_entrypoint(files: dict[str, Entry], handler_file: str, name: str) -> list[Finding]:
    """A generated handler names the server module it loads: it must be in the zip, or
    the function fails at its first request."""
    try:
        text = files[handler_file].read().decode("utf-8", "replace")
    except Exception:  # an unreadable member is reported by zip_members
        return []
    found = _ENTRYPOINT.search(text)
    if found is None:
        return []
    try:
        entrypoint = str(json.loads(found.group(1))).split(":")[0]
    except ValueError:
        return []
    if not entrypoint or entrypoint in files:  # "": a stdio command, no module to load
        return []
    return [
        Finding(
            "error",
            f"{name}: {handler_file} loads {entrypoint}, which is not in the package; the "
            "function would fail at its first request",
        )
    ]


def _bootstrap_arch(files: dict[str, Entry]) -> str | None:
    boot = files.get("bootstrap")
    if boot is None:
        return None
    head = boot.read()[:64]
    if classify(head) != "elf":
        return None
    try:
        return elf_info(head).architecture
    except ValueError:
        return None
