"""Plans: what each target needs to reach the package and manifest, as data.

The diff functions here are pure: desired (package + target settings) against an
observed remote state, giving an ordered list of actions. Reading the state and
carrying actions out live in aws.py and deploy.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pmcp_build.manifest.secrets import MASK, Environment

FORMAT_VERSION = 1
Symbol = Literal["+", "~", "-", "="]


@dataclass(frozen=True)
class Change:
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Action:
    op: str  # "s3.put_object", "lambda.update_function_code", ..., "noop"
    symbol: Symbol
    resource: str
    reason: str
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class LambdaState:
    """What AWS holds for a lambda target; None fields mean "does not exist"."""

    artifact_exists: bool | None  # None: not read (offline)
    function: dict[str, Any] | None  # GetFunction's Configuration
    url: dict[str, Any] | None  # GetFunctionUrlConfig
    role_arn: str | None  # the auto role's ARN when it exists
    known: bool = True

    def fingerprint(self) -> dict[str, Any]:
        fn = self.function or {}
        return {
            "artifact": self.artifact_exists,
            "code_sha256": fn.get("CodeSha256"),
            "revision_id": fn.get("RevisionId"),
            "url": bool(self.url),
            "role": self.role_arn,
        }


@dataclass(frozen=True)
class S3State:
    object_sha256: str | None  # sha256 metadata of the object at `key`; None: absent
    exists: bool
    known: bool = True

    def fingerprint(self) -> dict[str, Any]:
        return {"exists": self.exists, "sha256": self.object_sha256}


@dataclass(frozen=True)
class LocalState:
    sha256: str | None

    known: bool = True

    def fingerprint(self) -> dict[str, Any]:
        return {"sha256": self.sha256}


State = LambdaState | S3State | LocalState


@dataclass(frozen=True)
class TargetPlan:
    name: str
    kind: str
    actions: tuple[Action, ...]
    fingerprint: dict[str, Any] = field(default_factory=dict)
    env_fingerprint: str = ""

    @property
    def changes(self) -> bool:
        return any(a.symbol != "=" for a in self.actions)


@dataclass(frozen=True)
class Plan:
    server: str
    package_sha256: str
    package_size: int
    targets: tuple[TargetPlan, ...]
    refreshed: bool = True
    layout_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return any(t.changes for t in self.targets)

    def counts(self) -> dict[str, int]:
        c = {"add": 0, "change": 0, "destroy": 0}
        for t in self.targets:
            for a in t.actions:
                key = {"+": "add", "~": "change", "-": "destroy"}.get(a.symbol)
                if key:
                    c[key] += 1
        return c

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "server": self.server,
            "package": {
                "sha256": self.package_sha256,
                "size": self.package_size,
                **self.layout_summary,
            },
            "refreshed": self.refreshed,
            "has_changes": self.has_changes,
            "summary": self.counts(),
            "targets": [asdict(t) for t in self.targets],
        }


# -- diffs -----------------------------------------------------------------------------


def artifact_key(prefix: str, server: str, sha256: str) -> str:
    name = f"{server}-{sha256}.zip"
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def function_config(
    runtime: str, handler: str, role: str, memory: int, timeout: int, env: Environment
) -> dict[str, Any]:
    return {
        "Runtime": runtime,
        "Handler": handler,
        "Role": role,
        "MemorySize": memory,
        "Timeout": timeout,
        "Environment": env.values,
    }


def _shown_env(values: dict[str, str] | None, env: Environment) -> dict[str, str]:
    # Remote values of keys that are secret here are secret there too.
    return {k: (MASK if k in env.secret_keys else v) for k, v in (values or {}).items()}


def diff_lambda(
    *,
    function: str,
    bucket: str,
    key: str,
    code_sha256: str,
    architecture: str,
    desired: dict[str, Any],
    env: Environment,
    url_auth: str | None,
    auto_role: bool,
    state: LambdaState,
) -> list[Action]:
    actions: list[Action] = []
    s3 = f"s3://{bucket}/{key}"
    if state.artifact_exists is not True:
        actions.append(
            Action(
                "s3.put_object",
                "+",
                s3,
                "artifact not in S3" if state.known else "remote state not read",
            )
        )
    else:
        actions.append(Action("noop", "=", s3, "artifact already uploaded (same sha256)"))
    fn = state.function
    if auto_role and state.role_arn is None:
        # Also for an existing function: switched to "auto", or the role was deleted.
        actions.append(
            Action(
                "iam.create_role",
                "+",
                f"iam role {desired['Role']}",
                'role = "auto" and the role does not exist',
            )
        )
    if fn is None:
        actions.append(
            Action(
                "lambda.create_function",
                "+",
                f"lambda {function}",
                "function does not exist",
                (
                    *(
                        Change(k, None, env.shown() if k == "Environment" else v)
                        for k, v in desired.items()
                    ),
                    Change("Architectures", None, [architecture]),
                    Change("CodeSha256", None, code_sha256),
                ),
            )
        )
    else:
        code_changes = []
        if fn.get("CodeSha256") != code_sha256:
            code_changes.append(Change("CodeSha256", fn.get("CodeSha256"), code_sha256))
        if (fn.get("Architectures") or ["x86_64"]) != [architecture]:
            code_changes.append(Change("Architectures", fn.get("Architectures"), [architecture]))
        if code_changes:
            actions.append(
                Action(
                    "lambda.update_function_code",
                    "~",
                    f"lambda {function}",
                    "package changed",
                    tuple(code_changes),
                )
            )
        config_changes = []
        for k, v in desired.items():
            before = fn.get(k)
            if k == "Environment":
                before = (fn.get("Environment") or {}).get("Variables") or {}
                if before != v:
                    config_changes.append(Change(k, _shown_env(before, env), env.shown()))
                continue
            if k == "Role" and auto_role and _same_role_name(before, v):
                continue
            if before != v:
                config_changes.append(Change(k, before, v))
        if config_changes:
            actions.append(
                Action(
                    "lambda.update_function_configuration",
                    "~",
                    f"lambda {function}",
                    "configuration changed",
                    tuple(config_changes),
                )
            )
        if not code_changes and not config_changes:
            actions.append(Action("noop", "=", f"lambda {function}", "up to date"))
    url = state.url
    if url_auth is not None:
        if url is None:
            actions.append(
                Action(
                    "lambda.create_function_url_config",
                    "+",
                    f"function url {function}",
                    "url declared",
                    (Change("AuthType", None, url_auth),),
                )
            )
        elif url.get("AuthType") != url_auth:
            actions.append(
                Action(
                    "lambda.update_function_url_config",
                    "~",
                    f"function url {function}",
                    "auth changed",
                    (Change("AuthType", url.get("AuthType"), url_auth),),
                )
            )
        else:
            actions.append(Action("noop", "=", f"function url {function}", "up to date"))
    elif url is not None:
        actions.append(
            Action(
                "lambda.delete_function_url_config",
                "-",
                f"function url {function}",
                "url no longer declared",
            )
        )
    return actions


def _same_role_name(before: Any, after: Any) -> bool:
    # An auto role planned as "(new) NAME" and read back as an ARN is the same role.
    return bool(before) and str(before).rsplit("/", 1)[-1] == str(after).rsplit(" ", 1)[-1]


def diff_s3(*, bucket: str, key: str, sha256: str, state: S3State) -> list[Action]:
    resource = f"s3://{bucket}/{key}"
    if not state.known:
        return [Action("s3.put_object", "+", resource, "remote state not read")]
    if not state.exists:
        return [Action("s3.put_object", "+", resource, "object does not exist")]
    if state.object_sha256 != sha256:
        return [
            Action(
                "s3.put_object",
                "~",
                resource,
                "package changed",
                (Change("sha256", state.object_sha256, sha256),),
            )
        ]
    return [Action("noop", "=", resource, "same sha256")]


def diff_local(*, path: str, sha256: str, state: LocalState) -> list[Action]:
    if state.sha256 == sha256:
        return [Action("noop", "=", path, "same sha256")]
    symbol: Symbol = "+" if state.sha256 is None else "~"
    return [
        Action(
            "local.write",
            symbol,
            path,
            "package changed" if state.sha256 else "not deployed yet",
            (Change("sha256", state.sha256, sha256),),
        )
    ]


# -- rendering -------------------------------------------------------------------------


def render(plan: Plan) -> list[str]:
    lines: list[str] = []
    for target in plan.targets:
        lines.append(f"target {target.name} ({target.kind}):")
        for action in target.actions:
            op = "" if action.op == "noop" else f" {action.op}"
            lines.append(f"  {action.symbol} {action.resource}{op}  # {action.reason}")
            for change in action.changes:
                lines.append(f"      {change.field}: {_fmt(change.before)} -> {_fmt(change.after)}")
    c = plan.counts()
    if plan.has_changes:
        lines.append(
            f"Plan: {c['add']} to add, {c['change']} to change, {c['destroy']} to destroy."
        )
    else:
        lines.append("No changes. The deployment matches the manifest and package.")
    return lines


def _fmt(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)
