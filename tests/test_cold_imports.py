"""What a cold start imports (issue 26, item 6): the built package's `index` in a fresh,
isolated interpreter (`python -I -S`, as Lambda runs it), looking at sys.modules and at
the order of imports and process starts (an audit hook). Each test failed on the
runtime before: index.py imported every runtime module, the engine and so the SDK's
whole HTTP stack included, before the author's module or a stdio command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT
from .helpers import python_project

# The SDK's server machinery and HTTP stack (what the engine imports).
HTTP_STACK = (
    "mcp",
    "mcp.server.lowlevel.server",
    "mcp.server.streamable_http_manager",
    "starlette",
    "sse_starlette",
    "uvicorn",
)

SERVER = """from boot import metorial
import boot.metorial
import __metorial__.metorial

assert boot.metorial is __metorial__.metorial is metorial  # one module, one registry
try:
    import boot.no_such_module
except ModuleNotFoundError as exc:
    assert exc.name == "boot.no_such_module", exc.name

server = metorial.create_server({"name": "cold", "version": "3.1.0"})


@server.list_tools()
async def list_tools():
    return [{"name": "echo", "inputSchema": {"type": "object"}}]


@server.call_tool()
def call_tool(name, arguments):
    return {"echo": arguments}


metorial.set_oauth_handler(lambda data: "https://auth.example/", lambda data: {})
"""

# Runs in the fresh interpreter: import index, answer the events, then say which
# modules were loaded after each, and when the first process start and import were.
CHILD = r"""
import json, sys, time
seen = []
def hook(name, args):
    if name == "subprocess.Popen":
        seen.append("popen")
    elif name == "import":
        seen.append(args[0])
sys.addaudithook(hook)
sys.path.insert(0, sys.argv[1])
import index
report = {"init": sorted(sys.modules), "replies": [], "after": []}
for event in json.loads(sys.argv[2]):
    report["replies"].append(index.handler(event, None))
    report["after"].append(sorted(sys.modules))
report["order"] = seen
index._runtime.close()
print(json.dumps(report))
"""

STDIO = r"""import json, sys

for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"],
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "plain", "version": "1"}}
    else:
        result = {"tools": [{"name": "noop", "inputSchema": {"type": "object"}}]}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"""


def _task_root(project: Path, into: Path) -> Path:
    env = {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
        "PMCP_BUILD_LOAD_CHECK": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(json.loads(done.stdout)["package"]["path"]) as zf:
        zf.extractall(into)
    return into


def _cold(task: Path, events: list[dict], **env: str) -> dict:
    """A fresh, isolated interpreter importing the package and handling `events` (it
    writes bytecode into the task root, so the next one does not compile the SDK again)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AWS_"))}
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", CHILD, str(task), json.dumps(events)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=task,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict = json.loads(done.stdout.splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def metorial_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cold")
    project = python_project(root / "src", name="cold", server=SERVER)
    return _task_root(project, root / "task")


def test_platform_events_never_import_the_http_stack(metorial_task: Path) -> None:
    """discover, oauth and callbacks of a metorial server need mcp_types at most; the
    first mcp.request loads the engine then, and answers as before."""
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    report = _cold(
        metorial_task,
        [
            {"action": "discover"},
            {"action": "oauth", "oauthAction": "get"},
            {"action": "callbacks", "callbackAction": "get"},
            {"action": "mcp.request", "messages": [listing]},
        ],
    )
    discovered, oauth, callbacks, listed = report["replies"]
    assert discovered["success"] is True, discovered
    discovery = discovered["discovery"]
    assert [t["name"] for t in discovery["tools"]] == ["echo"]
    assert discovery["capabilities"] == {"tools": {}}
    assert discovery["implementation"] == {"name": "cold", "version": "3.1.0"}
    assert oauth["oauth"] == {"enabled": True, "hasForm": False}
    assert callbacks["callbacks"] == {"enabled": False}
    for modules in [report["init"], *report["after"][:3]]:
        assert not set(HTTP_STACK) & set(modules), set(HTTP_STACK) & set(modules)
    assert "mcp_types" not in report["init"]  # the author's module did not ask for it
    assert json.loads(listed["responses"][0])["result"]["tools"][0]["name"] == "echo"
    assert set(HTTP_STACK) <= set(report["after"][3])  # the engine, on demand


def test_snapstart_init_imports_the_engine_into_the_snapshot(metorial_task: Path) -> None:
    """Where init runs before any request (SnapStart, provisioned concurrency), the
    engine's imports happen there, off a restored environment's first request."""
    for kind in ("snap-start", "provisioned-concurrency"):
        report = _cold(metorial_task, [], AWS_LAMBDA_INITIALIZATION_TYPE=kind)
        assert set(HTTP_STACK) <= set(report["init"]), kind
    on_demand = _cold(metorial_task, [], AWS_LAMBDA_INITIALIZATION_TYPE="on-demand")
    assert not set(HTTP_STACK) & set(on_demand["init"])


def test_a_stdio_command_starts_before_the_runtime_imports_the_sdk(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The child boots while the runtime imports: its process starts before the first
    import of mcp_types, pydantic or mcp (README: the two imports overlap)."""
    root = tmp_path_factory.mktemp("cold-stdio")
    project = python_project(root / "src", name="plain", extra='command = ["python", "plain.py"]\n')
    (project / "plain.py").write_text(STDIO)
    task = _task_root(project, root / "task")
    report = _cold(task, [{"action": "discover"}])
    assert [t["name"] for t in report["replies"][0]["discovery"]["tools"]] == ["noop"]
    order = report["order"]
    heavy = next(i for i, name in enumerate(order) if name.split(".")[0] in _SDK_ROOTS)
    assert "popen" in order[:heavy], [n for n in order[:heavy] if n.startswith("__metorial__")]


_SDK_ROOTS = frozenset({"mcp", "mcp_types", "pydantic", "pydantic_core", "starlette"})


def test_discover_advertises_what_the_sdk_server_would() -> None:
    """discover's capabilities come from the handlers without building the SDK server;
    for every combination of list handlers they are the families that server announces."""
    import itertools

    from boot import results
    from boot.engine import build_sdk_server
    from boot.metorial import MetorialServer

    kinds = [*results.LISTINGS, "call_tool", "read_resource", "get_prompt"]
    for n in range(len(kinds) + 1):
        for chosen in itertools.combinations(kinds, n):
            author = MetorialServer("caps", handlers={k: (lambda *a: []) for k in chosen})
            sdk = build_sdk_server(author).get_capabilities().model_dump(exclude_none=True)
            expected = {k: {} for k in ("tools", "resources", "prompts") if k in sdk}
            assert results.capabilities(author.handlers) == expected, chosen
