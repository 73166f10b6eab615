"""What Lambda SnapStart could take out of a cold start: a packaged handler's cold
start split into init (importing `index`: what Lambda runs before the snapshot) and
the first event (what every restored environment still pays), on demand and as
SnapStart runs init.

    python bench/snapstart_split.py [--runs 5]

On demand the runtime imports only what each event needs (the SDK's server and HTTP
stack with the first `mcp.request`), so init is short and the first request pays the
rest. Under SnapStart (AWS_LAMBDA_INITIALIZATION_TYPE=snap-start; provisioned
concurrency alike) init imports the engine's modules too: they move into the
snapshot, and a restored environment's first request pays only its own work.

A fresh, isolated interpreter per run (`python -I -S -B`; the package built with
`bytecode = true`), interleaved across examples, events and modes, medians. This
measures the local split only: SnapStart's restore itself can only be measured on
Lambda (its REPORT line's Restore Duration), and SnapStart needs python 3.12+.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import build_example, load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("python-server", "sdk-server", "fastmcp-server")
EVENTS = {
    "discover": {"action": "discover"},
    "tools/list": {
        "action": "mcp.request",
        "messages": ['{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'],
        "participantJson": '{"protocolVersion": "2025-06-18"}',
    },
}
MODES = ("on-demand", "snap-start")
CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import index
t1 = time.perf_counter()
reply = index.handler(json.loads(sys.argv[2]), None)
t2 = time.perf_counter()
assert reply.get("success"), reply
print(json.dumps([t1 - t0, t2 - t1]))
"""


def build(tmp: Path, example: str) -> Path:
    zip_path = build_example(example, tmp / example, tmp, bytecode=True)
    task = tmp / f"task-{example}"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(task)
    return task


def once(task: Path, event: dict[str, object], mode: str) -> tuple[float, float]:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_LAMBDA_INITIALIZATION_TYPE": mode,
    }
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", CHILD, str(task), json.dumps(event)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    init, first = json.loads(done.stdout.strip().splitlines()[-1])
    return float(init), float(first)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    print(f"before: {load()}")
    cases = [(x, e, m) for x in EXAMPLES for e in EVENTS for m in MODES]
    times: dict[tuple[str, str, str], list[tuple[float, float]]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory() as name:
        tasks = {example: build(Path(name), example) for example in EXAMPLES}
        for i in range(runs):
            for case in cases[i % 2 :] + cases[: i % 2]:  # interleaved, order shifting
                example, event, mode = case
                times[case].append(once(tasks[example], EVENTS[event], mode))
    print(f"after:  {load()}")
    print(
        f"{'example':<15} {'event':<11} {'on demand: init':>15} {'1st':>6} "
        f"{'SnapStart: init':>16} {'1st after restore':>18} {'restored / on demand':>21}"
    )
    for example in EXAMPLES:
        for event in EVENTS:
            on = times[(example, event, "on-demand")]
            snap = times[(example, event, "snap-start")]
            on_init, on_first = (statistics.median(v[k] for v in on) for k in (0, 1))
            snap_init, snap_first = (statistics.median(v[k] for v in snap) for k in (0, 1))
            share = snap_first / (on_init + on_first)
            print(
                f"{example:<15} {event:<11} {on_init:>14.3f}s {on_first:>5.3f}s "
                f"{snap_init:>15.3f}s {snap_first:>17.3f}s {share:>20.0%}"
            )
    print(
        "restored / on demand: what a restored environment's first event costs, as a share "
        "of the on-demand cold start (init + first event); the rest is in the snapshot"
    )


if __name__ == "__main__":
    main()
