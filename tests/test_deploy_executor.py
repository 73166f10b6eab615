"""The executor on its own: it is handed its clients, helpers and on_call hook, knows
no target kind, and takes revision tracking from the calls' data; and the one place
foreign errors become one-line user errors (aws.translating)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from pmcp_build.deploy import aws, executor
from pmcp_build.deploy.actions import Action, Call, Plan, TargetPlan
from pmcp_build.errors import UserError


def test_a_new_service_needs_no_change_to_the_executor() -> None:
    """A made-up kind: its helper, its client factory, its revision chain."""
    seen: list[tuple[str, Any]] = []

    def bump(client: Any, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        seen.append((client, params))
        return {"Meta": {"Rev": f"rev-{len(seen)}"}}

    call = Call(
        "fake",
        "bump",
        {"Rev": {"$revision": "thing", "planned": "rev-0"}},
        revisions={"thing": "Meta.Rev"},
    )
    action = Action("fake.bump", "~", "thing", "test", calls=(call, call))
    plan = Plan("s", {}, (TargetPlan("t", "fake", (action,), connection={"where": "here"}),))
    calls: list[str] = []
    wiring = executor.Wiring(
        clients=lambda conn, service: f"{service}@{conn['where']}",
        helpers={("fake", "bump"): bump},
        on_call=lambda target, c: calls.append(f"{target}:{c.operation}"),
    )
    (result,) = executor.execute(plan, Path("unused.zip"), {}, wiring)
    assert seen == [("fake@here", {"Rev": "rev-0"}), ("fake@here", {"Rev": "rev-1"})]
    assert calls == ["t:bump", "t:bump"] and result.steps == ["~ thing fake.bump"]


def test_on_call_raising_stops_the_apply() -> None:
    def crash(target: str, call: Call) -> None:
        raise UserError(f"stopped after {call.operation}")

    done: list[str] = []

    def a(client: Any, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        done.append("a")
        return {}

    wiring = executor.Wiring(
        clients=lambda conn, service: None,
        helpers={("fake", "a"): a},
        on_call=crash,
    )
    action = Action("fake.a", "+", "x", "test", calls=(Call("fake", "a"), Call("fake", "a")))
    plan = Plan("s", {}, (TargetPlan("t", "fake", (action,)),))
    with pytest.raises(UserError, match="stopped after a"):
        executor.execute(plan, None, {}, wiring)
    assert done == ["a"]


def _client_error(code: str, message: str = "no") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "Op")


@pytest.mark.parametrize(
    ("raised", "says"),
    [
        (_client_error("AccessDeniedException", "nope"), "reading x: access denied (nope)"),
        (_client_error("Throttling", "slow down"), "reading x: Throttling: slow down"),
        (botocore.exceptions.NoCredentialsError(), "reading x: no AWS credentials found"),
        (OSError("disk gone"), "reading x: disk gone"),
    ],
)
def test_translating_makes_one_line_user_errors(raised: Exception, says: str) -> None:
    with pytest.raises(UserError) as caught, aws.translating("reading x"):
        raise raised
    assert str(caught.value).startswith(says) and "\n" not in str(caught.value)


def test_translating_lets_user_errors_and_bugs_through() -> None:
    with pytest.raises(UserError, match=r"^as it was$"), aws.translating("reading x"):
        raise UserError("as it was")
    with pytest.raises(KeyError), aws.translating("reading x"):
        raise KeyError("a bug stays a bug")
