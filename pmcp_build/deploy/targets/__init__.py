"""One module per target kind, each holding its read-state, its pure diff and its
destroy steps. `KINDS` maps a manifest target's `kind` to its module: the planner and
the executor never branch on kinds themselves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pmcp_build.deploy.actions import Action, TargetPlan
from pmcp_build.manifest.secrets import Environment


@dataclass(frozen=True)
class PackageRef:
    """What the planner needs to know of the package being deployed."""

    path: Path
    sha256: str
    code_sha256: str
    size: int
    runtime: str
    handler: str
    architecture: str


@dataclass(frozen=True)
class TargetInput:
    """Everything a target kind plans from: its manifest table and the package."""

    name: str
    target: Any  # the manifest model: LambdaTarget | S3Target | LocalTarget
    server: str
    package: PackageRef | None  # None when destroying
    env: Environment
    root: Path  # the manifest's folder


class TargetKind(Protocol):
    def plan(self, given: TargetInput, refresh: bool) -> TargetPlan: ...

    def destroy(self, given: TargetInput) -> TargetPlan: ...


def kind_module(kind: str) -> TargetKind:
    from pmcp_build.deploy.targets import lambda_, local, s3

    kinds: dict[str, Any] = {"lambda": lambda_, "s3": s3, "local": local}
    return kinds[kind]  # type: ignore[no-any-return]


def pending(actions: list[Action]) -> bool:
    return any(a.symbol != "=" for a in actions)
