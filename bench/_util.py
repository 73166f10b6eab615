"""Shared by the bench scripts: machine load, medians, timing a subprocess."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence


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
