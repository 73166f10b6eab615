"""Whose resources pmcp-build changes, end to end through the CLI against the moto
server: only what carries its `pmcp-build:managed` tag, unless the target says
`adopt = true`; a public grant someone else added is a warning in every plan and
refuses an older saved plan; and an alias after `rollback` (and `rollback --to`)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from pmcp_build.deploy.targets.lambda_.role import TRUST_POLICY, auto_role_name

from .conftest import BUCKET, _fn


def _foreign_role(name: str) -> str:
    iam = boto3.client("iam")
    made = iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
        Tags=[{"Key": "team", "Value": "other"}],
    )
    return str(made["Role"]["Arn"])


def _foreign_function(name: str = "tiny-prod") -> dict[str, Any]:
    """A function another team made by hand: no pmcp-build tag."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("theirs.py", "def handler(e, c):\n    return 'theirs'\n")
    made = boto3.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=_foreign_role("their-role"),
        Handler="theirs.handler",
        Code={"ZipFile": buf.getvalue()},
        MemorySize=128,
        Tags={"team": "other"},
    )
    return dict(made)


def _error_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _set(project: Path, old: str, new: str) -> None:
    toml = project / "metorial.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))


def _apply(cli: Any, project: Path, *args: str) -> Any:
    result = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod", *args)
    assert result.exit_code == 0, result.output
    return result


# -- functions -------------------------------------------------------------------------------


def test_a_function_pmcp_build_did_not_create_is_refused(cli: Any, project: Path) -> None:
    before = _foreign_function()
    for args in (["plan", "-t", "prod"], ["apply", "--auto-approve", "-t", "prod"]):
        result = cli("-C", str(project), *args)
        assert result.exit_code == 1, (args, result.output)
        assert _error_lines(result) == [
            "error: target 'prod': lambda function 'tiny-prod' exists and was not created "
            "by pmcp-build (no pmcp-build:managed tag); set adopt = true in [targets.prod] "
            "to take it over, or name another function"
        ], result.stderr
    after = _fn()
    assert (after["CodeSha256"], after["MemorySize"]) == (before["CodeSha256"], 128)
    assert "pmcp-build:managed" not in (
        boto3.client("lambda").get_function(FunctionName="tiny-prod").get("Tags") or {}
    )


def test_adopt_takes_the_function_over_and_shows_it(cli: Any, project: Path) -> None:
    _foreign_function()
    _set(project, "memory = 256\n", "memory = 256\nadopt = true\n")
    plan = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert (
        "~ lambda tiny-prod tags lambda.tag_resource  # adopt = true: pmcp-build takes over "
        "this function, which it did not create" in plan.stdout
    )
    assert "Tags.pmcp-build:managed: (none) -> true" in plan.stdout
    _apply(cli, project)
    tags = boto3.client("lambda").get_function(FunctionName="tiny-prod")["Tags"]
    assert tags["pmcp-build:managed"] == "true" and _fn()["MemorySize"] == 256
    again = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert again.exit_code == 0, again.output


def test_destroy_never_deletes_an_unmanaged_function(cli: Any, project: Path) -> None:
    _foreign_function()
    result = cli("-C", str(project), "destroy", "-t", "prod", "--auto-approve")
    assert result.exit_code == 1, result.output
    assert "lambda function 'tiny-prod' was not created by pmcp-build" in result.stderr
    assert "destroy leaves it alone" in result.stderr
    assert _fn()["Handler"] == "theirs.handler"  # still there


def test_dropping_the_managed_tag_by_hand_makes_the_function_foreign(
    cli: Any, project: Path
) -> None:
    _apply(cli, project)
    lam = boto3.client("lambda")
    lam.untag_resource(Resource=_fn()["FunctionArn"], TagKeys=["pmcp-build:managed"])
    result = cli("-C", str(project), "plan", "-t", "prod")
    assert result.exit_code == 1 and "adopt = true" in result.stderr, result.output


# -- the auto role ---------------------------------------------------------------------------


def test_a_foreign_role_under_the_auto_name_is_refused_then_adopted(
    cli: Any, project: Path
) -> None:
    _foreign_role("tiny-prod-pmcp-exec")
    refused = cli("-C", str(project), "plan", "-t", "prod")
    assert refused.exit_code == 1, refused.output
    assert _error_lines(refused) == [
        "error: target 'prod': IAM role 'tiny-prod-pmcp-exec' exists and was not created by "
        "pmcp-build (no pmcp-build:managed tag); set adopt = true in [targets.prod] to take "
        "it over, or set role to its ARN to use it as is"
    ]
    with pytest.raises(botocore.exceptions.ClientError):
        _fn()  # nothing was created

    _set(project, "memory = 256\n", "memory = 256\nadopt = true\n")
    plan = cli("-C", str(project), "plan", "-t", "prod")
    assert plan.exit_code == 0, plan.output
    assert "~ iam role tiny-prod-pmcp-exec iam.tag_role  # adopt = true" in plan.stdout
    assert "iam.create_role" not in plan.stdout
    _apply(cli, project)
    tags = boto3.client("iam").list_role_tags(RoleName="tiny-prod-pmcp-exec")["Tags"]
    assert {t["Key"]: t["Value"] for t in tags}["pmcp-build:managed"] == "true"
    assert cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode").exit_code == 0


