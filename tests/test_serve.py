"""`serve` and `invoke` as Lambda would run the package: warm instances side by side,
a backlog that holds bursts, a Lambda-shaped context, a 6 MB payload limit, and a clean
stop on SIGTERM or Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .helpers import python_project, served_url, start_serve

ROOT = Path(__file__).resolve().parent.parent

CONTEXT_SERVER = """from boot import metorial
import time

server = metorial.create_server("ctx")
SEEN = {}


@server.list_tools()
def list_tools():
    return [{"name": "ctx", "description": "context", "inputSchema": {"type": "object"}}]


@server.call_tool()
def call_tool(name, arguments):
    args = metorial.get_args()
    time.sleep(float(arguments.get("sleep", 0)))
    return {"args": args, "again": metorial.get_args()}
"""


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
        "PMCP_BUILD_CACHE_DIR": str(tmp / "cache"),
        "TMPDIR": str(tmp / "tmp"),
        "PMCP_BUILD_LOAD_CHECK": "0",
    }


def _start(project: Path, tmp: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    (tmp / "tmp").mkdir(exist_ok=True)
    proc = start_serve(project, _env(tmp), *extra)
    return proc, served_url(proc)


def _rpc(url: str, method: str, params: dict[str, Any], id_: int = 1) -> httpx.Response:
    return httpx.post(
        url,
        json={"jsonrpc": "2.0", "id": id_, "method": method, "params": params},
        headers={
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2025-11-25",
        },
        timeout=60,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("serve")
    project = python_project(tmp / "p", server=CONTEXT_SERVER)
    proc, url = _start(project, tmp, "--concurrency", "3")
    yield url, tmp
    proc.terminate()
    proc.wait(20)


def test_a_burst_of_clients_is_all_answered(served: Any) -> None:
    """The listen backlog was 5: 50 concurrent clients lost requests to resets."""
    url, _ = served

    def one(i: int) -> int:
        return _rpc(url, "tools/list", {}, i).status_code

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(one, range(100)))
    assert codes == [200] * 100


def test_instances_run_side_by_side(served: Any) -> None:
    url, _ = served
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        replies = list(
            pool.map(
                lambda i: _rpc(url, "tools/call", {"name": "ctx", "arguments": {"sleep": 1}}, i),
                range(3),
            )
        )
    assert all(r.status_code == 200 for r in replies)
    # Three one-second calls on three instances overlap (one instance took >= 3 s).
    assert time.monotonic() - started < 2.9


def test_body_over_six_megabytes_is_refused_as_a_function_url_would(served: Any) -> None:
    url, _ = served
    big = httpx.post(url, content=b"x" * (6 * 1024 * 1024 + 1), timeout=60)
    assert big.status_code == 413


def test_invoke_passes_a_lambda_shaped_context(cli: Any, tmp_path: Path) -> None:
    server = (
        CONTEXT_SERVER
        + """

import json as _json
_original = None
"""
    )
    project = python_project(tmp_path / "p", server=server)
    (project / "server.py").write_text(
        CONTEXT_SERVER.replace(
            'return {"args": args, "again": metorial.get_args()}',
            'return {"args": args}',
        )
    )
    index_probe = project / "probe.py"
    index_probe.write_text(
        "def handler(event, context):\n"
        "    return {'name': context.function_name, 'memory': context.memory_limit_in_mb,\n"
        "            'id': context.aws_request_id,\n"
        "            'remaining': context.get_remaining_time_in_millis()}\n"
    )
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text()
        + '\n[targets.prod]\nkind = "lambda"\nfunction = "ctx-prod"\nbucket = "my-bucket"\n'
        "memory = 1024\ntimeout = 20\n"
    )
    from pmcp_build.layout.model import Layout
    from pmcp_build.local.runner import FunctionSettings, open_invoker
    from pmcp_build.manifest.load import load_manifest
    from pmcp_build.package.build import build

    package = build(load_manifest(toml))
    layout = Layout(
        package.layout.entries,
        package.layout.runtime,
        "probe.handler",
        package.layout.architecture,
    )
    invoker = open_invoker(package.path, layout, settings=FunctionSettings("ctx-prod", 1024, 20))
    try:
        reply = invoker.invoke({})
    finally:
        invoker.close()
    assert reply["name"] == "ctx-prod" and reply["memory"] == 1024
    assert len(reply["id"]) == 36 and 15_000 < reply["remaining"] <= 20_000


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly(tmp_path: Path, how: signal.Signals) -> None:
    project = python_project(tmp_path / "p")
    proc, url = _start(project, tmp_path, "--concurrency", "2")
    assert _rpc(url, "tools/list", {}).status_code == 200
    unpacked = list((tmp_path / "tmp").glob("pmcp-task-*"))
    assert len(unpacked) == 2
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert list((tmp_path / "tmp").glob("pmcp-task-*")) == []  # ~38 MB each, gone
    assert tempfile.gettempdir()  # the suite's own temp dir is untouched
    assert json  # keep the import for readers of the events above


def test_a_pyenv_shim_that_cannot_run_is_not_taken_for_the_target_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pyenv shim for a version that is not active exits 127: before, `serve` took it
    for python3.13 and ended in "the handler process exited (code 127)". Now each
    candidate must answer its version; none left means the clear "needs python3.13 …
    uv python install 3.13" line."""
    from pmcp_build.layout.python import find_python

    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / "python3.13"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.13: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "no-uv-pythons"))
    find_python.cache_clear()
    try:
        found = find_python("3.13")
    finally:
        find_python.cache_clear()
    assert found != str(shim)
    if found is not None:  # a real python3.13 elsewhere on this machine is fine
        version = subprocess.run(
            [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        assert version.stdout.strip() == "3.13"
