"""One module per target kind, each holding its read-state, its pure diff and its
destroy steps. `KINDS` maps a manifest target's `kind` to it: the planner and the
executor never branch on kinds themselves."""

from __future__ import annotations

from pmcp_build.deploy.targets import lambda_, local, s3
from pmcp_build.deploy.targets.common import AnyTarget, Kind, PackageRef, TargetInput, TargetKind
from pmcp_build.manifest.model import LambdaTarget, LocalTarget, S3Target

KINDS: dict[str, TargetKind] = {
    "lambda": Kind(LambdaTarget, lambda_.plan, lambda_.destroy),
    "s3": Kind(S3Target, s3.plan, s3.destroy),
    "local": Kind(LocalTarget, local.plan, local.destroy),
}

__all__ = ["KINDS", "AnyTarget", "PackageRef", "TargetInput", "TargetKind"]
