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


# -- issue 23: raw HTTP as a Function URL carries it ---------------------------------

RAW_SERVER = """from mcp.server.mcpserver import Context, MCPServer

app = MCPServer("raw")


@app.tool()
def size(text: str) -> int:
    return len(text)


@app.tool()
def big(megabytes: float) -> str:
    return "x" * int(megabytes * 1024 * 1024)


@app.tool()
async def chatty(ctx: Context) -> str:
    await ctx.info("working on it")
    await ctx.report_progress(1, 2, "half way")
    return "done"
"""
ALLOWED = "https://app.example.com"
JSON_AND_SSE = {
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2025-11-25",
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("raw")
    project = python_project(tmp / "p", server=RAW_SERVER, extra='entrypoint = "server.py:app"\n')
    proc, url = _start(project, tmp, "--concurrency", "2", "--allow-origin", ALLOWED)
    yield url
    proc.terminate()
    proc.wait(20)


def _call_body(name: str, arguments: dict[str, Any], id_: int = 1, **meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}


def test_serve_checks_host_and_origin_as_the_sdk_does(raw: str) -> None:
    """DNS-rebinding protection: a web page the user visits must not drive the local
    server. Before, `Host: evil.example.com` and `Origin: http://evil.example.com` got 200."""
    port = raw.split(":")[2].split("/")[0]
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}

    def status(**headers: str) -> int:
        return httpx.post(
            raw, json=body, headers={**JSON_AND_SSE, **headers}, timeout=30
        ).status_code

    assert status() == 200
    assert status(host=f"localhost:{port}", origin=f"http://localhost:{port}") == 200
    assert status(origin=f"http://127.0.0.1:{port}") == 200
    assert status(origin=ALLOWED) == 200  # --allow-origin
    assert status(host="evil.example.com") == 421
    assert status(host="127.0.0.1:1") == 421  # another port is another server
    assert status(origin="http://evil.example.com") == 403
    assert status(origin=f"http://localhost:{int(port) + 1}") == 403
    refused = httpx.post(raw, json=body, headers={"origin": "http://evil.example.com"}, timeout=30)
    assert refused.text == "Invalid Origin header"


def test_a_chunked_body_is_read(raw: str) -> None:
    """A POST with Transfer-Encoding: chunked and no Content-Length was read as empty
    (400 -32700)."""
    data = json.dumps(_call_body("size", {"text": "abc" * 50_000})).encode()

    def chunks() -> Any:
        for start in range(0, len(data), 16_384):
            yield data[start : start + 16_384]

    reply = httpx.post(
        raw,
        content=chunks(),
        headers={**JSON_AND_SSE, "content-type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text[:300]
    assert reply.json()["result"]["structuredContent"] == {"result": 150_000}


def _sized(total: int) -> bytes:
    """A tools/call of `size` whose body is exactly `total` bytes."""
    empty = json.dumps(_call_body("size", {"text": ""}), separators=(",", ":")).encode()
    return json.dumps(
        _call_body("size", {"text": "y" * (total - len(empty))}), separators=(",", ":")
    ).encode()


def test_bodies_up_to_six_megabytes_are_taken_and_larger_ones_are_413(raw: str) -> None:
    """A Function URL takes 6 MB (6,291,456 bytes); bodies of 4.1-5.9 MiB answered the
    SDK's text/plain 413 "Request body too large". Chunked bodies too."""
    headers = {**JSON_AND_SSE, "content-type": "application/json"}
    for total in (5 * 1024 * 1024, 6 * 1024 * 1024):
        body = _sized(total)
        assert len(body) == total
        reply = httpx.post(raw, content=body, headers=headers, timeout=60)
        assert reply.status_code == 200, (total, reply.text[:200])
        assert reply.json()["result"]["structuredContent"]["result"] > total - 100
    over = _sized(6 * 1024 * 1024 + 1)
    assert httpx.post(raw, content=over, headers=headers, timeout=60).status_code == 413
    chunked = httpx.post(raw, content=iter([over[:1000], over[1000:]]), headers=headers, timeout=60)
    assert chunked.status_code == 413
    assert chunked.json() == {"message": "Request must be smaller than 6291456 bytes"}


def test_a_response_over_lambdas_limit_is_a_jsonrpc_error(raw: str) -> None:
    """Lambda refuses a response over 6,291,556 bytes; `serve` answered all 7 MB (200),
    so it succeeded where the deployed function fails."""
    reply = httpx.post(
        raw, json=_call_body("big", {"megabytes": 7}, 31), headers=JSON_AND_SSE, timeout=60
    )
    error = reply.json()
    assert (error["id"], error["error"]["code"]) == (31, -32603)
    assert "6291556" in error["error"]["message"]
    small = httpx.post(
        raw, json=_call_body("big", {"megabytes": 1}), headers=JSON_AND_SSE, timeout=60
    )
    assert "result" in small.json()


def test_other_methods_answer_a_jsonrpc_405(raw: str) -> None:
    """PATCH answered http.server's HTML 501 page."""
    reply = httpx.request("PATCH", raw, json={}, headers=JSON_AND_SSE, timeout=30)
    assert reply.status_code == 405
    assert reply.json()["error"]["code"] == -32000
    assert reply.headers["allow"] == "POST"


def test_notifications_come_in_one_buffered_sse_body(raw: str) -> None:
    """With text/event-stream accepted, the request's logging and progress notifications
    and then its result; JSON otherwise. Before, JSON only: the notifications were lost."""
    from boot.transport import sse_messages

    body = _call_body("chatty", {}, 8, progressToken="tok")
    reply = httpx.post(raw, json=body, headers=JSON_AND_SSE, timeout=30)
    assert reply.headers["content-type"].startswith("text/event-stream")
    messages = sse_messages(reply.content)
    assert [m.get("method") for m in messages] == [
        "notifications/message",
        "notifications/progress",
        None,
    ]
    assert messages[0]["params"]["data"] == "working on it"
    assert messages[1]["params"]["progressToken"] == "tok"
    assert messages[2]["id"] == 8
    plain = httpx.post(
        raw, json=body, headers={**JSON_AND_SSE, "accept": "application/json"}, timeout=30
    )
    assert plain.headers["content-type"] == "application/json"
    assert plain.json()["result"]["content"][0]["text"] == "done"
