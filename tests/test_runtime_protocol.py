"""The boot runtime's answers to the platform protocol and to MCP, called in-process
on one server that paginates, fails and declares mime types. Each test names the
issue-13 item it pins; every one failed on the runtime before that fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SERVER = """import logging
from boot import metorial

server = metorial.create_server({"name": "proto", "version": "1.0.0"})
logging.getLogger("author").setLevel(logging.INFO)
TOOLS = [{"name": f"t{i}", "inputSchema": {"type": "object"}} for i in range(3)]


@server.list_tools()
def list_tools(cursor=None):
    start = int(cursor or 0)
    page = {"tools": TOOLS[start:start + 2]}
    if start + 2 < len(TOOLS):
        page["nextCursor"] = str(start + 2)
    return page


@server.call_tool()
def call_tool(name, arguments):
    logging.getLogger("author").info("tool %s", name)
    logging.getLogger("author").warning("careful")
    return {"ok": name}


@server.list_resources()
def list_resources():
    return [{"uri": "doc://readme", "name": "readme", "mimeType": "text/markdown"},
            {"uri": "doc://logo", "name": "logo", "mimeType": "image/png"}]


@server.read_resource()
def read_resource(uri):
    if uri == "doc://secret":
        raise RuntimeError("db password is hunter2")
    return b"\\x89PNG" if uri.endswith("logo") else "# readme"


@server.list_resource_templates()
def templates():
    return [{"uriTemplate": "doc://{name}", "name": "doc"}]
"""

CALL_ONLY = """from boot import metorial

server = metorial.create_server({"name": "call-only"})


@server.call_tool()
def call_tool(name, arguments):
    return "x"


@server.list_resource_templates()
def templates():
    return [{"uriTemplate": "doc://{name}", "name": "doc"}]