def test_destroy_keeps_an_unmanaged_role_even_under_the_auto_name(cli: Any, project: Path) -> None:
    _apply(cli, project)
    iam = boto3.client("iam")
    iam.untag_role(RoleName="tiny-prod-pmcp-exec", TagKeys=["pmcp-build:managed"])
    result = cli("-C", str(project), "destroy", "-t", "prod", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert "iam role" not in result.stdout
    with pytest.raises(botocore.exceptions.ClientError):
        _fn()
    assert iam.get_role(RoleName="tiny-prod-pmcp-exec")["Role"]["RoleName"]


def test_long_function_names_get_roles_of_their_own(cli: Any, project: Path) -> None:
    """Cut at 64 characters, "x"*58 and "x"*58 + "-pmcp" shared one role, and
    destroying one target deleted the role the other runs as."""
    short, longer = "x" * 58, "x" * 58 + "-pmcp"
    extra = "".join(
        f'\n[targets.{name}]\nkind = "lambda"\nfunction = "{fn}"\nbucket = "{BUCKET}"\n'
        for name, fn in (("a", short), ("b", longer))
    )
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text() + extra)
    result = cli("-C", str(project), "apply", "--auto-approve", "-t", "a", "-t", "b")
    assert result.exit_code == 0, result.output
    lam, iam = boto3.client("lambda"), boto3.client("iam")
    roles = {lam.get_function(FunctionName=f)["Configuration"]["Role"] for f in (short, longer)}
    assert len(roles) == 2 and all(len(r.rsplit("/", 1)[1]) <= 64 for r in roles)
    assert cli("-C", str(project), "destroy", "-t", "a", "--auto-approve").exit_code == 0
    assert iam.get_role(RoleName=auto_role_name(longer))
    kept = cli("-C", str(project), "plan", "-t", "b", "--detailed-exitcode")
    assert kept.exit_code == 0, kept.output


# -- public grants someone else added -----------------------------------------------------------


def test_a_public_grant_by_hand_is_a_warning_and_refuses_an_older_saved_plan(
    cli: Any, project: Path, tmp_path: Path
) -> None:
    """moto returns a hand-added statement as AWS does (Principal "*", the action, no
    Condition), so this runs against it; the Condition shapes AWS writes for URL
    grants are held on plain data in test_lambda_diff.py and under Stubber below."""
    _set(project, 'url = { auth = "NONE" }\n', "")
    _apply(cli, project)
    saved = tmp_path / "p.plan"
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256", "memory = 384"))
    made = cli("-C", str(project), "plan", "-t", "prod", "--out", str(saved))
    assert made.exit_code == 0 and "warning: lambda tiny-prod: resource" not in made.stdout
    boto3.client("lambda").add_permission(
        FunctionName="tiny-prod",
        StatementId="open-to-all",
        Action="lambda:InvokeFunction",
        Principal="*",
    )
    plan = cli("-C", str(project), "plan", "-t", "prod")
    assert plan.exit_code == 0, plan.output
    assert (
        "warning: lambda tiny-prod: resource-policy statement 'open-to-all' (not made by "
        'pmcp-build) grants lambda:InvokeFunction to Principal "*" with no condition'
    ) in plan.stdout
    refused = cli("apply", str(saved))
    assert refused.exit_code == 1, refused.output
    assert "changed since the plan (public)" in refused.stderr
    assert _fn()["MemorySize"] == 256  # nothing was written


