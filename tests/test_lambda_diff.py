"""Each sub-diff of the lambda target on plain data: a `DesiredFunction` and a fixture
`LambdaState` in, actions (or a refusal) out. No AWS, no CLI: the remote state is a
value built here, as Chalice's planner tests build an in-memory remote state."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pmcp_build.deploy import aws
from pmcp_build.deploy.actions import Action
from pmcp_build.deploy.targets import lambda_
from pmcp_build.deploy.targets.lambda_ import function, role, tags, teardown, url, versions
from pmcp_build.deploy.targets.lambda_.model import (
    MANAGED_TAG,
    Config,
    DesiredFunction,
    FunctionState,
    LambdaState,
    PublicGrant,
    RoleState,
    Settings,
    Statement,
    Url,
    Vpc,
)
from pmcp_build.errors import UserError
from pmcp_build.manifest.secrets import Environment

ROLE_ARN = "arn:aws:iam::123456789012:role/f-pmcp-exec"
ENV = Environment({"LOG": "info"}, frozenset())


def want(**over: Any) -> DesiredFunction:
    fields: dict[str, Any] = {
        "target": "prod",
        "function": "f",
        "server": "s",
        "bucket": "b",
        "key": "k.zip",
        "config": Config("python3.12", "index.handler", "auto", 512, 30),
        "env": ENV,
        "sha256": "a" * 64,
        "code_sha256": "code1",
        "architecture": "arm64",
    }
    return DesiredFunction(**{**fields, **over})


def latest(**over: Any) -> FunctionState:
    """$LATEST as pmcp-build left it for `want()`."""
    fields: dict[str, Any] = {
        "config": Config("python3.12", "index.handler", ROLE_ARN, 512, 30),
        "code_sha256": "code1",
        "architectures": ("arm64",),
        "environment": {"LOG": "info"},
        "arn": "arn:aws:lambda:eu-west-1:123456789012:function:f",
        "revision": "r1",
        "tags": want().tags,
    }
    return FunctionState(**{**fields, **over})


def deployed(**over: Any) -> LambdaState:
    fields: dict[str, Any] = {
        "artifact": True,
        "function": latest(),
        "role": RoleState(ROLE_ARN, role.role_policy("f", False)),
    }
    return LambdaState(**{**fields, **over})


def ops(actions: list[Action]) -> list[str]:
    return [a.op for a in actions if a.symbol != "="]


# -- the whole diff -------------------------------------------------------------------------


def test_a_new_function_in_order() -> None:
    actions = lambda_.diff(want(url_auth="NONE", alias="live"), LambdaState())
    assert ops(actions) == [
        "s3.upload_artifact",
        "iam.create_role",
        "lambda.create_function",
        "lambda.publish_version",
        "lambda.create_alias",
        "lambda.create_function_url_config",
        "lambda.add_permission",
        "lambda.add_permission",
    ]
    create = next(a for a in actions if a.op == "lambda.create_function")
    assert create.calls[0].params["Role"] == {"$output": "role_arn"}
    assert create.calls[0].params["Tags"][MANAGED_TAG] == "true"


def test_as_deployed_is_up_to_date() -> None:
    actions = lambda_.diff(want(), deployed())
    assert ops(actions) == []
    assert [a.reason for a in actions] == [
        "artifact already uploaded (same sha256)",
        "up to date",
    ]


def test_lambda_calls_carry_their_revision_and_waiter_wording() -> None:
    """The executor knows nothing of Lambda: what it needs travels in each call."""
    state = deployed(function=latest(code_sha256="old"))
    (update,) = [a for a in lambda_.diff(want(), state) if a.symbol == "~"]
    call = update.calls[0]
    assert call.params["RevisionId"] == {"$revision": "f", "planned": "r1"}
    assert call.revisions == {"f": "RevisionId"}
    assert call.wait_failure == "lambda f: the update failed"
    assert "Configuration.LastUpdateStatusReason" in call.wait_reasons
    upload = lambda_.diff(want(), replace(state, artifact=False))[0]
    assert upload.calls[0].revisions == {}  # an S3 call moves no function revision


# -- function: ownership, code and configuration ---------------------------------------------


def test_an_unmanaged_function_is_refused_before_anything() -> None:
    foreign = deployed(function=latest(tags={"team": "other"}))
    with pytest.raises(UserError) as refused:
        lambda_.diff(want(), foreign)
    message = str(refused.value)
    assert "lambda function 'f' exists and was not created by pmcp-build" in message
    assert "set adopt = true in [targets.prod]" in message
    assert "\n" not in message


def test_adopt_takes_the_function_over_through_its_tags() -> None:
    foreign = deployed(function=latest(tags={"team": "other"}))
    actions = lambda_.diff(want(adopt=True), foreign)
    (take,) = [a for a in actions if a.symbol != "="]
    assert take.op == "lambda.tag_resource"
    assert take.reason == tags.ADOPTED
    shown = {c.field: (c.before, c.after) for c in take.changes}
    assert shown[f"Tags.{MANAGED_TAG}"] == (None, "true")
    # once tagged, the same target is plain drift-free
    assert ops(lambda_.diff(want(adopt=True), deployed())) == []


def test_code_and_configuration_change_apart() -> None:
    code = function.diff(want(), deployed(function=latest(code_sha256="old")), ROLE_ARN)
    assert ops(code) == ["lambda.update_function_code"]
    config = function.diff(want(), deployed(function=latest()), ROLE_ARN)
    assert config == []
    slower = function.diff(want(config=replace(want().config, timeout=60)), deployed(), ROLE_ARN)
    assert ops(slower) == ["lambda.update_function_configuration"]
    assert [(c.field, c.before, c.after) for c in slower[0].changes] == [("Timeout", 30, 60)]


def test_settings_compare_in_the_manifest_form() -> None:
    vpc = Vpc.of(["subnet-b", "subnet-a"], ["sg-1"])
    inside = latest(settings=Settings(vpc=Vpc.of(["subnet-a", "subnet-b"], ["sg-1"])))
    assert (
        function.diff(want(settings=Settings(vpc=vpc)), deployed(function=inside), ROLE_ARN) == []
    )
    out = function.diff(want(), deployed(function=inside), ROLE_ARN)
    params = out[0].calls[0].params
    assert params["VpcConfig"] == {"SubnetIds": [], "SecurityGroupIds": []}


# -- tags and concurrency --------------------------------------------------------------------


def test_tag_drift_and_concurrency() -> None:
    drifted = deployed(function=latest(tags={**want().tags, "stray": "x"}))
    (action,) = tags.diff(want(), drifted)
    assert action.reason == "tags drifted"
    assert action.calls[0].operation == "untag_resource"
    assert tags.diff(want(), LambdaState()) == []  # CreateFunction carries the tags
    stopped = deployed(function=latest(concurrency=0))
    assert tags.concurrency(want(concurrency=0), stopped) == []
    assert ops(tags.concurrency(want(), stopped)) == ["lambda.delete_function_concurrency"]


# -- versions and the alias ------------------------------------------------------------------


def test_a_rolled_back_alias_moves_forward_without_publishing() -> None:
    """After `rollback` the alias is on version 1 while version 2 is $LATEST: the plan
    said "$LATEST is not published" and published a third version."""
    v1 = latest(version="1", config=replace(latest().config, memory=256))
    v2 = latest(version="2")
    state = deployed(alias_version="1", published=v1, newest=v2)
    actions = versions.diff(want(alias="live"), state, changed=False)
    assert ops(actions) == ["lambda.update_alias"]
    (move,) = actions
    assert move.calls[0].params["FunctionVersion"] == "2"
    assert "alias is at version 1 (rolled back); version 2 is what $LATEST is" in move.reason
    assert "not published" not in move.reason


def test_publish_when_latest_changed() -> None:
    v1 = latest(version="1")
    state = deployed(alias_version="1", published=v1)
    assert versions.diff(want(alias="live"), state, changed=False) == []
    moved = versions.diff(want(alias="live"), state, changed=True)
    assert ops(moved) == ["lambda.publish_version", "lambda.update_alias"]
    stale = deployed(published=replace(v1, code_sha256="older"))
    assert [a.reason for a in versions.diff(want(publish=True), stale, False)] == [
        "$LATEST is not published"
    ]


def test_rollback_to_a_version() -> None:
    listed = ["$LATEST", "1", "2", "3", "4"]
    assert versions.rollback_action("f", "live", "4", listed).changes[0].after == "3"
    to_one = versions.rollback_action("f", "live", "4", listed, to="1")
    assert to_one.calls[0].params["FunctionVersion"] == "1"
    assert to_one.reason == "rollback from version 4 to 1"
    with pytest.raises(UserError, match=r"--to 9: not a published version of f \(published: 1"):
        versions.rollback_action("f", "live", "4", listed, to="9")
    with pytest.raises(UserError, match="already at version 4"):
        versions.rollback_action("f", "live", "4", listed, to="4")


# -- url, our grants, and grants that are not ours ----------------------------------------------


def _statement(**over: Any) -> dict[str, Any]:
    return {"Sid": "hand", "Effect": "Allow", "Principal": "*", **over}


def test_public_statements_not_ours() -> None:
    invoke = _statement(Action="lambda:InvokeFunction")
    found = url.public_statements([invoke], None)
    assert found == [PublicGrant("hand", "lambda:InvokeFunction", None)]
    assert url.public_statements([{**invoke, "Principal": {"AWS": "*"}}], "live") == [
        PublicGrant("hand", "lambda:InvokeFunction", "live")
    ]
    narrowed = {**invoke, "Condition": {"StringEquals": {"AWS:SourceAccount": "123456789012"}}}
    via_url = {
        **_statement(Action="lambda:InvokeFunctionUrl"),
        "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
    }
    ours = {**invoke, "Sid": url.PUBLIC_INVOKE_SID}
    account = {**invoke, "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}
    deny = {**invoke, "Effect": "Deny"}
    assert url.public_statements([narrowed, ours, account, deny], None) == []
    # how a URL is reached narrows nothing: still anyone
    assert [g.sid for g in url.public_statements([via_url], None)] == ["hand"]


def test_public_grants_are_warned_and_observed() -> None:
    state = deployed(public=(PublicGrant("hand", "lambda:InvokeFunction"),))
    (line,) = url.public_warnings(want(), state)
    assert "statement 'hand' (not made by pmcp-build)" in line
    assert 'lambda:InvokeFunction to Principal "*"' in line
    assert state.observed()["public"] == [
        {"Sid": "hand", "Action": "lambda:InvokeFunction", "Qualifier": None}
    ]
    assert deployed().observed()["public"] == []


def test_url_auth_change_removes_our_grants() -> None:
    grants = {
        sid: Statement(sid, "Allow", p["Action"], "*") for sid, p in url.public_grants("f").items()
    }
    state = deployed(url=Url("NONE", "https://x"), grants=grants)
    assert ops(url.diff(want(url_auth="NONE"), state)) == []
    assert ops(url.diff(want(url_auth="AWS_IAM"), state)) == [
        "lambda.update_function_url_config",
        "lambda.remove_permission",
        "lambda.remove_permission",
    ]


# -- the auto role -----------------------------------------------------------------------------


def test_auto_role_names_fit_and_never_collide() -> None:
    assert role.auto_role_name("f") == "f-pmcp-exec"
    exact = "x" * 54  # 54 + len("-pmcp-exec") == 64: not cut
    assert role.auto_role_name(exact) == exact + "-pmcp-exec"
    a, b = role.auto_role_name("x" * 58), role.auto_role_name("x" * 58 + "-pmcp")
    assert a != b
    assert len(a) == len(b) == 64 and a.endswith("-pmcp-exec") and b.endswith("-pmcp-exec")
    assert role.auto_role_name("x" * 64) == role.auto_role_name("x" * 64)  # stable


def test_a_foreign_role_under_the_auto_name_is_refused() -> None:
    foreign = LambdaState(role=RoleState(ROLE_ARN, None, {"team": "other"}))
    with pytest.raises(UserError) as refused:
        lambda_.diff(want(), foreign)
    assert "IAM role 'f-pmcp-exec' exists and was not created by pmcp-build" in str(refused.value)
    assert "adopt = true" in str(refused.value) and "set role to its ARN" in str(refused.value)
    adopted = lambda_.diff(want(adopt=True), foreign)
    assert ops(adopted)[:3] == ["s3.upload_artifact", "iam.tag_role", "iam.put_role_policy"]
    take = next(a for a in adopted if a.op == "iam.tag_role")
    assert "takes over this role" in take.reason
    assert take.calls[0].params["Tags"] == [
        {"Key": "pmcp-build:managed", "Value": "true"},
        {"Key": "pmcp-build:server", "Value": "s"},
    ]
    # an ARN role is the user's: never read as ours or theirs
    assert "iam" not in " ".join(
        ops(lambda_.diff(want(config=replace(want().config, role=ROLE_ARN)), foreign))
    )


def test_a_role_vouched_for_by_a_managed_function_is_ours() -> None:
    assert RoleState(ROLE_ARN, None, None).managed
    plan = role.diff(want(), deployed())
    assert plan.arn == ROLE_ARN and plan.before == plan.after == []
    wider = role.diff(want(settings=Settings(vpc=Vpc.of(["s"], ["g"]))), deployed())
    assert [a.op for a in wider.before] == ["iam.put_role_policy"]


# -- destroy -----------------------------------------------------------------------------------


def test_destroy_only_what_is_ours() -> None:
    ours = deployed(url=Url("NONE", "https://x"), role=RoleState(ROLE_ARN, None, want().role_tags))
    assert [a.op for a in teardown.destroy_actions(want(), ours)] == [
        "lambda.delete_function_url_config",
        "lambda.delete_function",
        "iam.delete_role",
    ]
    foreign_role = replace(ours, role=RoleState(ROLE_ARN, None, {"team": "other"}))
    assert [a.op for a in teardown.destroy_actions(want(), foreign_role)] == [
        "lambda.delete_function_url_config",
        "lambda.delete_function",
    ]
    unread = replace(ours, role=RoleState(ROLE_ARN, None, None))  # tags not read: kept
    assert "iam.delete_role" not in [a.op for a in teardown.destroy_actions(want(), unread)]
    foreign_fn = replace(ours, function=latest(tags={}))
    with pytest.raises(
        UserError, match=r"was not created by pmcp-build .* destroy leaves it alone"
    ):
        teardown.destroy_actions(want(), foreign_fn)
    assert teardown.destroy_actions(want(), LambdaState()) == []


def test_role_policy_is_the_logs_policy() -> None:
    assert role.role_policy("f", False) == aws.logs_policy("f")
    assert any(
        "ec2:CreateNetworkInterface" in s["Action"]
        for s in role.role_policy("f", True)["Statement"]
    )