"""


def _runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> Any:
    from boot import metorial
    from boot.bootstrap import Runtime

    for field in ("server", "oauth", "callbacks"):
        monkeypatch.setattr(metorial.registry, field, None)
    (tmp_path / "server.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return Runtime("server.py", root=str(tmp_path))


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return _runtime(tmp_path, monkeypatch, SERVER)


def _ask(runtime: Any, method: str, params: dict[str, Any] | None = None, **event: Any) -> Any:
    message = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or {}}
    reply = runtime.handle({"action": "mcp.request", "messages": [message], **event})
    assert reply["success"] is True, reply
    return json.loads(reply["responses"][0]), reply


def test_pagination_cursor_reaches_the_handler_and_next_cursor_survives(runtime: Any) -> None:
    first, _ = _ask(runtime, "tools/list")
    assert [t["name"] for t in first["result"]["tools"]] == ["t0", "t1"]
    assert first["result"]["nextCursor"] == "2"
    second, _ = _ask(runtime, "tools/list", {"cursor": "2"})
    assert [t["name"] for t in second["result"]["tools"]] == ["t2"]
    assert "nextCursor" not in second["result"]


def test_discover_advertises_what_initialize_advertises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(tmp_path, monkeypatch, CALL_ONLY)
    init, _ = _ask(
        runtime,
        "initialize",
        {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    )
    advertised = {k for k in init["result"]["capabilities"] if k in ("tools", "resources")}
    discovered = runtime.handle({"action": "discover"})["discovery"]["capabilities"]
    assert set(discovered) & {"tools", "resources"} == advertised


@pytest.mark.parametrize(
    "event, code",
    [
        ({"message": {"jsonrpc": "2.0", "id": 1, "method": "ping"}}, "invalid_event"),
        ({}, "invalid_event"),
        ({"messages": []}, "invalid_event"),
        (
            {"messages": [{"jsonrpc": "2.0", "id": 1, "method": "ping"}], "participantJson": "{"},
            "invalid_event",
        ),
        (
            {
                "messages": [{"jsonrpc": "2.0", "id": 1, "method": "ping"}],
                "participantJson": json.dumps({"protocolVersion": "1999-01-01"}),
            },
            "unsupported_protocol_version",
        ),
    ],
)
def test_malformed_mcp_request_events_fail_clearly(runtime: Any, event: dict, code: str) -> None:
    reply = runtime.handle({"action": "mcp.request", **event})
    assert reply["success"] is False and reply["error"]["code"] == code, reply


@pytest.mark.parametrize("bad_id", [{"a": 1}, True, [1], None])
def test_a_message_with_an_invalid_id_is_an_invalid_request(runtime: Any, bad_id: Any) -> None:
    """JSON-RPC 2.0 §5: an invalid Request object is answered -32600 with id null."""
    message = {"jsonrpc": "2.0", "id": bad_id, "method": "tools/list"}
    reply = runtime.handle({"action": "mcp.request", "messages": [message]})
    answer = json.loads(reply["responses"][0])
    assert answer["error"]["code"] == -32600 and answer["id"] is None


def test_read_resource_labels_content_with_the_declared_mime_type(runtime: Any) -> None:
    text, _ = _ask(runtime, "resources/read", {"uri": "doc://readme"})
    assert text["result"]["contents"][0]["mimeType"] == "text/markdown"
    blob, _ = _ask(runtime, "resources/read", {"uri": "doc://logo"})
    assert blob["result"]["contents"][0]["mimeType"] == "image/png"


def test_logging_module_output_lands_in_the_request_logs(runtime: Any) -> None:
    _, reply = _ask(runtime, "tools/call", {"name": "t0", "arguments": {}})
    lines = {entry["type"]: entry["lines"] for entry in reply["logs"]}
    assert "INFO author: tool t0" in lines["info"]
    assert "WARNING author: careful" in lines["error"]
    assert not any("mcp." in line for entry in reply["logs"] for line in entry["lines"])


def test_a_failing_reader_is_an_internal_error_without_its_text(runtime: Any) -> None:
    """A server fault is -32603 (JSON-RPC), not -32602; its text stays in the logs."""
    answer, reply = _ask(runtime, "resources/read", {"uri": "doc://secret"})
    assert answer["error"]["code"] == -32603
    assert "hunter2" not in json.dumps(answer)
    assert any("hunter2" in line for entry in reply["logs"] for line in entry["lines"])


def _http(body: str) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": "/mcp",
        "headers": {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2025-06-18",
        },
        "body": body,
        "requestContext": {"http": {"method": "POST"}},
        "isBase64Encoded": False,
    }


def test_a_batch_array_is_an_invalid_request(runtime: Any) -> None:
    """MCP has no batches since 2025-06-18; JSON-RPC answers an unusable batch -32600."""
    reply = runtime.handle(_http(json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])))
    body = json.loads(reply["body"])
    assert reply["statusCode"] == 400 and body["error"]["code"] == -32600
    assert len(reply["body"]) < 300


def test_load_failure_reply_keeps_the_request_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(tmp_path, monkeypatch, "raise ImportError('no such module: nope')\n")
    reply = runtime.handle(_http(json.dumps({"jsonrpc": "2.0", "id": 42, "method": "ping"})))
    assert json.loads(reply["body"])["id"] == 42


@pytest.mark.parametrize(
    "offered, answered", [("2026-07-28", "2025-11-25"), ("2025-06-18", "2025-06-18")]
)
def test_initialize_is_negotiated_whatever_participant_json_says(
    runtime: Any, offered: str, answered: str
) -> None:
    """MCP lifecycle, version negotiation: a server that cannot speak the offered
    version answers initialize with one it supports; it does not refuse the method.
    Before, a 2026-07-28 participant turned initialize into -32601 Method not found."""
    reply, _ = _ask(
        runtime,
        "initialize",
        {
            "protocolVersion": offered,
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
        participantJson=json.dumps({"protocolVersion": "2026-07-28"}),
    )
    assert reply["result"]["protocolVersion"] == answered, reply


def _capture_http(runtime: Any, monkeypatch: pytest.MonkeyPatch, reply_headers: dict) -> dict:
    from boot.engine import HttpResponse

    seen: dict[str, Any] = {}

    def http(
        method: str, path: str, headers: dict, body: bytes, query: str, budget: Any = None
    ) -> HttpResponse:
        seen.update(method=method, path=path, headers=headers, query=query)
        return HttpResponse(200, {"content-type": "application/json", **reply_headers}, b"{}")

    monkeypatch.setattr(runtime.engine, "http", http)
    return seen


def test_api_gateway_v1_query_is_re_encoded(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """REST API (payload 1.0) gives decoded parameters: `a b&c` and repeated keys must
    reach the app encoded, as Mangum rebuilds them. Before: `q=a b&c&tag=y`, unencoded,
    and multiValueQueryStringParameters ignored."""
    seen = _capture_http(runtime, monkeypatch, {})
    runtime.handle(
        {
            "httpMethod": "POST",
            "path": "/mcp",
            "headers": {"content-type": "application/json"},
            "queryStringParameters": {"q": "a b&c", "tag": "y"},
            "multiValueQueryStringParameters": {"q": ["a b&c"], "tag": ["x", "y"]},
            "body": "{}",
        }
    )
    assert seen["query"] == "q=a+b%26c&tag=x&tag=y"


def test_function_url_cookies_in_and_out(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Payload 2.0 carries request cookies in `cookies` (not in headers) and expects
    Set-Cookie back in `cookies`. Before, both were dropped."""
    seen = _capture_http(runtime, monkeypatch, {"set-cookie": "session=1; Path=/"})
    reply = runtime.handle(
        {
            "version": "2.0",
            "rawPath": "/mcp",
            "rawQueryString": "x=1",
            "cookies": ["a=1", "b=2"],
            "headers": {"content-type": "application/json"},
            "requestContext": {"http": {"method": "POST"}},
            "body": "{}",
        }
    )
    assert seen["headers"]["cookie"] == "a=1; b=2"
    assert seen["query"] == "x=1"
    assert reply["cookies"] == ["session=1; Path=/"]
    assert "set-cookie" not in {k.lower() for k in reply["headers"]}


