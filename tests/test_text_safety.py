"""Text stays text: nothing pmcp-build prints is read as rich markup or emoji codes, and
a resolved `${env:}` value is masked in every spelling it can take (raw, JSON-escaped,
`repr`, URL-encoded, base64) in text, `--json` and `--debug` output alike."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import botocore.client
import pytest
from botocore.exceptions import ClientError

MASK = "(sensitive)"
# A secret with what JSON and repr escape ('"', '\'), and a non-ASCII letter.
SECRET = 'pa"ss\\wörd-s3cr3t'
MARK = "s3cr3t"  # survives every escaping of SECRET but base64


# -- emoji codes and markup -----------------------------------------------------------


def test_a_package_change_prints_the_tag_name_not_an_emoji(cli: Any, project: Path) -> None:
    """`Tags.pmcp-build:package: A -> B` printed `Tags.pmcp-build📦 A -> B`."""
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace("memory = 256\n", 'memory = 256\ntags = { team = "mcp" }\n', 1)
    )
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    (project / "data.txt").write_text("v2")
    plan = cli("-C", str(project), "plan", "-t", "prod")
    assert plan.exit_code == 0, plan.output
    assert "Tags.pmcp-build:package:" in plan.stdout
    assert "📦" not in plan.output


def test_an_emoji_code_in_a_tag_is_printed_as_written(cli: Any, project: Path) -> None:
    """A tag `team:smile:x` printed `team😄x`."""
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace(
            "memory = 256\n", 'memory = 256\ntags = { "team:smile:x" = "a:rocket:b" }\n', 1
        )
    )
    for args in (("plan",), ("apply", "--auto-approve")):
        result = cli("-C", str(project), *args, "-t", "prod")
        assert result.exit_code == 0, result.output
        assert "team:smile:x" in result.stdout and "a:rocket:b" in result.stdout
        assert "😄" not in result.output and "🚀" not in result.output


def test_validate_and_errors_print_emoji_codes_as_written(cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "x:smile:y"
    folder.mkdir()
    (folder / "metorial.toml").write_text('[server]\nname = "demo"\n[runtime]\nkind = "python"\n')
    (folder / "server.py").write_text("")
    ok = cli("-C", str(folder), "validate", "-f", str(folder / "metorial.toml"))
    assert ok.exit_code == 0, ok.output
    assert "x:smile:y" in ok.stdout and "😄" not in ok.stdout
    (folder / "metorial.toml").write_text(
        '[server]\nname = "demo"\n"a:rocket:b" = 1\n[runtime]\nkind = "python"\n'
    )
    bad = cli("-C", str(folder), "validate")
    assert bad.exit_code == 1
    assert "a:rocket:b" in bad.stderr and "🚀" not in bad.stderr


# -- secrets in every spelling -----------------------------------------------------------


def _spelled(secret: str) -> list[str]:
    once = json.dumps(secret)[1:-1]
    return [
        secret,
        once,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(once)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode().rstrip("="),
    ]


def test_masking_covers_each_spelling() -> None:
    from pmcp_build.text import masked

    for form in _spelled(SECRET):
        assert masked(f"<{form}>", [SECRET]) == f"<{MASK}>", form


@pytest.fixture
def echoing_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateFunction fails as real Lambda does when the environment is too large: its
    message quotes the variables it was sent, as JSON ("String measured: {...}"). moto
    never echoes them, so the call is answered here, before it is sent (a stub)."""
    real = botocore.client.BaseClient._make_api_call

    def make_api_call(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "CreateFunction":
            variables = params.get("Environment", {}).get("Variables", {})
            token = variables.get("TOKEN", "")
            message = (
                "Lambda was unable to configure your environment variables because the "
                "environment variables you have provided exceeded the 4KB limit. String "
                f"measured: {json.dumps(variables)} (as sent: {token!r}, "
                f"{quote(token, safe='')}, {base64.b64encode(token.encode()).decode()})"
            )
            raise ClientError(
                {"Error": {"Code": "InvalidParameterValueException", "Message": message}},
                operation,
            )
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)


@pytest.mark.parametrize(
    "args",
    [(), ("--json",), ("--debug",)],
    ids=["text", "json", "debug"],
)
def test_an_aws_error_quoting_the_environment_never_shows_the_secret(
    cli: Any,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    echoing_aws: None,
    args: tuple[str, ...],
) -> None:
    monkeypatch.setenv("MY_TOKEN", SECRET)
    command = ["-C", str(project)]
    if args == ("--debug",):
        command = ["--debug", *command]
    command += ["apply", "--auto-approve", "-t", "prod", *(a for a in args if a != "--debug")]
    result = cli(*command)
    assert result.exit_code == 1, result.output
    assert "InvalidParameterValueException" in result.stderr
    assert MASK in result.stderr
    if args == ("--debug",):
        assert "Traceback" in result.stderr
    for form in _spelled(SECRET):
        assert form not in result.output, form
    assert MARK not in result.output


def test_a_secret_in_plan_json_is_masked_in_every_spelling(
    cli: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function someone configured by hand to hold the secret in a tag: the plan
    quotes the tag, and the JSON encodes it; neither shows it."""
    monkeypatch.setenv("MY_TOKEN", SECRET)
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    import boto3

    lam = boto3.client("lambda")
    arn = lam.get_function(FunctionName="tiny-prod")["Configuration"]["FunctionArn"]
    lam.tag_resource(Resource=arn, Tags={"note": SECRET})
    for args in (("plan", "-t", "prod"), ("plan", "--json", "-t", "prod")):
        result = cli("-C", str(project), *args)
        assert result.exit_code == 0, result.output
        for form in _spelled(SECRET):
            assert form not in result.output, form
        assert MARK not in result.output
        assert MASK in result.stdout
