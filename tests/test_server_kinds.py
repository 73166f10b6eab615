"""Any Python MCP server, unmodified: the SDK's MCPServer, fastmcp, and a PyPI stdio
command, end to end through `serve` (the official mcp client) and `invoke`; and the
failures a new user met before (each test here failed on the code before)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client

from .conftest import EXAMPLES, ROOT
from .helpers import python_project, served_url, start_serve


@pytest.fixture(autouse=True)
def _load_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMCP_BUILD_LOAD_CHECK", "1")


# example -> (a tool call and what its text holds, a resource and its text, a prompt)
SCENARIOS = {
    "sdk-server": {
        "tools": {"convert_length", "celsius_to_fahrenheit"},
        "call": ("celsius_to_fahrenheit", {"celsius": 100}, "212"),
        "resource": ("units://lengths", "km"),
        "prompt": ("explain", {"unit": "ft"}, "ft"),
    },
    "fastmcp-server": {
        "tools": {"add_note", "count_words"},
        "call": ("count_words", {"text": "one two three"}, "3"),
        "resource": ("notes://welcome", "memory"),
        "prompt": ("summarise", {"title": "x"}, "titled x"),
    },
    "stdio-time": {
        "tools": {"get_current_time", "convert_time"},
        "call": ("get_current_time", {"timezone": "Asia/Tokyo"}, "Asia/Tokyo"),
        "resource": None,  # mcp-server-time has tools only
        "prompt": None,
    },
}


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
        "PMCP_BUILD_CACHE_DIR": str(cache),
    }


@pytest.fixture(scope="module")
def served(shared_cache: Path) -> Iterator[dict[str, str]]:
    """`pmcp-build serve` for each example, started side by side (the session's cache,
    so the invoke tests reuse these builds)."""
    cache = shared_cache
    procs = {name: start_serve(EXAMPLES / name, _env(cache)) for name in SCENARIOS}
    urls = {}
    try:
        for name, proc in procs.items():
            urls[name] = served_url(proc, f"serve {name}")
        yield urls
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)


@pytest.mark.parametrize("example", sorted(SCENARIOS))
def test_official_client_through_serve(served: dict[str, str], example: str) -> None:
    scenario = SCENARIOS[example]

    async def run(mode: str) -> None:
        async with Client(served[example], mode=mode) as client:
            tools = await client.list_tools()
            assert {t.name for t in tools.tools} == scenario["tools"]
            name, args, expected = scenario["call"]
            result = await client.call_tool(name, args)
            assert not result.is_error
            assert expected in result.content[0].text
            if scenario["resource"]:
                uri, text = scenario["resource"]
                read = await client.read_resource(uri)
                assert text in read.contents[0].text
            if scenario["prompt"]:
                prompt_name, prompt_args, text = scenario["prompt"]
                prompt = await client.get_prompt(prompt_name, prompt_args)
                assert text in prompt.messages[0].content.text

    for mode in ("legacy", "auto"):  # the handshake era and the per-request era
        anyio.run(run, mode)


def _invoke(cli, project: Path, event: dict, code: int = 0) -> dict:
    result = cli("-C", str(project), "invoke", "--event", "-", input=json.dumps(event))
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("example", sorted(SCENARIOS))
def test_discover_and_a_lone_request_through_invoke(cli, example: str) -> None:
    scenario = SCENARIOS[example]
    project = EXAMPLES / example
    discovery = _invoke(cli, project, {"action": "discover"})["discovery"]
    assert {t["name"] for t in discovery["tools"]} == scenario["tools"]
    assert "tools" in discovery["capabilities"]
    name, args, expected = scenario["call"]
    reply = _invoke(
        cli,
        project,
        {
            "action": "mcp.request",
            "messages": [
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 7,
                        "method": "tools/call",
                        "params": {"name": name, "arguments": args},
                    }
                )
            ],
        },
    )
    assert reply["success"] is True
    response = json.loads(reply["responses"][0])
    assert response["id"] == 7
    assert expected in response["result"]["content"][0]["text"]


def test_build_reports_the_server_kind_and_counts(cli) -> None:
    built = cli("-C", str(EXAMPLES / "sdk-server"), "build")
    assert built.exit_code == 0, built.output
    line = "server: mcp MCPServer 'unit-converter': 2 tools, 1 resource, 1 prompt"
    assert line in built.stdout
    planned = cli("-C", str(EXAMPLES / "sdk-server"), "plan", "--target", "dev")
    assert planned.exit_code == 0, planned.output
    assert line in planned.stdout
    data = json.loads(cli("-C", str(EXAMPLES / "stdio-time"), "build", "--json").stdout)
    assert data["server"]["kind"] == "stdio command" and data["server"]["tools"] == 2
    paths = {f["path"] for f in data["layout"]["files"]}
    assert any(p.startswith("__command__/mcp_server_time/") for p in paths)


# -- what failed before ----------------------------------------------------------------

NO_SERVER = "def helper():\n    return 1\n"

ARGPARSE_AT_IMPORT = """import argparse
from mcp.server.mcpserver import MCPServer

