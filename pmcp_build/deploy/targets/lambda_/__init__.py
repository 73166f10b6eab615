"""A lambda target: an S3 artifact, the function, its tags and concurrency, its
versions and alias, its URL and URL grants, and the auto role with its logs policy.

`read` (read.py) is the only module that talks to AWS and returns a frozen
`LambdaState`; `desired` builds a `DesiredFunction` once from the manifest target;
`diff(desired, state)` runs the ordered sub-diffs below, each pure and in its own
module. Every write apply can make is observed by `read`, so an apply killed after
any call is finished by the next one, which only then says "No changes".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pmcp_build.deploy import auth_env, aws
from pmcp_build.deploy.actions import Action, TargetPlan, unread
from pmcp_build.deploy.targets.common import TargetInput
from pmcp_build.deploy.targets.lambda_ import function, role, tags, teardown, url, versions
from pmcp_build.deploy.targets.lambda_.model import (
    DesiredFunction,
    LambdaState,
    desired,
)
from pmcp_build.deploy.targets.lambda_.read import read
from pmcp_build.deploy.targets.lambda_.role import auto_role_name
from pmcp_build.manifest.model import LambdaTarget

__all__ = ["DesiredFunction", "LambdaState", "auto_role_name", "desired", "diff", "read"]

# What a failed Lambda waiter's last response says, and where (GetFunction wraps the
# configuration, GetFunctionConfiguration does not).
WAIT_REASONS = (
    "Configuration.LastUpdateStatusReason",
    "Configuration.StateReason",
    "LastUpdateStatusReason",
    "StateReason",
)
WAIT_CODES = (
    "Configuration.LastUpdateStatusReasonCode",
    "Configuration.StateReasonCode",
    "LastUpdateStatusReasonCode",
    "StateReasonCode",
)


def diff(want: DesiredFunction, state: LambdaState) -> list[Action]:
    """The plan for one function, in the order it must run: ownership first (a refusal
    here changes nothing), the role before the function that runs as it, the function
    before its versions, the alias before the URL served through it."""
    function.check_owned(want, state)
    role.check_owned(want, state)
    roles = role.diff(want, state)
    body = function.diff(want, state, roles.arn) + tags.diff(want, state)
    changed = any(a.op in function.CHANGED_OPS for a in body)
    actions = [
        *function.artifact(want, state),
        *roles.before,
        *(body or [function.up_to_date(want)]),
        *roles.after,
        *tags.concurrency(want, state),
        *versions.diff(want, state, changed),
        *url.diff(want, state),
        *url.leftovers(want, state),
    ]
    return [_lambda_calls(a, want.function) for a in actions]


def _lambda_calls(action: Action, function: str) -> Action:
    """What the executor needs to know of Lambda, in the calls' data: each response's
    RevisionId moves the function's revision, and how a waiter's failure is worded."""
    calls = []
    for call in action.calls:
        if call.service == "lambda" and call.params.get("FunctionName") == function:
            call = dataclasses.replace(call, revisions={function: "RevisionId"})
        if call.wait:
            call = dataclasses.replace(
                call,
                wait_failure=f"lambda {function}: the update failed",
                wait_reasons=WAIT_REASONS,
                wait_codes=WAIT_CODES,
            )
        calls.append(call)
    return dataclasses.replace(action, calls=tuple(calls))


def _warnings(want: DesiredFunction, state: LambdaState) -> list[str]:
    warnings = auth_env.url_warnings(want.function, want.url_access)
    if state.bucket_missing:
        warnings.append(f"lambda {want.function}: {aws.missing_bucket_warning(want.bucket)}")
    if want.settings.snapstart and want.alias is None:
        warnings.append(
            f"lambda {want.function}: snapstart applies to published versions only; invoking "
            "the function unqualified runs $LATEST without it: invoke the version in the "
            'outputs, or set alias = "live" and invoke the alias'
        )
    return warnings + url.public_warnings(want, state)


def _outputs(want: DesiredFunction, state: LambdaState) -> dict[str, Any]:
    arn = state.function.arn if state.function else None
    published = state.published.version if state.published else None
    return {
        "function_arn": arn,
        "version": published if want.publishes else "$LATEST",
        "alias": want.alias,
        # what platforms invoke when there is an alias (the URL is served through it too)
        "alias_arn": f"{arn}:{want.alias}" if arn and want.alias else None,
        # a URL the manifest no longer declares is deleted by this plan: not an output
        "url": state.url.address if state.url and want.url_auth else None,
        "url_auth": want.url_mode if want.url_auth else None,
    }


# -- the target kind's interface -------------------------------------------------------------


def plan(given: TargetInput[LambdaTarget], refresh: bool) -> TargetPlan:
    want = desired(given)
    state = read(want, aws.clients(aws.connection(given.target))) if refresh else LambdaState()
    actions = diff(want, state)
    return TargetPlan(
        name=given.name,
        kind="lambda",
        actions=tuple(actions if refresh else unread(actions)),
        connection=aws.connection(given.target),
        observed=state.observed() if refresh else {},
        outputs=_outputs(want, state),
        warnings=tuple(_warnings(want, state)),
        refreshed=refresh,
        private={"remote_environment": state.remote_environment()} if refresh else {},
    )


def destroy(given: TargetInput[LambdaTarget]) -> TargetPlan:
    want = desired(given)
    conn = aws.connection(given.target)
    state = read(want, aws.clients(conn), verify_role=True)
    return TargetPlan(
        name=given.name,
        kind="lambda",
        actions=tuple(teardown.destroy_actions(want, state)),
        connection=conn,
        observed=state.observed(),
    )


def rollback(given: TargetInput[LambdaTarget], to: str | None = None) -> TargetPlan:
    want = desired(given)
    conn = aws.connection(given.target)
    action = teardown.rollback(want, aws.clients(conn), to)
    return TargetPlan(
        name=given.name,
        kind="lambda",
        actions=(_lambda_calls(action, want.function),),
        connection=conn,
        outputs={"alias": want.alias, "version": action.changes[0].after},
    )
