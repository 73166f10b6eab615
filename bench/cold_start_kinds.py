"""Cold start by server kind: the packaged handler against the same server run natively
on its SDK, each a fresh process, from the same extracted package.

    python bench/cold_start_kinds.py [runs]     (default 5)

Packaged: `python -I -S -B` (as Lambda runs the handler) importing `index` and answering
its first event, either the platform's `discover` or an `mcp.request` with `tools/list`.
Native, from the same files and site-packages:
  sdk-server      MCPServer       import server; await app.list_tools()
  fastmcp-server  FastMCP         import server; await mcp.list_tools()
  stdio-time      stdio command   the command over stdio (initialize, tools/list)
Each round runs packaged discover, packaged tools/list and native, the order rotating
from round to round; ratios are per round (against that round's native run), medians
with their range, and the load is printed before and after.

Two variants: `.pyc` (the task root compiled with unchecked-hash bytecode, what
`bytecode = true` ships) and `no bytecode` (nothing compiled; what either side's
processes write, a stdio command's child included, is removed before the next run, as
/var/task is read-only on Lambda). Issue 26's goal: stdio <= 1.2x native. A stdio
command's child starts before the runtime imports the SDK, so the two imports overlap
when a core is free and add up when none is: read the ratio with the load, and with
the last column (CPU seconds of the process and its children, packaged / native):
a wall ratio below the CPU ratio is the overlap.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import build_example, load  # noqa: E402

from boot.stdio_bridge import LAUNCHER  # noqa: E402
from pmcp_build.layout.python import find_python  # noqa: E402

GOAL = 1.2  # stdio, issue 26 item 6

PACKAGED = r"""
import json, os, sys
root, event = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, root)
os.chdir(root)
sys.argv = ["/var/runtime/bootstrap.py"]
import index
reply = index.handler(event, None)
if "discovery" in reply:
    tools = reply["discovery"]["tools"]
else:
    tools = json.loads(reply["responses"][0])["result"]["tools"]
print(len(tools), flush=True)
index._runtime.close()  # a stdio child is stopped and waited for, as native's is
os._exit(0 if tools else 1)
"""

NATIVE_INPROC = r"""
import asyncio, os, sys
root, attr = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
os.chdir(root)
import server
tools = asyncio.run(getattr(server, attr).list_tools())
print(len(tools), flush=True)
os._exit(0)
"""

NATIVE_STDIO = r"""
import json, subprocess, sys
root, launcher = sys.argv[1], sys.argv[3]
line = next(l for l in open(root + "/index.py") if "command=" in l)
spec = json.loads(line.split("command=", 1)[1].rsplit(")", 1)[0])
argv = [sys.executable, "-I", "-S", "-c", launcher, json.dumps({
    "site": root + "/__command__", "root": root, "kind": spec["kind"],
    "target": spec["target"], "argv0": spec["argv0"]}), *spec["args"]]
proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
def send(m):
    proc.stdin.write(json.dumps(m) + "\n"); proc.stdin.flush()
send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {},
    "clientInfo": {"name": "b", "version": "1"}}})
proc.stdout.readline()
send({"jsonrpc": "2.0", "method": "notifications/initialized"})
send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
print(len(json.loads(proc.stdout.readline())["result"]["tools"]), flush=True)
proc.kill()
proc.wait()  # its CPU time counts (the packaged side waits for its child too)
"""

KINDS = {
    "sdk-server": ("MCPServer", NATIVE_INPROC, "app"),
    "fastmcp-server": ("FastMCP", NATIVE_INPROC, "mcp"),
    "stdio-time": ("stdio command", NATIVE_STDIO, ""),
}
EVENTS = {
    "discover": {"action": "discover"},
    "tools/list": {
        "action": "mcp.request",
        "messages": [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}],
    },
}

_COMPILE = r"""
import compileall, py_compile, sys
compileall.compile_dir(sys.argv[1], quiet=2, workers=0,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(cmd: list[str], task: Path, keep_bytecode: bool) -> tuple[float, float]:
    """Wall seconds of one run, and the CPU seconds it and its children used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cpu, start = _cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    if not keep_bytecode:  # what a run wrote (a stdio child's bytecode) is gone again
        for cache in task.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
    return elapsed, cpu


def rounds(
    commands: dict[str, list[str]], task: Path, keep_bytecode: bool, runs: int
) -> dict[str, list[tuple[float, float]]]:
    for cmd in commands.values():  # the page cache, once per command
        timed(cmd, task, keep_bytecode)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    names = list(commands)
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(timed(commands[name], task, keep_bytecode))
    return times


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    python = find_python("3.11") or sys.executable
    print(f"before: {load()}")
    lines = []
    goal: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for example, (label, native_code, attr) in KINDS.items():
            zip_path = build_example(example, tmp / "src" / example, tmp)
            for variant, keep in (("no bytecode", False), (".pyc", True)):
                task = tmp / f"{example}-{keep}"
                with zipfile.ZipFile(zip_path) as zf:
                    zf.extractall(task)
                if keep:
                    subprocess.run([python, "-c", _COMPILE, str(task)], check=True)
                commands = {
                    name: [python, "-I", "-S", "-B", "-c", PACKAGED, str(task), json.dumps(event)]
                    for name, event in EVENTS.items()
                }
                commands["native"] = [
                    *(python, "-I", "-S", "-B", "-c", native_code),
                    *(str(task), attr, LAUNCHER),
                ]
                times = rounds(commands, task, keep, runs)
                native = [wall for wall, _ in times["native"]]
                native_cpu = statistics.median(cpu for _, cpu in times["native"])
                for name in EVENTS:
                    walls = [wall for wall, _ in times[name]]
                    ratios = [p / n for p, n in zip(walls, native, strict=True)]
                    ratio = statistics.median(ratios)
                    cpu = statistics.median(c for _, c in times[name]) / native_cpu
                    lines.append(
                        f"{label:14} {variant:11} {name:10} {statistics.median(walls):8.3f}s "
                        f"{statistics.median(native):7.3f}s {ratio:5.2f}x "
                        f"{min(ratios):5.2f}-{max(ratios):.2f}x {cpu:5.2f}x"
                    )
                    if example == "stdio-time" and variant == ".pyc" and name == "discover":
                        goal.append(ratio)
                shutil.rmtree(task)
    print(f"after:  {load()}")
    print(
        f"{'kind':14} {'variant':11} {'event':10} {'packaged':>9} {'native':>8} ratio  "
        f"{'range':11} cpu"
    )
    print("\n".join(lines))
    verdict = "met" if goal[0] <= GOAL else "missed"
    print(f"goal: stdio, .pyc, import + discover <= {GOAL}x native: {goal[0]:.2f}x, {verdict}")


if __name__ == "__main__":
    main()
