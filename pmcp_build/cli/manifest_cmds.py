"""Commands on the manifest alone: validate, schema, init."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pmcp_build.cli.app import (
    ManifestOption,
    app,
    guard,
    load,
    out,
)
from pmcp_build.manifest.model import MANIFEST_NAME


@app.command()
@guard
def validate(file: ManifestOption = Path(MANIFEST_NAME)) -> None:
    """Check metorial.toml without building or calling AWS."""
    from pmcp_build.source.tree import check_declared_paths

    loaded = load(file)
    m = loaded.manifest
    check_declared_paths(m.source, loaded.root, m.runtime, loaded.path.name)
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
