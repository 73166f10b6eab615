"""Cold start of the packaged handler: a fresh, isolated interpreter that imports the
package's `index` and answers one `tools/list`, with and without shipped bytecode,
against a minimal hand-written handler on the mcp SDK (the floor).

    python bench/cold_start.py [--runs 9]

/var/task is read-only on Lambda, so Python cannot write __pycache__ there: every
cold start compiles every imported module unless valid bytecode ships in the zip.
The runs here use PYTHONDONTWRITEBYTECODE=1 to reproduce that.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EVENT = (
    '{"action": "mcp.request", "messages": ["{\\"jsonrpc\\": \\"2.0\\", \\"id\\": 1, '
    '\\"method\\": \\"tools/list\\"}"], "participantJson": "{\\"protocolVersion\\": '
    '\\"2025-06-18\\"}"}'
)

RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
import {module} as m
reply = m.handler(json.loads(sys.argv[2]), None)
assert "tools" in reply["responses"][0], reply
"""

FLOOR = """
import asyncio, json
import mcp_types as types
from mcp.server.lowlevel.server import Server

TOOLS = [types.Tool(name="word_stats", input_schema={"type": "object"})]


async def list_tools(ctx, params):
    return types.ListToolsResult(tools=TOOLS)

server = Server("floor", on_list_tools=list_tools)


def handler(event, context):
    message = json.loads(event["messages"][0])
    result = asyncio.run(list_tools(None, None))
    body = {"jsonrpc": "2.0", "id": message["id"],
            "result": result.model_dump(by_alias=True, exclude_none=True, mode="json")}
    return {"success": True, "responses": [json.dumps(body)]}
"""


def build(tmp: Path, bytecode: bool) -> Path:
    project = tmp / f"src-{bytecode}"
    shutil.copytree(
        ROOT / "examples" / "python-server", project, ignore=shutil.ignore_patterns(".pmcp")
    )
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace(
            'kind = "python"\n', f'kind = "python"\nbytecode = {str(bytecode).lower()}\n'
        )
    )
    subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build"],
        check=True,
        capture_output=True,
        env={**os.environ, "CI": "1"},
    )
    zip_path = next((project / ".pmcp" / "dist").glob("*.zip"))
    task = tmp / f"task-{bytecode}"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(task)
    return task


def once(task: Path, module: str) -> float:
    env = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", RUN.format(module=module), str(task), EVENT],
        check=True,
        env=env,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plain = build(tmp, bytecode=False)
        compiled = build(tmp, bytecode=True)
        (plain / "floor.py").write_text(FLOOR)
        (compiled / "floor.py").write_text(FLOOR)
        subprocess.run([sys.executable, "-m", "py_compile", str(compiled / "floor.py")], check=True)
        cases = {
            "packaged index, no bytecode": (plain, "index"),
            "packaged index, unchecked-hash .pyc": (compiled, "index"),
            "floor: SDK handler, no bytecode": (plain, "floor"),
            "floor: SDK handler, with .pyc": (compiled, "floor"),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(runs):
            for name, (task, module) in cases.items():  # interleaved
                times[name].append(once(task, module))
        print(f"{'cold start (import + one tools/list)':<40} {'median s':>9}")
        for name, values in times.items():
            print(f"{name:<40} {statistics.median(values):>9.3f}")


if __name__ == "__main__":
    main()