def test_public_grants_read_in_the_form_aws_writes() -> None:
    """Stubber: AWS writes a URL grant's FunctionUrlAuthType as a Condition (moto puts
    it beside the statement), and a SourceAccount as one that narrows who may call."""
    from botocore.stub import Stubber

    from pmcp_build.deploy.targets.lambda_.model import Config, PublicGrant
    from pmcp_build.deploy.targets.lambda_.read import read

    from .test_lambda_diff import want

    lam = boto3.client(
        "lambda", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    statements = [
        {
            "Sid": "their-url",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "lambda:InvokeFunctionUrl",
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
        },
        {
            "Sid": "their-sns",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "lambda:InvokeFunction",
        },
        {
            "Sid": "one-account",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "lambda:InvokeFunction",
            "Condition": {"StringEquals": {"AWS:SourceAccount": "123456789012"}},
        },
    ]
    config = {"FunctionName": "f", "Role": "arn:aws:iam::123456789012:role/r"}
    with Stubber(lam) as stub:
        stub.add_response("get_function", {"Configuration": config}, {"FunctionName": "f"})
        stub.add_client_error(
            "get_function_url_config",
            "ResourceNotFoundException",
            expected_params={"FunctionName": "f"},
        )
        stub.add_response(
            "get_policy", {"Policy": json.dumps({"Statement": statements})}, {"FunctionName": "f"}
        )

        class Clients:
            pass

        clients: Any = Clients()
        clients.lam = lam
        given_role = want(key=None, config=Config(None, None, "arn:aws:iam::1:role/r", 1, 1))
        state = read(given_role, clients)
        stub.assert_no_pending_responses()
    assert state.public == (PublicGrant("their-url", "lambda:InvokeFunctionUrl", None),)


# -- rollback ----------------------------------------------------------------------------------


def _versions() -> list[str]:
    listed = boto3.client("lambda").list_versions_by_function(FunctionName="tiny-prod")
    return [v["Version"] for v in listed["Versions"] if v["Version"] != "$LATEST"]


def _alias() -> str:
    lam = boto3.client("lambda")
    return str(lam.get_alias(FunctionName="tiny-prod", Name="live")["FunctionVersion"])


def _two_versions(cli: Any, project: Path) -> None:
    _set(project, "memory = 256\n", 'memory = 256\nalias = "live"\n')
    _apply(cli, project)
    _set(project, "memory = 256", "memory = 384")
    _apply(cli, project)
    assert _versions() == ["1", "2"] and _alias() == "2"


def test_the_plan_after_a_rollback_says_what_it_is(cli: Any, project: Path) -> None:
    """After `rollback` the plan said "$LATEST is not published" and published a
    third version, although version 2 is what $LATEST is."""
    _two_versions(cli, project)
    assert cli("-C", str(project), "rollback", "-t", "prod", "--auto-approve").exit_code == 0
    assert _alias() == "1"
    plan = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "not published" not in plan.stdout and "publish_version" not in plan.stdout
    assert (
        "~ alias tiny-prod:live lambda.update_alias  # alias is at version 1 (rolled back); "
        "version 2 is what $LATEST is: the alias moves forward to it"
    ) in plan.stdout
    assert "FunctionVersion: 1 -> 2" in plan.stdout
    applied = _apply(cli, project)
    assert _alias() == "2" and _versions() == ["1", "2"]  # nothing new published
    assert "prod.version = 2" in applied.stdout
    assert cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode").exit_code == 0


def test_rollback_to_a_version(cli: Any, project: Path) -> None:
    _two_versions(cli, project)
    _set(project, "memory = 384", "memory = 512")
    _apply(cli, project)
    assert _alias() == "3"
    to_one = cli("-C", str(project), "rollback", "-t", "prod", "--to", "1", "--auto-approve")
    assert to_one.exit_code == 0, to_one.output
    assert "# rollback from version 3 to 1" in to_one.stdout and _alias() == "1"
    for bad, says in (
        ("7", "rollback --to 7: not a published version of tiny-prod (published: 1, 2, 3)"),
        ("1", "alias tiny-prod:live is already at version 1"),
    ):
        result = cli("-C", str(project), "rollback", "-t", "prod", "--to", bad, "--auto-approve")
        assert result.exit_code == 1, result.output
        lines = _error_lines(result)
        assert len(lines) == 1 and says in lines[0], result.stderr
    assert _alias() == "1"


def test_a_role_made_by_someone_else_between_plan_and_apply_is_refused() -> None:
    """Stubber (a race moto cannot stage): CreateRole answers EntityAlreadyExists and
    the role found has no pmcp-build tag; before, its ARN was taken as ours."""
    from botocore.stub import Stubber

    from pmcp_build.deploy import aws
    from pmcp_build.errors import UserError

    iam = boto3.client(
        "iam", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    role = {
        "Path": "/",
        "RoleName": "f-pmcp-exec",
        "RoleId": "AROAEXAMPLEEXAMPLE1",
        "Arn": "arn:aws:iam::123456789012:role/f-pmcp-exec",
        "CreateDate": "2026-01-01T00:00:00Z",
        "Tags": [{"Key": "team", "Value": "other"}],
    }
    params = {"RoleName": "f-pmcp-exec", "AssumeRolePolicyDocument": "{}"}
    with Stubber(iam) as stub:
        stub.add_client_error("create_role", "EntityAlreadyExists", expected_params=params)
        stub.add_response("get_role", {"Role": role}, {"RoleName": "f-pmcp-exec"})
        with pytest.raises(UserError, match="created by someone else since the plan"):
            aws.ensure_role(iam, params, None)
        ours = {**role, "Tags": [{"Key": "pmcp-build:managed", "Value": "true"}]}
        stub.add_client_error("create_role", "EntityAlreadyExists", expected_params=params)
        stub.add_response("get_role", {"Role": ours}, {"RoleName": "f-pmcp-exec"})
        assert aws.ensure_role(iam, params, None)["Role"]["Arn"] == role["Arn"]
