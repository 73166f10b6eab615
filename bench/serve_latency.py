"""Warm per-request latency through `pmcp-build serve` of examples/python-server
(HTTP -> Function URL event -> isolated handler process -> MCP engine and back).

    python bench/serve_latency.py [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2025-06-18",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    count = parser.parse_args().requests
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pmcp_build",
            "-C",
            str(ROOT / "examples" / "python-server"),
            "serve",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CI": "1"},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().split(" at ")[1].split(" ")[0]
    try:
        with httpx.Client(timeout=30) as client:
            samples: dict[str, list[float]] = {"tools/list": [], "tools/call": []}
            bodies = {
                "tools/list": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                "tools/call": {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "word_stats", "arguments": {"text": "one fish. two fish."}},
                },
            }
            for _ in range(5):  # warm up
                client.post(url, json=bodies["tools/list"], headers=HEADERS)
            for _ in range(count):
                for name, body in bodies.items():
                    start = time.perf_counter()
                    reply = client.post(url, json=body, headers=HEADERS)
                    samples[name].append(time.perf_counter() - start)
                    assert reply.status_code == 200
        print(f"{'warm request via serve':<22} {'median ms':>10} {'p95 ms':>8}")
        for name, values in samples.items():
            values.sort()
            p95 = values[int(len(values) * 0.95) - 1]
            print(f"{name:<22} {statistics.median(values) * 1000:>10.2f} {p95 * 1000:>8.2f}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
