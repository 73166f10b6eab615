"""Commands that build or read a package: build, inspect."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pmcp_build.cli.app import (
    MANIFEST_NAME,
    AllManifestsOption,
    ArchOption,
    JsonOption,
    ManifestOption,
    PythonOption,
    RemoteCacheOption,
    Sha256Option,
    SourceUrlOption,
    app,
    build_and_check,
    check_targets,
    err,
    guard,
    load,
    out,
)
from pmcp_build.errors import UserError
from pmcp_build.text import one_line

if TYPE_CHECKING:
    from pmcp_build.package.load_check import LoadReport


@app.command()
@guard
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
    remote_cache: RemoteCacheOption = None,
    all_manifests: AllManifestsOption = None,
) -> None:
    """Build the package into .pmcp/dist/ and print its layout."""
    from pmcp_build.layout.view import build_json, build_text, print_plain
    from pmcp_build.package import remote

    remote.configure(remote_cache)
    if all_manifests is not None:
        no_single_options(file, source_url, sha256, python, architecture)
        argv = ["build", *(["-t", target] if target else []), *(["--json"] if json_out else [])]
        run_workspace(all_manifests, argv, json_out)

    loaded = load(file, source_url, sha256, None, python, architecture)
    if target:
        check_targets(loaded, [target])
    package, report = build_and_check(loaded, json_out)
    if json_out:
        sys.stdout.write(build_json(package, report))
        return
    print_plain(build_text(package, report))  # what the fast path prints (entry.py)


def no_single_options(file: Path, *synth: str | None) -> None:
    """--all-manifests finds the manifests: options naming one are usage errors."""
    if file != Path(MANIFEST_NAME) or any(v is not None for v in synth):
        raise typer.BadParameter(
            "-f and the manifest-less options name one server; drop them (each server's "
            "folder holds its metorial.toml)",
            param_hint="--all-manifests",
        )


def run_workspace(
    root: Path,
    argv: list[str],
    json_out: bool,
    changes_code: int | None = None,
    detailed: bool = False,
) -> None:
    """Run `argv` for every server under `root`; print a section each (or one JSON
    document); exit as one manifest would (1 when any failed)."""
    import subprocess

    from pmcp_build import workspace

    runs = workspace.run_all(root, workspace.find_manifests(root), argv, subprocess.run)
    if json_out:
        sys.stdout.write(json.dumps(workspace.to_json(runs, changes_code), indent=2) + "\n")
    else:
        for line in workspace.text_lines(runs, changes_code):
            out.print(line, markup=False)
    code = workspace.exit_code(runs, changes_code, detailed)
    raise typer.Exit(code)


def print_load_report(report: LoadReport | None) -> None:
    if report is None:
        return
    out.print(report.line(), markup=False)
    for note in report.notes:
        err.print(f"note: {note}", markup=False)


@app.command("inspect")
@guard
def inspect_cmd(
    zip_path: Annotated[Path, typer.Argument(metavar="ZIP", help="A Lambda deployment zip.")],
    architecture: Annotated[
        str | None, typer.Option(help="Expected architecture: arm64 or x86_64.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Show any package's layout and lint it for Lambda."""
    from pmcp_build.layout.view import layout_json, layout_lines
    from pmcp_build.package.inspect import inspect_zip

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
            # Findings quote the zip's names and its handler's text: one line each.
            stream.print(f"{finding.level}: {one_line(finding.message)}", markup=False)
        if result.ok:
            out.print("ok: no problems found", markup=False)
    if not result.ok:
        raise typer.Exit(1)
