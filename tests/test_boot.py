"""The boot runtime: the platform protocol through `invoke` (a fresh, isolated process
running the built package) and through the handler directly, and MCP over HTTP
through `serve` with the official mcp client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from .conftest import EXAMPLES
from .helpers import python_project, served_url, start_serve

FULL_SERVER = """from boot import metorial

server = metorial.create_server({"name": "full", "version": "2.0.0"})


@server.list_tools()
def list_tools():
    return [{"name": "whoami", "description": "args", "inputSchema": {"type": "object"}},
            {"name": "boom", "description": "fails", "inputSchema": {"type": "object"}}]


@server.call_tool()
async def call_tool(name, arguments):
    if name == "boom":
        raise RuntimeError("kaboom")
    print("called whoami")
    return {"args": metorial.get_args()}


def authorization_url(data):
    return "https://auth.example/authorize?state=" + data["state"]


def callback(data):
    if data.get("code") == "bad":
        raise ValueError("bad code")
    return {"accessToken": "t-" + data["code"]}


def form(data):
    return {"fields": [{"key": "apiKey"}]}


metorial.set_oauth_handler(authorization_url, callback, get_auth_form=form)


def handle(event):
    if event["payload"] == "fail":
        raise ValueError("cannot handle")
    return {"seen": event["payload"]}


def poll(data):
    return {"events": [{"n": data["state"]}], "newState": data["state"] + 1}


