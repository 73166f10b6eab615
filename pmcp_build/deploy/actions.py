"""A plan is data: actions that carry the exact calls they will make.

The planner (targets/*.py) emits `Action`s; the executor (executor.py) runs their
`Call`s in order and knows nothing about target kinds. Parameters are plain JSON, so a
saved plan is complete on its own. Values that must not be written down, or that only
exist once an earlier call has run, are references the executor resolves at call time:

- `{"$secret": KEY}`: the target's environment value KEY, read from `${env:…}` when
  apply runs (never stored, never printed).
- `{"$package": "path"}`: the local path of the package zip being deployed.
- `{"$output": NAME}`: a value an earlier call of the same target produced (its
  `outputs` map NAME to a dotted path in that call's response), e.g. a new role's ARN.
- `{"$revision": NAME, "planned": VALUE}`: the latest revision recorded under NAME (a
  call's `revisions` say which response field records it), else VALUE, the one the
  plan read: for Lambda, each function's RevisionId, so an update never overwrites a
  change made by someone else since the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FORMAT_VERSION = 2
# "?": an offline plan (--refresh=false) cannot tell create from update or no-op.
Symbol = Literal["+", "~", "-", "=", "?"]
NOT_READ = "(not read)"
_COUNTED = {"+": "add", "~": "change", "-": "destroy"}


@dataclass(frozen=True)
class Change:
    """One field a person reviews: before and after, already masked where secret."""

    field: str
    before: Any
    after: Any

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "before": self.before, "after": self.after}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        return cls(data["field"], data.get("before"), data.get("after"))


@dataclass(frozen=True)
class Call:
    """One API call (or one named helper, see deploy/apply.py)."""

    service: str  # "s3" | "lambda" | "iam" | "local"
    operation: str  # boto3 client method name, e.g. "update_function_code"
    params: dict[str, Any] = field(default_factory=dict)
    # Error codes that mean "already so": the call counts as done (convergence).
    tolerate: tuple[str, ...] = ()
    # A boto3 waiter to run after the call, with its parameters.
    wait: str | None = None
    wait_params: dict[str, Any] = field(default_factory=dict)
    # Names for values of the response, for later `{"$output": NAME}` references.
    outputs: dict[str, str] = field(default_factory=dict)
    # Revision chains this call's response moves: NAME -> a dotted path in the response,
    # for later `{"$revision": NAME}` references.
    revisions: dict[str, str] = field(default_factory=dict)
    # What a failed waiter says: this wording, then the first of `wait_reasons` (dotted
    # paths in the waiter's last response) that is set, and of `wait_codes` in brackets.
    wait_failure: str = ""
    wait_reasons: tuple[str, ...] = ()
    wait_codes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "service": self.service,
            "operation": self.operation,
            "params": self.params,
        }
        if self.tolerate:
            data["tolerate"] = list(self.tolerate)
        if self.wait:
            data["wait"] = self.wait
            data["wait_params"] = self.wait_params
        if self.outputs:
            data["outputs"] = self.outputs
        if self.revisions:
            data["revisions"] = self.revisions
        if self.wait_failure:
            data["wait_failure"] = self.wait_failure
            data["wait_reasons"] = list(self.wait_reasons)
            data["wait_codes"] = list(self.wait_codes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Call:
        return cls(
            service=data["service"],
            operation=data["operation"],
            params=dict(data.get("params") or {}),
            tolerate=tuple(data.get("tolerate") or ()),
            wait=data.get("wait"),
            wait_params=dict(data.get("wait_params") or {}),
            outputs=dict(data.get("outputs") or {}),
            revisions=dict(data.get("revisions") or {}),
            wait_failure=str(data.get("wait_failure") or ""),
            wait_reasons=tuple(data.get("wait_reasons") or ()),
            wait_codes=tuple(data.get("wait_codes") or ()),
        )


@dataclass(frozen=True)
class Action:
    """What a person reviews (symbol, resource, reason, changes) and what runs (calls).

    `expects` names the remote values the action was derived from; apply re-reads them
    and refuses a saved plan when any differs."""

    op: str  # the main call, "service.operation", or "noop"
    symbol: Symbol
    resource: str
    reason: str
    changes: tuple[Change, ...] = ()
    calls: tuple[Call, ...] = ()
    expects: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "symbol": self.symbol,
            "resource": self.resource,
            "reason": self.reason,
            "changes": [c.to_json() for c in self.changes],
            "calls": [c.to_json() for c in self.calls],
            "expects": self.expects,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Action:
        return cls(
            op=data["op"],
            symbol=data["symbol"],
            resource=data["resource"],
            reason=data["reason"],
            changes=tuple(Change.from_json(c) for c in data.get("changes") or ()),
            calls=tuple(Call.from_json(c) for c in data.get("calls") or ()),
            expects=dict(data.get("expects") or {}),
        )


@dataclass(frozen=True)
class TargetPlan:
    """One target's actions, the connection they run on, and what the plan observed."""

    name: str
    kind: str
    actions: tuple[Action, ...]
    connection: dict[str, Any] = field(default_factory=dict)  # profile, region, endpoint_url
    observed: dict[str, Any] = field(default_factory=dict)  # secret-free, sealed in files
    outputs: dict[str, Any] = field(default_factory=dict)  # ARN, URL… as last read
    warnings: tuple[str, ...] = ()
    refreshed: bool = True
    # Remote values that must never be printed or saved in clear (a function's current
    # environment); saved.py seals them with a salted, slow digest.
    private: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def changes(self) -> bool:
        return any(a.symbol != "=" for a in self.actions)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "refreshed": self.refreshed,
            "connection": self.connection,
            "observed": self.observed,
            "outputs": self.outputs,
            "warnings": list(self.warnings),
            "actions": [a.to_json() for a in self.actions],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetPlan:
        return cls(
            name=data["name"],
            kind=data["kind"],
            actions=tuple(Action.from_json(a) for a in data.get("actions") or ()),
            connection=dict(data.get("connection") or {}),
            observed=dict(data.get("observed") or {}),
            outputs=dict(data.get("outputs") or {}),
            warnings=tuple(data.get("warnings") or ()),
            refreshed=bool(data.get("refreshed", True)),
        )


