"""plan / apply / destroy end to end through the CLI against a moto server on
127.0.0.1 (over HTTP, via AWS_ENDPOINT_URL); the server's own request recorder
counts what reached it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import botocore.exceptions
import pytest

from pmcp_build.deploy.targets import lambda_
from pmcp_build.deploy.targets.lambda_.role import TRUST_POLICY

from .conftest import BUCKET, SECRET, Recorder, _fn
from .helpers import python_project


def test_create_then_noop_with_zero_writes(cli, project: Path, aws_env: str) -> None:
    created = cli("-C", str(project), "apply", "--auto-approve")
    assert created.exit_code == 0, created.output
    assert "Apply complete" in created.stdout
    fn = _fn()
    assert fn["MemorySize"] == 256 and fn["Environment"]["Variables"]["TOKEN"] == SECRET
    assert fn["Handler"] == "index.handler"
    assert (
        boto3.client("lambda").get_function_url_config(FunctionName="tiny-prod")["AuthType"]
        == "NONE"
    )
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key="builds/lambda.zip")
    assert len(head["Metadata"]["sha256"]) == 64

    recorder = Recorder(aws_env)
    recorder.start()
    again = cli("-C", str(project), "apply", "--auto-approve")
    assert again.exit_code == 0, again.output
    assert "No changes" in again.stdout
    entries = recorder.entries()
    writes = [e for e in entries if e[0] not in ("GET", "HEAD") and not e[2].startswith("Get")]
    assert writes == []
    lambda_reads = [e for e in entries if "/functions/tiny-prod" in e[1]]
    s3_reads = [e for e in entries if f"/{BUCKET}/builds/tiny/" in e[1]]
    iam_reads = [e for e in entries if e[2].startswith("Get")]
    # A no-op lambda target with a public URL and role = "auto": HeadObject, GetFunction,
    # GetFunctionUrlConfig, GetPolicy, GetRolePolicy (GetRole is skipped: the function
    # names its role).
    assert (len(s3_reads), len(lambda_reads), len(iam_reads)) == (1, 3, 1)


def test_detailed_exitcode(cli, project: Path) -> None:
    assert cli("-C", str(project), "plan", "--detailed-exitcode").exit_code == 2
    assert cli("-C", str(project), "apply", "--auto-approve").exit_code == 0
    result = cli("-C", str(project), "plan", "--detailed-exitcode")
    assert result.exit_code == 0, result.output


def test_changed_asset_changes_code_only(cli, project: Path, aws_env: str) -> None:
    assert cli("-C", str(project), "apply", "--auto-approve").exit_code == 0
    before = _fn()
    (project / "data.txt").write_text("v2")
    plan = json.loads(cli("-C", str(project), "plan", "--json", "-t", "prod").stdout)
    assert plan["format_version"] == 2
    assert plan["package"]["handler"] == "index.handler" and plan["summary"]["change"] == 2
    ops = [a["op"] for a in plan["targets"][0]["actions"] if a["symbol"] != "="]
    # The package tag follows the code.
    assert ops == ["s3.upload_artifact", "lambda.update_function_code", "lambda.tag_resource"]
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    after = _fn()
    assert after["CodeSha256"] != before["CodeSha256"]
    assert {k: after[k] for k in ("MemorySize", "Timeout", "Handler", "Runtime")} == {
        k: before[k] for k in ("MemorySize", "Timeout", "Handler", "Runtime")
    }


def test_config_only_change_makes_no_upload(cli, project: Path, aws_env: str) -> None:
    assert cli("-C", str(project), "apply", "--auto-approve").exit_code == 0
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256", "memory = 1024"))
    recorder = Recorder(aws_env)
    recorder.start()
    result = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
    assert result.exit_code == 0, result.output
    writes = recorder.writes()
    assert not any(BUCKET in url for _, url in writes)  # nothing uploaded
    assert any(url.endswith("/configuration") for _, url in writes)
    assert not any(url.endswith("/code") for _, url in writes)
    assert _fn()["MemorySize"] == 1024


def test_stale_saved_plan_is_refused(cli, project: Path, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    assert cli("-C", str(project), "plan", "--out", str(saved), "-t", "prod").exit_code == 0
    # Someone else deploys in between.
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    refused = cli("apply", str(saved))
    assert refused.exit_code == 1
    assert "changed since the plan" in refused.stderr
    # And a package that no longer hashes the same:
    assert cli("-C", str(project), "plan", "--out", str(saved), "-t", "prod").exit_code == 0
    (project / "data.txt").write_text("changed")
    refused = cli("apply", str(saved))
    assert refused.exit_code == 1 and "run plan again" in refused.stderr


def test_fresh_saved_plan_applies(cli, project: Path, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    assert cli("-C", str(project), "plan", "--out", str(saved), "-t", "prod").exit_code == 0
    result = cli("apply", str(saved))
    assert result.exit_code == 0, result.output
    assert _fn()["MemorySize"] == 256


def test_secrets_absent_from_plan_text_json_and_file(cli, project: Path, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    text = cli("-C", str(project), "plan", "--out", str(saved))
    as_json = cli("-C", str(project), "plan", "--json")
    assert text.exit_code == 0 and as_json.exit_code == 0
    for blob in (text.output, as_json.output, saved.read_text()):
        assert SECRET not in blob
    assert "(sensitive)" in text.stdout
    # After apply, a changed secret shows as a change but never its values.
    assert cli("-C", str(project), "apply", "--auto-approve").exit_code == 0
    os.environ["MY_TOKEN"] = "another-secret-value"
    changed = cli("-C", str(project), "plan", "-t", "prod")
    assert "update_function_configuration" in changed.stdout
    assert "another-secret-value" not in changed.output and SECRET not in changed.output


def test_apply_without_approval_refuses_and_changes_nothing(cli, project: Path) -> None:
    result = cli("-C", str(project), "apply", "-t", "prod")
    assert result.exit_code == 1 and "--auto-approve" in result.stderr
    with pytest.raises(botocore.exceptions.ClientError):
        _fn()


def test_offline_plan_needs_no_aws(cli, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    for flag in ("--no-refresh", "--refresh=false"):
        result = cli("-C", str(project), "plan", flag)
        assert result.exit_code == 0, result.output
        assert "remote state not read" in result.stdout
    assert cli("-C", str(project), "plan", "--refresh=maybe").exit_code == 64


def test_missing_secret_is_a_user_error(
    cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_TOKEN")
    result = cli("-C", str(project), "plan")
    assert result.exit_code == 1
    assert "targets.prod.environment.TOKEN: ${env:MY_TOKEN} is not set" in result.stderr


def test_missing_bucket_is_one_line(cli, project: Path) -> None:
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace(f'bucket = "{BUCKET}"', 'bucket = "no-such-bkt"', 1))
    planned = cli("-C", str(project), "plan", "-t", "prod")
    assert planned.exit_code == 0, planned.output  # a missing bucket reads as "to create"
    # ... and the plan says so before apply finds out (one HeadBucket, object absent)
    assert (
        "warning: lambda tiny-prod: bucket no-such-bkt does not exist: apply will fail at "
        "the upload" in planned.output
    )
    result = cli("-C", str(project), "apply", "-t", "prod", "--auto-approve")
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert "bucket does not exist" in result.stderr


def test_destroy_removes_function_url_and_role_not_bucket(cli, project: Path) -> None:
    assert cli("-C", str(project), "apply", "--auto-approve").exit_code == 0
    result = cli("-C", str(project), "destroy", "-t", "prod", "--auto-approve")
    assert result.exit_code == 0, result.output
    with pytest.raises(botocore.exceptions.ClientError):
        _fn()
    with pytest.raises(botocore.exceptions.ClientError):
        boto3.client("iam").get_role(RoleName=lambda_.auto_role_name("tiny-prod"))
    assert boto3.client("s3").head_bucket(Bucket=BUCKET)
    again = cli("-C", str(project), "destroy", "-t", "prod", "--auto-approve")
    assert "nothing to destroy" in again.stdout


def test_local_target_round_trip(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    assert cli("-C", str(project), "apply", "-t", "dev", "--auto-approve").exit_code == 0
    state = json.loads((project / ".pmcp/deployments/dev/state.json").read_text())
    assert (project / ".pmcp/deployments/dev/package.zip").exists()
    second = cli("-C", str(project), "apply", "-t", "dev", "--auto-approve")
    assert "No changes" in second.stdout
    assert json.loads((project / ".pmcp/deployments/dev/state.json").read_text()) == state
    assert cli("-C", str(project), "destroy", "-t", "dev", "--auto-approve").exit_code == 0
    assert not (project / ".pmcp/deployments/dev").exists()


def test_switching_an_existing_function_to_the_auto_role_creates_it(cli, project: Path) -> None:
    arn = boto3.client("iam").create_role(
        RoleName="hand-made", AssumeRolePolicyDocument=json.dumps(TRUST_POLICY)
    )["Role"]["Arn"]
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256", f'memory = 256\nrole = "{arn}"'))
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    assert _fn()["Role"] == arn
    toml.write_text(toml.read_text().replace(f'role = "{arn}"', 'role = "auto"'))
    plan = json.loads(cli("-C", str(project), "plan", "--json", "-t", "prod").stdout)
    ops = [a["op"] for a in plan["targets"][0]["actions"] if a["symbol"] != "="]
    assert ops == ["iam.create_role", "lambda.update_function_configuration"]
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    assert _fn()["Role"].endswith("/" + lambda_.auto_role_name("tiny-prod"))
    assert cli("-C", str(project), "plan", "--detailed-exitcode", "-t", "prod").exit_code == 0


def test_targets_sharing_an_artifact_upload_it_once(
    cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two functions, one bucket and prefix: one content-addressed key. Uploading it
    from both targets at once made them abort each other's multipart upload."""
    from pmcp_build.deploy import apply

    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text()
        + f'\n[targets.prod2]\nkind = "lambda"\nfunction = "tiny-prod2"\nbucket = "{BUCKET}"\n'
        'prefix = "builds/tiny"\n'
    )
    real = apply.HELPERS[("s3", "upload_artifact")]
    uploads: list[str] = []

    def counted(client, params, progress):  # type: ignore[no-untyped-def]
        uploads.append(params["Key"])
        return real(client, params, progress)

    monkeypatch.setitem(apply.HELPERS, ("s3", "upload_artifact"), counted)
    result = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod", "-t", "prod2")
    assert result.exit_code == 0, result.output
    assert len(uploads) == 1, uploads
    assert {_fn()["CodeSha256"]} == {
        boto3.client("lambda").get_function(FunctionName="tiny-prod2")["Configuration"][
            "CodeSha256"
        ]
    }


def test_an_s3_targets_missing_bucket_is_a_warning_in_the_plan(cli, project: Path) -> None:
    toml = project / "metorial.toml"
    text = toml.read_text()
    head, tail = text.split("[targets.artifact]")
    toml.write_text(head + "[targets.artifact]" + tail.replace(BUCKET, "no-such-bkt", 1))
    planned = cli("-C", str(project), "plan", "-t", "artifact")
    assert planned.exit_code == 0, planned.output
    assert "warning: s3 artifact: bucket no-such-bkt does not exist" in planned.output
    # A bucket that exists says nothing of the kind.
    fine = cli("-C", str(project), "plan", "-t", "prod")
    assert f"bucket {BUCKET} does not exist" not in fine.output
    assert "warning: lambda tiny-prod: bucket" not in fine.output
