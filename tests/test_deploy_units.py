"""Each target kind's diff on plain data (no CLI, no AWS), and the executor against
botocore's Stubber for what moto does not emulate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from pmcp_build.deploy import aws, executor
from pmcp_build.deploy.actions import Action, Call, Plan, TargetPlan
from pmcp_build.deploy.targets import lambda_, local, s3
from pmcp_build.deploy.targets.lambda_.model import (
    Config,
    DesiredFunction,
    LambdaState,
    RoleState,
    Settings,
    Statement,
    Url,
    Vpc,
)
from pmcp_build.deploy.targets.lambda_.read import function_state
from pmcp_build.deploy.targets.lambda_.url import public_grants
from pmcp_build.errors import UserError
from pmcp_build.manifest.secrets import MASK, Environment

SHA = "a" * 64
ROLE = "arn:aws:iam::123456789012:role/r"
CODE = "qqqq"
ENV = Environment({"LOG": "info", "TOKEN": "s3cret"}, frozenset({"TOKEN"}))


_SETTINGS = ("snapstart", "layers", "vpc", "ephemeral_storage")


def _want(**over: Any) -> DesiredFunction:
    """The diff's input as the manifest would give it; `over` by manifest key."""
    settings = {k: over.pop(k) for k in _SETTINGS if k in over}
    if settings.get("vpc") is not None:
        vpc = settings["vpc"]
        settings["vpc"] = Vpc.of(vpc["SubnetIds"], vpc["SecurityGroupIds"])
    elif "vpc" in settings:
        settings["vpc"] = Vpc()
    settings["layers"] = tuple(settings.get("layers", ()))
    config = Config("python3.12", "index.handler", over.pop("role", ROLE), 512, 30)
    fields: dict[str, Any] = {
        "target": "prod",
        "function": "f",
        "server": "s",
        "bucket": "b",
        "key": "k.zip",
        "config": config,
        "env": ENV,
        "sha256": SHA,
        "code_sha256": CODE,
        "architecture": "arm64",
        "settings": Settings(**settings),
    }
    return DesiredFunction(**{**fields, **over})


def _lambda(state: LambdaState, **over: Any) -> list[Action]:
    return lambda_.diff(_want(**over), state)


def _deployed(**fn: Any) -> LambdaState:
    function = {
        "CodeSha256": CODE,
        "RevisionId": "r1",
        "Architectures": ["arm64"],
        "Runtime": "python3.12",
        "Handler": "index.handler",
        "Role": ROLE,
        "MemorySize": 512,
        "Timeout": 30,
        "Environment": {"Variables": {"LOG": "info", "TOKEN": "s3cret"}},
    }
    function.update(fn)
    return LambdaState(artifact=True, function=function_state(function, _want().tags))


def _ops(actions: list[Action]) -> list[str]:
    return [a.op for a in actions if a.symbol != "="]


def test_lambda_nothing_to_do() -> None:
    assert _ops(_lambda(_deployed())) == []


def test_lambda_new_function_secrets_by_reference() -> None:
    actions = _lambda(LambdaState())
    assert _ops(actions) == ["s3.upload_artifact", "lambda.create_function"]
    create = actions[1].calls[0]
    assert create.params["Environment"]["Variables"] == {
        "LOG": "info",
        "TOKEN": {"$secret": "TOKEN"},
    }
    assert "s3cret" not in repr([a.to_json() for a in actions])


def test_lambda_remote_env_values_are_always_masked() -> None:
    state = _deployed(Environment={"Variables": {"LOG": "debug", "OLD": "hidden"}})
    (action,) = [a for a in _lambda(state) if a.symbol == "~"]
    shown = {c.field: (c.before, c.after) for c in action.changes}
    assert shown == {
        "Environment.LOG": (MASK, "info"),
        "Environment.OLD": (MASK, None),
        "Environment.TOKEN": (None, MASK),
    }


def test_lambda_update_carries_revision_and_waits() -> None:
    actions = _lambda(_deployed(CodeSha256="old", MemorySize=128))
    code, config = [a for a in actions if a.symbol == "~"]
    assert code.calls[0].params["RevisionId"] == {"$revision": "f", "planned": "r1"}
    assert code.calls[0].wait == config.calls[0].wait == "function_updated_v2"
    assert config.expects == {"RevisionId": "r1"}


def test_lambda_public_url_needs_two_grants_and_iam_removes_them() -> None:
    state = replace(_deployed(), url=Url("NONE", "https://x"))
    actions = _lambda(state, url_auth="NONE")
    grants = [a.calls[-1].params["Action"] for a in actions if a.op == "lambda.add_permission"]
    assert grants == ["lambda:InvokeFunctionUrl", "lambda:InvokeFunction"]
    grants = {
        sid: Statement(sid, "Allow", p["Action"], "*") for sid, p in public_grants("f").items()
    }
    state = replace(state, grants=grants)
    assert _ops(_lambda(state, url_auth="NONE")) == []
    iam = _lambda(state, url_auth="AWS_IAM")
    assert _ops(iam) == [
        "lambda.update_function_url_config",
        "lambda.remove_permission",
        "lambda.remove_permission",
    ]