SLOW = """import time
from boot import metorial

server = metorial.create_server("slow")


@server.list_tools()
def list_tools():
    return [{"name": "nap", "inputSchema": {"type": "object"}}]


@server.call_tool()
def call_tool(name, arguments):
    time.sleep(30)
    return "woke up"
"""


def test_a_call_that_outlives_the_function_timeout_is_a_clear_error(
    cli: Any, tmp_path: Path
) -> None:
    """The runtime reads the context's remaining time: a tools/call still running when
    the function's timeout (2 s here) is near answers a JSON-RPC error naming it, with
    the request's id, before Lambda would kill the process. Before, the call ran on
    until the worker was killed."""
    import time

    from .helpers import python_project

    project = python_project(
        tmp_path / "slow",
        name="slow",
        server=SLOW,
        extra='[targets.prod]\nkind = "lambda"\nregion = "eu-west-1"\nfunction = "slow"\n'
        'bucket = "artifacts-bucket"\ntimeout = 2\n',
    )
    message = {"jsonrpc": "2.0", "id": 41, "method": "tools/call"}
    message["params"] = {"name": "nap", "arguments": {}}
    event = {"action": "mcp.request", "messages": [json.dumps(message)]}
    started = time.monotonic()
    result = cli("-C", str(project), "invoke", "--event", "-", input=json.dumps(event))
    assert result.exit_code == 0, result.output
    answer = json.loads(json.loads(result.stdout)["responses"][0])
    assert answer["id"] == 41
    assert answer["error"]["code"] == -32001
    assert "timeout" in answer["error"]["message"]
    assert time.monotonic() - started < 25  # answered at the budget, not after the nap
