"""The `pmcp-build` command line: argument parsing and output, nothing else.

Every command body runs under `_guard`, which turns a UserError into one line on
stderr and exit 1, and any other exception into a short "internal error" line; the
traceback is shown only with --debug.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.exceptions import TyperException

from . import __version__
from .errors import UserError
from .loader import LoadedManifest, load_manifest
from .manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from .build import Package
    from .plan import Plan
    from .secrets import Environment

app = typer.Typer(
    name="pmcp-build",
    help="Turn MCP servers into AWS Lambda deployments, declaratively.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _State:
    debug = False


F = TypeVar("F", bound=Callable[..., Any])


def _guard(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if _State.debug:
                raise
            for line in str(exc).splitlines():
                err.print(f"[red]error:[/red] {line}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, TyperException, KeyboardInterrupt):
            raise  # usage errors keep click's exit code 2
        except Exception as exc:
            if _State.debug:
                raise
            err.print(
                f"[red]internal error:[/red] {type(exc).__name__}: {exc} "
                "(rerun with --debug for the traceback)",
                markup=True,
                highlight=False,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"pmcp-build {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    directory: Annotated[
        Path | None,
        typer.Option("-C", "--directory", help="Run as if started in DIR.", metavar="DIR"),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _State.debug = debug or bool(os.environ.get("PMCP_DEBUG"))
    if directory is not None:
        if not directory.is_dir():
            raise typer.BadParameter(f"{directory} is not a folder", param_hint="-C")
        os.chdir(directory)


ManifestOption = Annotated[
    Path,
    typer.Option("-f", "--file", help="The manifest to read.", metavar="FILE"),
]


SourceUrlOption = Annotated[
    str | None,
    typer.Option("--source-url", help="Manifest-less: the source zip's URL (default: $ZIP_URL)."),
]
Sha256Option = Annotated[
    str | None,
    typer.Option(
        "--sha256", help="Manifest-less: pin the source zip (default: pinned on download)."
    ),
]
S3Option = Annotated[
    str | None,
    typer.Option("--s3", help="Manifest-less: s3://BUCKET/KEY.zip (default: $S3_BUCKET/$S3_KEY)."),
]
PythonOption = Annotated[
    str | None,
    typer.Option("--python", help="Manifest-less: Lambda python version (default 3.12)."),
]
ArchOption = Annotated[
    str | None,
    typer.Option("--architecture", help="Manifest-less: arm64 or x86_64 (default x86_64)."),
]


def _load(file: Path, *synth: str | None) -> LoadedManifest:
    """`_load_with_text` without the text; `synth` are its manifest-less options."""
    return _load_with_text(file, *synth)[0]


def _load_with_text(
    file: Path,
    source_url: str | None = None,
    sha256: str | None = None,
    s3: str | None = None,
    python: str | None = None,
    architecture: str | None = None,
) -> tuple[LoadedManifest, str]:
    """A committed manifest when there is one; otherwise one synthesised from flags and
    ZIP_URL / S3_BUCKET / S3_KEY (the build image's contract)."""
    from .synth import SynthInputs, synthesize

    if file.exists():
        loaded = load_manifest(file)
        return loaded, loaded.path.read_text()
    inputs = SynthInputs.from_env(source_url, sha256, s3, python, architecture)
    if not inputs.wanted:
        load_manifest(file)  # raises the usual "no such file; run init" error
    from .build import cache_dir

    return synthesize(inputs, cache_dir(), Path.cwd())


@app.command()
@_guard
def validate(file: ManifestOption = Path(MANIFEST_NAME)) -> None:
    """Check metorial.toml without building or calling AWS."""
    loaded = _load(file)
    m = loaded.manifest
    targets = ", ".join(f"{n} ({t.kind})" for n, t in m.targets.items()) or "none"
    out.print(
        f"{loaded.path}: ok — server '{m.server.name}', {m.runtime.kind} runtime, "
        f"targets: {targets}"
    )


@app.command()
@_guard
def schema() -> None:
    """Print the JSON Schema of metorial.toml."""
    from .schema import schema_text

    sys.stdout.write(schema_text())


@app.command()
@_guard
def init(
    name: Annotated[str | None, typer.Option(help="Server name (default: the folder's).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing manifest.")] = False,
) -> None:
    """Write a commented metorial.toml for the current folder."""
    from .init import write_manifest

    path = write_manifest(Path.cwd(), name=name, force=force)
    out.print(f"wrote {path}; check it with `pmcp-build validate`")


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _quiet(json_mode: bool) -> bool:
    """Progress output only for a person at a terminal, never in CI or --json."""
    return json_mode or not err.is_terminal or bool(os.environ.get("CI"))


def _build_quietly(loaded: LoadedManifest, json_mode: bool) -> Package:
    """Build, with a spinner for a person at a terminal (dependency installs take time)."""
    from .build import build as build_package

    if _quiet(json_mode):
        return build_package(loaded, quiet=True)
    with err.status("building package (dependencies are cached after the first run)…"):
        return build_package(loaded, quiet=True)


def _check_targets(loaded: LoadedManifest, targets: list[str] | None) -> list[str]:
    names = list(loaded.manifest.targets)
    for name in targets or []:
        if name not in loaded.manifest.targets:
            known = ", ".join(names) or "none are declared"
            raise UserError(f"{loaded.path}: no target {name!r}; targets: {known}")
    return list(targets) if targets else names


@app.command()
@_guard
def build(
    file: ManifestOption = Path(MANIFEST_NAME),
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Check the target exists.")
    ] = None,
    json_out: JsonOption = False,
    source_url: SourceUrlOption = None,
    sha256: Sha256Option = None,
    python: PythonOption = None,
    architecture: ArchOption = None,
) -> None:
    """Build the package into .pmcp/dist/ and print its layout."""
    from .render import layout_json, layout_lines

    loaded = _load(file, source_url, sha256, None, python, architecture)
    if target:
        _check_targets(loaded, [target])
    package = _build_quietly(loaded, json_out)
    if json_out:
        data = {
            "package": {
                "path": str(package.path),
                "sha256": package.sha256,
                "code_sha256": package.code_sha256,
                "size": package.size,
            },
            "layout": layout_json(package.layout),
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    for line in layout_lines(package.layout, zipped=package.size):
        out.print(line, markup=False)
    out.print(f"wrote {package.path} (sha256 {package.sha256})", markup=False)


@app.command("inspect")
@_guard
def inspect_cmd(
    zip_path: Annotated[Path, typer.Argument(metavar="ZIP", help="A Lambda deployment zip.")],
    architecture: Annotated[
        str | None, typer.Option(help="Expected architecture: arm64 or x86_64.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Show any package's layout and lint it for Lambda."""
    from .lint import inspect_zip
    from .render import layout_json, layout_lines

    if architecture not in (None, "arm64", "x86_64"):
        raise typer.BadParameter("must be arm64 or x86_64", param_hint="--architecture")
    if not zip_path.is_file():
        raise UserError(f"{zip_path}: no such file")
    result = inspect_zip(zip_path, architecture)
    if json_out:
        data = {
            "ok": result.ok,
            "zipped_size": result.zipped,
            "findings": [{"level": f.level, "message": f.message} for f in result.findings],
            "layout": layout_json(result.layout),
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        for line in layout_lines(result.layout, zipped=result.zipped):
            out.print(line, markup=False)
        for finding in result.findings:
            stream = err if finding.level == "error" else out
            stream.print(f"{finding.level}: {finding.message}", markup=False)
        if result.ok:
            out.print("ok: no problems found", markup=False)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
@_guard
def serve(
    file: ManifestOption = Path(MANIFEST_NAME),
    target: Annotated[str | None, typer.Option("--target", "-t")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8765,
) -> None:
    """Run the built package on 127.0.0.1 as a Function URL would (MCP over HTTP)."""
    from .local_run import open_invoker
    from .serve import make_server

    loaded = _load(file)
    if target:
        _check_targets(loaded, [target])
    package = _build_quietly(loaded, json_mode=False)
    invoker = open_invoker(package.path, package.layout)
    try:
        server = make_server(invoker, port)
        bound = server.server_address[1]
        print(
            f"serving {package.path.name} at http://127.0.0.1:{bound}/mcp (Ctrl-C to stop)",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        invoker.close()


@app.command()
@_guard
def invoke(
    event: Annotated[str, typer.Option("--event", "-e", help="Event JSON file, or - for stdin.")],
    file: ManifestOption = Path(MANIFEST_NAME),
    target: Annotated[str | None, typer.Option("--target", "-t")] = None,
) -> None:
    """Run one event through the built package and print the response as JSON."""
    from .local_run import open_invoker

    raw = sys.stdin.read() if event == "-" else _read_event_file(Path(event))
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"--event {event}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if isinstance(payload, dict) and payload.get("jsonrpc") == "2.0":
        # A bare JSON-RPC message: wrap it as the platform would.
        payload = {"action": "mcp.request", "messages": [json.dumps(payload)]}
    loaded = _load(file)
    if target:
        _check_targets(loaded, [target])
    package = _build_quietly(loaded, json_mode=True)
    invoker = open_invoker(package.path, package.layout)
    try:
        result = invoker.invoke(payload)
    finally:
        invoker.close()
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


def _read_event_file(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"--event {path}: no such file")
    return path.read_text()


TargetsOption = Annotated[
    list[str] | None,
    typer.Option("--target", "-t", help="Target name; repeat for several (default: all)."),
]


def _print_plan(plan: Plan, package: Package, secrets: list[Environment]) -> None:
    from .plan import render
    from .render import human

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
@_guard
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
    from .deploy import make_plan, save_plan

    if refresh.lower() not in ("true", "false"):
        raise typer.BadParameter("must be true or false", param_hint="--refresh")
    loaded, text = _load_with_text(file, source_url, sha256, s3, python, architecture)
    if print_manifest:
        sys.stdout.write(text)
        return
    names = _check_targets(loaded, target)
    package = _build_quietly(loaded, json_out)
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
@_guard
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

    from .deploy import apply_target, check_saved, load_saved, make_plan

    saved = load_saved(plan_file) if plan_file is not None else None
    if saved is not None:
        file = Path(saved.get("manifest") or file)
        target = [t["name"] for t in saved["targets"]]
    loaded = _load(file, source_url, sha256, s3, python, architecture)
    names = _check_targets(loaded, target)
    package = _build_quietly(loaded, json_out)
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
    progress = None if _quiet(json_out) else _upload_progress()

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


@app.command("image-run")
@_guard
def image_run(
    source_url: SourceUrlOption = None,
    sha256: Sha256Option = None,
    s3: S3Option = None,
    python: PythonOption = None,
    architecture: ArchOption = None,
) -> None:
    """The build image's job: ZIP_URL -> package -> S3_BUCKET/S3_KEY; JSON summary last."""
    from .deploy import apply_target, make_plan
    from .synth import IMAGE_TARGET, SynthInputs, image_target

    inputs = SynthInputs.from_env(source_url, sha256, s3, python, architecture)
    missing = [
        name
        for name, value in (("ZIP_URL", inputs.source_url), ("S3_BUCKET/S3_KEY", inputs.s3))
        if not value
    ]
    if missing:
        raise UserError(
            f"{' and '.join(missing)} not set; the build image needs ZIP_URL, "
            "S3_BUCKET and S3_KEY (or --source-url and --s3 s3://B/K)"
        )
    loaded, _ = _load_with_text(Path(MANIFEST_NAME), source_url, sha256, s3, python, architecture)
    target = image_target(loaded)
    package = _build_quietly(loaded, json_mode=True)  # stdout ends with the JSON summary
    plan, desired = make_plan(loaded, package, [IMAGE_TARGET])
    steps = apply_target(loaded, package, plan.targets[0], desired[IMAGE_TARGET], lambda line: None)
    for step in steps:
        err.print(step, markup=False)
    summary = {
        "sha256": package.sha256,
        "code_sha256": package.code_sha256,
        "size": package.size,
        "s3": f"s3://{target.bucket}/{target.key}",
        "uploaded": bool(steps),
        "runtime": package.layout.runtime,
        "handler": package.layout.handler,
    }
    sys.stdout.write(json.dumps(summary) + "\n")


def _upload_progress() -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err, transient=True
    )


@app.command()
@_guard
def destroy(
    target: Annotated[str, typer.Option("--target", "-t", help="The target to destroy.")],
    file: ManifestOption = Path(MANIFEST_NAME),
    auto_approve: Annotated[bool, typer.Option("--auto-approve")] = False,
) -> None:
    """Remove a target's function, URL and auto role (never a bucket)."""
    from .deploy import destroy as do_destroy
    from .deploy import destroy_actions

    loaded = _load(file)
    _check_targets(loaded, [target])
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
