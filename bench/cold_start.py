"""Cold start of the packaged handler against a hand-written handler on the mcp SDK.

    python bench/cold_start.py [--runs 7]

One cold start is a fresh, isolated interpreter (`python -I -S -B`, as Lambda runs the
handler; /var/task is read-only there, so Python never writes bytecode) importing the
handler module and answering its first event. Two events: the platform's `discover`
(issue 26's goal: <= 0.8x the floor) and one `mcp.request` carrying `tools/list`.
The package is examples/python-server built twice: without bytecode (every import
compiles) and with `bytecode = true` (unchecked-hash .pyc shipped).

The floor is what an author would write by hand on the SDK, from the same task root
(same site-packages): import the SDK's low-level Server, register the example's
tools, answer `discover` (its tools and the capabilities the Server announces) or
the `tools/list` request. Each packaged run is paired with a floor run, the order
alternating from pair to pair; a ratio is taken per pair and the median reported
with its range, with the machine's load before and after.

The last lines split the floor's import: how much of it is `mcp/__init__` (which
imports the SDK's whole client, and which any `mcp.x` import runs first) beyond what
the server modules themselves import.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import build_example, load

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.8  # issue 26, item 6: import + first discover, .pyc shipped

LISTING = '{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'
EVENTS = {
    "discover": {"action": "discover"},
    "tools/list": {
        "action": "mcp.request",
        "messages": [LISTING],
        "participantJson": '{"protocolVersion": "2025-06-18"}',
    },
}

RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
import {module} as m
reply = m.handler(json.loads(sys.argv[2]), None)
assert reply.get("success"), reply
assert "discovery" in reply or "tools" in reply["responses"][0], reply
"""

FLOOR = """
import asyncio, json
import mcp_types as types
from mcp.server.lowlevel.server import Server

TOOLS = [types.Tool(name="word_stats", input_schema={"type": "object"}),
         types.Tool(name="human_size", input_schema={"type": "object"})]


async def list_tools(ctx, params):
    return types.ListToolsResult(tools=TOOLS)

server = Server("floor", on_list_tools=list_tools)


def dump(model):
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def handler(event, context):
    result = asyncio.run(list_tools(None, None))
    if event["action"] == "discover":
        capabilities = dump(server.get_capabilities())
        return {"success": True, "discovery": {
            "tools": [dump(t) for t in result.tools], "capabilities": capabilities,
            "implementation": {"name": server.name, "version": server.version}}}
    message = json.loads(event["messages"][0])
    body = {"jsonrpc": "2.0", "id": message["id"], "result": dump(result)}
    return {"success": True, "responses": [json.dumps(body)]}
"""

# The floor's imports, and the same with `mcp/__init__` skipped (a bare package
# object in its place), to say what the SDK's client costs a server that never uses it.
SPLIT = """
import sys, time, types
if sys.argv[2] == "bare":
    bare = types.ModuleType("mcp")
    bare.__path__ = [sys.argv[1] + "/mcp"]
    sys.modules["mcp"] = bare
sys.path.insert(0, sys.argv[1])
start = time.perf_counter()
import mcp_types
middle = time.perf_counter()
import mcp.server.lowlevel.server
import mcp.server.streamable_http_manager
print(middle - start, time.perf_counter() - middle)
"""


def build(tmp: Path, bytecode: bool) -> Path:
    zip_path = build_example("python-server", tmp / f"src-{bytecode}", tmp, bytecode)
    task = tmp / f"task-{bytecode}"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(task)
    (task / "floor.py").write_text(FLOOR)
    if bytecode:  # the floor ships its .pyc too (the SDK's come with the package)
        subprocess.run([sys.executable, "-c", _COMPILE_FLOOR, str(task / "floor.py")], check=True)
    return task


_COMPILE_FLOOR = (
    "import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True, "
    "invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)"
)


def once(task: Path, module: str, event: dict[str, object]) -> float:
    env = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}
    code = RUN.format(module=module)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", code, str(task), json.dumps(event)],
        check=True,
        env=env,
        capture_output=True,
    )
    return time.perf_counter() - start


def pairs(task: Path, event: dict[str, object], runs: int) -> list[tuple[float, float]]:
    """(packaged, floor) per pair, the order alternating so drift hits both sides."""
    once(task, "index", event)  # the page cache, once per side
    once(task, "floor", event)
    measured = []
    for i in range(runs):
        if i % 2:
            floor = once(task, "floor", event)
            packaged = once(task, "index", event)
        else:
            packaged = once(task, "index", event)
            floor = once(task, "floor", event)
        measured.append((packaged, floor))
    return measured


def client_cost(task: Path, runs: int) -> tuple[float, float]:
    """Median seconds of the server modules' import on top of mcp_types, with and
    without running `mcp/__init__` (interleaved)."""
    with_init, bare = [], []
    for _ in range(runs):
        for mode, into in (("init", with_init), ("bare", bare)):
            out = subprocess.run(
                [sys.executable, "-I", "-S", "-B", "-c", SPLIT, str(task), mode],
                check=True,
                capture_output=True,
                text=True,
                env={"PATH": os.environ["PATH"]},
            ).stdout.split()
            into.append(float(out[1]))
    return statistics.median(with_init), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    print(f"before: {load()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tasks = {"no bytecode": build(tmp, False), ".pyc shipped": build(tmp, True)}
        for label, task in tasks.items():
            for name, event in EVENTS.items():
                rows.append((label, name, pairs(task, event, runs)))
        split = client_cost(tasks[".pyc shipped"], max(runs // 2, 3))
    print(f"after:  {load()}")
    print(
        f"{'cold start: import + first event':<36} {'packaged s':>10} {'floor s':>8} "
        f"{'ratio':>6} {'range':>12}"
    )
    goal = None
    for label, name, measured in rows:
        ratios = [p / f for p, f in measured]
        ratio = statistics.median(ratios)
        print(
            f"{label + ', ' + name:<36} {statistics.median(p for p, _ in measured):>10.3f} "
            f"{statistics.median(f for _, f in measured):>8.3f} {ratio:>5.2f}x "
            f"{min(ratios):>5.2f}-{max(ratios):.2f}x"
        )
        if (label, name) == (".pyc shipped", "discover"):
            goal = ratio
    assert goal is not None
    verdict = "met" if goal <= GOAL else "missed"
    print(f"goal: .pyc shipped, discover <= {GOAL}x the SDK handler: {goal:.2f}x, {verdict}")
    with_init, bare = split
    print(
        f"the SDK server's modules after mcp_types (.pyc): {with_init:.3f} s; "
        f"{bare:.3f} s without running mcp/__init__ (the client it imports: "
        f"{with_init - bare:.3f} s, which any `mcp.x` import pays)"
    )


if __name__ == "__main__":
    main()
