"""The executor: runs a plan's calls in order, and nothing else.

It has no per-kind logic: a call names a service and an operation, which is either a
boto3 client method or one of the named helpers (aws.HELPERS, local.HELPERS). It
resolves the references described in actions.py, runs the waiter a call names,
tolerates the error codes a call lists as "already so", and keeps each function's
RevisionId current from the responses. Targets run in parallel, each in order.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmcp_build.deploy import aws
from pmcp_build.deploy.actions import Call, Plan, TargetPlan
from pmcp_build.deploy.targets import local
from pmcp_build.errors import UserError
from pmcp_build.manifest.secrets import Environment

Progress = Callable[[str, int], Any]  # (target name, total bytes) -> a bytes callback

HELPERS = {**aws.HELPERS, **local.HELPERS}
# Test hook: a callable run after every successful write call; raising from it
# simulates a crash at that point (the convergence test kills apply after each call).
AFTER_CALL: Callable[[str, Call], None] | None = None


@dataclass
class TargetResult:
    name: str
    steps: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    target: TargetPlan
    package: Path | None
    env: Environment
    progress: Callable[[int], Any] | None
    once: _Once
    outputs: dict[str, Any] = field(default_factory=dict)
    revisions: dict[str, str] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if "$secret" in value:
                key = value["$secret"]
                if key not in self.env.values:
                    raise UserError(
                        f"target {self.target.name!r}: the plan needs ${{env:…}} value "
                        f"{key} and it is not set; export it and apply again"
                    )
                return self.env.values[key]
            if "$package" in value:
                if self.package is None:
                    raise UserError("this plan uploads a package, but none was built")
                return str(self.package)
            if "$output" in value:
                return self.outputs[value["$output"]]
            if "$revision" in value:
                return self.revisions.get(value["$revision"], value.get("planned"))
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value


class _Once:
    """Identical calls in one apply run once: targets that share an artifact (same
    bucket, same content-addressed key) must not upload it side by side, each aborting
    the other's multipart upload. The second caller waits for the first's response."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[bytes, Future[dict[str, Any]]] = {}

    def run(self, key: bytes, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            future = self._results.get(key)
            mine = future is None
            if future is None:
                future = self._results[key] = Future()
        if not mine:
            return future.result()
        try:
            response = work()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result(response)
        return response


def execute(
    plan: Plan,
    package: Path | None,
    envs: dict[str, Environment],
    progress: Progress | None = None,
) -> list[TargetResult]:
    """Run every target's actions; targets in parallel, each in order."""
    targets = [t for t in plan.targets if t.changes]
    if not targets:
        return [TargetResult(t.name, [], dict(t.outputs)) for t in plan.targets]

    once = _Once()

    def one(target: TargetPlan) -> TargetResult:
        callback = progress(target.name, 0) if progress else None
        run = _Run(target, package, envs.get(target.name, Environment()), callback, once)
        return _execute_target(run)

    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        done = {r.name: r for r in pool.map(one, targets)}
    return [done.get(t.name) or TargetResult(t.name, [], dict(t.outputs)) for t in plan.targets]


def _execute_target(run: _Run) -> TargetResult:
    target = run.target
    result = TargetResult(target.name, outputs=dict(target.outputs))
    clients = aws.clients(target.connection) if target.kind != "local" else None
    for action in target.actions:
        if action.symbol == "=":
            continue
        for call in action.calls:
            try:
                _run_call(run, clients, call)
            except UserError as exc:
                raise UserError(run.env.scrub(str(exc))) from None
            except Exception as exc:
                error = aws.user_error(
                    exc, f"target {target.name!r}: {call.service}.{call.operation}"
                )
                raise UserError(run.env.scrub(str(error))) from None
            if AFTER_CALL is not None:
                AFTER_CALL(target.name, call)
        result.steps.append(f"{action.symbol} {action.resource} {action.op}")
    for name in target.outputs:  # what the plan declares as outputs, made by this run
        if name in run.outputs:
            result.outputs[name] = run.outputs[name]
    return result


def _run_call(run: _Run, clients: aws.Clients | None, call: Call) -> dict[str, Any]:
    # A reference that resolved to nothing (moto reports no RevisionId) is left out:
    # boto3 takes no None parameters.
    params = {k: v for k, v in run.resolve(call.params).items() if v is not None}
    helper = HELPERS.get((call.service, call.operation))
    client = None if clients is None else clients.client(call.service)

    def work() -> dict[str, Any]:
        try:
            if helper is not None:
                return helper(client, params, run.progress)
            return dict(getattr(client, call.operation)(**params))
        except Exception as exc:
            if aws.code_of(exc) in call.tolerate:
                return {}
            raise

    # Secrets are resolved into `params`, so the key is a digest, never kept in clear.
    key = hashlib.sha256(
        json.dumps(
            [run.target.connection, call.service, call.operation, params],
            sort_keys=True,
            default=str,
        ).encode()
    ).digest()
    response = run.once.run(key, work)
    function = params.get("FunctionName")
    if function and response.get("RevisionId"):
        run.revisions[function] = response["RevisionId"]
    # Outputs first: a waiter may name one (the version just published).
    for name, path in call.outputs.items():
        value = _dig(response, path)
        if value is not None:
            run.outputs[name] = value
    if call.wait:
        _wait(client, call, run.resolve(call.wait_params))
    return response


def _wait(client: Any, call: Call, wait_params: dict[str, Any]) -> None:
    import botocore.exceptions

    try:
        client.get_waiter(call.wait).wait(
            **wait_params, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
        )
    except botocore.exceptions.WaiterError as exc:
        # Say why: Lambda puts the cause of a failed update in LastUpdateStatusReason.
        last = getattr(exc, "last_response", None) or {}
        config = last.get("Configuration") or last
        reason = (
            config.get("LastUpdateStatusReason")
            or config.get("StateReason")
            or (last.get("Error") or {}).get("Message")
            or str(exc)
        )
        code = config.get("LastUpdateStatusReasonCode") or config.get("StateReasonCode")
        where = call.wait_params.get("FunctionName", "")
        raise UserError(
            f"lambda {where}: the update failed: {reason}" + (f" ({code})" if code else "")
        ) from None


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data
