"""Destroy (the URL, the function, the auto role: only what carries pmcp-build's
managed tag) and rollback (the alias back to an earlier version)."""

from __future__ import annotations

from pmcp_build.deploy import aws
from pmcp_build.deploy.actions import Action, Call
from pmcp_build.deploy.targets.lambda_.model import MANAGED_TAG, DesiredFunction, LambdaState
from pmcp_build.deploy.targets.lambda_.read import list_versions
from pmcp_build.deploy.targets.lambda_.role import auto_role_name
from pmcp_build.deploy.targets.lambda_.versions import rollback_action
from pmcp_build.errors import UserError


def destroy_actions(want: DesiredFunction, state: LambdaState) -> list[Action]:
    """Pure. A function pmcp-build did not make is refused (destroy never deletes it);
    a role under the auto name without our tag is left where it is."""
    function, fn = want.function, state.function
    if fn is not None and not fn.managed:
        raise UserError(
            f"target {want.target!r}: lambda function {function!r} was not created by "
            f"pmcp-build (no {MANAGED_TAG} tag), so destroy leaves it alone; delete it "
            "yourself if it should go"
        )
    actions = []
    if state.url is not None:
        actions.append(
            _delete(
                "lambda.delete_function_url_config",
                f"function url {function}",
                Call(
                    "lambda",
                    "delete_function_url_config",
                    {"FunctionName": function},
                    tolerate=("ResourceNotFoundException",),
                ),
            )
        )
    if fn is not None:
        actions.append(
            _delete(
                "lambda.delete_function",
                f"lambda {function}",
                Call(
                    "lambda",
                    "delete_function",
                    {"FunctionName": function},
                    tolerate=("ResourceNotFoundException",),
                ),
            )
        )
    role = state.role
    if want.auto_role and role is not None and role.tags is not None and role.managed:
        actions.append(_delete_role(auto_role_name(function)))
    return actions


def _delete(op: str, resource: str, *calls: Call, reason: str = "destroy") -> Action:
    return Action(op, "-", resource, reason, calls=calls)


def _delete_role(name: str) -> Action:
    return _delete(
        "iam.delete_role",
        f"iam role {name}",
        Call(
            "iam",
            "delete_role_policy",
            {"RoleName": name, "PolicyName": aws.LOGS_POLICY_NAME},
            tolerate=("NoSuchEntity",),
        ),
        Call("iam", "delete_role", {"RoleName": name}, tolerate=("NoSuchEntity",)),
        reason=f'created by pmcp-build (role = "auto", tagged {MANAGED_TAG})',
    )


def rollback(want: DesiredFunction, c: aws.Clients, to: str | None) -> Action:
    """Read the alias and the versions, and move the alias back (or to `to`)."""
    alias = want.alias
    if not alias:
        raise UserError(
            f'target {want.target!r}: rollback moves an alias; set alias = "live" in '
            f"[targets.{want.target}] and apply first"
        )
    with aws.translating(f"reading versions of lambda {want.function}"):
        found = aws.absent_as_none(
            lambda: c.lam.get_alias(FunctionName=want.function, Name=alias),
            "ResourceNotFoundException",
        )
        if found is None:
            raise UserError(
                f"target {want.target!r}: alias {want.function}:{alias} does not exist yet; "
                "apply first"
            )
        versions = list_versions(c.lam, want.function)
    return rollback_action(want.function, alias, str(found["FunctionVersion"]), versions, to)