parser = argparse.ArgumentParser()
parser.add_argument("--debug", action="store_true")
options = parser.parse_args()
app = MCPServer("argv")


@app.tool()
def ping() -> str:
    return "pong"
"""

STDIO_AT_IMPORT = """from mcp.server.mcpserver import MCPServer

app = MCPServer("eager")


@app.tool()
def ping() -> str:
    return "pong"


app.run()  # not under `if __name__ == "__main__":`
"""

TWO_SERVERS = """from mcp.server.mcpserver import MCPServer

public = MCPServer("public")
admin = MCPServer("admin")
"""

LOWLEVEL = """import mcp_types as types
from mcp.server import Server


async def list_tools(ctx, params):
    return types.ListToolsResult(tools=[types.Tool(name="low", input_schema={"type": "object"})])


server = Server("low", on_list_tools=list_tools)
"""


def _project(tmp_path: Path, server: str, extra: str = "") -> Path:
    return python_project(tmp_path / "p", server=server, extra=extra)


def test_a_module_without_a_server_fails_build_and_invoke(cli, tmp_path: Path) -> None:
    project = _project(tmp_path, NO_SERVER)
    built = cli("-C", str(project), "build")
    assert built.exit_code == 1
    assert "failed to load" in built.stderr and "defines no MCP server" in built.stderr
    assert "Traceback" not in built.stderr.splitlines()[0]
    planned = cli("-C", str(project), "plan")
    assert planned.exit_code == 1 and "defines no MCP server" in planned.stderr
    reply = _invoke(cli, project, {"action": "discover"}, code=1)
    assert reply["success"] is False


def test_apply_never_deploys_a_server_that_cannot_load(cli, project: Path) -> None:
    """apply loads the server as plan does (before: only plan did, and `apply
    --auto-approve` shipped a package that could not start): exit 1, nothing remote."""
    import boto3

    from .conftest import BUCKET

    (project / "server.py").write_text(NO_SERVER)
    applied = cli("-C", str(project), "apply", "-t", "prod", "--auto-approve")
    assert applied.exit_code == 1, applied.output
    assert "failed to load" in applied.stderr and "defines no MCP server" in applied.stderr
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=BUCKET)
    assert boto3.client("lambda").list_functions()["Functions"] == []


def test_argparse_at_import_sees_lambdas_argv(cli, tmp_path: Path) -> None:
    project = _project(tmp_path, ARGPARSE_AT_IMPORT)
    tools = _invoke(cli, project, {"action": "discover"})["discovery"]["tools"]
    assert [t["name"] for t in tools] == ["ping"]


def test_a_stdio_loop_at_import_ends_at_once_with_a_note(cli, tmp_path: Path) -> None:
    project = _project(tmp_path, STDIO_AT_IMPORT)
    built = cli("-C", str(project), "build")
    assert built.exit_code == 0, built.output
    assert "read stdin while being imported" in built.stderr
    assert "1 tool" in built.stdout


def test_two_servers_ask_for_the_explicit_form(cli, tmp_path: Path) -> None:
    project = _project(tmp_path, TWO_SERVERS)
    built = cli("-C", str(project), "build")
    assert built.exit_code == 1
    assert 'entrypoint = "server.py:admin"' in built.stderr
    manifest = project / "metorial.toml"
    manifest.write_text(
        manifest.read_text().replace("\n[targets", 'entrypoint = "server.py:public"\n\n[targets', 1)
    )
    named = _invoke(cli, project, {"action": "discover"})["discovery"]
    assert named["implementation"]["name"] == "public"


def test_a_lowlevel_server_is_served(cli, tmp_path: Path) -> None:
    project = _project(tmp_path, LOWLEVEL)
    reply = _invoke(cli, project, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert json.loads(reply["responses"][0])["result"]["tools"][0]["name"] == "low"


def test_an_mcp_1_pin_says_what_to_change(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p", requirements="mcp>=1.2,<2\n")
    built = cli("-C", str(project), "build")
    assert built.exit_code == 1
    assert "mcp 2" in built.stderr and "command" in built.stderr


# -- the stdio bridge: a crash restarts the command, a hang times out ---------------------

FLAKY_STDIO = r"""import json, os, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg["method"]
    if method == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"],
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "flaky", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "crash", "inputSchema": {"type": "object"}},
                            {"name": "hang", "inputSchema": {"type": "object"}}]}
    elif msg["params"]["name"] == "crash":
        print("about to crash", file=sys.stderr, flush=True)
        os._exit(3)
    else:
        time.sleep(5)
        continue
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"""


def test_stdio_bridge_restarts_after_a_crash_and_times_out(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p", extra='command = ["python", "flaky.py"]\n')
    (project / "flaky.py").write_text(FLAKY_STDIO)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "crash"}}
    hang = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "hang"}}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    reply = cli(
        "-C",
        str(project),
        "invoke",
        "--event",
        "-",
        "--env-passthrough",  # invoke gives the server none of ours unless told to
        "METORIAL_STDIO_TIMEOUT",
        input=json.dumps({"action": "mcp.batch", "messages": [call, listing, hang]}),
        env={"METORIAL_STDIO_TIMEOUT": "1"},
    )
    assert reply.exit_code == 0, reply.output
    crashed, listed, hung = (json.loads(r) for r in json.loads(reply.stdout)["responses"])
    assert "exited (code 3)" in crashed["error"]["message"]
    assert "about to crash" in crashed["error"]["message"]
    assert [t["name"] for t in listed["result"]["tools"]] == ["crash", "hang"]  # restarted
    assert "did not answer tools/call within 1 s" in hung["error"]["message"]


def test_init_detects_an_instance_and_a_stdio_package(cli, tmp_path: Path) -> None:
    sdk = tmp_path / "sdk"
    sdk.mkdir()
    (sdk / "server.py").write_text(TWO_SERVERS.replace('admin = MCPServer("admin")\n', ""))
    assert cli("-C", str(sdk), "init").exit_code == 0
    assert 'entrypoint = "server.py:public"' in (sdk / "metorial.toml").read_text()
    stdio = tmp_path / "stdio"
    stdio.mkdir()
    (stdio / "requirements.txt").write_text("mcp-server-time==2026.10.19\n")
    assert cli("-C", str(stdio), "init").exit_code == 0
    assert 'command = ["mcp-server-time"]' in (stdio / "metorial.toml").read_text()
    assert cli("-C", str(stdio), "validate").exit_code == 0


def test_serve_prints_why_the_server_failed_to_load(tmp_path: Path, shared_cache: Path) -> None:
    project = _project(tmp_path, NO_SERVER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_env(shared_cache), "PMCP_BUILD_LOAD_CHECK": "0"},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert "serving" in proc.stdout.readline()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "the server failed to load" in stderr and "defines no MCP server" in stderr


def test_a_command_that_is_not_there_is_named_at_build(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p", extra='command = ["mcp-server-nope"]\n')
    built = cli("-C", str(project), "build")
    assert built.exit_code == 1
    assert "'mcp-server-nope' is not a console script of the requirements" in built.stderr
    missing = python_project(tmp_path / "q", extra='command = ["python", "gone.py"]\n')
    assert "'gone.py' is not in the source" in cli("-C", str(missing), "build").stderr
    both = python_project(
        tmp_path / "r", extra='entrypoint = "server.py"\ncommand = ["python", "server.py"]\n'
    )
    result = cli("-C", str(both), "validate")
    assert result.exit_code == 1 and "not both" in result.stderr
