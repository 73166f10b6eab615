"""Making a plan (every target read in parallel, in one pool) and showing it.

`make_plan` is the planner: package + manifest + remote state in, a `Plan` of
executable actions out. `apply` without a plan file executes this very object."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pmcp_build.deploy.actions import Plan, TargetPlan
from pmcp_build.deploy.targets import KINDS, AnyTarget, PackageRef, TargetInput
from pmcp_build.errors import UserError
from pmcp_build.manifest.model import LambdaTarget
from pmcp_build.manifest.secrets import Environment, resolve
from pmcp_build.text import one_line

if TYPE_CHECKING:
    from pmcp_build.manifest.load import LoadedManifest
    from pmcp_build.package.build import Package

# Reads are network-bound; 16 at once keeps 30 targets close to the cost of one.
_READERS = 16


def package_ref(package: Package) -> PackageRef:
    layout = package.layout
    return PackageRef(
        path=package.path,
        sha256=package.sha256,
        code_sha256=package.code_sha256,
        size=package.size,
        runtime=layout.runtime,
        handler=layout.handler,
        architecture=layout.architecture,
    )


def package_summary(package: Package) -> dict[str, Any]:
    layout = package.layout
    return {
        "sha256": package.sha256,
        "size": package.size,
        "runtime": layout.runtime,
        "handler": layout.handler,
        "architecture": layout.architecture,
        "file_count": len(layout.entries),
        "unzipped_size": layout.unzipped_size,
    }


def environments(loaded: LoadedManifest, names: list[str]) -> dict[str, Environment]:
    """Each target's environment with `${env:}` resolved (secret values in memory only)."""
    out = {}
    for name in names:
        raw = getattr(loaded.manifest.targets[name], "environment", None) or {}
        out[name] = resolve(raw, f"targets.{name}")
    return out


def target_inputs(
    loaded: LoadedManifest, package: Package, names: list[str]
) -> list[TargetInput[AnyTarget]]:
    envs = environments(loaded, names)
    ref = package_ref(package)
    return [
        TargetInput[AnyTarget](
            name=name,
            target=loaded.manifest.targets[name],
            server=loaded.manifest.server.name,
            package=ref,
            env=envs[name],
            root=loaded.root,
        )
        for name in names
    ]


def make_plan(
    loaded: LoadedManifest, package: Package, names: list[str], refresh: bool = True
) -> tuple[Plan, dict[str, Environment]]:
    if not names:
        raise UserError(f"{loaded.path}: no targets declared; add a [targets.NAME] table")
    inputs = target_inputs(loaded, package, names)

    def one(given: TargetInput[AnyTarget]) -> TargetPlan:
        return KINDS[given.target.kind].plan(given, refresh)

    with ThreadPoolExecutor(max_workers=min(_READERS, len(inputs))) as pool:
        targets = tuple(pool.map(one, inputs))
    plan = Plan(
        server=loaded.manifest.server.name, package=package_summary(package), targets=targets
    )
    return plan, {g.name: g.env for g in inputs}


def destroy_plan(loaded: LoadedManifest, name: str) -> Plan:
    target = loaded.manifest.targets[name]
    env = environments(loaded, [name])[name]
    given = TargetInput[AnyTarget](
        name, target, loaded.manifest.server.name, None, env, loaded.root
    )
    return Plan(
        server=loaded.manifest.server.name, package={}, targets=(KINDS[target.kind].destroy(given),)
    )


# -- showing a plan --------------------------------------------------------------------------


def render(plan: Plan) -> list[str]:
    lines: list[str] = []
    for target in plan.targets:
        lines.append(f"target {target.name} ({target.kind}):")
        for action in target.actions:
            op = "" if action.op == "noop" else f" {action.op}"
            lines.append(f"  {action.symbol} {action.resource}{op}  # {action.reason}")
            for change in action.changes:
                lines.append(f"      {change.field}: {_fmt(change.before)} -> {_fmt(change.after)}")
        for warning in target.warnings:
            lines.append(f"  warning: {warning}")
    c = plan.counts()
    if not plan.refreshed:
        unknown = sum(a.symbol == "?" for t in plan.targets for a in t.actions)
        lines.append(
            f"Plan: remote state not read; {unknown} actions a first deploy would make "
            '("?": create, update or nothing). Plan without --no-refresh to know.'
        )
    elif plan.has_changes:
        lines.append(
            f"Plan: {c['add']} to add, {c['change']} to change, {c['destroy']} to destroy."
        )
    else:
        lines.append("No changes. The deployment matches the manifest and package.")
    # Values read from AWS (a tag someone set, a URL) and from the manifest: each line of
    # the plan a person reviews stays one line, and drives no terminal.
    return [one_line(line) for line in lines]


def _fmt(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def rollback_plan(loaded: LoadedManifest, name: str, to: str | None = None) -> Plan:
    from pmcp_build.deploy.targets import lambda_

    target = loaded.manifest.targets[name]
    if not isinstance(target, LambdaTarget):
        raise UserError(f"{loaded.path}: target {name!r} is {target.kind}; rollback is for lambda")
    env = environments(loaded, [name])[name]
    given = TargetInput(name, target, loaded.manifest.server.name, None, env, loaded.root)
    return Plan(
        server=loaded.manifest.server.name, package={}, targets=(lambda_.rollback(given, to),)
    )
