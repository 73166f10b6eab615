"""Commands on the manifest alone: validate, schema, init."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pmcp_build.cli.app import (
    MANIFEST_NAME,
    JsonOption,
    ManifestOption,
    app,
    check_layer_regions,
    emit_json,
    guard,
    load,
    out,
    shorten,
)
from pmcp_build.errors import UserError


@app.command()
@guard
def validate(file: ManifestOption = Path(MANIFEST_NAME), json_out: JsonOption = False) -> None:
    """Check metorial.toml without building or calling AWS."""
    from pmcp_build.source.tree import check_declared_paths

    try:
        loaded = load(file)
        m = loaded.manifest
        check_declared_paths(m.source, loaded.root, m.runtime, loaded.path.name)
        check_layer_regions(loaded, list(m.targets))
    except UserError as exc:
        if json_out:  # the verdict on stdout too; the line on stderr as always
            emit_json({"valid": False, "path": str(file), "error": shorten(str(exc))})
        raise
    if json_out:
        emit_json(
            {
                "valid": True,
                "path": str(loaded.path),
                "server": m.server.name,
                "runtime": m.runtime.kind,
                "targets": {n: t.kind for n, t in m.targets.items()},
            }
        )
        return
    targets = ", ".join(f"{n} ({t.kind})" for n, t in m.targets.items()) or "none"
    out.print(
        f"{loaded.path}: ok — server '{m.server.name}', {m.runtime.kind} runtime, "
        f"targets: {targets}"
    )


@app.command()
@guard
def schema() -> None:
    """Print the JSON Schema of metorial.toml."""
    from pmcp_build.manifest.schema import schema_text

    sys.stdout.write(schema_text())


@app.command()
@guard
def init(
    name: Annotated[str | None, typer.Option(help="Server name (default: the folder's).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing manifest.")] = False,
) -> None:
    """Write a commented metorial.toml for the current folder."""
    from pmcp_build.manifest.scaffold import detected, write_manifest

    path = write_manifest(Path.cwd(), name=name, force=force)
    for note in detected(Path.cwd()):
        out.print(f"detected {note}", markup=False)
    out.print(f"wrote {path}; check it with `pmcp-build validate`")
