"""`serve` under load: 200 concurrent clients, none dropped, p50/p99, side by side with
the same server run natively on its SDK (issue 13, item 4).

    python bench/serve_load.py [--clients 200] [--requests 5] [--concurrency 4]

examples/sdk-server is built once and served two ways, both on 127.0.0.1:
  ours    `pmcp-build serve --concurrency N`: N warm handler processes, as N Lambda
          instances, behind the local Function URL front door
  native  the same MCPServer from the package's own files (`python -I -S`), on the
          SDK's streamable-HTTP app under uvicorn, stateless JSON mode (one process)
Each of the clients opens its own connection (all started together behind a barrier)
and sends `requests` tools/call messages in turn; a reset, a timeout, a non-200 answer
or a JSON-RPC error counts as dropped. Bounded: every request has a 60 s timeout and the
run stops after all clients finish. Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from _util import load

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "examples" / "sdk-server"
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2025-11-25",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start")


def _client(port: int, requests: int, barrier: threading.Barrier, out: list) -> None:
    barrier.wait()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(requests):
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": i,
                "method": "tools/call",
                "params": {"name": "celsius_to_fahrenheit", "arguments": {"celsius": i}},
            }
        )
        start = time.perf_counter()
        try:
            conn.request("POST", "/mcp", body, HEADERS)
            response = conn.getresponse()
            data = response.read()
            ok = response.status == 200 and "result" in json.loads(data)
        except (OSError, http.client.HTTPException, ValueError):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        out.append((ok, time.perf_counter() - start))
    conn.close()


def _load_run(port: int, clients: int, requests: int) -> tuple[int, int, float, float, float]:
    barrier = threading.Barrier(clients)
    results: list[tuple[bool, float]] = []
    threads = [
        threading.Thread(target=_client, args=(port, requests, barrier, results))
        for _ in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    wall = time.perf_counter() - start
    latencies = sorted(t for ok, t in results if ok)
    dropped = clients * requests - len(latencies)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return len(latencies), dropped, p50, p99, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    env = dict(os.environ, UV_NO_INDEX="1", UV_FIND_LINKS=str(ROOT / ".wheelhouse"))
    print(f"before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        ours_port, native_port = _free_port(), _free_port()
        ours = subprocess.Popen(
            [sys.executable, "-m", "pmcp_build", "-C", str(PROJECT), "serve", "--port",
             str(ours_port), "--concurrency", str(args.concurrency)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        native = None
        try:
            _wait_for(ours_port, ours)
            (package,) = sorted((PROJECT / ".pmcp" / "dist").glob("*.zip"), key=os.path.getmtime)[
                -1:
            ]
            root = Path(tmp) / "task"
            with zipfile.ZipFile(package) as zf:
                zf.extractall(root)
            native = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c",
                 "import sys, logging; sys.path.insert(0, sys.argv[1]); import server; "
                 "logging.disable(logging.WARNING); "
                 "server.app.run('streamable-http', host='127.0.0.1', port=int(sys.argv[2]), "
                 "stateless_http=True, json_response=True)",
                 str(root), str(native_port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            _wait_for(native_port, native)
            for port in (ours_port, native_port):  # warm both: first imports, first calls
                _load_run(port, 4, 2)
            print(
                f"{args.clients} clients x {args.requests} tools/call, "
                f"serve --concurrency {args.concurrency}"
            )
            print(f"{'':8} {'ok':>6} {'dropped':>8} {'p50 ms':>8} {'p99 ms':>8} {'wall s':>7}")
            rows = {}
            for name, port in (("ours", ours_port), ("native", native_port), ("ours", ours_port)):
                ok, dropped, p50, p99, wall = _load_run(port, args.clients, args.requests)
                rows.setdefault(name, []).append((p50, p99))
                print(
                    f"{name:8} {ok:>6} {dropped:>8} {p50 * 1000:>8.1f} {p99 * 1000:>8.1f} "
                    f"{wall:>7.2f}"
                )
            ours_p50 = statistics.median(r[0] for r in rows["ours"])
            ours_p99 = statistics.median(r[1] for r in rows["ours"])
            nat_p50, nat_p99 = rows["native"][0]
            p50_ratio, p99_ratio = ours_p50 / nat_p50, ours_p99 / nat_p99
            print(f"ratio ours/native: p50 {p50_ratio:.2f}x, p99 {p99_ratio:.2f}x")
        finally:
            for proc in (ours, native):
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
