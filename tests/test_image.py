"""The build image's job (ZIP_URL, S3_BUCKET, S3_KEY -> a deployment zip in S3), run
without Docker through `pmcp-build image-run`, against a zip served on 127.0.0.1
and a moto server."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import boto3
import pytest

from .conftest import BUCKET, EXAMPLES, Recorder
from .helpers import HOST_ARCH, HOST_PY, zip_with

KEY = "builds/text-tools.zip"


def _example_zip(dest: Path) -> Path:
    src = EXAMPLES / "python-server"
    members = [
        (f"text-tools-main/{name}", (src / name).read_bytes(), 0o644)
        for name in ("server.py", "requirements.txt", "README.md")
    ]
    return zip_with(dest, members)


@pytest.fixture
def image_env(aws_env: str, http_dir, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    root, base = http_dir
    _example_zip(root / "src.zip")
    monkeypatch.setenv("ZIP_URL", f"{base}/src.zip")
    monkeypatch.setenv("S3_BUCKET", BUCKET)
    monkeypatch.setenv("S3_KEY", KEY)
    monkeypatch.setenv("PYTHON_VERSION", HOST_PY)
    monkeypatch.setenv("ARCHITECTURE", HOST_ARCH)
    monkeypatch.chdir(tmp_path)
    return aws_env


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_env_job_uploads_a_complete_package(cli, image_env: str) -> None:
    result = cli("image-run")
    assert result.exit_code == 0, result.output
    summary = _summary(result.stdout)
    assert summary["s3"] == f"s3://{BUCKET}/{KEY}" and summary["uploaded"] is True
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=KEY)
    data = body["Body"].read()
    assert hashlib.sha256(data).hexdigest() == summary["sha256"]
    assert body["Metadata"]["sha256"] == summary["sha256"]
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"server.py", "index.py", "__metorial__/bootstrap.py"} <= names
    assert any(n.startswith("humanize/") for n in names)
    assert any(n.startswith("mcp/") for n in names)

    recorder = Recorder(image_env)
    recorder.start()
    again = cli("image-run")
    assert again.exit_code == 0, again.output
    assert _summary(again.stdout)["sha256"] == summary["sha256"]
    assert _summary(again.stdout)["uploaded"] is False
    assert recorder.writes() == []


def test_print_manifest_shows_the_synthesised_manifest(cli, image_env: str) -> None:
    result = cli("plan", "--print-manifest")
    assert result.exit_code == 0, result.output
    assert '[targets.image]\nkind = "s3"' in result.stdout
    assert 'sha256 = "' in result.stdout  # pinned to what was downloaded
    assert result.stdout.startswith("# Synthesised by pmcp-build")


def test_missing_s3_key_is_one_clear_line(
    cli, image_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("S3_KEY")
    result = cli("image-run")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == "error: S3_BUCKET is set but S3_KEY is not; set both (or --s3 s3://B/K)"
    )


def test_unreachable_zip_url_is_one_clear_line(
    cli, image_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZIP_URL", "http://127.0.0.1:9/src.zip")
    result = cli("image-run")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot download http://127.0.0.1:9/src.zip" in lines[0]


def test_hostile_source_is_refused_before_upload(cli, image_env: str, http_dir) -> None:
    root, _ = http_dir
    zip_with(root / "src.zip", [("../../escape.py", b"x", 0o644)])
    result = cli("image-run")
    assert result.exit_code == 1
    assert "path traversal" in result.stderr
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET)
    assert listed.get("KeyCount", 0) == 0


def test_source_with_its_own_manifest_uses_it(cli, image_env: str, http_dir) -> None:
    root, _ = http_dir
    src = EXAMPLES / "python-server"
    manifest = (
        (src / "metorial.toml").read_text().replace('name = "text-tools"', 'name = "from-source"')
    )
    manifest = manifest.replace('python = "3.11"', f'python = "{HOST_PY}"')
    manifest = manifest.replace('architecture = "x86_64"', f'architecture = "{HOST_ARCH}"')
    zip_with(
        root / "src.zip",
        [
            ("server.py", (src / "server.py").read_bytes(), 0o644),
            ("requirements.txt", (src / "requirements.txt").read_bytes(), 0o644),
            ("README.md", (src / "README.md").read_bytes(), 0o644),
            ("metorial.toml", manifest.encode(), 0o644),
        ],
    )
    result = cli("image-run")
    assert result.exit_code == 0, result.output
    data = boto3.client("s3").get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert "docs/README.md" in names  # the source manifest's asset was honoured


@pytest.mark.parametrize(
    "manifest, fragment",
    [
        (
            b'[server]\nname = "x"\n[runtime]\nkind = "python"\n'
            b'[[assets]]\nfrom = "server.py"\nto = "../../evil.py"\n',
            "no '..'",
        ),
        (
            b'[server]\nname = "x"\n[runtime]\nkind = "python"\n'
            b'[[assets]]\nfrom = "server.py"\nto = "./__metorial__/metorial.py"\n',
            "__metorial__",
        ),
        (
            f'[server]\nname = "x"\n[runtime]\nkind = "python"\npython = "{HOST_PY}"\n'.encode()
            + f'architecture = "{HOST_ARCH}"\n[[assets]]\nfrom = "server.py"\n'.encode()
            + b'to = "./index.py"\n',
            "two files want the package path 'index.py'",
        ),
    ],
)
def test_hostile_own_manifest_is_refused_before_upload(
    cli, image_env: str, http_dir, manifest: bytes, fragment: str
) -> None:
    root, _ = http_dir
    server = (EXAMPLES / "python-server" / "server.py").read_bytes()
    zip_with(root / "src.zip", [("server.py", server, 0o644), ("metorial.toml", manifest, 0o644)])
    recorder = Recorder(image_env)
    recorder.start()
    result = cli("image-run")
    assert result.exit_code == 1, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert recorder.writes() == []
