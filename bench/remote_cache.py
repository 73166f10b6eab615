"""A second machine building from the shared cache, side by side (issue 24, item 4).

    python bench/remote_cache.py [--runs 3]

Every side builds examples/python-server (`build --json`, PMCP_BUILD_LOAD_CHECK=0) in a
fresh copy, against a moto S3 server on loopback (so the figures are the tool's work and
loopback transfers, not a real network's latency):

  cold, no remote     machine 1's cold build, empty caches, wheels from .wheelhouse/
                      (the floor the write-through overhead is measured against)
  cold + write        the same with PMCP_BUILD_REMOTE_CACHE: also uploads the set's five
                      files, the zip and two action entries
  machine 2           empty caches, UV_OFFLINE=1, no index, no wheelhouse: everything
                      from the remote cache
  local warm          machine 1 again, nothing changed (the fast path)

The order of the sides rotates from run to run; medians and the per-run ratios' medians
are printed, with the remote requests each side sent (moto's request recorder) and the
machine's load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import httpx
from _util import load, median, run
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "python-server"
BUCKET = "bench-cache"


def _moto(tmp: str) -> tuple[ThreadedMotoServer, str]:
    os.environ["MOTO_RECORDER_FILEPATH"] = f"{tmp}/moto.log"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def _requests(url: str) -> dict[str, int]:
    httpx.post(f"{url}/moto-api/recorder/stop-recording")
    text = httpx.get(f"{url}/moto-api/recorder/download-recording").text
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.strip():
            method = json.loads(line)["method"]
            counts[method] = counts.get(method, 0) + 1
    return counts


def _record(url: str) -> None:
    httpx.post(f"{url}/moto-api/recorder/reset-recording")
    httpx.post(f"{url}/moto-api/recorder/start-recording")


def _machine(
    home: Path, base: dict[str, str], wheels: bool = True
) -> tuple[list[str], dict[str, str]]:
    """A machine's build: its own caches and copy of the example (kept between calls)."""
    project = home / "python-server"
    if not project.exists():
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".pmcp"))
    env = dict(base, UV_CACHE_DIR=f"{home}/uv", PMCP_BUILD_CACHE_DIR=f"{home}/c")
    if not wheels:
        env.pop("UV_FIND_LINKS")
    return [sys.executable, "-m", "pmcp_build", "-C", str(project), "build", "--json"], env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sides = ("cold, no remote", "cold + write", "machine 2", "local warm")
    times: dict[str, list[float]] = {s: [] for s in sides}
    requests: dict[str, dict[str, int]] = {}
    print(f"before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        server, url = _moto(tmp)
        aws = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "eu-west-1",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
        os.environ.update(aws)
        s3 = boto3.client("s3")
        base = dict(os.environ, **aws, CI="1", PMCP_BUILD_LOAD_CHECK="0", UV_OFFLINE="1")
        base |= {"UV_NO_INDEX": "1", "UV_FIND_LINKS": str(ROOT / ".wheelhouse")}
        try:
            for i in range(args.runs):
                s3.create_bucket(
                    Bucket=f"{BUCKET}-{i}",
                    CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
                )
                remote = {"PMCP_BUILD_REMOTE_CACHE": f"s3://{BUCKET}-{i}/pmcp"}

                # machine 2 needs machine 1's upload, and the warm build machine 1's
                # cache: the two cold sides rotate, then machine 2 and the warm build.
                order = [sides[0], sides[1]] if i % 2 == 0 else [sides[1], sides[0]]
                here = Path(tmp) / f"r{i}"
                plan = {
                    sides[0]: _machine(here / "m0", base),
                    sides[1]: _machine(here / "m1", base | remote),
                    sides[2]: _machine(here / "m2", base | remote, wheels=False),
                    sides[3]: _machine(here / "m1", base | remote),
                }
                for side in [*order, sides[2], sides[3]]:
                    cmd, env = plan[side]
                    subprocess.run(["sync"], check=False)
                    _record(url)
                    times[side].append(run(cmd, env=env))
                    requests[side] = _requests(url)
        finally:
            server.stop()
    floor = median(times[sides[0]])
    print(f"after: {load()}")
    print(f"{'side':18} {'median s':>9} {'x cold':>7}  remote requests (last run)")
    for side in sides:
        ratio = median([t / c for t, c in zip(times[side], times[sides[0]], strict=True)])
        reqs = ", ".join(f"{m} {n}" for m, n in sorted(requests[side].items())) or "none"
        print(f"{side:18} {median(times[side]):9.2f} {ratio:7.2f}  {reqs}")
    print(f"floor: cold build without the remote cache, median {floor:.2f} s")


if __name__ == "__main__":
    main()
