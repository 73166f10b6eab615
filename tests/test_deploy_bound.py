"""A saved plan is bound to where it runs: `apply FILE` refuses, in one line naming the
field and both values and before any remote write, a plan whose connection (region,
endpoint, profile, account) differs from what the manifest and the environment give
now, even when the file's digest was recomputed after the edit."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from pmcp_build.deploy.saved import canonical

from .conftest import _fn


def _plan_out(cli: Any, project: Path, saved: Path) -> None:
    result = cli("-C", str(project), "plan", "--out", str(saved), "-t", "prod")
    assert result.exit_code == 0, result.output


def _refused(cli: Any, saved: Path, *fragments: str) -> str:
    result = cli("apply", str(saved))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr
    assert "Traceback" not in result.output and "Apply complete" not in result.output
    return lines[0]


def _refused_in_a_new_process(saved: Path, *fragments: str) -> None:
    """`apply FILE` as a fresh process, as CI runs it: credentials and profiles are
    read once per process (the clients are cached), so a change of them is tested so."""
    proc = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "apply", str(saved)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PMCP_NO_FAST_BUILD": "1"},
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], proc.stderr


def _not_deployed() -> None:
    with pytest.raises(boto3.client("lambda").exceptions.ResourceNotFoundException):
        _fn()


def _forge(saved: Path, change: Any) -> None:
    """Edit the file as a hostile colleague would: and recompute its sha256 digest."""
    data = json.loads(saved.read_text())
    data.pop("digest")
    change(data)
    data["digest"] = hashlib.sha256(canonical(data)).hexdigest()
    saved.write_text(json.dumps(data, indent=2))


class _Listener:
    """An HTTP endpoint on loopback that records every request (where a forged plan
    would send the signed calls, the session token and the `${env:}` values)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                seen.append(self.path)
                self.send_response(500)
                self.end_headers()

            do_GET = do_PUT = do_HEAD = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    found = _Listener()
    yield found
    found.close()


def _set(field: str, value: str) -> Any:
    def change(data: dict[str, Any]) -> None:
        data["plan"]["targets"][0]["connection"][field] = value

    return change


def test_forged_endpoint_is_refused_and_nothing_is_sent_there(
    cli: Any, project: Path, tmp_path: Path, listener: _Listener
) -> None:
    """The case from the issue: the plan file edited to `endpoint_url = http://127.0.0.1:…`
    with its digest recomputed printed "Apply complete" and sent the resolved secret
    and the session token there."""
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    _forge(saved, _set("endpoint_url", listener.url))
    _refused(cli, saved, "connection.endpoint_url", repr(listener.url), "None")
    assert listener.requests == []
    _not_deployed()


def test_forged_region_is_refused(cli: Any, project: Path, tmp_path: Path) -> None:
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    _forge(saved, _set("region", "us-east-1"))
    _refused(cli, saved, "connection.region", "'us-east-1'", "None")
    _not_deployed()


def test_forged_profile_is_refused(cli: Any, project: Path, tmp_path: Path) -> None:
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    _forge(saved, _set("profile", "other-team"))
    _refused(cli, saved, "connection.profile", "'other-team'")
    _not_deployed()


def test_forged_recorded_account_is_refused(cli: Any, project: Path, tmp_path: Path) -> None:
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    assert json.loads(saved.read_text())["inputs"]["connections"]["prod"]["account"] == (
        "123456789012"
    )
    _forge(saved, lambda d: d["inputs"]["connections"]["prod"].update(account="210987654321"))
    _refused(cli, saved, "account", "'210987654321'", "'123456789012'")
    _not_deployed()


def test_another_region_in_the_environment_is_refused(
    cli: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest names no region: AWS_REGION at plan time is part of the binding."""
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    _refused(cli, saved, "region 'eu-west-1'", "'eu-central-1'")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    _not_deployed()


def test_another_endpoint_in_the_environment_is_refused(
    cli: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_env: str
) -> None:
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    other = aws_env.replace("127.0.0.1", "localhost")  # the same moto, another endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", other)
    _refused(cli, saved, "endpoint (", repr(aws_env), repr(other))
    _not_deployed()


def test_another_account_is_refused(
    cli: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials of another account (moto keys assumed-role sessions by account)."""
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    creds = boto3.client("sts").assume_role(
        RoleArn="arn:aws:iam::210987654321:role/deployer", RoleSessionName="ci"
    )["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])
    _refused_in_a_new_process(saved, "account '123456789012'", "'210987654321'")


def test_another_profile_in_the_environment_is_refused(
    cli: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile other]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "other")
    _refused_in_a_new_process(saved, "profile None", "'other'")
    monkeypatch.delenv("AWS_PROFILE")
    _not_deployed()


def test_the_same_connection_applies(cli: Any, project: Path, tmp_path: Path) -> None:
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    result = cli("apply", str(saved))
    assert result.exit_code == 0, result.output
    assert "Apply complete" in result.stdout


def test_a_keyed_plan_applies_only_with_its_key(
    cli: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PMCP_BUILD_PLAN_KEY makes the digest an HMAC: a recomputed sha256 is refused, a
    plan without the key is refused where the key is set, and the right key applies."""
    saved = tmp_path / "p.plan"
    monkeypatch.setenv("PMCP_BUILD_PLAN_KEY", "k" * 32)
    _plan_out(cli, project, saved)
    original = saved.read_text()
    assert json.loads(original)["seal"] == "hmac-sha256"
    _forge(saved, lambda d: None)  # an unkeyed digest over the same content
    _refused(cli, saved, "edited after it was made", "another PMCP_BUILD_PLAN_KEY")
    monkeypatch.setenv("PMCP_BUILD_PLAN_KEY", "another key")
    saved.write_text(original)
    _refused(cli, saved, "edited after it was made")
    monkeypatch.delenv("PMCP_BUILD_PLAN_KEY")
    _refused(cli, saved, "sealed with PMCP_BUILD_PLAN_KEY")
    unkeyed = tmp_path / "unkeyed.plan"
    _plan_out(cli, project, unkeyed)
    monkeypatch.setenv("PMCP_BUILD_PLAN_KEY", "k" * 32)
    _refused(cli, unkeyed, "not sealed with a key")
    _not_deployed()
    result = cli("apply", str(saved))
    assert result.exit_code == 0, result.output
