"""Kill apply after each write call in turn, against the moto server, and apply again:
it must converge, and only then say "No changes"; a further apply makes no write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from pmcp_build.deploy import apply
from pmcp_build.deploy.actions import Call
from pmcp_build.errors import UserError

from .conftest import Recorder, _fn


class Killed(UserError):
    pass


def _crash_with(monkeypatch: pytest.MonkeyPatch, on_call: Any) -> None:
    """Hand the executor an `on_call` hook for the CLI's next apply."""
    real = apply.execute
    monkeypatch.setattr(
        apply, "execute", lambda *args, **kw: real(*args, **{**kw, "on_call": on_call})
    )


def _writes_of_a_fresh_apply(cli: Any, project: Path) -> list[str]:
    plan = json.loads(cli("-C", str(project), "plan", "--json", "-t", "prod").stdout)
    return [
        f"{c['service']}.{c['operation']}"
        for a in plan["targets"][0]["actions"]
        for c in a["calls"]
        if not c["operation"].startswith("get_")
    ]


def _reset(aws_env: str) -> None:
    import boto3

    httpx.post(f"{aws_env}/moto-api/reset")
    boto3.client("s3").create_bucket(
        Bucket="acme-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )


def test_apply_killed_after_every_write_converges(
    cli: Any, project: Path, aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _writes_of_a_fresh_apply(cli, project)
    # upload, role + its policy, function, URL, and the two public-URL grants
    assert writes == [
        "s3.upload_artifact",
        "iam.ensure_role",
        "iam.put_role_policy",
        "lambda.create_function",
        "lambda.create_function_url_config",
        "lambda.add_permission",
        "lambda.add_permission",
    ]
    for kill_after in range(len(writes)):
        _reset(aws_env)
        seen: list[Call] = []

        def crash(
            target: str, call: Call, kill_after: int = kill_after, seen: list[Call] = seen
        ) -> None:
            if call.operation.startswith("get_"):
                return
            seen.append(call)
            if len(seen) > kill_after:
                raise Killed(f"simulated crash after {call.service}.{call.operation}")

        with monkeypatch.context() as patched:
            _crash_with(patched, crash)
            failed = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
        assert failed.exit_code == 1 and "simulated crash" in failed.stderr, failed.output

        resumed = cli("-C", str(project), "plan", "-t", "prod")
        unfinished = kill_after < len(writes) - 1  # killed after the last write: all done
        assert ("No changes" not in resumed.stdout) == unfinished, (kill_after, resumed.stdout)
        again = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
        assert again.exit_code == 0, (kill_after, again.output)
        settled = cli("-C", str(project), "plan", "--detailed-exitcode", "-t", "prod")
        assert settled.exit_code == 0, (kill_after, settled.output)
        recorder = Recorder(aws_env)
        recorder.start()
        assert (
            "No changes" in cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").stdout
        )
        assert recorder.writes() == [], kill_after
        assert _fn()["State"] in ("Active", "Pending")


def test_update_killed_between_code_and_configuration_converges(
    cli: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    (project / "data.txt").write_text("v3")
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256", "memory = 384"))

    def crash(target: str, call: Call) -> None:
        if call.operation == "update_function_code":
            raise Killed("simulated crash after the code update")

    with monkeypatch.context() as patched:
        _crash_with(patched, crash)
        assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 1
    plan = json.loads(cli("-C", str(project), "plan", "--json", "-t", "prod").stdout)
    ops = [a["op"] for a in plan["targets"][0]["actions"] if a["symbol"] != "="]
    assert ops == ["lambda.update_function_configuration", "lambda.tag_resource"]  # code done
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    assert _fn()["MemorySize"] == 384
    assert cli("-C", str(project), "plan", "--detailed-exitcode", "-t", "prod").exit_code == 0
