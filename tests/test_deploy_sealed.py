"""Saved plans are sealed: `apply F` runs exactly the file's actions, or refuses with
one line saying what changed (the file, the manifest, an `${env:}` value, the package
or any remote value the plan diffed). Secrets never reach any output or file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from .conftest import BUCKET, LAMBDA, SECRET, _fn


def _plan_out(cli: Any, project: Path, saved: Path) -> None:
    result = cli("-C", str(project), "plan", "--out", str(saved), "-t", "prod")
    assert result.exit_code == 0, result.output


def _refused(cli: Any, saved: Path, fragment: str) -> None:
    result = cli("apply", str(saved))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output


def _edit(saved: Path, change: Any) -> None:
    data = json.loads(saved.read_text())
    change(data)
    saved.write_text(json.dumps(data, indent=2))


TAMPERING = {
    "action params": lambda d: d["plan"]["targets"][0]["actions"][1]["calls"][0]["params"].update(
        {"MemorySize": 2048}
    ),
    "action list": lambda d: d["plan"]["targets"][0]["actions"].pop(),
    "summary": lambda d: d["plan"]["summary"].update({"add": 0}),
    "manifest path": lambda d: d["inputs"]["manifest"].update({"path": "/tmp/other.toml"}),
    "manifest digest": lambda d: d["inputs"]["manifest"].update({"sha256": "0" * 64}),
    "package": lambda d: d["inputs"].update({"package_sha256": "0" * 64}),
    "observed state": lambda d: d["plan"]["targets"][0]["observed"].update({"artifact": True}),
    "secret digest": lambda d: d["inputs"]["secrets"]["prod"].update({"environment": "00"}),
    "connection": lambda d: d["plan"]["targets"][0]["connection"].update(
        {"endpoint_url": "http://127.0.0.1:1"}
    ),
    "digest": lambda d: d.update({"digest": "0" * 64}),
    "no digest": lambda d: d.pop("digest"),
}


@pytest.mark.parametrize("part", sorted(TAMPERING))
def test_every_edit_to_a_saved_plan_is_refused(
    cli: Any, project: Path, tmp_path: Path, part: str
) -> None:
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    _edit(saved, TAMPERING[part])
    _refused(cli, saved, "edited after it was made")
    with pytest.raises(boto3.client("lambda").exceptions.ResourceNotFoundException):
        _fn()  # nothing was deployed


def test_manifest_edit_after_plan_is_refused(cli: Any, project: Path, tmp_path: Path) -> None:
    """The case from the issue: memory 256 -> 2048 and url auth -> NONE after review."""
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace('url = { auth = "NONE" }', 'url = { auth = "AWS_IAM" }')
    )
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    toml.write_text(
        toml.read_text()
        .replace("memory = 256", "memory = 2048")
        .replace('url = { auth = "AWS_IAM" }', 'url = { auth = "NONE" }')
    )
    _refused(cli, saved, "metorial.toml changed since the plan")


def test_env_value_change_after_plan_is_refused(
    cli: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    monkeypatch.setenv("MY_TOKEN", "a-different-secret")
    _refused(cli, saved, "environment (a ${env:…} value) changed")


def test_remote_drift_after_plan_is_refused_naming_the_field(
    cli: Any, project: Path, tmp_path: Path
) -> None:
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256", "memory = 512"))
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    boto3.client("lambda").update_function_url_config(FunctionName="tiny-prod", AuthType="AWS_IAM")
    _refused(cli, saved, "changed since the plan (url.AuthType)")


def test_saved_plan_runs_its_own_actions(cli: Any, project: Path, tmp_path: Path) -> None:
    saved = tmp_path / "p.plan"
    _plan_out(cli, project, saved)
    result = cli("apply", str(saved))
    assert result.exit_code == 0, result.output
    assert _fn()["MemorySize"] == 256
    # Applied once, the same file is stale: the world is no longer what it describes.
    _refused(cli, saved, "changed since the plan")


def test_url_auth_drift_is_visible_and_public_url_is_a_warning(cli: Any, project: Path) -> None:
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    boto3.client("lambda").update_function_url_config(FunctionName="tiny-prod", AuthType="AWS_IAM")
    plan = cli("-C", str(project), "plan", "-t", "prod")
    assert "~ function url tiny-prod lambda.update_function_url_config" in plan.stdout
    assert "AuthType: AWS_IAM -> NONE" in plan.stdout
    assert "warning: lambda tiny-prod: url auth is NONE: the MCP endpoint is public" in plan.stdout


def test_public_url_grants_both_permissions_and_iam_auth_removes_them(
    cli: Any, project: Path
) -> None:
    """Since October 2025 an auth NONE URL needs lambda:InvokeFunctionUrl and
    lambda:InvokeFunction in the resource policy, or every request gets 403."""
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    policy = json.loads(boto3.client("lambda").get_policy(FunctionName="tiny-prod")["Policy"])
    actions = sorted(s["Action"] for s in policy["Statement"])
    assert actions == ["lambda:InvokeFunction", "lambda:InvokeFunctionUrl"]
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace('url = { auth = "NONE" }', 'url = { auth = "AWS_IAM" }')
    )
    result = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
    assert result.exit_code == 0, result.output
    for sid in ("pmcp-url-public", "pmcp-url-invoke"):
        assert f"prod: - url permission tiny-prod/{sid} lambda.remove_permission" in result.stdout
    lam = boto3.client("lambda")
    try:
        left = json.loads(lam.get_policy(FunctionName="tiny-prod")["Policy"])["Statement"]
    except lam.exceptions.ResourceNotFoundException:
        left = []
    assert left == []
    # And back to public adds both again (the case that never converged before).
    toml.write_text(
        toml.read_text().replace('url = { auth = "AWS_IAM" }', 'url = { auth = "NONE" }')
    )
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    policy = json.loads(lam.get_policy(FunctionName="tiny-prod")["Policy"])
    assert len(policy["Statement"]) == 2
    assert cli("-C", str(project), "plan", "--detailed-exitcode", "-t", "prod").exit_code == 0


def test_apply_ends_with_outputs_every_time(cli: Any, project: Path) -> None:
    first = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
    assert first.exit_code == 0, first.output
    url = boto3.client("lambda").get_function_url_config(FunctionName="tiny-prod")["FunctionUrl"]
    arn = _fn()["FunctionArn"]
    for result in (first, cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")):
        assert f"prod.function_arn = {arn}" in result.stdout
        assert f"prod.url = {url}" in result.stdout
    as_json = json.loads(cli("-C", str(project), "apply", "--auto-approve", "--json").stdout)
    assert as_json["outputs"]["prod"]["url"] == url
    assert as_json["outputs"]["prod"]["function_arn"] == arn


def test_canary_secret_never_leaves(
    cli: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remote environment values are always shown as (sensitive), also after the
    manifest stops naming them; a canary appears nowhere, `--debug` included."""
    outputs = [cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").output]
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace(
            'environment = { LOG_LEVEL = "info", TOKEN = "${env:MY_TOKEN}" }',
            'environment = { LOG_LEVEL = "debug" }',
        )
    )
    saved = tmp_path / "p.plan"
    for args in (
        ("plan", "-t", "prod"),
        ("plan", "--json", "-t", "prod"),
        ("plan", "--out", str(saved), "-t", "prod"),
        ("--debug", "plan", "-t", "prod"),
    ):
        result = cli("-C", str(project), *args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    text = cli("-C", str(project), "plan", "-t", "prod").stdout
    assert "Environment.TOKEN: (sensitive) -> (none)" in text
    assert "Environment.LOG_LEVEL: (sensitive) -> debug" in text
    outputs.append(cli("apply", str(saved)).output)
    monkeypatch.setenv("MY_TOKEN", SECRET)
    files = [saved, *(p for p in (project / ".pmcp").rglob("*") if p.is_file())]
    for blob in [*outputs, *(f.read_bytes().decode("latin-1") for f in files)]:
        assert SECRET not in blob
    assert "TOKEN" not in _fn()["Environment"]["Variables"]


def test_orphaned_multipart_upload_is_cleaned_up(cli: Any, project: Path) -> None:
    """A killed upload leaves a multipart upload behind; the next apply aborts ours."""
    s3 = boto3.client("s3")
    plan = json.loads(cli("-C", str(project), "plan", "--json", "-t", "prod").stdout)
    key = plan["targets"][0]["actions"][0]["calls"][0]["params"]["Key"]
    s3.create_multipart_upload(Bucket=BUCKET, Key=key)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_offline_plan_cannot_be_saved(cli: Any, project: Path, tmp_path: Path) -> None:
    result = cli(
        "-C", str(project), "plan", "--no-refresh", "--out", str(tmp_path / "offline.plan")
    )
    assert result.exit_code == 1 and "--refresh=false cannot be applied" in result.stderr
    assert not (tmp_path / "offline.plan").exists()
    assert LAMBDA  # the shared manifest fragment this module builds on
