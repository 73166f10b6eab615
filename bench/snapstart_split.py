"""What Lambda SnapStart could take out of a cold start: a packaged handler's cold
start split into init (importing `index`: what Lambda runs before the snapshot) and
the first request (one `tools/list`: what every restored environment still pays).

    python bench/snapstart_split.py [--runs 7]

A fresh, isolated interpreter per run (PYTHONDONTWRITEBYTECODE=1: /var/task is read
only on Lambda), runs interleaved across the examples. This measures the local split
only: SnapStart's restore itself can only be measured on Lambda.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("python-server", "sdk-server", "fastmcp-server")
EVENT = {
    "action": "mcp.request",
    "messages": ['{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'],
    "participantJson": '{"protocolVersion": "2025-06-18"}',
}
CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import index
t1 = time.perf_counter()
reply = index.handler(json.loads(sys.argv[2]), None)
t2 = time.perf_counter()
assert "tools" in reply["responses"][0], reply
print(json.dumps([t1 - t0, t2 - t1]))
"""


def build(tmp: Path, example: str) -> Path:
    project = tmp / example
    shutil.copytree(ROOT / "examples" / example, project, ignore=shutil.ignore_patterns(".pmcp"))
    env = {**os.environ, "CI": "1", "UV_OFFLINE": "1", "UV_FIND_LINKS": str(ROOT / ".wheelhouse")}
    subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build"],
        check=True,
        capture_output=True,
        env=env,
    )
    task = tmp / f"task-{example}"
    with zipfile.ZipFile(next((project / ".pmcp" / "dist").glob("*.zip"))) as zf:
        zf.extractall(task)
    return task


def once(task: Path) -> tuple[float, float]:
    env = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", CHILD, str(task), json.dumps(EVENT)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    init, first = json.loads(done.stdout.strip().splitlines()[-1])
    return float(init), float(first)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    print(f"before: {load()}")
    with tempfile.TemporaryDirectory() as name:
        tasks = {example: build(Path(name), example) for example in EXAMPLES}
        times: dict[str, list[tuple[float, float]]] = {e: [] for e in EXAMPLES}
        for _ in range(runs):
            for example, task in tasks.items():  # interleaved
                times[example].append(once(task))
    print(f"after:  {load()}")
    print(f"{'example':<16} {'init s':>8} {'1st request s':>14} {'init share':>11}")
    for example, values in times.items():
        init = statistics.median(v[0] for v in values)
        first = statistics.median(v[1] for v in values)
        print(f"{example:<16} {init:>8.3f} {first:>14.3f} {init / (init + first):>10.0%}")


if __name__ == "__main__":
    main()