def test_lambda_auto_role_without_its_policy_gets_it() -> None:
    arn = "arn:aws:iam::123456789012:role/f-pmcp-exec"
    state = replace(_deployed(Role=arn), role=RoleState(arn, None))
    actions = _lambda(state, role="auto")
    assert _ops(actions) == ["iam.put_role_policy"]
    state = replace(state, role=RoleState(arn, aws.logs_policy("f")))
    assert _ops(_lambda(state, role="auto")) == []


def test_s3_and_local_diffs() -> None:
    assert _ops(s3.diff(bucket="b", key="k.zip", sha256=SHA, state={"exists": False})) == [
        "s3.upload_artifact"
    ]
    same = {"exists": True, "sha256": SHA}
    assert _ops(s3.diff(bucket="b", key="k.zip", sha256=SHA, state=same)) == []
    changed = s3.diff(bucket="b", key="k.zip", sha256=SHA, state={"exists": True, "sha256": "x"})
    assert changed[0].symbol == "~"
    assert _ops(local.diff(path="/d", sha256=SHA, state={"sha256": SHA}, record={})) == []
    assert local.diff(path="/d", sha256=SHA, state={"sha256": None}, record={})[0].symbol == "+"


# -- the executor against botocore's Stubber ---------------------------------------------


def _stubbed(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Stubber]:
    global _CLIENT
    client = _CLIENT = boto3.client(
        "lambda",
        region_name="eu-west-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        endpoint_url="http://127.0.0.1:9",
    )
    return client, Stubber(client)


_CLIENT: Any = None


def _run(*calls: Call) -> None:
    action = Action("lambda.update_function_code", "~", "lambda f", "test", calls=calls)
    plan = Plan("s", {}, (TargetPlan("prod", "lambda", (action,)),))
    # The executor is handed its client factory: no module to patch.
    wiring = executor.Wiring(clients=lambda conn, service: _CLIENT)
    executor.execute(plan, Path("unused.zip"), {}, wiring)


_UPDATE = Call(
    "lambda",
    "update_function_code",
    {
        "FunctionName": "f",
        "S3Bucket": "bkt",
        "S3Key": "k",
        "RevisionId": {"$revision": "f", "planned": "r1"},
    },
    wait="function_updated_v2",
    wait_params={"FunctionName": "f"},
    # What the lambda planner puts in each call on function f (see lambda_.diff).
    revisions={"f": "RevisionId"},
    wait_failure="lambda f: the update failed",
    wait_reasons=lambda_.WAIT_REASONS,
    wait_codes=lambda_.WAIT_CODES,
)


def test_revision_conflict_is_reported_not_overwritten(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto ignores RevisionId; the Stubber plays Lambda's PreconditionFailedException."""
    _, stub = _stubbed(monkeypatch)
    stub.add_client_error(
        "update_function_code",
        "PreconditionFailedException",
        expected_params={"FunctionName": "f", "S3Bucket": "bkt", "S3Key": "k", "RevisionId": "r1"},
    )
    with stub, pytest.raises(UserError, match="changed by someone else"):
        _run(_UPDATE)


def test_update_in_progress_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto never reports LastUpdateStatus InProgress; the Stubber does, then Successful."""
    _, stub = _stubbed(monkeypatch)
    stub.add_response("update_function_code", {"RevisionId": "r2"})
    for status in ("InProgress", "Successful"):
        stub.add_response(
            "get_function",
            {"Configuration": {"FunctionName": "f", "State": "Active", "LastUpdateStatus": status}},
            {"FunctionName": "f"},
        )
    with stub:
        _run(_UPDATE)
        stub.assert_no_pending_responses()


def test_failed_update_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto never fails an update; the Stubber reports Failed with its reason, which
    the error must carry (LastUpdateStatusReason), not just "Waiter ... Failed"."""
    _, stub = _stubbed(monkeypatch)
    stub.add_response("update_function_code", {"RevisionId": "r2"})
    failed = {
        "FunctionName": "f",
        "State": "Active",
        "LastUpdateStatus": "Failed",
        "LastUpdateStatusReason": "The role defined for the function cannot be assumed",
        "LastUpdateStatusReasonCode": "InvalidConfiguration",
    }
    stub.add_response("get_function", {"Configuration": failed}, {"FunctionName": "f"})
    with stub, pytest.raises(UserError) as caught:
        _run(_UPDATE)
    assert "cannot be assumed" in str(caught.value) and "InvalidConfiguration" in str(caught.value)


def test_resource_conflict_says_to_rerun(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto does not raise ResourceConflictException for overlapping updates."""
    _, stub = _stubbed(monkeypatch)
    stub.add_client_error("update_function_code", "ResourceConflictException")
    with stub, pytest.raises(UserError, match="busy with another update"):
        _run(_UPDATE)


def test_revision_follows_the_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second update carries the RevisionId the first one returned, not the plan's."""
    _, stub = _stubbed(monkeypatch)
    plain = Call("lambda", "update_function_code", _UPDATE.params, revisions=_UPDATE.revisions)
    stub.add_response("update_function_code", {"RevisionId": "r2"}, {**_base(), "RevisionId": "r1"})
    stub.add_response("update_function_code", {"RevisionId": "r3"}, {**_base(), "RevisionId": "r2"})
    with stub:
        _run(plain, plain)
        stub.assert_no_pending_responses()


def _base() -> dict[str, str]:
    return {"FunctionName": "f", "S3Bucket": "bkt", "S3Key": "k"}
