"""`pmcp-build outputs` (what a deployed target is, read back from AWS or the local
deployment), and `destroy --json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3

from .conftest import BUCKET, _fn


def _apply(cli: Any, project: Path, *targets: str) -> None:
    for target in targets:
        result = cli("-C", str(project), "apply", "--auto-approve", "-t", target)
        assert result.exit_code == 0, result.output


def test_outputs_of_a_lambda_target_as_text_and_json(cli: Any, project: Path) -> None:
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256\n", 'memory = 256\nalias = "live"\n'))
    _apply(cli, project, "prod")
    plan = json.loads(cli("-C", str(project), "plan", "--json", "-t", "prod").stdout)
    sha = plan["package"]["sha256"]
    lam = boto3.client("lambda")
    arn = _fn()["FunctionArn"]
    url = lam.get_function_url_config(FunctionName="tiny-prod", Qualifier="live")["FunctionUrl"]
    version = lam.get_alias(FunctionName="tiny-prod", Name="live")["FunctionVersion"]
    result = cli("-C", str(project), "outputs", "-t", "prod", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "prod": {
            "function_arn": arn,
            "version": version,
            "alias": "live",
            "alias_arn": f"{arn}:live",
            "url": url,
            "bucket": BUCKET,
            "key": f"builds/tiny/tiny-{sha}.zip",
            "package_sha256": sha,
        }
    }
    boto3.client("s3").head_object(Bucket=BUCKET, Key=f"builds/tiny/tiny-{sha}.zip")
    text = cli("-C", str(project), "outputs", "-t", "prod")
    assert text.exit_code == 0, text.output
    assert f"prod.function_arn = {arn}\n" in text.stdout
    assert f"prod.url = {url}\n" in text.stdout
    assert f"prod.package_sha256 = {sha}\n" in text.stdout


def test_outputs_of_s3_and_local_targets(cli: Any, project: Path) -> None:
    _apply(cli, project, "artifact", "dev")
    result = cli("-C", str(project), "outputs", "-t", "artifact", "-t", "dev", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    sha = found["artifact"]["package_sha256"]
    assert len(sha) == 64
    assert found["artifact"] == {
        "s3": f"s3://{BUCKET}/builds/lambda.zip",
        "bucket": BUCKET,
        "key": "builds/lambda.zip",
        "package_sha256": sha,
    }
    assert found["dev"] == {
        "path": str(project.resolve() / ".pmcp" / "deployments" / "dev"),
        "package_sha256": sha,
    }


def test_outputs_of_a_target_not_deployed_is_one_line(cli: Any, project: Path) -> None:
    for target, fragment in (
        ("prod", "function 'tiny-prod' does not exist in eu-west-1"),
        ("artifact", f"s3://{BUCKET}/builds/lambda.zip does not exist"),
        ("dev", "nothing deployed at"),
    ):
        result = cli("-C", str(project), "outputs", "-t", target)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], result.stderr
        assert "run `pmcp-build apply -t" in lines[0]
    unknown = cli("-C", str(project), "outputs", "-t", "nope")
    assert unknown.exit_code == 1 and "no target 'nope'" in unknown.stderr


def test_destroy_json(cli: Any, project: Path) -> None:
    _apply(cli, project, "prod")
    result = cli("-C", str(project), "destroy", "-t", "prod", "--auto-approve", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["target"] == "prod" and data["changes"] is True
    resources = [d["resource"] for d in data["destroyed"]]
    assert "lambda tiny-prod" in resources
    assert data["applied"]["prod"]
    again = cli("-C", str(project), "destroy", "-t", "prod", "--auto-approve", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {"target": "prod", "changes": False, "destroyed": []}