@dataclass(frozen=True)
class Plan:
    server: str
    package: dict[str, Any]  # sha256, size, runtime, handler, architecture, counts
    targets: tuple[TargetPlan, ...]

    @property
    def refreshed(self) -> bool:
        return all(t.refreshed for t in self.targets)

    @property
    def has_changes(self) -> bool:
        return any(t.changes for t in self.targets)

    def counts(self) -> dict[str, int]:
        c = {"add": 0, "change": 0, "destroy": 0}
        for t in self.targets:
            for a in t.actions:
                if a.symbol in _COUNTED:
                    c[_COUNTED[a.symbol]] += 1
        return c

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "server": self.server,
            "package": self.package,
            "refreshed": self.refreshed,
            "has_changes": self.has_changes,
            "summary": self.counts(),
            "targets": [t.to_json() for t in self.targets],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            server=data["server"],
            package=dict(data["package"]),
            targets=tuple(TargetPlan.from_json(t) for t in data["targets"]),
        )


def noop(resource: str, reason: str) -> Action:
    return Action("noop", "=", resource, reason)


def unread(actions: list[Action]) -> list[Action]:
    """What an offline plan shows: the actions a first deploy would make, marked "?"
    with every "before" value `(not read)` — it never guesses that nothing exists."""
    return [
        Action(
            a.op,
            "?" if a.symbol != "=" else "=",
            a.resource,
            "remote state not read",
            tuple(Change(c.field, NOT_READ, c.after) for c in a.changes),
            a.calls,
        )
        for a in actions
    ]
