"""The function's tags (the manifest owns them; pmcp-build's own mark it as managed)
and its reserved concurrency."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pmcp_build.deploy.actions import Action, Call, Change, Symbol
from pmcp_build.deploy.targets.lambda_.model import DesiredFunction, LambdaState

ADOPTED = "adopt = true: pmcp-build takes over this function, which it did not create"


def diff(want: DesiredFunction, state: LambdaState) -> list[Action]:
    fn = state.function
    if fn is None:
        return []  # CreateFunction carries the tags
    action = tag_action(want.function, fn.arn, fn.tags, want.tags)
    if action is not None and not fn.managed:
        action = dataclasses.replace(action, reason=ADOPTED)
    return [] if action is None else [action]


def tag_action(
    function: str, arn: str | None, before: Mapping[str, str], wanted: Mapping[str, str]
) -> Action | None:
    """Tag drift: TagResource for what is missing or different, UntagResource for keys
    the manifest does not name (the manifest owns the function's tags; AWS's own
    'aws:' tags cannot be removed and are left alone)."""
    put = {k: v for k, v in wanted.items() if before.get(k) != v}
    drop = sorted(k for k in before if k not in wanted and not k.startswith("aws:"))
    if not put and not drop:
        return None
    changes = [Change(f"Tags.{k}", before.get(k), v) for k, v in sorted(put.items())]
    changes += [Change(f"Tags.{k}", before[k], None) for k in drop]
    calls = []
    if put:
        calls.append(Call("lambda", "tag_resource", {"Resource": arn, "Tags": put}))
    if drop:
        calls.append(Call("lambda", "untag_resource", {"Resource": arn, "TagKeys": drop}))
    return Action(
        "lambda.tag_resource" if put else "lambda.untag_resource",
        "~",
        f"lambda {function} tags",
        "tags drifted" if before else "tags missing",
        tuple(changes),
        tuple(calls),
        {"Tags": dict(before)},
    )


def concurrency(want: DesiredFunction, state: LambdaState) -> list[Action]:
    current = None if state.function is None else state.function.concurrency
    return concurrency_actions(want.function, want.concurrency, current)


def concurrency_actions(function: str, wanted: int | None, current: int | None) -> list[Action]:
    if wanted == current:
        return []
    symbol: Symbol
    if wanted is None:
        call = Call(
            "lambda",
            "delete_function_concurrency",
            {"FunctionName": function},
            tolerate=("ResourceNotFoundException",),
        )
        op, symbol, reason = (
            "lambda.delete_function_concurrency",
            "-",
            "reserved concurrency removed",
        )
    else:
        call = Call(
            "lambda",
            "put_function_concurrency",
            {"FunctionName": function, "ReservedConcurrentExecutions": wanted},
        )
        symbol = "~" if current is not None else "+"
        op, reason = "lambda.put_function_concurrency", "reserved concurrency"
    return [
        Action(
            op,
            symbol,
            f"lambda {function} concurrency",
            reason,
            (Change("ReservedConcurrentExecutions", current, wanted),),
            (call,),
            {"ReservedConcurrentExecutions": current},
        )
    ]
