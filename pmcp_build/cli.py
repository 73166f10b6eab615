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
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from . import __version__
from .errors import UserError
from .loader import LoadedManifest, load_manifest
from .manifest import MANIFEST_NAME

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
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
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


def _load(file: Path) -> LoadedManifest:
    return load_manifest(file)


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
) -> None:
    """Build the package into .pmcp/dist/ and print its layout."""
    from .build import build as build_package
    from .render import layout_json, layout_lines

    loaded = _load(file)
    if target:
        _check_targets(loaded, [target])
    quiet = _quiet(json_out)
    if quiet:
        package = build_package(loaded, quiet=True)
    else:
        with err.status("building package (dependencies are cached after the first run)…"):
            package = build_package(loaded, quiet=True)
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


def _local_package(loaded: LoadedManifest, target: str | None, json_mode: bool) -> Any:
    """The package `serve` and `invoke` run: a local target's deployment, else a build."""
    from .build import build as build_package

    if target:
        _check_targets(loaded, [target])
    if _quiet(json_mode):
        return build_package(loaded, quiet=True)
    with err.status("building package…"):
        return build_package(loaded, quiet=True)


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
    package = _local_package(loaded, target, json_mode=False)
    invoker = open_invoker(package.path, package.layout)
    try:
        server = make_server(invoker, port)
        host, bound = server.server_address[:2]
        print(f"serving {package.path.name} at http://{host}:{bound}/mcp (Ctrl-C to stop)",
              flush=True)
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
    package = _local_package(loaded, target, json_mode=True)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
