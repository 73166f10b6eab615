"""The executor: runs a plan's calls in order, and nothing else.

It has no per-kind logic and imports no target kind: a call names a service and an
operation, which is either a client method or one of the named helpers it is handed;
the client factory and a hook run after each call are handed in too (see apply.py for
the wiring). It resolves the references described in actions.py, runs the waiter a
call names (worded as the call says when it fails), tolerates the error codes a call
lists as "already so", and keeps the revisions a call's `revisions` name current from
the responses. Targets run in parallel, each in order.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions

from pmcp_build.deploy import aws
from pmcp_build.deploy.actions import Call, Plan, TargetPlan
from pmcp_build.errors import UserError
from pmcp_build.manifest.secrets import Environment

Progress = Callable[[str, int], Any]  # (target name, total bytes) -> a bytes callback
# A named helper: (client or None, resolved params, progress callback) -> a response.
Helper = Callable[[Any, dict[str, Any], Any], dict[str, Any]]
# The client for (a target's connection, a service), or None for a service with none.
ClientFactory = Callable[[dict[str, Any], str], Any]
OnCall = Callable[[str, Call], None]  # (target name, call): after every successful call


@dataclass(frozen=True)
class Wiring:
    """What the executor is handed instead of importing it."""

    clients: ClientFactory
    helpers: Mapping[tuple[str, str], Helper] = field(default_factory=dict)
    on_call: OnCall | None = None


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
    wiring: Wiring
    outputs: dict[str, Any] = field(default_factory=dict)
    revisions: dict[str, Any] = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self.clients:  # made on first use: a local target needs none
            self.clients[service] = self.wiring.clients(self.target.connection, service)
        return self.clients[service]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$secret" in value:
            return self._secret(value["$secret"])
        if "$package" in value:
            if self.package is None:
                raise UserError("this plan uploads a package, but none was built")
            return str(self.package)
        if "$output" in value:
            return self.outputs[value["$output"]]
        if "$revision" in value:
            return self.revisions.get(value["$revision"], value.get("planned"))
        return {k: self.resolve(v) for k, v in value.items()}

    def _secret(self, key: str) -> str:
        if key not in self.env.values:
            raise UserError(
                f"target {self.target.name!r}: the plan needs ${{env:…}} value "
                f"{key} and it is not set; export it and apply again"
            )
        return self.env.values[key]


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
    wiring: Wiring,
    progress: Progress | None = None,
) -> list[TargetResult]:
    """Run every target's actions; targets in parallel, each in order."""
    targets = [t for t in plan.targets if t.changes]
    if not targets:
        return [TargetResult(t.name, [], dict(t.outputs)) for t in plan.targets]
    once = _Once()

    def one(target: TargetPlan) -> TargetResult:
        callback = progress(target.name, 0) if progress else None
        env = envs.get(target.name, Environment())
        return _execute_target(_Run(target, package, env, callback, once, wiring))

    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        done = {r.name: r for r in pool.map(one, targets)}
    return [done.get(t.name) or TargetResult(t.name, [], dict(t.outputs)) for t in plan.targets]


def _execute_target(run: _Run) -> TargetResult:
    target = run.target
    result = TargetResult(target.name, outputs=dict(target.outputs))
    for action in target.actions:
        if action.symbol == "=":
            continue
        for call in action.calls:
            try:
                with aws.translating(f"target {target.name!r}: {call.service}.{call.operation}"):
                    _run_call(run, call)
            except UserError as exc:
                raise UserError(run.env.scrub(str(exc))) from None
            if run.wiring.on_call is not None:
                run.wiring.on_call(target.name, call)
        result.steps.append(f"{action.symbol} {action.resource} {action.op}")
    for name in target.outputs:  # what the plan declares as outputs, made by this run
        if name in run.outputs:
            result.outputs[name] = run.outputs[name]
    return result


def _run_call(run: _Run, call: Call) -> dict[str, Any]:
    # A reference that resolved to nothing (moto reports no RevisionId) is left out:
    # boto3 takes no None parameters.
    params = {k: v for k, v in run.resolve(call.params).items() if v is not None}
    helper = run.wiring.helpers.get((call.service, call.operation))
    client = run.client(call.service)

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
    # Outputs first: a waiter may name one (the version just published).
    for name, path in call.outputs.items():
        if (value := _dig(response, path)) is not None:
            run.outputs[name] = value
    for name, path in call.revisions.items():
        if value := _dig(response, path):
            run.revisions[name] = value
    if call.wait:
        _wait(client, call, run.resolve(call.wait_params))
    return response


def _wait(client: Any, call: Call, wait_params: dict[str, Any]) -> None:
    try:
        client.get_waiter(call.wait).wait(
            **wait_params, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
        )
    except botocore.exceptions.WaiterError as exc:
        # Say why, from where the call says the service puts the cause.
        last = getattr(exc, "last_response", None) or {}
        reason = _first(last, call.wait_reasons) or _dig(last, "Error.Message") or str(exc)
        code = _first(last, call.wait_codes)
        wording = call.wait_failure or f"{call.service}.{call.wait}: waiting failed"
        raise UserError(f"{wording}: {reason}" + (f" ({code})" if code else "")) from None


def _first(data: Any, paths: tuple[str, ...]) -> Any:
    for path in paths:
        if value := _dig(data, path):
            return value
    return None


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data
