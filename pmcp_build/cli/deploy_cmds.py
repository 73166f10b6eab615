"""Commands that plan and change deployments: plan, apply, destroy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# typer 0.2x vendors click: its usage errors are these classes, not click's.
from typer._click.core import Context
from typer._click.exceptions import UsageError
from typer.core import TyperCommand

from pmcp_build.cli.app import (
    MANIFEST_NAME,
    AllManifestsOption,
    ArchOption,
    JsonOption,
    ManifestOption,
    PythonOption,
    RemoteCacheOption,
    S3Option,
    Sha256Option,
    SourceUrlOption,
    TargetsOption,
    app,
    build_and_check,
    check_layer_regions,
    check_targets,
    emit_json,
    err,
    guard,
    load,
    load_with_text,
    out,
    quiet,
)
from pmcp_build.errors import UserError

if TYPE_CHECKING:
    from pmcp_build.deploy.actions import Action, Plan
    from pmcp_build.deploy.executor import TargetResult
    from pmcp_build.manifest.secrets import Environment
    from pmcp_build.package.build import Package


def _print_plan(plan: Plan, package: Package | None, envs: dict[str, Environment]) -> None:
    from pmcp_build.deploy.plan import render
    from pmcp_build.layout.view import human

    if package is not None:
        layout = package.layout
        out.print(
            f"package {package.path.name}: {layout.runtime} {layout.architecture}, "
            f"{len(layout.entries)} files, {human(layout.unzipped_size)} unzipped, "
            f"{human(package.size)} zipped",
            markup=False,
        )
        # What the build did with metorial.lock, and which versions moved.
        for line in layout.lock_lines:
            out.print(line, markup=False)
    for line in render(plan):
        out.print(_scrub(line, envs), markup=False)


def _scrub(text: str, envs: dict[str, Environment]) -> str:
    # Belt and braces: plans hold secrets by reference, but no resolved value may ever
    # reach the terminal, whatever path a string took.
    for env in envs.values():
        text = env.scrub(text)
    return text


# `plan --detailed-exitcode` exits 2 for "changes" (as Terraform does, so CI recipes
# carry over); a usage error of `plan` must never read as "changes", so it exits 64
# (EX_USAGE of sysexits.h) instead of click's 2, with or without the flag (a typo in the
# flag itself must not read as "changes" either).
PLAN_USAGE_EXIT = 64
CHANGES_EXIT = 2


class _PlanCommand(TyperCommand):
    def make_context(self, *args: Any, **kwargs: Any) -> Context:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            exc.exit_code = PLAN_USAGE_EXIT
            raise

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            exc.exit_code = PLAN_USAGE_EXIT
            raise


@app.command("plan", cls=_PlanCommand)
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
        typer.Option(
            "--detailed-exitcode",
            help="Exit 2 when there are changes, 0 when none (usage errors of plan exit 64).",
        ),
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
    remote_cache: RemoteCacheOption = None,
    all_manifests: AllManifestsOption = None,
) -> None:
    """Show the package and the actions needed to deploy it."""
    from pmcp_build.deploy import saved
    from pmcp_build.deploy.plan import make_plan
    from pmcp_build.package import remote

    remote.configure(remote_cache)
    if all_manifests is not None:
        from pmcp_build.cli.build_cmds import no_single_options, run_workspace

        no_single_options(file, source_url, sha256, s3, python, architecture)
        if out_file is not None or print_manifest:
            raise typer.BadParameter("--out and --print-manifest name one server")
        argv = ["plan", "--detailed-exitcode", f"--refresh={refresh}"]
        argv += [a for t in target or [] for a in ("-t", t)]
        argv += (["--no-refresh"] if no_refresh else []) + (["--json"] if json_out else [])
        run_workspace(all_manifests, argv, json_out, CHANGES_EXIT, detailed_exitcode)

    if refresh.lower() not in ("true", "false"):
        raise typer.BadParameter("must be true or false", param_hint="--refresh")
    loaded, text = load_with_text(file, source_url, sha256, s3, python, architecture)
    if print_manifest:
        sys.stdout.write(text)
        return
    names = check_targets(loaded, target)
    check_layer_regions(loaded, names)
    from pmcp_build.cli.build_cmds import print_load_report

    package, report = build_and_check(loaded, json_out)  # a server that cannot load stops here
    read_remote = refresh.lower() == "true" and not no_refresh
    plan, envs = make_plan(loaded, package, names, refresh=read_remote)
    if out_file is not None:
        saved.save(plan, envs, loaded.path, text, out_file)
        _refuse_packaged_plan(loaded, out_file)
    if json_out:
        emit_json(plan.to_json())
    else:
        print_load_report(report)
        _print_plan(plan, package, envs)
        if out_file is not None:
            out.print(
                f"saved plan to {out_file}; apply it with `pmcp-build apply {out_file}`",
                markup=False,
            )
    if detailed_exitcode and plan.has_changes:
        raise typer.Exit(CHANGES_EXIT)


def _refuse_packaged_plan(loaded: Any, out_file: Path) -> None:
    """A plan file the next build would package changes the package it was made for, so
    `apply` of it could only refuse: say so now, and keep no such file."""
    from pmcp_build.source.tree import walk

    source = loaded.manifest.source
    if source.url is not None:
        return
    root = (loaded.root / (source.path or ".")).resolve()
    try:
        inside = out_file.resolve().relative_to(root).as_posix()
    except ValueError:
        return  # outside the source: never packaged
    if any(f.path == inside for f in walk(root, source.exclude)):
        out_file.unlink()
        raise UserError(
            f"--out {out_file}: the file is inside the source, so the next build would "
            "package it and apply would refuse the plan; write it under .pmcp/ "
            "(--out .pmcp/plan.bin) or outside the source"
        )


@app.command()
@guard
def apply(
    plan_file: Annotated[Path | None, typer.Argument(metavar="[PLANFILE]")] = None,
    file: ManifestOption = Path(MANIFEST_NAME),
    target: TargetsOption = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask.")] = False,
    all_targets: Annotated[
        bool, typer.Option("--all", help="Apply every target (needed with several lambdas).")
    ] = False,
    json_out: JsonOption = False,
    source_url: SourceUrlOption = None,
    sha256: Sha256Option = None,
    s3: S3Option = None,
    python: PythonOption = None,
    architecture: ArchOption = None,
    remote_cache: RemoteCacheOption = None,
    all_manifests: AllManifestsOption = None,
) -> None:
    """Carry out the plan (or a saved one, exactly): upload, create, update. Idempotent."""
    from pmcp_build.deploy import saved
    from pmcp_build.deploy.apply import execute
    from pmcp_build.deploy.plan import make_plan
    from pmcp_build.package import remote

    remote.configure(remote_cache)
    if all_manifests is not None:
        from pmcp_build.cli.build_cmds import no_single_options, run_workspace

        no_single_options(file, source_url, sha256, s3, python, architecture)
        if plan_file is not None or not auto_approve:
            raise typer.BadParameter(
                "needs --auto-approve and no PLANFILE (servers are applied side by side; "
                "review them with `pmcp-build plan --all-manifests DIR` first)"
            )
        argv = ["apply", "--auto-approve", *(["--all"] if all_targets else [])]
        argv += [a for t in target or [] for a in ("-t", t)] + (["--json"] if json_out else [])
        run_workspace(all_manifests, argv, json_out)

    data = saved.load(plan_file) if plan_file is not None else None
    if data is not None:
        assert plan_file is not None
        if saved.manifest_path(data).exists():  # else: a manifest-less plan, made again
            file = saved.manifest_path(data)
        target = [t["name"] for t in data["plan"]["targets"]]
    loaded, text = load_with_text(file, source_url, sha256, s3, python, architecture)
    if data is None and not target and not all_targets:
        _refuse_several_lambdas(loaded)
    names = check_targets(loaded, target)
    check_layer_regions(loaded, names)
    # As plan does: a server that cannot load is never deployed (a UserError here); the
    # result is cached by layout, so after `plan` this costs nothing.
    package, _ = build_and_check(loaded, json_out)
    plan, envs = make_plan(loaded, package, names)
    if data is not None:
        assert plan_file is not None
        # Run the file's actions, and only once the world is still what they were made for.
        plan = saved.check(data, plan_file, loaded.path, text, plan, envs)
    if not json_out:
        _print_plan(plan, package, envs)
    if plan.has_changes and not auto_approve and data is None:
        if not sys.stdin.isatty():
            raise UserError(
                "apply needs confirmation: run it in a terminal, pass "
                "--auto-approve, or apply a saved plan file"
            )
        if not typer.confirm("Apply these changes?"):
            raise UserError("apply cancelled; nothing was changed")
    progress = None if quiet(json_out) else _upload_progress(package.size)
    if progress is not None:
        with progress[0]:
            results = execute(plan, package.path, envs, progress[1])
    else:
        results = execute(plan, package.path, envs)
    outputs = {r.name: r.outputs for r in results}
    if json_out:
        data_out = {
            "changes": plan.has_changes,
            "applied": {r.name: r.steps for r in results},
            "outputs": outputs,
        }
        emit_json(data_out)
        return
    _print_results(results, envs)
    if plan.has_changes:
        c = plan.counts()
        out.print(
            f"Apply complete: {c['add']} added, {c['change']} changed, {c['destroy']} destroyed.",
            markup=False,
        )


def _refuse_several_lambdas(loaded: Any) -> None:
    """`apply` with no -t must not deploy prod as a side effect of deploying dev."""
    lambdas = [n for n, t in loaded.manifest.targets.items() if t.kind == "lambda"]
    if len(lambdas) > 1:
        raise UsageError(
            f"{loaded.path} has {len(lambdas)} lambda targets ({', '.join(lambdas)}): "
            "name the one to apply with -t NAME, or pass --all to apply every target"
        )


def _print_results(results: list[TargetResult], envs: dict[str, Environment]) -> None:
    for result in results:
        for step in result.steps:
            out.print(_scrub(f"{result.name}: {step}", envs), markup=False)
    shown = [(r.name, k, v) for r in results for k, v in r.outputs.items() if v]
    if shown:
        out.print("Outputs:", markup=False)
        for name, key, value in shown:
            out.print(_scrub(f"  {name}.{key} = {value}", envs), markup=False)


def _upload_progress(total: int) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        console=err,
        transient=True,
    )

    def for_target(name: str, _: int) -> Any:
        task = progress.add_task(f"{name}: upload", total=total, visible=False)

        def callback(sent: int) -> None:
            progress.update(task, advance=sent, visible=True)

        return callback

    return progress, for_target


@app.command()
@guard
def destroy(
    target: Annotated[str, typer.Option("--target", "-t", help="The target to destroy.")],
    file: ManifestOption = Path(MANIFEST_NAME),
    auto_approve: Annotated[bool, typer.Option("--auto-approve")] = False,
    json_out: JsonOption = False,
) -> None:
    """Remove a target's function, URL and auto role (never a bucket)."""
    from pmcp_build.deploy.apply import execute
    from pmcp_build.deploy.plan import destroy_plan, environments

    loaded = load(file)
    check_targets(loaded, [target])
    plan = destroy_plan(loaded, target)
    actions = plan.targets[0].actions
    if not json_out:
        _print_destroy(target, actions)
    if not actions:
        if json_out:
            emit_json({"target": target, "changes": False, "destroyed": []})
        return
    if not auto_approve:
        if not sys.stdin.isatty():
            raise UserError(
                "destroy needs confirmation: run it in a terminal or pass --auto-approve"
            )
        if not typer.confirm(f"Destroy target {target}?"):
            raise UserError("destroy cancelled; nothing was changed")
    results = execute(plan, None, environments(loaded, [target]))
    if json_out:
        done = [{"resource": a.resource, "op": a.op, "reason": a.reason} for a in actions]
        steps = {r.name: r.steps for r in results}
        emit_json({"target": target, "changes": True, "destroyed": done, "applied": steps})
        return
    out.print(f"Destroy complete: {len(actions)} destroyed.", markup=False)


