"""Conformance: one feature-complete server run natively on the mcp SDK and through
`pmcp-build serve`, every method called with the official client at every protocol
version the SDK speaks, the results compared field by field.

Both sides run the very same SDK: the native server runs from the built package's own
files (`python -I -S` on the unpacked zip), so a difference is ours, not a version skew.
The native side runs the SDK's streamable-HTTP app in stateless JSON-response mode, the
only mode a Lambda Function URL can serve (no SSE stream outlives the response).

Intended differences are listed in INTENDED with their reasons; everything else must be
equal. Handshake-era versions are reached by making the client offer each in turn (the
SDK's client offers only its newest); the modern era by pinning the client's mode.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import PromptReference, ResourceTemplateReference
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from .conftest import ROOT
from .helpers import HOST_ARCH, HOST_PY, served_url, start_serve

SERVER = """'''A feature-complete server on the mcp SDK's MCPServer, for the conformance test.'''

from pydantic import BaseModel

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import Completion, PromptReference, ResourceTemplateReference

app = MCPServer("conformance", instructions="Every feature once.")


class Stats(BaseModel):
    words: int
    chars: int


@app.tool()
def add(a: int, b: int) -> int:
    '''Add two integers.'''
    return a + b


@app.tool()
def stats(text: str) -> Stats:
    '''Structured output: a model.'''
    return Stats(words=len(text.split()), chars=len(text))


@app.tool()
def fail(reason: str) -> str:
    '''Always fails with a tool error.'''
    raise ToolError(f"refused: {reason}")


@app.tool()
async def chatty(ctx: Context) -> str:
    '''Logs at info, then answers.'''
    await ctx.info("working on it")
    return "done"


@app.resource("docs://readme", mime_type="text/markdown")
def readme() -> str:
    '''The readme.'''
    return "# Readme\\n\\nHello."


@app.resource("docs://logo", mime_type="image/png")
def logo() -> bytes:
    '''A tiny binary resource.'''
    return b"\\x89PNG\\r\\n\\x1a\\n\\x00\\x00"


@app.resource("notes://{name}")
def note(name: str) -> str:
    '''A note by name.'''
    return f"note {name}"


@app.prompt()
def review(code: str, language: str = "python") -> str:
    '''Review some code.'''
    return f"Review this {language} code:\\n{code}"


@app.completion()
async def complete(ref, argument, context):
    if isinstance(ref, PromptReference) and argument.name == "language":
        values = [v for v in ("python", "rust", "go") if v.startswith(argument.value)]
        return Completion(values=values, total=len(values), has_more=False)
    if isinstance(ref, ResourceTemplateReference):
        return Completion(values=["alpha", "beta"])
    return None
