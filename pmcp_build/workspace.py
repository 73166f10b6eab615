"""Workspaces: one `build`, `plan` or `apply` over every metorial.toml under a folder.

Each server runs as its own `pmcp-build -C <folder> <command> --json` process, a few at
a time (`PMCP_BUILD_JOBS`, default min(4, cores)), all sharing the one build cache (and
the remote cache, if set): entries are written once and renamed into place, so
concurrent builds of the same dependency set race harmlessly. A process per server
keeps one server's failure, output and working directory apart from the others'. The
results are shown together, a section per server, in the order the folders sort.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmcp_build.errors import UserError
from pmcp_build.manifest.model import MANIFEST_NAME

JOBS_ENV = "PMCP_BUILD_JOBS"
SKIPPED = frozenset({".pmcp", ".venv", "venv", "node_modules", ".git", "__pycache__"})


@dataclass(frozen=True)
class ServerRun:
    folder: str  # relative to the workspace, posix
    exit_code: int
    stdout: str
    stderr: str

    @property
    def data(self) -> Any:
        """The command's --json document, or None (it failed before printing one)."""
        try:
            return json.loads(self.stdout) if self.stdout.strip() else None
        except ValueError:
            return None

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def find_manifests(root: Path) -> list[Path]:
    """Every metorial.toml under `root`, by folder, never inside SKIPPED folders."""
    if not root.is_dir():
        raise UserError(f"--all-manifests: {root} is not a folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED)
        if MANIFEST_NAME in filenames:
            found.append(Path(dirpath) / MANIFEST_NAME)
    if not found:
        raise UserError(
            f"--all-manifests: no {MANIFEST_NAME} under {root}; run `pmcp-build init` "
            "in each server's folder"
        )
    return sorted(found, key=lambda p: p.parent.relative_to(root).as_posix())


def jobs() -> int:
    raw = os.environ.get(JOBS_ENV, "").strip()
    if not raw:
        return max(1, min(4, os.cpu_count() or 1))
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"{JOBS_ENV}={raw!r} must be a whole number of 1 or more")
    return int(raw)


def run_all(
    root: Path, manifests: Sequence[Path], argv: Sequence[str], runner: Callable[..., Any]
) -> list[ServerRun]:
    """Run `pmcp-build -C <folder> *argv` for every manifest, `jobs()` at a time."""

    def one(manifest: Path) -> ServerRun:
        folder = manifest.parent
        cmd = [sys.executable, "-m", "pmcp_build", "-C", str(folder), *argv]
        proc = runner(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        rel = folder.relative_to(root).as_posix()
        return ServerRun(rel, proc.returncode, proc.stdout, proc.stderr)

    with ThreadPoolExecutor(max_workers=jobs()) as pool:
        return list(pool.map(one, manifests))


def exit_code(
    runs: Sequence[ServerRun], changes_code: int | None = None, detailed: bool = False
) -> int:
    """1 when any server failed; else, when `detailed` (plan's --detailed-exitcode),
    `changes_code` if any server has changes; else 0. A server's `changes_code` (its
    plan run with --detailed-exitcode) is a success."""
    if any(r.exit_code not in (0, changes_code) for r in runs):
        return 1
    if detailed and changes_code is not None and any(r.exit_code == changes_code for r in runs):
        return changes_code
    return 0


def to_json(runs: Sequence[ServerRun], changes_code: int | None = None) -> dict[str, Any]:
    return {
        "ok": exit_code(runs, changes_code) == 0,
        "servers": [
            {
                "folder": r.folder,
                "exit_code": r.exit_code,
                "ok": r.exit_code in (0, changes_code),
                "result": r.data,
                "errors": r.errors,
            }
            for r in runs
        ],
    }


def text_lines(runs: Sequence[ServerRun], changes_code: int | None = None) -> list[str]:
    """A section per server: its own output, then what it said on stderr; a summary."""
    lines: list[str] = []
    for r in runs:
        lines.append(f"== {r.folder or '.'} ==")
        lines += r.stdout.rstrip("\n").splitlines()
        lines += r.errors
        lines.append("")
    failed = [r.folder or "." for r in runs if r.exit_code not in (0, changes_code)]
    summary = f"{len(runs)} servers: {len(runs) - len(failed)} ok, {len(failed)} failed"
    lines.append(summary + (f" ({', '.join(failed)})" if failed else ""))
    return lines
