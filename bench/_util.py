"""Shared by the bench scripts: machine load, medians, timing a subprocess."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cpus)"


def run(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> float:
    """Wall time of one command, which must succeed."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=cwd)
    return time.perf_counter() - start


def peak_rss(cmd: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Peak resident set of one child process, in bytes (Linux: ru_maxrss is KiB)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed")
    return usage.ru_maxrss * 1024


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def build_example(example: str, project: Path, tmp: Path, bytecode: bool | None = None) -> Path:
    """Copy examples/`example` to `project` (with `bytecode` set when given) and build it
    offline from .wheelhouse/, load check off, with uv and build caches under `tmp`;
    the zip's path."""
    shutil.copytree(ROOT / "examples" / example, project, ignore=shutil.ignore_patterns(".pmcp"))
    if bytecode is not None:
        toml = project / "metorial.toml"
        setting = f'kind = "python"\nbytecode = {str(bytecode).lower()}\n'
        toml.write_text(toml.read_text().replace('kind = "python"\n', setting))
    env = {
        **os.environ,
        "CI": "1",
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
        "UV_CACHE_DIR": str(tmp / "uv-cache"),
        "PMCP_BUILD_CACHE_DIR": str(tmp / "pmcp-cache"),
        "PMCP_BUILD_LOAD_CHECK": "0",
    }
    cmd = [sys.executable, "-m", "pmcp_build", "-C", str(project), "build"]
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return next((project / ".pmcp" / "dist").glob("*.zip"))
