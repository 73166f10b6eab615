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