"""

# What may differ between the native SDK server and ours, and why. Keys are the
# exchange's fields (see _exchange); server_info's name and version are dropped from
# both sides beforehand (the issue allows it: they name the implementation).
# None is left for an SDK server: every field below compares equal. Not exercised at
# all, on purpose: server-to-client requests (sampling, elicitation, roots), resource
# subscriptions and progress streams, which need a stream that outlives the response,
# which a Function URL cannot hold open (the native side runs in the same JSON-response
# mode; its `notifications/message` are compared and are empty on both sides).
INTENDED: dict[str, str] = {}

VERSIONS = [*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return value


async def _exchange(url: str, mode: str) -> dict[str, Any]:
    """Every method once, as a client would call them; errors are part of the result."""
    out: dict[str, Any] = {}
    logs: list[Any] = []

    async def on_log(params: Any) -> None:
        logs.append(_dump(params))

    async with Client(url, mode=mode, logging_callback=on_log, log_level="debug") as client:
        out["protocol_version"] = client.protocol_version
        out["capabilities"] = _dump(client.server_capabilities)
        out["instructions"] = client.instructions
        info = _dump(client.server_info) or {}
        out["server_info"] = {k: v for k, v in info.items() if k not in ("name", "version")}
        if mode == "legacy":  # ping is gone from the 2026-07-28 protocol
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # MCPDeprecationWarning
                out["ping"] = _dump(await client.send_ping())
        out["tools/list"] = _dump(await client.list_tools())
        out["tools/call add"] = _dump(await client.call_tool("add", {"a": 2, "b": 3}))
        out["tools/call structured"] = _dump(await client.call_tool("stats", {"text": "a b"}))
        out["tools/call tool error"] = _dump(await client.call_tool("fail", {"reason": "no"}))
        out["tools/call bad arguments"] = _dump(await client.call_tool("add", {"a": "x"}))
        out["tools/call logging"] = _dump(await client.call_tool("chatty", {}))
        out["resources/list"] = _dump(await client.list_resources())
        out["resources/templates/list"] = _dump(await client.list_resource_templates())
        out["resources/read markdown"] = _dump(await client.read_resource("docs://readme"))
        out["resources/read binary"] = _dump(await client.read_resource("docs://logo"))
        out["resources/read template"] = _dump(await client.read_resource("notes://x"))
        out["prompts/list"] = _dump(await client.list_prompts())
        out["prompts/get"] = _dump(await client.get_prompt("review", {"code": "x = 1"}))
        out["completion/complete prompt"] = _dump(
            await client.complete(
                PromptReference(type="ref/prompt", name="review"),
                {"name": "language", "value": "r"},
            )
        )
        out["completion/complete template"] = _dump(
            await client.complete(
                ResourceTemplateReference(type="ref/resource", uri="notes://{name}"),
                {"name": "name", "value": ""},
            )
        )
        for label, call in (
            ("tools/call unknown tool", lambda: client.call_tool("nope", {})),
            ("resources/read unknown", lambda: client.read_resource("docs://nope")),
            ("prompts/get unknown", lambda: client.get_prompt("nope", {})),
        ):
            try:
                out[label] = _dump(await call())
            except Exception as exc:  # the error is the result to compare
                out[label] = {"error": type(exc).__name__, "message": str(exc)}
    out["notifications/message"] = logs
    return out


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    project = tmp_path_factory.mktemp("conformance")
    (project / "server.py").write_text(SERVER)
    (project / "metorial.toml").write_text(
        '[server]\nname = "conformance"\n\n[runtime]\nkind = "python"\n'
        f'python = "{HOST_PY}"\narchitecture = "{HOST_ARCH}"\nentrypoint = "server.py:app"\n'
        '\n[targets.dev]\nkind = "local"\n'
    )
    env = {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
        "PMCP_BUILD_CACHE_DIR": str(tmp_path_factory.mktemp("conformance-cache")),
    }
    ours = start_serve(project, env)
    native: subprocess.Popen[bytes] | None = None
    try:
        our_url = served_url(ours)
        # The native server runs from the package's own files: the same SDK, byte for byte.
        (package,) = (project / ".pmcp" / "dist").glob("*.zip")
        task_root = tmp_path_factory.mktemp("native-task")
        with zipfile.ZipFile(package) as zf:
            zf.extractall(task_root)
        port = _free_port()
        log = task_root.parent / f"{task_root.name}.log"
        with log.open("w") as log_file:
            native = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    "import sys; sys.path.insert(0, sys.argv[1]); import server; "
                    "server.app.run('streamable-http', host='127.0.0.1', port=int(sys.argv[2]), "
                    "stateless_http=True, json_response=True)",
                    str(task_root),
                    str(port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        native_url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 30
        while True:  # bounded: the native server is up when its port accepts
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or native.poll() is not None:
                    pytest.fail(f"the native SDK server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield {"native": native_url, "ours": our_url}
    finally:
        for proc in (ours, native):
            if proc is not None:
                proc.terminate()
                proc.wait(30)


@pytest.mark.parametrize("version", VERSIONS)
def test_serve_answers_as_the_sdk_does(
    servers: dict[str, str], version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if version in MODERN_PROTOCOL_VERSIONS:
        mode = version  # the client adopts the per-request era's version directly
    else:
        import mcp.client.session

        # The SDK's client offers only its newest handshake version; offer this one.
        monkeypatch.setattr(mcp.client.session, "LATEST_HANDSHAKE_VERSION", version)
        mode = "legacy"
    native = anyio.run(_exchange, servers["native"], mode)
    ours = anyio.run(_exchange, servers["ours"], mode)
    assert native["protocol_version"] == version
    differences = {
        key: {"native": native[key], "ours": ours.get(key)}
        for key in native
        if key not in INTENDED and native[key] != ours.get(key)
    }
    assert not differences, json.dumps(differences, indent=1)[:4000]
    assert set(ours) == set(native)
