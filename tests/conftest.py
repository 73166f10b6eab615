"""Shared fixtures: a CLI runner that restores the working directory, and the
network guard that keeps the suite on loopback."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from pmcp_build.cli import app

from .helpers import python_project as _python_project

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


@pytest.fixture(scope="session", autouse=True)
def _own_caches(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[None]:
    """The suite's own uv and pmcp-build caches, for the whole session and every process
    it starts (module fixtures copy os.environ before any function fixture runs). The
    user's uv cache, filled online by the README's main command, remembers registry
    URLs that uv then tries to fetch offline ("Network connectivity is disabled")."""
    own = {
        "UV_CACHE_DIR": str(tmp_path_factory.mktemp("uv-cache")),
        "PMCP_BUILD_CACHE_DIR": str(shared_cache),
    }
    saved = {key: os.environ.get(key) for key in own}
    os.environ.update(own)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> None:
    if not WHEELHOUSE.is_dir():
        pytest.fail("no .wheelhouse/: run `python tests/wheelhouse.py` first (README)")
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(WHEELHOUSE))
    monkeypatch.setenv("PMCP_BUILD_CACHE_DIR", str(shared_cache))
    # The build-time load check starts the server (~1 s a build); tests of it opt in.
    monkeypatch.setenv("PMCP_BUILD_LOAD_CHECK", "0")
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


# -- a moto server on loopback, over HTTP ------------------------------------------------

BUCKET = "acme-artifacts"
SECRET = "s3cr3t-t0ken-value"


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    os.environ["MOTO_RECORDER_FILEPATH"] = str(tmp_path_factory.mktemp("rec") / "moto.log")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    httpx.post(f"{moto_url}/moto-api/reset")
    for key, value in {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "MY_TOKEN": SECRET,
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    return moto_url


class Recorder:
    """moto's request recorder. IAM speaks a query protocol where reads are POSTs too,
    so each request is tagged with its `Action=` when it has one."""

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        httpx.post(f"{self.url}/moto-api/recorder/reset-recording")
        httpx.post(f"{self.url}/moto-api/recorder/start-recording")

    def entries(self) -> list[tuple[str, str, str]]:
        httpx.post(f"{self.url}/moto-api/recorder/stop-recording")
        text = httpx.get(f"{self.url}/moto-api/recorder/download-recording").text
        out = []
        for line in text.splitlines():
            if line.strip():
                entry = json.loads(line)
                body = entry.get("body") or ""
                if entry.get("body_encoded"):
                    body = base64.b64decode(body).decode("latin-1")
                action = parse_qs(body).get("Action", [""])[0] if isinstance(body, str) else ""
                out.append((entry["method"], entry["url"].split("?")[0], action))
        return out

    def requests(self) -> list[tuple[str, str]]:
        return [(m, u) for m, u, _ in self.entries()]

    def writes(self) -> list[tuple[str, str]]:
        return [
            (m, u + (f" {a}" if a else ""))
            for m, u, a in self.entries()
            if m not in ("GET", "HEAD") and not a.startswith(("Get", "List"))
        ]


# -- a project with lambda, s3 and local targets (deploy tests) -------------------------

LAMBDA = (
    f'[targets.prod]\nkind = "lambda"\nfunction = "tiny-prod"\nbucket = "{BUCKET}"\n'
    'prefix = "builds/tiny"\nmemory = 256\nurl = { auth = "NONE" }\n'
    'environment = { LOG_LEVEL = "info", TOKEN = "${env:MY_TOKEN}" }\n'
)


@pytest.fixture
def project(tmp_path: Path, aws_env: str) -> Path:
    root = _python_project(tmp_path / "p")
    (root / "data.txt").write_text("v1")
    toml = root / "metorial.toml"
    toml.write_text(
        toml.read_text().replace("[targets.dev]", LAMBDA + "\n[targets.dev]")
        + f'\n[targets.artifact]\nkind = "s3"\nbucket = "{BUCKET}"\n'
        'key = "builds/lambda.zip"\n'
    )
    return root


def _fn() -> dict:
    return boto3.client("lambda").get_function(FunctionName="tiny-prod")["Configuration"]


# -- a static file server on loopback (source zips) --------------------------------------


@pytest.fixture
def http_dir(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # stderr belongs to the CLI under test
            pass

    handler = partial(Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
