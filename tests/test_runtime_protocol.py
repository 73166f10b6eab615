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
        method: str,
        path: str,
        headers: dict,
        body: bytes,
        query: str,
        budget: Any = None,
        domain: Any = None,
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


# -- issue 23: what a Function URL carries, on the platform path and the Lambda path ---

CHATTY = """from mcp.server.mcpserver import Context, MCPServer

app = MCPServer("chatty")


@app.tool()
async def chatty(ctx: Context) -> str:
    await ctx.info("working on it")
    await ctx.warning("almost out of coffee")
    await ctx.report_progress(1, 2, "half way")
    return "done"


@app.tool()
def size(text: str) -> int:
    return len(text)


@app.tool()
def big(megabytes: float) -> str:
    return "x" * int(megabytes * 1024 * 1024)
"""


@pytest.fixture
def chatty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from boot.bootstrap import Runtime

    (tmp_path / "server.py").write_text(CHATTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return Runtime("server.py:app", root=str(tmp_path))


def _call(runtime: Any, name: str, arguments: dict[str, Any], id_: int = 9) -> dict[str, Any]:
    message = {"jsonrpc": "2.0", "id": id_, "method": "tools/call"}
    message["params"] = {"name": name, "arguments": arguments, "_meta": {"progressToken": "p1"}}
    reply: dict[str, Any] = runtime.handle({"action": "mcp.request", "messages": [message]})
    return reply


def test_a_requests_notifications_go_into_the_platform_logs(chatty: Any) -> None:
    """ctx.info() / ctx.warning() / progress of an in-process server are in `logs`, and
    the response is the result alone. Before, they were dropped (JSON response mode)."""
    reply = _call(chatty, "chatty", {})
    assert reply["success"] is True
    assert [json.loads(r)["result"]["content"][0]["text"] for r in reply["responses"]] == ["done"]
    logs = {entry["type"]: entry["lines"] for entry in reply["logs"]}
    assert "[info] working on it" in logs["info"]
    assert "[progress] 1/2 half way" in logs["info"]
    assert "[warning] almost out of coffee" in logs["error"]


def test_a_message_up_to_six_megabytes_is_taken_and_a_larger_one_is_an_error(
    chatty: Any,
) -> None:
    """Lambda takes 6 MB: a 4.5 MB message answered `{"success": true, "responses":
    ["Request body too large"]}` (the SDK's 4 MiB cap, no id, not JSON-RPC)."""
    from boot.transport import REQUEST_LIMIT

    text = "y" * (4_500_000)
    reply = _call(chatty, "size", {"text": text})
    assert reply["success"] is True, str(reply)[:300]
    assert json.loads(reply["responses"][0])["result"]["structuredContent"] == {"result": 4_500_000}
    reply = _call(chatty, "size", {"text": "y" * REQUEST_LIMIT}, id_=12)
    assert reply["success"] is False
    error = json.loads(reply["responses"][0])
    assert error["id"] == 12
    assert error["error"]["code"] == -32600
    assert str(REQUEST_LIMIT) in error["error"]["message"]


def test_a_response_over_lambdas_limit_is_replaced_by_an_error_naming_it(
    chatty: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lambda refuses a response over 6,291,556 bytes; a 7 MB result was returned whole,
    so a local run succeeded where the deployed function fails."""
    reply = _call(chatty, "big", {"megabytes": 7}, id_=13)
    assert reply["success"] is False
    error = json.loads(reply["responses"][0])
    assert error["id"] == 13 and "6291556" in error["error"]["message"]
    assert "6291556" in capsys.readouterr().err
    assert len(json.dumps(reply)) < 10_000
    assert _call(chatty, "big", {"megabytes": 1})["success"] is True


def _url_event(body: str, method: str = "POST", **headers: str) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": "/mcp",
        "headers": {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2025-11-25",
            "host": "abc.lambda-url.eu-west-1.on.aws",
            **headers,
        },
        "body": body,
        "requestContext": {
            "domainName": "abc.lambda-url.eu-west-1.on.aws",
            "http": {"method": method},
        },
        "isBase64Encoded": False,
    }


LIST = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})


def test_the_function_url_refuses_a_foreign_origin(
    chatty: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Lambda an Origin other than the Function URL's own (and METORIAL_ALLOWED_ORIGINS)
    is refused 403 as the SDK refuses it; a Host other than the URL's is 421. Before,
    both answered 200."""
    own = "https://abc.lambda-url.eu-west-1.on.aws"
    assert chatty.handle(_url_event(LIST))["statusCode"] == 200  # no Origin: not a browser
    assert chatty.handle(_url_event(LIST, origin=own))["statusCode"] == 200
    evil = chatty.handle(_url_event(LIST, origin="http://evil.example.com"))
    assert (evil["statusCode"], evil["body"]) == (403, "Invalid Origin header")
    assert chatty.handle(_url_event(LIST, host="evil.example.com"))["statusCode"] == 421
    monkeypatch.setenv("METORIAL_ALLOWED_ORIGINS", "https://app.example.com, http://localhost:*")
    for origin in ("https://app.example.com", "http://localhost:5173"):
        assert chatty.handle(_url_event(LIST, origin=origin))["statusCode"] == 200, origin
    assert chatty.handle(_url_event(LIST, origin="https://other.example"))["statusCode"] == 403
    monkeypatch.setenv("METORIAL_ALLOWED_ORIGINS", "*")  # any origin, on purpose
    assert chatty.handle(_url_event(LIST, origin="https://other.example"))["statusCode"] == 200
    assert chatty.handle(_url_event(LIST, host="evil.example.com"))["statusCode"] == 421


def test_the_function_url_answers_notifications_in_one_sse_body(chatty: Any) -> None:
    """With text/event-stream accepted, the request's logging and progress notifications
    and then its result come in one buffered SSE body; JSON without it. Before: JSON,
    the notifications lost."""
    from boot.transport import sse_messages

    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call"}
    call["params"] = {"name": "chatty", "arguments": {}, "_meta": {"progressToken": "p1"}}
    reply = chatty.handle(_url_event(json.dumps(call)))
    assert reply["headers"]["content-type"].startswith("text/event-stream")
    methods = [m.get("method", "result") for m in sse_messages(reply["body"].encode())]
    assert methods == [
        "notifications/message",
        "notifications/message",
        "notifications/progress",
        "result",
    ]
    plain = chatty.handle(_url_event(json.dumps(call), accept="application/json"))
    assert plain["headers"]["content-type"] == "application/json"
    assert json.loads(plain["body"])["result"]["content"][0]["text"] == "done"


def test_the_function_url_limits(chatty: Any) -> None:
    """5 MB bodies are taken (the SDK's 4 MiB cap answered text/plain 413), a response
    over 6,291,556 bytes is a JSON-RPC error with the id, PATCH a JSON-RPC 405."""
    call = {"jsonrpc": "2.0", "id": 6, "method": "tools/call"}
    call["params"] = {"name": "size", "arguments": {"text": "z" * 5_000_000}}
    taken = chatty.handle(_url_event(json.dumps(call)))
    assert taken["statusCode"] == 200, taken["body"][:200]
    call["params"] = {"name": "big", "arguments": {"megabytes": 7}}
    refused = chatty.handle(_url_event(json.dumps(call)))
    error = json.loads(refused["body"])
    assert (error["id"], error["error"]["code"]) == (6, -32603)
    assert "6291556" in error["error"]["message"]
    patched = chatty.handle(_url_event(LIST, method="PATCH"))
    assert patched["statusCode"] == 405
    assert json.loads(patched["body"])["error"]["code"] == -32000


# -- issue 23: a stdio command that fails at initialize is started again --------------

COLD_STDIO = r"""import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
marker = os.path.join(here, "started-once")
if not os.path.exists(marker):
    open(marker, "w").close()
    print("cold start: the database is not up yet", file=sys.stderr, flush=True)
    if os.environ.get("COLD_HOW") == "hang":
        time.sleep(60)
    sys.exit(3)
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"],
                  "capabilities": {"tools": {}, "resources": {}},
                  "serverInfo": {"name": "cold", "version": "1"}}
    elif msg["method"] == "tools/list":
        result = {"tools": [{"name": "read_query", "inputSchema": {"type": "object"}}]}
    elif msg["method"] == "resources/list":
        result = {"resources": [{"uri": "memo://insights", "name": "insights"}]}
    else:  # as mcp<2 servers such as mcp-server-sqlite: no resources/templates/list
        error = {"code": -32601, "message": "Method not found"}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": error}) + "\n")
        sys.stdout.flush()
        continue
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"""


@pytest.mark.parametrize("how", ["exits", "hangs", "ready"])
def test_a_stdio_command_that_fails_at_initialize_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], how: str
) -> None:
    """A command that exits or never answers `initialize` (a slow cold start) left every
    later request at "server failed to load" for the container's life. Now the failure
    is logged with its last stderr lines and the command starts again on a request after
    the back-off (1 s, then 2, 4... 60). Its discovery takes `resources/templates/list`
    answering "method not found" as no templates (it failed discovery before)."""
    from boot.bootstrap import Runtime

    monkeypatch.setenv("METORIAL_STDIO_TIMEOUT", "1")
    monkeypatch.setenv("COLD_HOW", "hang" if how == "hangs" else "exit")
    (tmp_path / "cold.py").write_text(COLD_STDIO)
    if how == "ready":  # no cold start: discovery alone
        (tmp_path / "started-once").touch()
    command = {"kind": "file", "target": "cold.py", "argv0": "cold.py", "args": []}
    runtime = Runtime("cold.py", root=str(tmp_path), command=command)
    if how != "ready":
        assert runtime.load_error is not None
        assert "the database is not up yet" in capfd.readouterr().err
        first = runtime.handle({"action": "discover"})  # within the back-off: not yet
        assert first["success"] is False and first["error"]["code"] == "server_load_failed"
        import time

        time.sleep(1.1)
    found = runtime.handle({"action": "discover"})
    assert found["success"] is True, found
    discovery = found["discovery"]
    assert [t["name"] for t in discovery["tools"]] == ["read_query"]
    assert discovery["resourceTemplates"] == []
    assert [r["uri"] for r in discovery["resources"]] == ["memo://insights"]
    runtime.close()


def test_discovery_still_fails_on_a_real_error() -> None:
    """Only "method not found" means none: any other error of a list still fails."""
    from boot.server_kinds import RequestError, discover_via_requests

    def request(method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "initialize":
            return {"capabilities": {"tools": {}, "resources": {}}, "serverInfo": {"name": "x"}}
        if method == "resources/templates/list":
            raise RequestError(-32601, "resources/templates/list failed: Method not found")
        if method == "resources/list":
            raise RequestError(-32603, "resources/list failed: boom")
        return {"tools": []}

    with pytest.raises(RequestError, match="boom"):
        discover_via_requests(request)
