"""Cold start by server kind: a fresh process importing the packaged handler and
answering one `tools/list` (the platform's mcp.request), against the same server run
natively on its SDK in a fresh process (import + one tools/list), side by side.

Both sides run from the same extracted package (same files, same site-packages), with
the package's python, isolated (-I -S) as the local worker runs it. Kinds:
  sdk-server      MCPServer       native: import server; await app.list_tools()
  fastmcp-server  FastMCP         native: import server; await mcp.list_tools()
  stdio-time      stdio command   native: the command over stdio (initialize, tools/list)
Run: python bench/cold_start_kinds.py [runs]   (medians of >= 5, ratios per run)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmcp_build.layout.python import find_python  # noqa: E402

PACKAGED = r"""
import json, os, sys
root = sys.argv[1]
sys.path.insert(0, root)
os.chdir(root)
sys.argv = ["/var/runtime/bootstrap.py"]
import index
reply = index.handler({"action": "mcp.request", "messages": [
    {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]}, None)
tools = json.loads(reply["responses"][0])["result"]["tools"]
print(len(tools), flush=True)
os._exit(0)
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
from pathlib import Path
root = sys.argv[1]
sys.path.insert(0, root)
from __metorial__ import stdio_bridge
line = next(l for l in Path(root, "index.py").read_text().splitlines() if "command=" in l)
spec = json.loads(line.split("command=", 1)[1].rsplit(")", 1)[0])
argv = [sys.executable, "-I", "-S", "-c", stdio_bridge.LAUNCHER, json.dumps({
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
"""

KINDS = {
    "sdk-server": ("MCPServer", NATIVE_INPROC, "app"),
    "fastmcp-server": ("FastMCP", NATIVE_INPROC, "mcp"),
    "stdio-time": ("stdio command", NATIVE_STDIO, ""),
}


def build(example: str) -> Path:
    env = {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
        "PMCP_BUILD_LOAD_CHECK": "0",
    }
    project = str(ROOT / "examples" / example)
    out = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", project, "build", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return Path(json.loads(out)["package"]["path"])


def timed(cmd: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    python = find_python("3.11") or sys.executable
    print(f"load before: {os.getloadavg()[0]:.2f}")
    print(f"{'kind':16} {'packaged':>9} {'native':>9} {'ratio':>6}")
    for example, (label, native_code, attr) in KINDS.items():
        zip_path = build(example)
        with tempfile.TemporaryDirectory() as tmp:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)
            packaged_cmd = [python, "-I", "-S", "-c", PACKAGED, tmp]
            native_cmd = [python, "-I", "-S", "-c", native_code, tmp, attr]
            timed(packaged_cmd)  # warm the page cache once, both sides
            timed(native_cmd)
            packaged, native, ratios = [], [], []
            for _ in range(runs):
                p = timed(packaged_cmd)
                n = timed(native_cmd)
                packaged.append(p)
                native.append(n)
                ratios.append(p / n)
        print(
            f"{label:16} {statistics.median(packaged):8.3f}s {statistics.median(native):8.3f}s "
            f"{statistics.median(ratios):5.2f}x"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
