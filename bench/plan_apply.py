"""No-op plan and apply against a local moto server: AWS calls and wall time, for 1 and
for 10 lambda targets; bytes uploaded by the second apply.

    python bench/plan_apply.py [--runs 5]

Needs the test extras (moto[server]) and a dependency cache or wheelhouse for the
example's build (UV_NO_INDEX=1 UV_FIND_LINKS=.wheelhouse after tests/wheelhouse.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "bench-artifacts"


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def project(tmp: Path, targets: int) -> Path:
    dest = tmp / f"p{targets}"
    shutil.copytree(
        ROOT / "examples" / "python-server", dest, ignore=shutil.ignore_patterns(".pmcp")
    )
    toml = dest / "metorial.toml"
    text = toml.read_text()
    for i in range(targets):
        text += (
            f'\n[targets.t{i}]\nkind = "lambda"\nfunction = "bench-{i}"\n'
            f'bucket = "{BUCKET}"\nprefix = "builds"\nrole = "auto"\n'
        )
    toml.write_text(text)
    return dest


def cli(project: Path, *args: str) -> float:
    targets = [a for t in json.loads((project / "targets.json").read_text()) for a in ("-t", t)]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), *args, *targets],
        check=True,
        capture_output=True,
        env={**os.environ, "CI": "1"},
    )
    return time.perf_counter() - start


def recorded(url: str) -> list[dict]:
    text = httpx.get(f"{url}/moto-api/recorder/download-recording").text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MOTO_RECORDER_FILEPATH"] = str(Path(tmp) / "rec.log")
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        url = f"http://127.0.0.1:{port}"
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": url,
                "AWS_REGION": "eu-west-1",
                "AWS_DEFAULT_REGION": "eu-west-1",
                "AWS_ACCESS_KEY_ID": "x",
                "AWS_SECRET_ACCESS_KEY": "x",
            }
        )
        boto3.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        print(
            f"{'targets':>7} {'no-op plan s':>13} {'no-op apply s':>14} "
            f"{'reads/target':>13} {'writes':>7} {'bytes up':>9}"
        )
        for count in (1, 10):
            proj = project(Path(tmp), count)
            (proj / "targets.json").write_text(json.dumps([f"t{i}" for i in range(count)]))
            cli(proj, "apply", "--auto-approve")
            plans, applies = [], []
            for _ in range(runs):
                plans.append(cli(proj, "plan"))
                httpx.post(f"{url}/moto-api/recorder/reset-recording")
                httpx.post(f"{url}/moto-api/recorder/start-recording")
                applies.append(cli(proj, "apply", "--auto-approve"))
                httpx.post(f"{url}/moto-api/recorder/stop-recording")
            calls = recorded(url)
            writes = [c for c in calls if c["method"] not in ("GET", "HEAD")]
            uploaded = sum(int(c["headers"].get("Content-Length", 0)) for c in writes)
            reads = len(calls) - len(writes)
            print(
                f"{count:>7} {statistics.median(plans):>13.2f} "
                f"{statistics.median(applies):>14.2f} {reads / count:>13.1f} "
                f"{len(writes):>7} {uploaded:>9}"
            )
        server.stop()


if __name__ == "__main__":
    main()
