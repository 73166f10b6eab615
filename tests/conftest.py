"""Shared fixtures: a CLI runner that restores the working directory, and the
network guard that keeps the suite on loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pmcp_build.cli import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    if isinstance(address, tuple) and self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test tried to reach {host}: the suite stays on loopback")
    return _real_connect(self, address)


WHEELHOUSE = ROOT / ".wheelhouse"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dependency cache for the session: the boot runtime installs once."""
    return tmp_path_factory.mktemp("pmcp-cache")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> None:
    if not WHEELHOUSE.is_dir():
        pytest.fail("no .wheelhouse/: run `python tests/wheelhouse.py` first (README)")
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(WHEELHOUSE))
    monkeypatch.setenv("PMCP_BUILD_CACHE_DIR", str(shared_cache))
    monkeypatch.delenv("CI", raising=False)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)


class Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def cli() -> Iterator[Any]:
    runner = CliRunner()
    cwd = os.getcwd()

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        try:
            res = runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)
        finally:
            os.chdir(cwd)
        return Result(res.exit_code, res.stdout, res.stderr)

    yield run
