"""A newcomer's first hour: the README's two commands in order, and the servers
nobody on the project wrote (issue 22)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .helpers import python_project

ROOT = Path(__file__).resolve().parent.parent


# -- the suite keeps to its own caches ---------------------------------------------------


def test_a_build_installs_from_the_wheelhouse(cli, tmp_path: Path) -> None:
    """A real uv install of the boot runtime; the next test runs it with a poisoned home."""
    project = python_project(tmp_path / "p")
    built = cli("-C", str(project), "build")
    assert built.exit_code == 0, built.output


def test_the_suite_ignores_the_users_uv_and_build_caches(tmp_path: Path) -> None:
    """The README's main command fills the user's uv cache online; the test command then
    ran uv offline against that cache and failed. Here the user's caches are files where
    folders should be, so any use of them fails: the suite must not care."""
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    poisoned = {name: home / ".cache" / name for name in ("uv", "pmcp-build", "elsewhere")}
    for path in poisoned.values():
        path.write_text("not a cache\n")
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "UV_CACHE_DIR": str(poisoned["elsewhere"]),
        "PMCP_BUILD_CACHE_DIR": str(poisoned["elsewhere"]),
    }
    inner = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "inner"),
            f"{Path(__file__).relative_to(ROOT)}::test_a_build_installs_from_the_wheelhouse",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert inner.returncode == 0, inner.stdout[-3000:] + inner.stderr[-2000:]
    assert all(path.read_text() == "not a cache\n" for path in poisoned.values())
