"""Cold and warm `pmcp-build build` of examples/python-server against `sam build` of the
same code and requirements (the example's plus the boot runtime's mcp), alternating.

    python bench/vs_sam.py [--runs 5]

aws-sam-cli is installed into bench/.sam-venv on first use (from the registry); if
that fails the comparison is skipped with a message. `sam build` does not zip, so
the comparison is generous to SAM.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(__file__).resolve().parent / ".sam-venv"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"

TEMPLATE = f"""AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  TextTools:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: server.handler
      Runtime: python{PY}
      Architectures: [x86_64]
"""


def sam() -> Path | None:
    exe = VENV / "bin" / "sam"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "aws-sam-cli"], check=True)
    except subprocess.CalledProcessError as exc:
        print(f"skipping the SAM comparison: cannot install aws-sam-cli ({exc})")
        return None
    return exe


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    exe = sam()
    if exe is None:
        return
    env = {**os.environ, "CI": "1", "SAM_CLI_TELEMETRY": "0"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ours = tmp / "ours"
        shutil.copytree(
            ROOT / "examples" / "python-server", ours, ignore=shutil.ignore_patterns(".pmcp")
        )
        theirs = tmp / "sam"
        shutil.copytree(ours, theirs / "src")
        (theirs / "src" / "metorial.toml").unlink()
        reqs = (ours / "requirements.txt").read_text() + (
            ROOT / "boot" / "requirements.txt"
        ).read_text()
        (theirs / "src" / "requirements.txt").write_text(reqs)
        (theirs / "template.yaml").write_text(TEMPLATE)
        cold_ours, warm_ours, cold_sam, cached_sam = [], [], [], []
        for i in range(runs):
            cache = tmp / f"cache-{i}"
            build = [sys.executable, "-m", "pmcp_build", "build"]
            cold_ours.append(timed(build, ours, {**env, "PMCP_BUILD_CACHE_DIR": str(cache)}))
            shutil.rmtree(theirs / ".aws-sam", ignore_errors=True)
            cold_sam.append(timed([str(exe), "build"], theirs, env))
            warm_ours.append(timed(build, ours, {**env, "PMCP_BUILD_CACHE_DIR": str(cache)}))
            cached_sam.append(timed([str(exe), "build", "--cached"], theirs, env))
        rows = [
            ("pmcp-build build, cold (empty dep cache)", cold_ours),
            ("sam build (no --cached)", cold_sam),
            ("pmcp-build build, warm", warm_ours),
            ("sam build --cached, warm", cached_sam),
        ]
        print(f"{f'build (median of {runs})':<42} {'s':>7}")
        for name, values in rows:
            print(f"{name:<42} {statistics.median(values):>7.2f}")
        ratio = statistics.median(o / s for o, s in zip(cold_ours, cold_sam, strict=True))
        print(f"cold pmcp-build / sam build (same run): {ratio:.2f}")


if __name__ == "__main__":
    main()