metorial.set_callback_handler(handle, poll=poll)
"""


def _invoke(cli, project: Path, event: dict) -> dict:
    result = cli("-C", str(project), "invoke", "--event", "-", input=json.dumps(event))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


PARTICIPANT = json.dumps(
    {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "platform", "version": "1"},
    }
)


def test_discover_of_the_example_matches_its_tools(cli) -> None:
    reply = _invoke(cli, EXAMPLES / "python-server", {"action": "discover"})
    assert reply["success"] is True
    discovery = reply["discovery"]
    assert [t["name"] for t in discovery["tools"]] == ["word_stats", "human_size"]
    assert [r["uri"] for r in discovery["resources"]] == ["text-tools://about"]
    assert [t["uriTemplate"] for t in discovery["resourceTemplates"]] == [
        "text-tools://size/{bytes}"
    ]
    assert set(discovery["capabilities"]) == {"tools", "resources", "prompts"}
    assert discovery["implementation"] == {"name": "text-tools", "version": "1.0.0"}
    assert discovery["oauth"] == {"enabled": False, "hasForm": False}
    assert discovery["callbacks"] == {"enabled": False}


def test_tools_list_in_a_fresh_process_without_initialize(cli) -> None:
    reply = _invoke(
        cli,
        EXAMPLES / "python-server",
        {
            "action": "mcp.request",
            "participantJson": PARTICIPANT,
            "messages": [json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})],
        },
    )
    response = json.loads(reply["responses"][0])
    assert response["id"] == 7
    assert {t["name"] for t in response["result"]["tools"]} == {"word_stats", "human_size"}


def test_bare_jsonrpc_event_is_wrapped(cli) -> None:
    reply = _invoke(
        cli,
        EXAMPLES / "python-server",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "human_size", "arguments": {"bytes": 2048, "binary": True}},
        },
    )
    result = json.loads(reply["responses"][0])["result"]
    assert result["content"][0]["text"] == "2.0 KiB"


@pytest.fixture
def full_project(tmp_path: Path) -> Path:
    return python_project(tmp_path / "full", name="full", server=FULL_SERVER)


def test_args_visible_to_the_handler_and_gone_next_request(cli, full_project: Path) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}},
    }
    event = {
        "action": "mcp.batch",
        "participantJson": PARTICIPANT,
        "messages": [call, {"jsonrpc": "2.0", "method": "notifications/initialized"}],
        "args": json.dumps({"apiKey": "k1"}),
    }
    # Both events in one warm process: the second must not see the first's args.
    second = {**event, "args": None}
    result = cli("-C", str(full_project), "invoke", "--event", "-", input=json.dumps(event))
    first = json.loads(json.loads(result.stdout)["responses"][0])
    assert first["result"]["structuredContent"] == {"args": {"apiKey": "k1"}}
    assert len(json.loads(result.stdout)["responses"]) == 1  # no response to a notification
    assert json.loads(result.stdout)["logs"] == [{"type": "info", "lines": ["called whoami"]}]

    from pmcp_build.local.runner import open_invoker
    from pmcp_build.manifest.load import load_manifest
    from pmcp_build.package.build import build

    package = build(load_manifest(full_project / "metorial.toml"))
    invoker = open_invoker(package.path, package.layout)
    try:
        a = invoker.invoke(event)
        b = invoker.invoke(second)
    finally:
        invoker.close()
    assert json.loads(a["responses"][0])["result"]["structuredContent"]["args"] == {"apiKey": "k1"}
    assert json.loads(b["responses"][0])["result"]["structuredContent"]["args"] == {}


def test_tool_error_is_an_error_result(cli, full_project: Path) -> None:
    reply = _invoke(
        cli,
        full_project,
        {
            "action": "mcp.request",
            "participantJson": PARTICIPANT,
            "messages": [
                {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "boom"}}
            ],
        },
    )
    result = json.loads(reply["responses"][0])["result"]
    assert result["isError"] is True
    assert "kaboom" in result["content"][0]["text"]


@pytest.fixture
def runtime(full_project: Path, monkeypatch: pytest.MonkeyPatch):
    """The handler called directly, in this process, with a fresh registry."""
    from boot import metorial
    from boot.bootstrap import Runtime

    for field in ("server", "oauth", "callbacks"):
        monkeypatch.setattr(metorial.registry, field, None)
    monkeypatch.syspath_prepend(str(full_project))
    return Runtime("server.py", root=str(full_project))


def test_oauth_actions(runtime) -> None:
    assert runtime.handle({"action": "oauth", "oauthAction": "get"}) == {
        "success": True,
        "oauth": {"enabled": True, "hasForm": True},
    }
    url = runtime.handle(
        {"action": "oauth", "oauthAction": "authorization-url", "oauthInput": {"state": "s1"}}
    )
    assert url["oauth"] == {
        "authorizationUrl": "https://auth.example/authorize?state=s1",
        "codeVerifier": "",
    }
    form = runtime.handle({"action": "oauth", "oauthAction": "authorization-form"})
    assert form["oauth"] == {"authForm": {"fields": [{"key": "apiKey"}]}}
    cb = runtime.handle({"action": "oauth", "oauthAction": "callback", "oauthInput": {"code": "c"}})
    assert cb["oauth"] == {"authData": {"accessToken": "t-c"}}
    failing = runtime.handle(
        {"action": "oauth", "oauthAction": "callback", "oauthInput": {"code": "bad"}}
    )
    assert failing["success"] is False and "bad code" in failing["error"]["message"]
    refresh = runtime.handle({"action": "oauth", "oauthAction": "refresh"})
    assert refresh["success"] is False and refresh["error"]["code"] == "oauth_no_refresh"


def test_callback_actions(runtime) -> None:
    assert runtime.handle({"action": "callbacks", "callbackAction": "get"})["callbacks"] == {
        "enabled": True,
        "type": "polling",
    }
    handled = runtime.handle(
        {
            "action": "callbacks",
            "callbackAction": "handle",
            "callbackInput": {
                "callbackId": "cb",
                "events": [
                    {"eventId": "e1", "payload": "hello"},
                    {"eventId": "e2", "payload": "fail"},
                ],
            },
        }
    )
    results = handled["callbacks"]["results"]
    assert results[0] == {"success": True, "eventId": "e1", "result": {"seen": "hello"}}
    assert results[1]["success"] is False and "cannot handle" in results[1]["error"]
    polled = runtime.handle(
        {
            "action": "callbacks",
            "callbackAction": "poll",
            "callbackInput": {"callbackId": "cb", "state": 1},
        }
    )
    assert polled["callbacks"] == {"events": [{"n": 1}], "newState": 2}
    install = runtime.handle({"action": "callbacks", "callbackAction": "install"})
    assert install["success"] is False


def test_unknown_action_and_bad_events(runtime) -> None:
    reply = runtime.handle({"action": "teleport"})
    assert reply["success"] is False and reply["error"]["code"] == "unknown_action"
    assert runtime.handle("not json")["error"]["code"] == "invalid_event"


def test_http_events_v1_v2_and_status_codes(runtime) -> None:
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-06-18",
    }
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    v2 = {
        "version": "2.0",
        "rawPath": "/",
        "headers": headers,
        "body": body,
        "requestContext": {"http": {"method": "POST"}},
        "isBase64Encoded": False,
    }
    reply = runtime.handle(v2)
    assert reply["statusCode"] == 200
    assert json.loads(reply["body"])["result"]["tools"][0]["name"] == "whoami"
    import base64

    v1 = {
        "httpMethod": "POST",
        "path": "/mcp",
        "headers": headers,
        "isBase64Encoded": True,
        "body": base64.b64encode(body.encode()).decode(),
    }
    assert runtime.handle(v1)["statusCode"] == 200
    note = {**v2, "body": json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})}
    assert runtime.handle(note)["statusCode"] == 202
    assert runtime.handle({**v1, "httpMethod": "GET"})["statusCode"] == 405
    assert runtime.handle({**v1, "httpMethod": "DELETE"})["statusCode"] == 405
    assert (
        runtime.handle({**v2, "headers": {**headers, "accept": "text/html"}})["statusCode"] == 406
    )
    assert (
        runtime.handle({**v2, "headers": {**headers, "content-type": "text/plain"}})["statusCode"]
        == 415
    )


# -- serve + the official mcp client ----------------------------------------------------


@pytest.fixture(scope="module")
def served_example(tmp_path_factory: pytest.TempPathFactory):
    env = {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(Path(__file__).resolve().parent.parent / ".wheelhouse"),
        "PMCP_BUILD_CACHE_DIR": str(tmp_path_factory.mktemp("serve-cache")),
    }
    proc = start_serve(EXAMPLES / "python-server", env)
    url = served_url(proc)
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_mcp_client_against_serve(served_example: str, mode: str) -> None:
    async def scenario() -> None:
        async with Client(served_example, mode=mode) as client:
            from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

            expected = LATEST_HANDSHAKE_VERSION if mode == "legacy" else LATEST_MODERN_VERSION
            assert client.protocol_version == expected
            tools = await client.list_tools()
            assert {t.name for t in tools.tools} == {"word_stats", "human_size"}
            stats = await client.call_tool("word_stats", {"text": "One fish. Two fish!"})
            assert stats.structured_content["words"] == 4
            assert stats.structured_content["sentences"] == 2
            size = await client.call_tool("human_size", {"bytes": 1_500_000})
            assert size.content[0].text == "1.5 MB"
            failed = await client.call_tool("human_size", {"bytes": -1})
            assert failed.is_error
            resources = await client.list_resources()
            assert [str(r.uri) for r in resources.resources] == ["text-tools://about"]
            templates = await client.list_resource_templates()
            assert templates.resource_templates[0].uri_template == "text-tools://size/{bytes}"
            about = await client.read_resource("text-tools://about")
            assert "word statistics" in about.contents[0].text.lower()
            prompts = await client.list_prompts()
            assert prompts.prompts[0].name == "summarise"
            prompt = await client.get_prompt("summarise", {"text": "abc", "sentences": "1"})
            assert "in 1 sentences" in prompt.messages[0].content.text

    anyio.run(scenario)


def test_malformed_body_is_a_4xx_not_a_500(served_example: str) -> None:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    bad = httpx.post(served_example, content=b"{not json", headers=headers, timeout=10)
    assert 400 <= bad.status_code < 500
    assert bad.json()["error"]["code"] == -32700
    assert httpx.get(served_example, headers=headers, timeout=10).status_code == 405
    started = time.perf_counter()
    for _ in range(3):
        ok = httpx.post(
            served_example,
            headers={**headers, "mcp-protocol-version": "2025-06-18"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            timeout=10,
        )
        assert ok.status_code == 200
    assert time.perf_counter() - started >= 0  # warm requests reuse the one engine


def test_binary_example_through_the_runtime_api(cli, tmp_path: Path) -> None:
    import shutil

    project = tmp_path / "binary-server"
    shutil.copytree(EXAMPLES / "binary-server", project)
    subprocess.run([sys.executable, "make_db.py"], cwd=project, check=True, capture_output=True)
    built = cli("-C", str(project), "build", "--json")
    assert built.exit_code == 0, built.output
    files = {f["path"]: f for f in json.loads(built.stdout)["layout"]["files"]}
    assert files["bootstrap"]["mode"] == "0755" and files["chinook.db"]["origin"] == "asset"
    event = {"rawPath": "/", "requestContext": {"http": {"method": "POST"}}, "body": "{}"}
    reply = _invoke(cli, project, event)
    assert reply["statusCode"] == 200
    body = json.loads(reply["body"])
    assert "chinook.db" in body["files"] and "bootstrap" in body["files"]


def test_index_py_entrypoint_gets_its_own_handler_module(cli, tmp_path: Path) -> None:
    """index.py is in the detection order; the generated handler must not overwrite it."""
    project = python_project(tmp_path / "p")
    (project / "server.py").rename(project / "index.py")
    built = cli("-C", str(project), "build", "--json")
    assert built.exit_code == 0, built.output
    layout = json.loads(built.stdout)["layout"]
    assert layout["handler"] == "metorial_index.handler"
    origins = {f["path"]: f["origin"] for f in layout["files"]}
    assert origins["index.py"] == "source" and origins["metorial_index.py"] == "generated"
    reply = _invoke(cli, project, {"action": "discover"})
    assert [t["name"] for t in reply["discovery"]["tools"]] == ["echo"]
