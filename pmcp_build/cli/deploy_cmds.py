"""Commands that plan and change deployments: plan, apply, destroy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pmcp_build.cli.app import (
    ArchOption,
    JsonOption,
    ManifestOption,
    PythonOption,
    S3Option,
    Sha256Option,
    SourceUrlOption,
    TargetsOption,
    app,
    build_quietly,
    check_targets,
    err,
    guard,
    load,
    load_with_text,
    out,
    quiet,
)
from pmcp_build.errors import UserError
from pmcp_build.manifest.model import MANIFEST_NAME

if TYPE_CHECKING:
    from pmcp_build.deploy.plan import Plan
    from pmcp_build.manifest.secrets import Environment
    from pmcp_build.package.build import Package


def _print_plan(plan: Plan, package: Package, secrets: list[Environment]) -> None:
    from pmcp_build.deploy.plan import render
    from pmcp_build.layout.view import human

    layout = package.layout
    out.print(
        f"package {package.path.name}: {layout.runtime} {layout.architecture}, "
        f"{len(layout.entries)} files, {human(layout.unzipped_size)} unzipped, "
        f"{human(package.size)} zipped",
        markup=False,
    )
    for line in render(plan):
        for env in secrets:
            line = env.scrub(line)
        out.print(line, markup=False)


@app.command("plan")
@guard
def plan_cmd(
    file: ManifestOption = Path(MANIFEST_NAME),
    target: TargetsOption = None,
    json_out: JsonOption = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Save the plan to apply later.")
    ] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 2 when there are changes, 0 when none."),
    ] = False,
    refresh: Annotated[
        str,
        typer.Option(
            "--refresh",
            metavar="true|false",
            help="Read remote state; --refresh=false plans offline.",
        ),
    ] = "true",
    no_refresh: Annotated[
        bool, typer.Option("--no-refresh", help="Same as --refresh=false.")
    ] = False,
    print_manifest: Annotated[
        bool,
        typer.Option("--print-manifest", help="Print the manifest in use (e.g. synthesised)."),
    ] = False,
    source_url: SourceUrlOption = None,
    sha256: Sha256Option = None,
    s3: S3Option = None,
    python: PythonOption = None,
    architecture: ArchOption = None,
) -> None:
    """Show the package and the actions needed to deploy it."""
    from pmcp_build.deploy.apply import make_plan, save_plan

    if refresh.lower() not in ("true", "false"):
        raise typer.BadParameter("must be true or false", param_hint="--refresh")
    loaded, text = load_with_text(file, source_url, sha256, s3, python, architecture)
    if print_manifest:
        sys.stdout.write(text)
        return
    names = check_targets(loaded, target)
    package = build_quietly(loaded, json_out)
    read_remote = refresh.lower() == "true" and not no_refresh
    plan, desired = make_plan(loaded, package, names, refresh=read_remote)
    if out_file is not None:
        save_plan(plan, out_file, loaded.path)
    if json_out:
        sys.stdout.write(json.dumps(plan.to_json(), indent=2) + "\n")
    else:
        _print_plan(plan, package, [d.env for d in desired.values()])
        if out_file is not None:
            out.print(
                f"saved plan to {out_file}; apply it with `pmcp-build apply {out_file}`",
                markup=False,
            )
    if detailed_exitcode and plan.has_changes:
        raise typer.Exit(2)


@app.command()
@guard
def apply(
    plan_file: Annotated[Path | None, typer.Argument(metavar="[PLANFILE]")] = None,
    file: ManifestOption = Path(MANIFEST_NAME),
    target: TargetsOption = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask.")] = False,
    json_out: JsonOption = False,
    source_url: SourceUrlOption = None,
    sha256: Sha256Option = None,
    s3: S3Option = None,
    python: PythonOption = None,
    architecture: ArchOption = None,
) -> None:
    """Carry out the plan (or a saved one): upload, create, update. Idempotent."""
    from concurrent.futures import ThreadPoolExecutor

    from pmcp_build.deploy.apply import apply_target, check_saved, load_saved, make_plan

    saved = load_saved(plan_file) if plan_file is not None else None
    if saved is not None:
        file = Path(saved.get("manifest") or file)
        target = [t["name"] for t in saved["targets"]]
    loaded = load(file, source_url, sha256, s3, python, architecture)
    names = check_targets(loaded, target)
    package = build_quietly(loaded, json_out)
    plan, desired = make_plan(loaded, package, names)
    if saved is not None:
        assert plan_file is not None
        check_saved(saved, plan, plan_file)
    if not json_out:
        _print_plan(plan, package, [d.env for d in desired.values()])
    if not plan.has_changes:
        if json_out:
            sys.stdout.write(json.dumps({"applied": [], "changes": False}) + "\n")
        return
    if not auto_approve and saved is None:
        if not sys.stdin.isatty():
            raise UserError(
                "apply needs confirmation: run it in a terminal, pass "
                "--auto-approve, or apply a saved plan file"
            )
        if not typer.confirm("Apply these changes?"):
            raise UserError("apply cancelled; nothing was changed")
    lines: list[str] = []
    progress = None if quiet(json_out) else _upload_progress()

    def one(tp: Any) -> list[str]:
        callback = None
        if progress is not None:
            task = progress.add_task(f"{tp.name}: upload", total=package.size, visible=False)

            def callback(sent: int, task: Any = task) -> None:
                progress.update(task, advance=sent, visible=True)

        return apply_target(loaded, package, tp, desired[tp.name], lines.append, callback)

    with ThreadPoolExecutor(max_workers=min(8, len(plan.targets))) as pool:
        if progress is not None:
            with progress:
                results = list(pool.map(one, plan.targets))
        else:
            results = list(pool.map(one, plan.targets))
    done = {tp.name: r for tp, r in zip(plan.targets, results, strict=True)}
    if json_out:
        sys.stdout.write(json.dumps({"applied": done, "changes": True}) + "\n")
        return
    for name, steps in done.items():
        for step in steps:
            out.print(f"{name}: {step}", markup=False)
    for line in lines:
        out.print(line, markup=False)
    c = plan.counts()
    out.print(
        f"Apply complete: {c['add']} added, {c['change']} changed, {c['destroy']} destroyed.",
        markup=False,
    )


def _upload_progress() -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err, transient=True
    )


@app.command()
@guard
def destroy(
    target: Annotated[str, typer.Option("--target", "-t", help="The target to destroy.")],
    file: ManifestOption = Path(MANIFEST_NAME),
    auto_approve: Annotated[bool, typer.Option("--auto-approve")] = False,
) -> None:
    """Remove a target's function, URL and auto role (never a bucket)."""
    from pmcp_build.deploy.apply import destroy as do_destroy
    from pmcp_build.deploy.apply import destroy_actions

    loaded = load(file)
    check_targets(loaded, [target])
    actions = destroy_actions(loaded, target)
    if not actions:
        out.print(f"target {target}: nothing to destroy.", markup=False)
        return
    for action in actions:
        out.print(f"  - {action.resource} {action.op}  # {action.reason}", markup=False)
    out.print(f"Plan: 0 to add, 0 to change, {len(actions)} to destroy.", markup=False)
    if not auto_approve:
        if not sys.stdin.isatty():
            raise UserError(
                "destroy needs confirmation: run it in a terminal or pass --auto-approve"
            )
        if not typer.confirm(f"Destroy target {target}?"):
            raise UserError("destroy cancelled; nothing was changed")
    do_destroy(loaded, target, actions)
    out.print(f"Destroy complete: {len(actions)} destroyed.", markup=False)
