"""No-op plan and apply against a local moto server: AWS calls and wall time, for 1, 10
and 30 lambda targets (role "auto", a public URL); bytes uploaded by the second apply.
Beside each, the floor: a fresh `python` that imports boto3 and makes only the same
reads (16 at a time, as the planner does). Ratios are printed against one target; the
rounds interleave 1, 10 and 30 targets so load on the shared machine falls on each alike.

    python bench/plan_apply.py [--runs 5]

Needs the test extras (moto[server]) and a dependency cache or wheelhouse for the
example's build (UV_NO_INDEX=1 UV_FIND_LINKS=.wheelhouse after tests/wheelhouse.py).
"""

from __future__ import annotations

import argparse
import json
import logging
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
    # Function names carry the count: the projects' packages differ (their manifests
    # do), and interleaved rounds must not redeploy each other's functions.
    dest = tmp / f"p{targets}"
    shutil.copytree(
        ROOT / "examples" / "python-server", dest, ignore=shutil.ignore_patterns(".pmcp")
    )
    toml = dest / "metorial.toml"
    text = toml.read_text()
    for i in range(targets):
        text += (
            f'\n[targets.t{i}]\nkind = "lambda"\nfunction = "bench-{targets}-{i}"\n'
            f'bucket = "{BUCKET}"\nprefix = "builds"\nrole = "auto"\n'
            'url = { auth = "NONE" }\n'
        )
    toml.write_text(text)
    return dest


def cli(project: Path, *args: str) -> float:
    targets = [a for t in json.loads((project / "targets.json").read_text()) for a in ("-t", t)]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), *args, *targets],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"pmcp-build {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.perf_counter() - start


FLOOR = """
import sys, boto3
from concurrent.futures import ThreadPoolExecutor
n, bucket, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = boto3.Session()
s3, lam, iam = s.client("s3"), s.client("lambda"), s.client("iam")
def one(i):
    s3.head_object(Bucket=bucket, Key=key)
    lam.get_function(FunctionName=f"bench-{n}-{i}")
    lam.get_function_url_config(FunctionName=f"bench-{n}-{i}")
    lam.get_policy(FunctionName=f"bench-{n}-{i}")
    iam.get_role_policy(RoleName=f"bench-{n}-{i}-pmcp-exec", PolicyName="pmcp-logs")
with ThreadPoolExecutor(16) as pool:
    list(pool.map(one, range(n)))
"""


def floor(count: int, key: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR, str(count), BUCKET, key], check=True)
    return time.perf_counter() - start


def _body(call: dict) -> str:
    body = call.get("body") or ""
    if call.get("body_encoded"):
        import base64

        body = base64.b64decode(body).decode("latin-1")
    return body


def recorded(url: str) -> list[dict]:
    text = httpx.get(f"{url}/moto-api/recorder/download-recording").text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    # The moto server's access log would bury the table.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    counts = (1, 10, 30)
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
        projects: dict[int, Path] = {}
        for count in counts:
            proj = project(Path(tmp), count)
            (proj / "targets.json").write_text(json.dumps([f"t{i}" for i in range(count)]))
            cli(proj, "apply", "--auto-approve")
            projects[count] = proj
        key = next(
            o["Key"]
            for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]
            if o["Key"].startswith("builds/")
        )
        print(f"load before: {os.getloadavg()}")
        # Rounds interleave the counts, so a change in the machine's load (2 shared
        # cores) falls on every count alike instead of on whichever ran last.
        plans: dict[int, list[float]] = {c: [] for c in counts}
        floors: dict[int, list[float]] = {c: [] for c in counts}
        applies: dict[int, list[float]] = {c: [] for c in counts}
        for _ in range(runs):
            for count in counts:
                plans[count].append(cli(projects[count], "plan"))
                floors[count].append(floor(count, key))
                applies[count].append(cli(projects[count], "apply", "--auto-approve"))
        print(f"load after:  {os.getloadavg()}")
        print(
            f"{'targets':>7} {'no-op plan s':>13} {'vs 1':>6} {'floor s':>8} {'vs 1':>6} "
            f"{'plan/floor':>10} {'no-op apply s':>14} {'reads/target':>13} {'writes':>7} "
            f"{'bytes up':>9}"
        )
        base_plan = statistics.median(plans[1])
        base_floor = statistics.median(floors[1])
        for count in counts:
            # One more no-op apply under the recorder: the calls it makes.
            httpx.post(f"{url}/moto-api/recorder/reset-recording")
            httpx.post(f"{url}/moto-api/recorder/start-recording")
            cli(projects[count], "apply", "--auto-approve")
            httpx.post(f"{url}/moto-api/recorder/stop-recording")
            calls = recorded(url)
            # IAM's query protocol reads with POST Action=Get…
            writes = [
                c
                for c in calls
                if c["method"] not in ("GET", "HEAD") and "Action=Get" not in _body(c)
            ]
            uploaded = sum(int(c["headers"].get("Content-Length", 0)) for c in writes)
            reads = len(calls) - len(writes)
            plan_s, floor_s = statistics.median(plans[count]), statistics.median(floors[count])
            print(
                f"{count:>7} {plan_s:>13.2f} {plan_s / base_plan:>6.2f} {floor_s:>8.2f} "
                f"{floor_s / base_floor:>6.2f} {plan_s / floor_s:>10.2f} "
                f"{statistics.median(applies[count]):>14.2f} "
                f"{reads / count:>13.1f} {len(writes):>7} {uploaded:>9}"
            )
        server.stop()


if __name__ == "__main__":
    main()
