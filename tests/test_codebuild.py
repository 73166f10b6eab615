"""docker/codebuild/buildspec.yml run as CodeBuild runs it (issue 24): moto's CodeBuild
does not run builds, so the phases are read from the YAML and their commands run in a
shell with the variables CodeBuild sets (its own, the buildspec's `env.variables`, and
the per-build overrides of StartBuild, which win), against a moto S3 on loopback. Two
builds on two fresh "containers": the second has no wheelhouse, no index and no source
download, and ships the first one's package from the shared cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from pmcp_build.package import remote

from .conftest import BUCKET, EXAMPLES, ROOT
from .helpers import HOST_ARCH, HOST_PY, zip_with

BUILDSPEC = ROOT / "docker" / "codebuild" / "buildspec.yml"
POLICY = ROOT / "docker" / "codebuild" / "iam-policy.json"
CACHE = "s3://pmcp-fleet-cache/builds"
PHASES = ("install", "pre_build", "build", "post_build")


def run_buildspec(spec: dict[str, Any], env: dict[str, str], src: Path) -> tuple[bool, str]:
    """CodeBuild's order: each phase's commands in one shell, stopping at the first that
    fails; a failed build phase still runs post_build (CODEBUILD_BUILD_SUCCEEDING=0).
    The artifacts' files must then exist under base-directory."""
    variables = {str(k): str(v) for k, v in (spec.get("env", {}).get("variables") or {}).items()}
    shell_env = {**variables, **env, "CODEBUILD_SRC_DIR": str(src)}
    shell_env["CODEBUILD_BUILD_SUCCEEDING"] = "1"
    log = ""
    for phase in PHASES:
        commands = (spec["phases"].get(phase) or {}).get("commands") or []
        if not commands:
            continue
        script = "set -e\n" + "\n".join(commands)
        proc = subprocess.run(
            ["sh", "-c", script], cwd=src, env=shell_env, capture_output=True, text=True
        )
        log += proc.stdout + proc.stderr
        if proc.returncode != 0:
            if phase in ("install", "pre_build", "post_build"):
                return False, log
            shell_env["CODEBUILD_BUILD_SUCCEEDING"] = "0"
    artifacts = spec.get("artifacts") or {}
    base = Path(os.path.expandvars(str(artifacts.get("base-directory", src))).replace(
        "$CODEBUILD_SRC_DIR", str(src)))  # fmt: skip
    for name in artifacts.get("files") or []:
        if not (base / name).exists():
            return False, log + f"\nartifact {name} missing"
    return shell_env["CODEBUILD_BUILD_SUCCEEDING"] == "1", log


def _container(
    tmp_path: Path, name: str, aws_env: str, overrides: dict[str, str]
) -> dict[str, str]:
    """What a fresh CodeBuild container's shell sees: CodeBuild's variables, the role's
    credentials (moto's here), and this build's overrides (its own empty caches)."""
    home = tmp_path / name
    home.mkdir()
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),
        "CODEBUILD_BUILD_ID": f"pmcp-fleet:{name}",
        "CODEBUILD_BUILD_ARN": f"arn:aws:codebuild:eu-west-1:123456789012:build/pmcp-fleet:{name}",
        "CODEBUILD_INITIATOR": "test",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": aws_env,
        "PMCP_BUILD_LOAD_CHECK": "0",
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        remote.ENV: CACHE,
        "PMCP_BUILD_CACHE_DIR": str(home / "cache"),
        "UV_CACHE_DIR": str(home / "uv-cache"),
        "PYTHON_VERSION": HOST_PY,
        "ARCHITECTURE": HOST_ARCH,
        "S3_BUCKET": BUCKET,
        **overrides,
    }


@pytest.fixture
def source(http_dir: Any) -> tuple[Path, str, str]:
    root, base = http_dir
    src = EXAMPLES / "python-server"
    members = [
        (f"text-tools-main/{name}", (src / name).read_bytes(), 0o644)
        for name in ("server.py", "requirements.txt", "README.md", "metorial.lock")
    ]
    archive = zip_with(root / "src.zip", members)
    return archive, f"{base}/src.zip", hashlib.sha256(archive.read_bytes()).hexdigest()


def test_the_buildspec_builds_a_fleet_from_the_shared_cache(
    tmp_path: Path, aws_env: str, source: tuple[Path, str, str]
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(
        Bucket="pmcp-fleet-cache", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    spec = yaml.safe_load(BUILDSPEC.read_text())
    assert spec["version"] == 0.2
    archive, url, digest = source
    summaries = []
    for name, extra in (
        ("one", {"UV_FIND_LINKS": str(ROOT / ".wheelhouse")}),
        ("two", {}),  # no wheelhouse: uv could install nothing
    ):
        overrides = {
            "ZIP_URL": url,
            "ZIP_SHA256": digest,
            "S3_KEY": f"builds/{name}/text-tools.zip",
            **extra,
        }
        container = _container(tmp_path, name, aws_env, overrides)
        # The key's file name names the server (image-run), so the same in both.
        src = tmp_path / name / "src"
        src.mkdir()
        ok, log = run_buildspec(spec, container, src)
        assert ok, log
        assert "warning:" not in log, log
        summaries.append(json.loads((src / "pmcp-build-summary.json").read_text().splitlines()[-1]))
        archive.unlink(missing_ok=True)  # the second container cannot download it
    one, two = summaries
    assert one["sha256"] == two["sha256"]
    for summary in summaries:
        bucket, key = summary["s3"][5:].split("/", 1)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == summary["sha256"]
    stored = s3.list_objects_v2(Bucket="pmcp-fleet-cache", Prefix="builds/")["Contents"]
    assert f"builds/cas/{digest}" in {o["Key"] for o in stored}  # the source zip too


def test_a_failed_job_fails_the_codebuild_build_with_one_line(tmp_path: Path, aws_env: str) -> None:
    spec = yaml.safe_load(BUILDSPEC.read_text())
    src = tmp_path / "src"
    src.mkdir()
    ok, log = run_buildspec(spec, _container(tmp_path, "bad", aws_env, {}), src)
    assert not ok
    assert "error: S3_BUCKET is set but S3_KEY is not; set both" in log
    assert "Traceback" not in log


def test_the_policy_names_the_prefix_only() -> None:
    policy = json.loads(POLICY.read_text())
    actions = {
        a
        for s in policy["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert "s3:DeleteObject" not in actions and "s3:*" not in actions
    cache = next(s for s in policy["Statement"] if s["Sid"] == "SharedBuildCache")
    assert cache["Resource"] == "arn:aws:s3:::CACHE_BUCKET/CACHE_PREFIX/*"
