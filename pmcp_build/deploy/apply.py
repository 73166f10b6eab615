"""The executor wired to what it runs against: boto3 clients for a target's
connection, and the named helpers of aws.py and targets/local.py. The CLI calls this;
tests call it with their own `on_call` hook (or the executor with their own wiring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pmcp_build.deploy import aws
from pmcp_build.deploy.actions import Plan
from pmcp_build.deploy.executor import Helper, OnCall, Progress, TargetResult, Wiring
from pmcp_build.deploy.executor import execute as run_plan
from pmcp_build.deploy.targets import local
from pmcp_build.manifest.secrets import Environment

HELPERS: dict[tuple[str, str], Helper] = {**aws.HELPERS, **local.HELPERS}
# Services whose calls are all helpers that take no client.
CLIENTLESS = frozenset(service for service, _ in local.HELPERS)


def client_for(connection: dict[str, Any], service: str) -> Any:
    if service in CLIENTLESS:
        return None
    return aws.clients(connection).client(service)


def execute(
    plan: Plan,
    package: Path | None,
    envs: dict[str, Environment],
    progress: Progress | None = None,
    on_call: OnCall | None = None,
) -> list[TargetResult]:
    wiring = Wiring(clients=client_for, helpers=HELPERS, on_call=on_call)
    return run_plan(plan, package, envs, wiring, progress)