def _print_destroy(target: str, actions: tuple[Action, ...]) -> None:
    if not actions:
        out.print(f"target {target}: nothing to destroy.", markup=False)
        return
    for action in actions:
        out.print(f"  - {action.resource} {action.op}  # {action.reason}", markup=False)
    out.print(f"Plan: 0 to add, 0 to change, {len(actions)} to destroy.", markup=False)


@app.command()
@guard
def rollback(
    target: Annotated[str, typer.Option("--target", "-t", help="The lambda target.")],
    file: ManifestOption = Path(MANIFEST_NAME),
    auto_approve: Annotated[bool, typer.Option("--auto-approve")] = False,
    json_out: JsonOption = False,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="VERSION", help="The published version to move the alias to."),
    ] = None,
) -> None:
    """Move the target's alias back to the previous published version, or to --to
    VERSION (plan first)."""
    from pmcp_build.deploy.apply import execute
    from pmcp_build.deploy.plan import environments, render, rollback_plan

    loaded = load(file)
    check_targets(loaded, [target])
    plan = rollback_plan(loaded, target, to)
    if not json_out:
        for line in render(plan):
            out.print(line, markup=False)
    if not auto_approve:
        if not sys.stdin.isatty():
            raise UserError(
                "rollback needs confirmation: run it in a terminal or pass --auto-approve"
            )
        if not typer.confirm(f"Roll target {target} back?"):
            raise UserError("rollback cancelled; nothing was changed")
    results = execute(plan, None, environments(loaded, [target]))
    if json_out:
        emit_json({"outputs": {r.name: r.outputs for r in results}}, indent=None)
        return
    _print_results(results, {})
    out.print("Rollback complete.", markup=False)
