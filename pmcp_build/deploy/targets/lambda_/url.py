"""The function URL and its resource-policy grants: ours (the two a public URL needs),
URLs left where the manifest no longer puts one, and statements someone else added
that make the function public (a warning in every plan)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pmcp_build.deploy.actions import Action, Call, Change, noop
from pmcp_build.deploy.targets.lambda_.model import (
    DesiredFunction,
    LambdaState,
    PublicGrant,
    Statement,
    Url,
)

# Statement ids of the two grants a public (auth NONE) URL needs. Since October 2025
# Lambda requires lambda:InvokeFunction beside lambda:InvokeFunctionUrl, or every
# request is answered 403.
PUBLIC_URL_SID = "pmcp-url-public"
PUBLIC_INVOKE_SID = "pmcp-url-invoke"
OUR_SIDS = (PUBLIC_URL_SID, PUBLIC_INVOKE_SID)
_INVOKE = ("lambda:invokefunction", "lambda:invokefunctionurl", "lambda:*", "*")
# Condition keys that say how a call arrives, not who may make it: a statement whose
# conditions use only these still lets anyone in.
_NOT_NARROWING = ("lambda:functionurlauthtype", "lambda:invokedviafunctionurl")


def public_grants(function: str, alias: str | None = None) -> dict[str, dict[str, Any]]:
    """AddPermission parameters of the grants an auth NONE URL needs, by statement id."""
    qualifier = {"Qualifier": alias} if alias else {}
    return {
        PUBLIC_URL_SID: {
            **qualifier,
            "FunctionName": function,
            "StatementId": PUBLIC_URL_SID,
            "Action": "lambda:InvokeFunctionUrl",
            "Principal": "*",
            "FunctionUrlAuthType": "NONE",
        },
        PUBLIC_INVOKE_SID: {
            **qualifier,
            "FunctionName": function,
            "StatementId": PUBLIC_INVOKE_SID,
            "Action": "lambda:InvokeFunction",
            "Principal": "*",
            "InvokedViaFunctionUrl": True,
        },
    }


# -- reading statements (pure) --------------------------------------------------------------


def our_statements(statements: list[dict[str, Any]]) -> dict[str, Statement]:
    return {s["Sid"]: _statement(s) for s in statements if s.get("Sid") in OUR_SIDS}


def public_statements(statements: list[dict[str, Any]], qualifier: str | None) -> list[PublicGrant]:
    """Statements not made by pmcp-build that let anyone invoke the function or its
    URL: Allow, Principal "*", an invoke action, and no condition narrowing who."""
    found = []
    for raw in statements:
        s = _statement(raw)
        action = _invoke_action(s.action)
        if s.sid in OUR_SIDS or s.effect != "Allow" or action is None:
            continue
        if _everyone(s.principal) and not _narrowed(s.condition):
            found.append(PublicGrant(s.sid, action, qualifier))
    return found


def public_warnings(want: DesiredFunction, state: LambdaState) -> list[str]:
    lines = []
    for grant in state.public:
        where = want.function + (f":{grant.qualifier}" if grant.qualifier else "")
        lines.append(
            f"lambda {where}: resource-policy statement {grant.sid!r} (not made by "
            f'pmcp-build) grants {grant.action} to Principal "*" with no condition: anyone '
            "can invoke this function; remove it (aws lambda remove-permission) unless "
            "that is intended"
        )
    return lines


def _statement(raw: Mapping[str, Any]) -> Statement:
    return Statement(
        sid=str(raw.get("Sid") or ""),
        effect=str(raw.get("Effect") or "Allow"),
        action=raw.get("Action"),
        principal=raw.get("Principal"),
        condition=raw.get("Condition"),
    )


def _invoke_action(action: Any) -> str | None:
    actions = action if isinstance(action, list) else [action]
    for one in actions:
        if isinstance(one, str) and one.lower() in _INVOKE:
            return one
    return None


def _everyone(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        who = principal.get("AWS")
        return who == "*" or (isinstance(who, list) and "*" in who)
    return False


def _narrowed(condition: Any) -> bool:
    if not condition:
        return False
    if not isinstance(condition, dict):
        return True  # a form we do not know: assume it narrows, never cry wolf on it
    keys = [k for test in condition.values() if isinstance(test, dict) for k in test]
    return any(str(k).lower() not in _NOT_NARROWING for k in keys)


# -- the diff ---------------------------------------------------------------------------------


def diff(want: DesiredFunction, state: LambdaState) -> list[Action]:
    return url_actions(want.function, want.url_auth, state.url, state.grants, want.alias)


def leftovers(want: DesiredFunction, state: LambdaState) -> list[Action]:
    """Remove a URL (and our grants on it) the manifest no longer puts there, then a
    managed alias it no longer declares: what `read` found as `elsewhere`."""
    function, alias = want.function, want.alias
    actions: list[Action] = []
    for place in state.elsewhere:
        why = (
            f"the url is served by alias {alias} now"
            if place.qualifier is None
            else f"alias {place.qualifier} is no longer declared"
        )
        actions += url_actions(function, None, place.url, place.grants, place.qualifier, why)
    if state.stale_alias:
        delete = Call(
            "lambda",
            "delete_alias",
            {"FunctionName": function, "Name": state.stale_alias},
            tolerate=("ResourceNotFoundException",),
        )
        actions.append(
            Action(
                "lambda.delete_alias",
                "-",
                f"alias {function}:{state.stale_alias}",
                "alias no longer declared (its versions stay)",
                calls=(delete,),
            )
        )
    return actions


def url_actions(
    function: str,
    auth: str | None,
    url: Url | None,
    grants: Mapping[str, Statement],
    alias: str | None = None,
    gone: str | None = None,  # why a URL left elsewhere and its grants are removed
) -> list[Action]:
    where: dict[str, Any] = {"FunctionName": function, **({"Qualifier": alias} if alias else {})}
    resource = f"function url {function}" + (f":{alias}" if alias else "")
    actions = _config_actions(where, resource, auth, url, gone)
    for sid, params in public_grants(function, alias).items():
        present = grants.get(sid)
        if auth == "NONE" and (present is None or not _grant_matches(present, params)):
            calls = [] if present is None else [_remove(function, sid, alias)]  # by hand
            calls.append(
                Call("lambda", "add_permission", params, tolerate=("ResourceConflictException",))
            )
            actions.append(
                Action(
                    "lambda.add_permission",
                    "+" if present is None else "~",
                    f"url permission {function}/{sid}",
                    f"public url needs {params['Action']} for everyone",
                    (Change("Principal", None, "*"),),
                    tuple(calls),
                )
            )
        elif auth != "NONE" and present is not None:
            actions.append(
                Action(
                    "lambda.remove_permission",
                    "-",
                    f"url permission {function}" + (f":{alias}" if alias else "") + f"/{sid}",
                    gone or "url is no longer public",
                    calls=(_remove(function, sid, alias),),
                )
            )
    return actions


def _config_actions(
    where: dict[str, Any], resource: str, auth: str | None, url: Url | None, gone: str | None
) -> list[Action]:
    if auth is not None and url is None:
        create = Call(
            "lambda",
            "create_function_url_config",
            {**where, "AuthType": auth},
            tolerate=("ResourceConflictException",),
            outputs={"url": "FunctionUrl"},
        )
        return [
            Action(
                "lambda.create_function_url_config",
                "+",
                resource,
                "url declared",
                (Change("AuthType", None, auth),),
                (create,),
            )
        ]
    if auth is not None and url is not None and url.auth != auth:
        update = Call("lambda", "update_function_url_config", {**where, "AuthType": auth})
        return [
            Action(
                "lambda.update_function_url_config",
                "~",
                resource,
                "auth changed",
                (Change("AuthType", url.auth, auth),),
                (update,),
                {"AuthType": url.auth},
            )
        ]
    if auth is None and url is not None:
        delete = Call(
            "lambda",
            "delete_function_url_config",
            where,
            tolerate=("ResourceNotFoundException",),
        )
        return [
            Action(
                "lambda.delete_function_url_config",
                "-",
                resource,
                gone or "url no longer declared",
                calls=(delete,),
            )
        ]
    return [noop(resource, "up to date")] if auth is not None else []


def _remove(function: str, sid: str, alias: str | None = None) -> Call:
    qualifier = {"Qualifier": alias} if alias else {}
    return Call(
        "lambda",
        "remove_permission",
        {"FunctionName": function, "StatementId": sid, **qualifier},
        tolerate=("ResourceNotFoundException",),
    )


def _grant_matches(statement: Statement, params: dict[str, Any]) -> bool:
    return (
        statement.effect == "Allow"
        and statement.action == params["Action"]
        and _everyone(statement.principal)
    )
