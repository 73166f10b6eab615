"""Issue 14's deploy items end to end through the CLI against the moto server (Stubber
where moto lacks a behaviour, said in the test), plus each diff on plain data."""

from __future__ import annotations

from pathlib import Path

import boto3
import botocore.exceptions
import pytest

from pmcp_build.deploy.actions import NOT_READ, Action, Change, unread

from .conftest import _fn

SECOND_LAMBDA = (
    '\n[targets.staging]\nkind = "lambda"\nfunction = "tiny-staging"\nbucket = "acme-artifacts"\n'
)


# -- 1. sharp edges -----------------------------------------------------------------------


def test_apply_with_several_lambdas_needs_t_or_all(cli, project: Path) -> None:
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text() + SECOND_LAMBDA)
    refused = cli("-C", str(project), "apply", "--auto-approve")
    assert refused.exit_code == 2, refused.output
    assert "-t NAME" in refused.stderr and "--all" in refused.stderr
    assert "prod, staging" in refused.stderr
    with pytest.raises(botocore.exceptions.ClientError):
        _fn()  # nothing was deployed
    applied = cli("-C", str(project), "apply", "--auto-approve", "--all")
    assert applied.exit_code == 0, applied.output
    names = {f["FunctionName"] for f in boto3.client("lambda").list_functions()["Functions"]}
    assert names == {"tiny-prod", "tiny-staging"}


def test_plan_usage_errors_never_read_as_changes(cli, project: Path) -> None:
    changes = cli("-C", str(project), "plan", "--detailed-exitcode", "-t", "prod")
    assert changes.exit_code == 2, changes.output
    for bad in (
        ["--detailed-exitcode", "--no-such-flag"],
        ["--detailed-exitcod"],  # a typo in the flag itself
        ["--detailed-exitcode", "--refresh=maybe"],
    ):
        result = cli("-C", str(project), "plan", *bad)
        assert result.exit_code == 64, (bad, result.output)
    assert cli("-C", str(project), "apply", "--no-such-flag").exit_code == 2  # others keep 2


def test_offline_plan_says_not_read(cli, project: Path) -> None:
    result = cli("-C", str(project), "plan", "--no-refresh", "-t", "prod")
    assert result.exit_code == 0, result.output
    assert "(none) ->" not in result.stdout  # it never guesses "nothing exists"
    assert "MemorySize: (not read) -> 256" in result.stdout
    assert "  ? lambda tiny-prod lambda.create_function  # remote state not read" in result.stdout
    assert "Plan: remote state not read" in result.stdout
    assert "to add" not in result.stdout


def test_unread_marks_every_action_on_plain_data() -> None:
    actions = [
        Action("lambda.create_function", "+", "lambda f", "x", (Change("A", None, 1),)),
        Action("noop", "=", "s3://b/k", "same"),
    ]
    shown = unread(actions)
    assert [a.symbol for a in shown] == ["?", "="]
    assert shown[0].changes == (Change("A", NOT_READ, 1),)
    assert shown[0].reason == "remote state not read"


# -- 2. tags ------------------------------------------------------------------------------


def _tags() -> dict[str, str]:
    lam = boto3.client("lambda")
    return dict(lam.list_tags(Resource=_fn()["FunctionArn"])["Tags"])


def test_tags_created_merged_and_drift_fixed(cli, project: Path) -> None:
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace("memory = 256\n", 'memory = 256\ntags = { team = "mcp" }\n', 1)
    )
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    tags = _tags()
    sha = tags.pop("pmcp-build:package")
    assert len(sha) == 64
    assert tags == {"team": "mcp", "pmcp-build:managed": "true", "pmcp-build:server": "tiny"}
    role = boto3.client("iam").list_role_tags(RoleName="tiny-prod-pmcp-exec")["Tags"]
    assert {t["Key"]: t["Value"] for t in role} == {
        "team": "mcp",
        "pmcp-build:managed": "true",
        "pmcp-build:server": "tiny",
    }
    # Drift by hand: a tag changed, one removed, one added.
    lam = boto3.client("lambda")
    arn = _fn()["FunctionArn"]
    lam.tag_resource(Resource=arn, Tags={"team": "other", "stray": "x"})
    lam.untag_resource(Resource=arn, TagKeys=["pmcp-build:managed"])
    plan = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "~ lambda tiny-prod tags lambda.tag_resource  # tags drifted" in plan.stdout
    assert "Tags.team: other -> mcp" in plan.stdout
    assert "Tags.pmcp-build:managed: (none) -> true" in plan.stdout
    assert "Tags.stray: x -> (none)" in plan.stdout
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    assert _tags() == {**tags, "pmcp-build:package": sha}
    again = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    ("tags", "says"),
    [
        ('{ "aws:x" = "1" }', "'aws:' prefix is reserved"),
        ('{ "pmcp-build:server" = "1" }', "pmcp-build's own"),
        ('{ "a#b" = "1" }', "1-128 characters"),
        ('{ k = "' + "v" * 257 + '" }', "at most 256"),
    ],
)
def test_bad_tags_are_one_line(cli, project: Path, tags: str, says: str) -> None:
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256\n", f"memory = 256\ntags = {tags}\n"))
    result = cli("-C", str(project), "plan", "-t", "prod")
    assert result.exit_code == 1
    assert says in result.stderr and "tags" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_tag_diff_on_plain_data() -> None:
    from pmcp_build.deploy.targets.lambda_ import _tag_action

    assert _tag_action("f", "arn:f", {"a": "1"}, {"a": "1"}) is None
    action = _tag_action("f", "arn:f", {"a": "1", "b": "2", "aws:c": "3"}, {"a": "9", "d": "4"})
    assert action is not None
    assert [(c.operation, c.params) for c in action.calls] == [
        ("tag_resource", {"Resource": "arn:f", "Tags": {"a": "9", "d": "4"}}),
        ("untag_resource", {"Resource": "arn:f", "TagKeys": ["b"]}),
    ]
