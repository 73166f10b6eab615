"""What every target kind plans from, and the one interface the planner calls.

Kept apart from `targets/__init__.py` (which maps kinds to their modules) so that a
kind's module can import these without importing every other kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from pmcp_build.deploy.actions import TargetPlan
from pmcp_build.manifest.model import LambdaTarget, LocalTarget, S3Target
from pmcp_build.manifest.secrets import Environment

AnyTarget = LambdaTarget | S3Target | LocalTarget
M = TypeVar("M", bound=AnyTarget)


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
class TargetInput(Generic[M]):
    """Everything a target kind plans from: its manifest table and the package."""

    name: str
    target: M
    server: str
    package: PackageRef | None  # None when destroying
    env: Environment
    root: Path  # the manifest's folder


class TargetKind(Protocol):
    """What the planner calls, for any manifest target."""

    def plan(self, given: TargetInput[AnyTarget], refresh: bool) -> TargetPlan: ...

    def destroy(self, given: TargetInput[AnyTarget]) -> TargetPlan: ...


@dataclass(frozen=True)
class Kind(Generic[M]):
    """A kind's functions behind the `TargetKind` interface: the target is checked to
    be this kind's model once, here, so each kind's module is typed on its own model."""

    model: type[M]
    planner: Callable[[TargetInput[M], bool], TargetPlan]
    destroyer: Callable[[TargetInput[M]], TargetPlan]

    def plan(self, given: TargetInput[AnyTarget], refresh: bool) -> TargetPlan:
        return self.planner(self.narrow(given), refresh)

    def destroy(self, given: TargetInput[AnyTarget]) -> TargetPlan:
        return self.destroyer(self.narrow(given))

    def narrow(self, given: TargetInput[AnyTarget]) -> TargetInput[M]:
        target = given.target
        if not isinstance(target, self.model):
            raise TypeError(f"target {given.name!r} is {target.kind}, not {self.model.__name__}")
        return TargetInput(given.name, target, given.server, given.package, given.env, given.root)
