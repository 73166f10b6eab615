"""Published versions and the alias: publish when code or configuration changed (or
$LATEST is not what is in service), move the alias; and rollback's alias move."""

from __future__ import annotations

from typing import Any

from pmcp_build.deploy.actions import Action, Call, Change
from pmcp_build.deploy.targets.lambda_.model import DesiredFunction, LambdaState
from pmcp_build.errors import UserError

_ALIAS_OUTPUTS = {"alias_arn": "AliasArn", "version": "FunctionVersion"}


def diff(want: DesiredFunction, state: LambdaState, changed: bool) -> list[Action]:
    """`changed`: the plan creates the function or changes its code or configuration."""
    if not want.publishes:
        return []
    fn, published, newest = state.function, state.published, state.newest
    in_service = published.version if published is not None else None
    same = fn is not None and published is not None and fn.runs_as_published(published)
    # After a rollback the alias is on an older version while the newest one is still
    # what $LATEST is: the plan moves the alias forward, it publishes nothing.
    forward = (
        not changed and not same and fn is not None and newest is not None
    ) and fn.runs_as_published(newest)
    actions: list[Action] = []
    version: Any = in_service
    why = "alias moves to the new version"
    if forward and newest is not None:
        version = newest.version
        why = (
            f"alias is at version {in_service} (rolled back); version {version} is what "
            "$LATEST is: the alias moves forward to it"
        )
    elif changed or not same:
        version = {"$output": "version"}
        reason = "code or configuration changed" if changed else "$LATEST is not published"
        actions.append(_publish(want, in_service, reason))
    if want.alias is not None:
        actions += _alias(want, state.alias_version, version, why)
    return actions


def _publish(want: DesiredFunction, in_service: str | None, reason: str) -> Action:
    publish = Call(
        "lambda",
        "publish_version",
        {
            "FunctionName": want.function,
            # Lambda refuses to publish when $LATEST's code is not this package.
            "CodeSha256": want.code_sha256,
            "Description": want.description,
        },
        wait="published_version_active",
        wait_params={"FunctionName": want.function, "Qualifier": {"$output": "version"}},
        outputs={"version": "Version"},
    )
    return Action(
        "lambda.publish_version",
        "+",
        f"lambda {want.function} version",
        reason,
        (Change("Version", in_service, "(next)"),),
        (publish,),
    )


def _alias(want: DesiredFunction, current: str | None, version: Any, why: str) -> list[Action]:
    function, alias = want.function, want.alias
    shown = "(the version published above)" if isinstance(version, dict) else version
    params = {"FunctionName": function, "Name": alias, "FunctionVersion": version}
    if current is None:
        create = Call(
            "lambda",
            "create_alias",
            params,
            tolerate=("ResourceConflictException",),
            outputs=_ALIAS_OUTPUTS,
        )
        return [
            Action(
                "lambda.create_alias",
                "+",
                f"alias {function}:{alias}",
                "alias declared",
                (Change("FunctionVersion", None, shown),),
                (create,),
            )
        ]
    if not isinstance(version, dict) and current == version:
        return []
    # The version in service is the alias's now (moved forward, it is not one this
    # apply publishes): the output follows the response.
    update = Call("lambda", "update_alias", params, outputs=_ALIAS_OUTPUTS)
    return [
        Action(
            "lambda.update_alias",
            "~",
            f"alias {function}:{alias}",
            why,
            (Change("FunctionVersion", current, shown),),
            (update,),
            {"FunctionVersion": current},
        )
    ]


def rollback_action(
    function: str, alias: str, current: str, versions: list[str], to: str | None = None
) -> Action:
    """Pure: move the alias to `to`, or to the newest published version older than its
    current one."""
    numbered = sorted({int(v) for v in versions if v.isdigit()})
    if to is None:
        older = [v for v in numbered if current.isdigit() and v < int(current)]
        if not older:
            raise UserError(
                f"alias {function}:{alias} is at version {current} and there is no earlier "
                "published version to roll back to"
            )
        target = str(max(older))
    else:
        if not to.isdigit() or int(to) not in numbered:
            listed = ", ".join(map(str, numbered)) or "none"
            raise UserError(
                f"rollback --to {to}: not a published version of {function} "
                f"(published: {listed}); pick one of them"
            )
        target = str(int(to))
        if target == current:
            raise UserError(f"alias {function}:{alias} is already at version {target}")
    reason = f"rollback from version {current}" + (f" to {target}" if to is not None else "")
    update = Call(
        "lambda",
        "update_alias",
        {"FunctionName": function, "Name": alias, "FunctionVersion": target},
        outputs={"alias_arn": "AliasArn"},
    )
    return Action(
        "lambda.update_alias",
        "~",
        f"alias {function}:{alias}",
        reason,
        (Change("FunctionVersion", current, target),),
        (update,),
        {"FunctionVersion": current},
    )
